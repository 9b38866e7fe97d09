"""`tamis submit | status | logs | stop | list`: jobs on a Ray cluster through the Ray Jobs API.

`submit` uploads only what the job needs (`upload_set`: the job file, its relative inputs, paths its
stages name, its plug-in modules), never the whole folder: dot-files stay home unless named, and
`.tamisignore` removes more. tamis's code travels as `py_modules` (`code_dir`)."""
from __future__ import annotations

import fnmatch
import glob
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
IGNORE_FILE = ".tamisignore"
MAX_UPLOAD_MB = 100


def _address(args) -> str:
    return args.address or os.environ.get("RAY_JOBS_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS


def _client(args):
    from tamis.pipeline.runner.session import use_cluster_token
    use_cluster_token()  # a token at hand is sent (RAY_AUTH_MODE=token), as `ray start --head` uses it
    from ray.job_submission import JobSubmissionClient
    return JobSubmissionClient(_address(args))


MISSING_MODULE_HINT = ("a node of the cluster lacks tamis's packages (ModuleNotFoundError): start every node from "
                       "the environment tamis is installed in (`source .venv/bin/activate; ray start ...`, or "
                       "`.venv/bin/ray start ...` with .venv/bin first on PATH; docs/scaling.md)")


def _missing_module(text: str | None) -> bool:
    return bool(text) and ("ModuleNotFoundError" in text or "No module named" in text)


def _unreachable_errors() -> tuple:
    import requests
    return (ConnectionError, requests.exceptions.ConnectionError, requests.exceptions.Timeout)


def _auth_errors() -> tuple:
    from ray.exceptions import AuthenticationError
    return (AuthenticationError,)


def _on_cluster(fn):
    """`fn(args)` with an unreachable cluster said in one line (exit 2) instead of Ray's traceback."""
    import functools

    @functools.wraps(fn)
    def wrapped(args, *rest, **kw):
        try:
            return fn(args, *rest, **kw)
        except _auth_errors() as e:
            from tamis.pipeline.runner.session import auth_refused
            print(f"tamis: error: {auth_refused(_address(args), e)}", file=sys.stderr)
            return 2
        except _unreachable_errors() as e:
            print(f"tamis: error: cannot reach the Ray cluster at {_address(args)} ({type(e).__name__}); check "
                  f"--address or RAY_ADDRESS (the dashboard address, e.g. {DEFAULT_ADDRESS}) and that the "
                  f"cluster runs", file=sys.stderr)
            return 2
    return wrapped


def add_parser(sub) -> None:
    common = {"help": f"Ray dashboard address (default $RAY_ADDRESS or {DEFAULT_ADDRESS})"}
    p = sub.add_parser("submit", help="run a job spec on a Ray cluster (Ray Jobs API)")
    p.add_argument("job", type=Path, help="job spec YAML (relative paths are uploaded from the current folder)")
    p.add_argument("--address", **common)
    p.add_argument("--input", action="append", metavar="PATH",
                   help="as for `tamis run`: an absolute path is read on the cluster, a relative one is "
                        "uploaded from the current folder")
    p.add_argument("--output", metavar="DIR", help="as for `tamis run` (a path the cluster can write)")
    p.add_argument("--restart", action="store_true",
                   help="discard an earlier run in the output folder (as for `tamis run`)")
    p.add_argument("--pip", action="append", default=[], metavar="REQ",
                   help="extra pip requirement to install on the cluster (repeatable)")
    p.add_argument("--no-ship-code", action="store_true",
                   help="don't ship tamis's code (the cluster has tamis installed)")
    p.add_argument("--follow", action="store_true", help="stream the logs until the job ends")
    p.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB, metavar="MB",
                   help=f"refuse to upload more than this (default {MAX_UPLOAD_MB}); the upload is the job "
                        f"file, its relative inputs and the relative paths its stages name")
    p.set_defaults(func=_on_cluster(submit))
    for name, fn, helptext in (("status", status, "a submitted job's state"),
                               ("logs", logs, "a submitted job's logs"),
                               ("stop", stop, "stop a submitted job")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("job_id", help="the id `tamis submit` printed (or one `tamis list` shows)")
        q.add_argument("--address", **common)
        if name == "logs":
            q.add_argument("--follow", action="store_true",
                           help="keep printing new lines until the job ends; exit 0 if it succeeded, else 1")
        q.set_defaults(func=_on_cluster(fn))
    q = sub.add_parser("list", help="jobs on the cluster")
    q.add_argument("--address", **common)
    q.set_defaults(func=_on_cluster(list_jobs))


def code_dir() -> Path:
    """A folder named `tamis` holding tamis's code, for the cluster's `py_modules`.

    The three packages (from site-packages/tamis or a checkout) are copied into a temporary
    `tamis/`, with the stage registry as `pipeline/_entry_points.json`: the cluster may lack
    tamis's package metadata."""
    import tamis.pipeline
    from tamis.pipeline.registry import ENTRY_POINTS_FILE, registered

    here = Path(tamis.pipeline.__file__).resolve().parent.parent
    staged = Path(tempfile.mkdtemp(prefix="tamis-code-")) / "tamis"
    for name in ("pipeline", "scorers", "mixers"):
        shutil.copytree(here / name, staged / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (staged / "pipeline" / ENTRY_POINTS_FILE).write_text(json.dumps(registered(), indent=1))
    return staged


class UploadError(ValueError):
    """A job whose files cannot be uploaded as asked; the message names the path."""


def read_ignore(workdir: Path) -> list[str]:
    """Patterns of `.tamisignore` in `workdir` (blank lines and `#` comments skipped)."""
    f = workdir / IGNORE_FILE
    if not f.is_file():
        return []
    lines = (line.strip() for line in f.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def ignored_by(rel: str, patterns: list[str]) -> str | None:
    """The first gitignore-style pattern that excludes the relative path `rel`, else None.

    `name` matches a file or folder of that name at any depth, `dir/` only folders, a pattern with an
    inner `/` (`data/raw/*.jsonl`, `/notes`) the path from the working folder. Wildcards as in `fnmatch`;
    a matched folder excludes everything below it. No `!` negation.
    """
    parts = rel.split("/")
    for pattern in patterns:
        p, dir_only = pattern.rstrip("/"), pattern.endswith("/")
        anchored = "/" in p
        p = p.lstrip("/")
        last = len(parts) - 1 if dir_only else len(parts)  # folders only: never the file itself
        if anchored:
            hit = any(fnmatch.fnmatchcase("/".join(parts[:k + 1]), p) for k in range(last))
        else:
            hit = any(fnmatch.fnmatchcase(part, p) for part in parts[:last])
        if hit:
            return pattern
    return None


def _under(workdir: Path, path: str) -> str | None:
    """`path` (relative to `workdir`) as a relative posix path, if it stays inside `workdir`."""
    rel = os.path.relpath(os.path.normpath(workdir / path), workdir)
    return None if rel == "." or rel == ".." or rel.startswith("../") else Path(rel).as_posix()


def _files_below(workdir: Path, rel: str) -> list[str]:
    """Regular files at or below `rel` (links followed), skipping dot-files and dot-folders below it."""
    root = workdir / rel
    if root.is_file():
        return [rel]
    out = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        below = Path(os.path.relpath(folder, workdir)).as_posix()
        out += [f"{below}/{f}" for f in sorted(files) if not f.startswith(".") and (Path(folder) / f).is_file()]
    return out


def _param_paths(value) -> list[str]:
    """Strings anywhere in a stage's parameters (lists and mappings included)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _param_paths(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _param_paths(v)]
    return []


def upload_set(job, job_file: Path, workdir: Path) -> list[str]:
    """The files `tamis submit` uploads as the cluster's working folder, relative to `workdir`.

    Only what the job needs: the job file; its relative inputs (files, folders, globs), which must lie
    inside `workdir` (absolute inputs are paths on the cluster and are not uploaded); relative paths
    its stages' parameters name that exist inside `workdir` (a model, a word list); the modules of
    `class:` stages found in `workdir`. Dot-files and dot-folders are left out unless the job names
    them; `.tamisignore` patterns (`ignored_by`) remove inputs. tamis's code travels separately."""
    workdir = Path(os.path.abspath(workdir))
    patterns = read_ignore(workdir)
    job_rel = _under(workdir, os.path.abspath(job_file))
    if job_rel is None:
        raise UploadError(f"the job file {job_file} is not inside the working folder {workdir}")
    chosen = {job_rel}

    def add(rel: str, what: str, named: bool = True) -> None:
        below = _files_below(workdir, rel)
        files = [f for f in below if not ignored_by(f, patterns)]
        if named and below and not files:  # the job would find nothing on the cluster
            raise UploadError(f"{what} is excluded by {IGNORE_FILE} (pattern {ignored_by(below[0], patterns)!r})")
        chosen.update(files)

    for i, item in enumerate(job.spec.inputs):
        path = os.path.expanduser(item)
        if os.path.isabs(path):
            continue  # a path on the cluster
        matches = sorted(glob.glob(path, root_dir=workdir, recursive=True)) if glob.has_magic(path) else [path]
        for m in matches:
            rel = _under(workdir, m)
            if rel is None:
                raise UploadError(f"{job_file}: inputs[{i}] ({item}) lies outside the working folder {workdir}: "
                                  f"submit from a folder that holds it, or give an absolute path the cluster reads")
            add(rel, f"{job_file}: inputs[{i}] ({item})")
    for st in job.stages:
        for value in _param_paths(st.stage.get_params()):
            if not value or os.path.isabs(os.path.expanduser(value)):
                continue
            try:
                rel = _under(workdir, value)
                exists = rel is not None and (workdir / rel).exists()
            except (OSError, ValueError):  # text that is no path (too long, NUL bytes)
                continue
            if exists:
                add(rel, f"stage {st.name}: parameter path", named=False)
        name = type(st.stage).__module__
        source = getattr(sys.modules.get(name), "__file__", None)
        if name.split(".")[0] != "tamis" and source and _under(workdir, source) is not None:
            top = name.split(".")[0]  # a plug-in next to the job: its module, or its whole package
            rel = top if (workdir / top / "__init__.py").is_file() else _under(workdir, source)
            chosen.update(f for f in _files_below(workdir, rel) if f.endswith(".py"))
    return sorted(chosen)


def stage_upload(files: list[str], workdir: Path) -> Path:
    """A temporary folder holding `files` (relative to `workdir`) at the same relative paths."""
    staged = Path(tempfile.mkdtemp(prefix="tamis-upload-"))
    for rel in files:
        target = staged / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(workdir / rel, target)
        except OSError:
            shutil.copy2(workdir / rel, target)
    return staged


def runtime_env(pip: list[str], ship_code: bool, working_dir: Path | None = None) -> dict:
    """Working dir = `working_dir` (the staged upload: job file, relative inputs); tamis's code as
    py_modules; one library thread per Ray CPU and Arrow's system allocator (`session.WORKER_ENV`, or
    the values set here)."""
    from tamis.pipeline.runner.session import WORKER_ENV

    env: dict = {"env_vars": {k: os.environ.get(k, v) for k, v in WORKER_ENV.items()}}
    if working_dir is not None:
        env["working_dir"] = str(working_dir)
    if ship_code:
        env["py_modules"] = [str(code_dir())]
    if pip:
        env["pip"] = list(pip)
    return env


def _mb(n: int) -> str:
    return f"{n / 1024**2:.1f} MB"


def submit(args) -> int:
    from tamis.pipeline.spec import load_job

    job = load_job(args.job, inputs=args.input, output=args.output)  # fail here, not on the cluster
    workdir = Path.cwd()
    try:
        files = upload_set(job, args.job, workdir)
    except UploadError as e:
        print(f"tamis: error: {e}", file=sys.stderr)
        return 2
    rel = _under(workdir, os.path.abspath(args.job))
    sizes = {f: (workdir / f).stat().st_size for f in files}
    total = sum(sizes.values())
    shown = ", ".join(files[:5]) + (f", ... (+{len(files) - 5} more)" if len(files) > 5 else "")
    print(f"tamis submit: uploading {len(files)} file(s), {_mb(total)} from {workdir}: {shown}", file=sys.stderr)
    if total > args.max_upload_mb * 1024**2:
        biggest = ", ".join(f"{f} ({_mb(n)})" for f, n in sorted(sizes.items(), key=lambda x: -x[1])[:5])
        print(f"tamis: error: the upload is {_mb(total)}, more than --max-upload-mb {args.max_upload_mb:g} "
              f"(largest: {biggest}); put big inputs on storage the cluster reads and give absolute paths, "
              f"exclude files in {IGNORE_FILE}, or raise --max-upload-mb", file=sys.stderr)
        return 2
    cmd = ["python", "-m", "tamis.pipeline.cli", "run", rel, "--progress", "plain"]  # lines for `tamis logs`
    for i in args.input or []:
        cmd += ["--input", i]
    if args.output:
        cmd += ["--output", args.output]
    if args.restart:
        cmd.append("--restart")
    client = _client(args)
    staged = stage_upload(files, workdir)
    try:
        job_id = client.submit_job(entrypoint=shlex.join(cmd),
                                   runtime_env=runtime_env(args.pip, not args.no_ship_code, staged))
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # submit_job has uploaded it
    print(job_id)
    if args.follow:
        args.job_id = job_id
        return logs(args, follow=True)
    return 0


def _state(status) -> str:
    return str(status).split(".")[-1]  # JobStatus.FAILED or FAILED, by Ray version


def status(args) -> int:
    """Exit 0 while the job runs or when it succeeded, 1 when it FAILED or was STOPPED."""
    info = _client(args).get_job_info(args.job_id)
    print(f"{args.job_id}: {_state(info.status)}" + (f" ({info.message})" if info.message else ""))
    if _state(info.status) == "FAILED" and _missing_module(info.message):
        print(f"tamis: error: {MISSING_MODULE_HINT}", file=sys.stderr)
    return 1 if _state(info.status) in ("FAILED", "STOPPED") else 0


def logs(args, follow: bool | None = None) -> int:
    client = _client(args)
    if follow or getattr(args, "follow", False):
        import asyncio

        async def tail():
            async for chunk in client.tail_job_logs(args.job_id):
                print(chunk, end="", flush=True)
        asyncio.run(tail())
        if _state(client.get_job_status(args.job_id)) == "SUCCEEDED":
            return 0
        info = client.get_job_info(args.job_id)
        if _missing_module(info.message) or _missing_module(client.get_job_logs(args.job_id)[-20000:]):
            print(f"tamis: error: {MISSING_MODULE_HINT}", file=sys.stderr)
        return 1
    print(client.get_job_logs(args.job_id), end="")
    return 0


def stop(args) -> int:
    client = _client(args)
    asked = client.stop_job(args.job_id)  # False: the job had already ended
    for _ in range(60):
        if _state(client.get_job_status(args.job_id)) in ("STOPPED", "SUCCEEDED", "FAILED"):
            break
        time.sleep(0.5)
    state = _state(client.get_job_status(args.job_id))
    if not asked:
        print(f"{args.job_id}: already ended ({state}); nothing to stop")
    elif state == "STOPPED":
        print(f"{args.job_id}: STOPPED (stopped by this command)")
    else:
        print(f"{args.job_id}: asked to stop; now {state} (`tamis status {args.job_id}` to check again)")
    return 0


def list_jobs(args) -> int:
    jobs = _client(args).list_jobs()
    if not jobs:
        print(f"no jobs on the cluster at {_address(args)}")
    for info in jobs:
        print(f"{info.submission_id or info.job_id}\t{_state(info.status)}\t{info.entrypoint}")
    return 0
