"""docs/scaling.md's multi-node recipe, run as written: a head and one worker on 127.0.0.1 with
token authentication, each "machine" its own temporary HOME (the user's ~/.ray is not touched),
then `tamis submit` and `tamis run --address` through it; and tamis's one-line errors for a
cluster that refuses the client, a node without tamis's packages and a `ray://` address.

Substitutions only: HEAD -> 127.0.0.1, `ssh HEAD cat` -> reading the head's HOME, this test's ports
instead of Ray's defaults (other Ray clusters may run on this machine), one CPU per node and a
short --temp-dir on `ray start`."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_cluster import _kill_cluster as kill_cluster


REPO = Path(__file__).resolve().parents[2]
GCS, DASH = 6393, 8293
RAY_PORTS = {"head": ["--ray-client-server-port=20231", "--min-worker-port=20700", "--max-worker-port=20799",
                      "--dashboard-agent-listen-port=20232", "--metrics-export-port=20233",
                      "--node-manager-port=20234", "--object-manager-port=20235", "--runtime-env-agent-port=20236",
                      "--dashboard-agent-grpc-port=20237"],
             "worker": ["--min-worker-port=20800", "--max-worker-port=20899", "--dashboard-agent-listen-port=20242",
                        "--metrics-export-port=20243", "--node-manager-port=20244", "--object-manager-port=20245",
                        "--runtime-env-agent-port=20246", "--dashboard-agent-grpc-port=20247"]}


def recipe_blocks() -> dict[str, str]:
    """The bash blocks of docs/scaling.md after `<!-- recipe:NAME -->` markers."""
    text = (REPO / "docs" / "scaling.md").read_text()
    return {m[1]: m[2] for m in re.finditer(r"<!-- recipe:([\w-]+) -->\n```bash\n(.*?)```", text, re.S)}


def as_here(block: str, role: str, head_home: Path, temp_dir: str, out: Path) -> str:
    block = block.replace("$(ssh HEAD cat .ray/auth_token)", f"$(cat {head_home}/.ray/auth_token)")
    block = block.replace("HEAD:6379", f"127.0.0.1:{GCS}").replace("--port=6379", f"--port={GCS}")
    block = block.replace("http://HEAD:8265", f"http://127.0.0.1:{DASH}").replace("/shared/runs", str(out))
    block = block.replace("--dashboard-host=0.0.0.0", f"--dashboard-host=127.0.0.1 --dashboard-port={DASH}")
    extra = " ".join(["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                      f"--temp-dir={temp_dir}" if role == "head" else "", *RAY_PORTS.get(role, [])])
    return re.sub(r"^(ray start .*)$", rf"\1 {extra}", block, flags=re.M)


def run_block(block: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # a fresh shell on a node
    env["HOME"] = str(home)
    env["PATH"] = ":".join(p for p in env.get("PATH", "").split(":") if not p.startswith(str(REPO / ".venv")))
    return subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def recipe_cluster():
    if not (REPO / ".venv" / "bin" / "activate").is_file():
        pytest.skip("the recipe activates the checkout's .venv")
    root = Path(tempfile.mkdtemp(prefix="tamis-rr-", dir="/tmp"))  # short: AF_UNIX socket paths
    temp_dir = str(root / "t")
    homes = {name: root / name for name in ("head", "worker", "client", "nokey")}
    for h in homes.values():
        h.mkdir()
    blocks = recipe_blocks()
    out = root / "runs"
    try:
        for role in ("head", "worker"):
            r = run_block(as_here(blocks[role], role, homes["head"], temp_dir, out), homes[role])
            assert r.returncode == 0, f"recipe step {role} failed:\n{r.stdout}\n{r.stderr}"
        assert (homes["head"] / ".ray" / "auth_token").is_file() and not (homes["worker"] / ".ray").exists()
        yield {"blocks": blocks, "homes": homes, "out": out, "temp_dir": temp_dir}
    finally:
        for _ in range(2):  # a Ray Client server the head starts late can escape the first sweep
            kill_cluster(temp_dir, GCS)
            time.sleep(1)
        shutil.rmtree(root, ignore_errors=True)


def test_recipe_submit_and_run_on_the_token_cluster(recipe_cluster):
    c = recipe_cluster
    client = as_here(c["blocks"]["client"], "client", c["homes"]["head"], c["temp_dir"], c["out"])
    r = run_block(client, c["homes"]["client"], timeout=180)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "conservation holds" in r.stdout and (c["out"] / "q" / "reports" / "summary.json").is_file()
    on_head = as_here(c["blocks"]["on-head"], "on-head", c["homes"]["head"], c["temp_dir"], c["out"])
    r = run_block(on_head, c["homes"]["head"], timeout=180)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "conservation holds" in r.stdout


def _tamis(args: list[str], home: Path, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    e.update(HOME=str(home), **env)
    return subprocess.run([sys.executable, "-m", "tamis.pipeline.cli", *args], cwd=REPO, env=e,
                          capture_output=True, text=True, timeout=120)


def test_refused_authentication_is_one_line(recipe_cluster):
    homes = recipe_cluster["homes"]
    dash = f"http://127.0.0.1:{DASH}"
    for env, said in (({}, "sent no token (RAY_AUTH_MODE is not 'token')"),
                      ({"RAY_AUTH_TOKEN": "not-the-token"}, "refused the token from RAY_AUTH_TOKEN")):
        r = _tamis(["list", "--address", dash], homes["nokey"], **env)
        assert r.returncode == 2 and said in r.stderr and "export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = _tamis(["run", "jobs/quickstart.yaml", "--address", f"127.0.0.1:{GCS}", "--output",
                str(recipe_cluster["out"] / "refused")], homes["nokey"], RAY_AUTH_TOKEN="not-the-token",
               RAY_gcs_server_port_wait_time_s="2")  # joining the GCS: tamis leaves RAY_AUTH_MODE as it is
    assert r.returncode == 2 and "sent no token (RAY_AUTH_MODE is not 'token')" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "export RAY_AUTH_MODE=token" in r.stderr


def test_a_job_on_a_node_without_tamis_packages_says_what_to_do(recipe_cluster, tmp_path):
    """The job's driver runs `python` from the head's PATH: here a Python without polars."""
    homes = recipe_cluster["homes"]
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3")
    r = subprocess.run(["python", "-c", "import polars"], env={"PATH": str(bare)}, capture_output=True)
    if r.returncode == 0:
        pytest.skip("the system Python has polars")
    token = (homes["head"] / ".ray" / "auth_token").read_text().strip()
    submit = ("from ray.job_submission import JobSubmissionClient as C; "
              f"print(C('http://127.0.0.1:{DASH}').submit_job(entrypoint=\"PATH={bare} python -c 'import polars'\"))")
    r = subprocess.run([sys.executable, "-c", submit], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip().splitlines()[-1]
    r = _tamis(["logs", job_id, "--follow", "--address", f"http://127.0.0.1:{DASH}"], homes["head"])
    assert r.returncode == 1 and "lacks tamis's packages" in r.stderr and ".venv/bin/activate" in r.stderr


def test_ray_client_addresses_are_refused_at_once(tmp_path):
    r = _tamis(["run", "jobs/quickstart.yaml", "--address", "ray://10.9.9.9:10001", "--output", str(tmp_path / "o")],
               tmp_path)
    assert r.returncode == 2 and "tamis submit JOB.yaml --address http://10.9.9.9:8265" in r.stderr
    assert "--address auto" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # refused before the run folder is made
