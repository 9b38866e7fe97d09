"""The layout's rules, checked on the code: one `tamis` namespace, imports in one direction, no circles."""
import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "scorers", "mixers")
FAMILIES = ("tamis.scorers", "tamis.mixers")
# what a stage family may import from the engine: the contract and the shared helpers
CONTRACT = ("tamis.pipeline.stage", "tamis.pipeline.data", "tamis.pipeline.rules", "tamis.pipeline.readers",
            "tamis.pipeline.text", "tamis.pipeline.vectors", "tamis.pipeline.mixture_weights")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((REPO / pkg).rglob("*.py")):
            parts = f.relative_to(REPO).with_suffix("").parts
            name = ".".join(("tamis", *parts[:-1])) if parts[-1] == "__init__" else ".".join(("tamis", *parts))
            out[name] = f
    return out


def _imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported tamis module, line, inside a function) for every import in the file."""
    tree = ast.parse(path.read_text())
    in_fn = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        for n in names:
            out.append((n, node.lineno, id(node) in in_fn))
    return out


def _graph():
    mods = _modules()
    known = set(mods)
    graph = {}
    for name, path in mods.items():
        graph[name] = [(n, line, fn) for n, line, fn in _imports(name, path, known)]
    return mods, graph


def test_no_module_imports_the_old_top_level_names():
    mods, graph = _graph()
    bad = [f"{mods[m].relative_to(REPO)}:{line}: {n}" for m, edges in graph.items() for n, line, _ in edges
           if n.split(".")[0] in PACKAGES]
    assert not bad, bad


def test_stage_families_depend_on_the_contract_only():
    mods, graph = _graph()
    bad = []
    for m, edges in graph.items():
        if not m.startswith(FAMILIES):
            continue
        family = ".".join(m.split(".")[:2])
        for n, line, _ in edges:
            if n.startswith("tamis.") and not n.startswith(family) and not n.startswith(CONTRACT):
                bad.append(f"{mods[m].relative_to(REPO)}:{line}: {n}")
    assert not bad, "a stage family imports the runner, the CLI or another family:\n" + "\n".join(bad)


def test_engine_knows_families_only_through_the_registry():
    mods, graph = _graph()
    bad = [f"{mods[m].relative_to(REPO)}:{line}: {n}" for m, edges in graph.items()
           if m.startswith("tamis.pipeline") and not m.startswith("tamis.pipeline.commands")
           for n, line, _ in edges if n.startswith(FAMILIES)]
    assert not bad, bad


def test_only_the_runner_and_the_cluster_commands_import_ray():
    mods, graph = _graph()
    bad = [f"{mods[m].relative_to(REPO)}:{line}: {n}" for m, edges in graph.items() for n, line, _ in edges
           if n.split(".")[0] == "ray" and not m.startswith(("tamis.pipeline.runner", "tamis.pipeline.commands.cluster"))]
    assert not bad, bad


def test_no_import_circles():
    mods, graph = _graph()
    adj = {m: sorted({n for n, _, _ in edges if n in mods and n != m}) for m, edges in graph.items()}
    # a package's __init__ importing its own submodules is not a circle of files
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in adj:
        if v not in index:
            visit(v)
    assert not sccs, f"import circles: {sccs}"


def test_internal_imports_sit_at_the_top_outside_the_cli():
    """Lazy imports of tamis modules only in the CLI's commands (so `tamis --help` stays fast)."""
    mods, graph = _graph()
    bad = [f"{mods[m].relative_to(REPO)}:{line}: {n}" for m, edges in graph.items()
           if not m.startswith(("tamis.pipeline.commands", "tamis.pipeline.cli"))
           for n, line, fn in edges if fn and n.startswith("tamis.")]
    assert not bad, bad


def test_pyproject_lists_every_package():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {".".join(("tamis", *p.parent.relative_to(REPO).parts)) for pkg in PACKAGES
             for p in (REPO / pkg).rglob("__init__.py")}
    assert listed == found
    assert cfg["package-dir"] == {f"tamis.{p}": p for p in PACKAGES}


def test_installed_wheel_holds_only_the_tamis_namespace(tmp_path):
    """`pip install .`: only `tamis` (and its metadata) lands in site-packages, and it works from there."""
    target, src = tmp_path / "site", tmp_path / "src"  # built from a copy: the build writes beside its source
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in PACKAGES:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(src)],
                   check=True, capture_output=True)
    top = sorted(p.name for p in target.iterdir() if p.name != "bin")
    assert [t for t in top if not t.endswith(".dist-info")] == ["tamis"], top
    assert not any((target / name).exists() for name in PACKAGES)
    site = next(p for p in sys.path if p.endswith("site-packages"))
    probe = (
        "import sys, importlib.util; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import tamis.pipeline.registry as r; assert r.__file__.startswith(sys.argv[1]), r.__file__\n"
        "assert r.stage_class('gopher_quality').__module__ == 'tamis.scorers.gopher.quality'\n"
        "assert all(importlib.util.find_spec(n) is None for n in ('pipeline', 'scorers', 'mixers'))\n"
        "print('ok')")
    out = subprocess.run([sys.executable, "-S", "-c", probe, str(target), site], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
