"""A real two-node Ray cluster on 127.0.0.1 (`ray start --head` + `ray start --address`)."""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil
import pytest

from tamis.pipeline.cli import main
from tamis.pipeline.report import load_reports
from tamis.pipeline.runner.job import run_job
from tamis.pipeline.spec import load_job

REPO = Path(__file__).resolve().parents[2]
GCS_PORT, DASHBOARD_PORT = 6391, 8291
ADDRESS = f"http://127.0.0.1:{DASHBOARD_PORT}"


def _kill_cluster(temp_dir: str, gcs_port: int = GCS_PORT) -> None:
    """Stop only a test cluster's Ray processes (by its temp dir or GCS port) and their descendants
    (plain `ray stop` would also stop the test session's Ray; killing only the matches would orphan
    the dashboard agents). Also used by test_cluster_recipe.py."""
    procs = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part or str(gcs_port) == part.split(":")[-1] for part in proc.info["cmdline"] or []):
                procs.update({p.pid: p for p in (proc, *proc.children(recursive=True))})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    for proc in procs.values():
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(list(procs.values()), timeout=10)


@pytest.fixture(scope="module")
def cluster():
    # Short: Ray's socket paths under it must stay within AF_UNIX's 107 bytes (a pytest tmp path
    # such as /tmp/pytest-of-root/pytest-104/raycluster0/session_<date>_<pid>/sockets/... does not).
    temp_dir = tempfile.mkdtemp(prefix="tamis-rc-", dir="/tmp")
    ray = str(Path(sys.executable).parent / "ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # the cluster runs in tamis's env
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:  # a head that fails half-way has started processes too: the finally stops them
        subprocess.run([ray, "start", "--head", f"--port={GCS_PORT}", f"--dashboard-port={DASHBOARD_PORT}",
                        "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--temp-dir={temp_dir}",
                        "--ray-client-server-port=20201", "--min-worker-port=20300", "--max-worker-port=20499",
                        "--dashboard-agent-listen-port=20202", *common], check=True, env=env, capture_output=True)
        subprocess.run([ray, "start", f"--address=127.0.0.1:{GCS_PORT}", "--min-worker-port=20500",
                        "--max-worker-port=20699", "--dashboard-agent-listen-port=20203", *common],
                       check=True, env=env, capture_output=True)
        from ray.job_submission import JobSubmissionClient
        deadline = time.time() + 120
        while True:
            try:
                JobSubmissionClient(ADDRESS).list_jobs()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        yield temp_dir
    finally:
        _kill_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def shard_job(tmp_path_factory, corpus_dir):
    d = tmp_path_factory.mktemp("cl")
    df = pl.read_parquet(corpus_dir / "dict-jargon.parquet").head(800)
    for i in range(8):
        df[i * 100:(i + 1) * 100].write_parquet(d / f"part-{i}.parquet")
    job = REPO / "jobs" / "_test_cluster.yaml"
    job.write_text(f"name: cluster-test\ninputs: [{d}]\nread: {{batch_rows: 25}}\nstages:\n"
                   "  - use: filter\n    keep: {short: 'len(text) >= 100'}\n  - use: exact_dedup\n    keep: default\n")
    yield job
    job.unlink(missing_ok=True)


def test_submit_runs_on_both_nodes_and_matches_local(cluster, shard_job, tmp_path, monkeypatch, capsys, ray_session):
    monkeypatch.chdir(REPO)
    out = tmp_path / "cluster-run"
    assert main(["submit", str(shard_job.relative_to(REPO)), "--address", ADDRESS, "--output", str(out),
                 "--follow"]) == 0
    logs = capsys.readouterr().out
    job_id = logs.splitlines()[0].strip()
    assert "conservation" in logs
    assert main(["status", job_id, "--address", ADDRESS]) == 0
    assert "SUCCEEDED" in capsys.readouterr().out
    assert main(["list", "--address", ADDRESS]) == 0 and job_id in capsys.readouterr().out
    summary, stages = load_reports(out)
    nodes = set().union(*[s["nodes"] for s in stages])
    assert len(nodes) == 2, f"tasks ran on {nodes}"
    local = run_job(load_job(shard_job, output=str(tmp_path / "local")), progress=False)
    ids = lambda p: sorted(pl.read_parquet(p / "curated", columns=["id"])["id"].to_list())  # noqa: E731
    assert ids(out) == ids(tmp_path / "local") and summary["curated"] == local["curated"]


def test_stop_a_running_job(cluster, shard_job, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["submit", str(shard_job.relative_to(REPO)), "--address", ADDRESS, "--output",
                 str(tmp_path / "stopped")]) == 0
    job_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["stop", job_id, "--address", ADDRESS]) == 0
    state = capsys.readouterr().out
    assert "STOPPED" in state or "SUCCEEDED" in state


def test_submitted_jobs_get_one_library_thread(monkeypatch):
    from tamis.pipeline.commands.cluster import runtime_env

    monkeypatch.delenv("POLARS_MAX_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    env = runtime_env([], ship_code=True)["env_vars"]
    assert env["POLARS_MAX_THREADS"] == "1" and env["OMP_NUM_THREADS"] == "4"
    assert env["ARROW_DEFAULT_MEMORY_POOL"] == "system"


SLOW_PLUGIN = '''
import time
import pyarrow as pa
import pyarrow.compute as pc
from tamis.pipeline.stage import Scorer


class SlowLen(Scorer):
    """10 ms per row (1 s per input file): long enough to lose a node in the middle of the job."""
    name = "slow_len"
    columns = {"slow_len_chars": pa.int64()}

    def score(self, batch):
        time.sleep(0.01 * batch.num_rows)
        return {"slow_len_chars": pc.cast(pc.utf8_length(batch["text"]), pa.int64())}
'''


def _worker_node_processes() -> list:
    """The processes of the worker node the fixture started (its ports are its own), and their children."""
    procs = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if "min_worker_port=20500" in cmd or "20203" in cmd:
                procs.update({p.pid: p for p in (proc, *proc.children(recursive=True))})
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return list(procs.values())


def test_losing_a_whole_worker_node_mid_job_gives_the_same_output(cluster, shard_job, tmp_path, ray_session):
    """Kill every process of the worker node while the job runs: Ray Data retries the lost tasks on
    the head, and the curated ids equal a run that lost nothing. (Last in this file: the module's
    cluster has one node afterwards.)"""
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "nodekillplug.py").write_text(SLOW_PLUGIN)
    job = tmp_path / "job.yaml"
    job.write_text(shard_job.read_text().replace("stages:\n", "stages:\n  - class: nodekillplug:SlowLen\n"))
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PYTHONPATH": str(tmp_path / "plug")}
    run = tmp_path / "cluster-run"
    proc = subprocess.Popen([sys.executable, "-m", "tamis.pipeline.cli", "run", str(job), "--output", str(run),
                             "--address", f"127.0.0.1:{GCS_PORT}", "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((run / "_work" / "manifest").glob("stream-00/*.json")):  # the job is under way
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    victims = _worker_node_processes()
    assert any("raylet" in " ".join(p.cmdline()) for p in victims), "the worker node's raylet was not found"
    for p in victims:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    sys.path.insert(0, str(tmp_path / "plug"))
    local = run_job(load_job(job, output=str(tmp_path / "local")), progress=False)
    ids = lambda p: sorted(pl.read_parquet(p / "curated", columns=["id"])["id"].to_list())  # noqa: E731
    summary, _ = load_reports(run)
    assert summary["conservation"]["holds"] and summary["quarantined"] == 0
    assert ids(run) == ids(tmp_path / "local") and summary["curated"] == local["curated"]
