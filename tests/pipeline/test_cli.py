"""The `tamis` command as a user meets it: quiet runs, progress named after the user's stages, one-line
errors and meaningful exit codes for the cluster commands, help on every option."""
from __future__ import annotations

import argparse
import os
import json
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import pytest

from tamis.pipeline.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "tamis.pipeline.cli"]
RAY_NOISE = ("Token authentication is enabled", "RayDeprecationWarning", "ray_remote_args", "Progress bars disabled",
             "core_worker.cc", "Traceback")


def _options(parser: argparse.ArgumentParser, path: tuple = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


def test_every_option_of_every_command_has_help():
    missing = [f"tamis {' '.join(path)} {'/'.join(a.option_strings) or a.dest}" for path, a in _options(build_parser())
               if not (a.help or "").strip()]
    assert not missing, missing


def test_version():
    out = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"tamis {version('tamis')}"


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    """`tamis run jobs/quickstart.yaml` as a user types it (its own embedded Ray), plain progress."""
    out = tmp_path_factory.mktemp("cli") / "run"
    proc = subprocess.run([*CLI, "run", "jobs/quickstart.yaml", "--output", str(out), "--progress", "plain"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


def test_a_plain_run_prints_only_tamis_lines(quickstart):
    proc, _ = quickstart
    for noise in RAY_NOISE:
        assert noise not in proc.stderr, proc.stderr[-3000:]
    assert all(line.startswith("tamis: ") for line in proc.stderr.splitlines() if line.strip()), proc.stderr


def test_plain_progress_names_the_users_stages_and_rows(quickstart):
    proc, out = quickstart
    read = json.loads((out / "reports" / "summary.json").read_text())["rows_read"]
    lines = proc.stderr.splitlines()
    head = "tamis: signals → gopher_quality → gopher_repetition (then exact_dedup): "
    first = [x for x in lines if x.startswith(head)]
    assert first and first[-1].startswith(f"{head}{read:,}/{read:,} rows, ") and first[-1].endswith("(done)"), lines
    assert "MB" in first[-1] and "rows/s" in first[-1]
    dedup = [x for x in lines if x.startswith("tamis: exact_dedup (then write): ")]
    assert dedup and "/" in dedup[-1].split("rows")[0], lines  # its total is known: rows done/total
    assert not any("unique_ids" in x for x in lines), lines  # a stage the user never wrote


def test_summary_says_quarantine_none_when_empty(quickstart):
    proc, out = quickstart
    assert not (out / "quarantine").is_dir() or not any((out / "quarantine").iterdir())
    assert "quarantine: none" in proc.stdout and str(out / "quarantine") not in proc.stdout


def test_text_and_id_column_override_the_jobs_fields(ray_session, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"doc_id": f"k{i}", "body": f"Some words here, document number {i}."}) + "\n"
                           for i in range(5)))
    job = tmp_path / "job.yaml"
    job.write_text(f"inputs: [{src}]\noutput: {tmp_path / 'run'}\nstages:\n  - use: signals\n")
    assert main(["run", str(job), "--no-progress", "--text-column", "body", "--id-column", "doc_id"]) == 0
    summary = json.loads((tmp_path / "run" / "reports" / "summary.json").read_text())
    assert summary["rows_read"] == summary["curated"] == 5 and summary["quarantined"] == 0
    import polars as pl
    curated = pl.read_parquet(tmp_path / "run" / "curated")
    assert sorted(curated["doc_id"].to_list()) == [f"k{i}" for i in range(5)] and "body" in curated.columns
    report = json.loads(next((tmp_path / "run" / "reports").glob("*-signals.json")).read_text())
    kept = report["samples"]["kept"]  # the report reads the text and ids under the job's own names
    assert kept and all(k["id"].startswith("k") and k["snippet"].startswith("Some words") for k in kept)


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("argv", [["status", "raysubmit_x"], ["logs", "raysubmit_x"], ["stop", "raysubmit_x"],
                                  ["list"], ["submit", "jobs/quickstart.yaml"]])
def test_unreachable_cluster_is_one_line_and_exit_2(argv, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    address = _dead_address()
    assert main([*argv, "--address", address]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("tamis submit: uploading")]
    assert len(err) == 1 and address in err[0] and "RAY_ADDRESS" in err[0], err


class FakeClient:
    """The Ray Jobs client, as far as status/stop/list use it."""

    def __init__(self, state: str = "RUNNING", jobs=()):
        self.state, self.jobs = state, list(jobs)

    def get_job_info(self, job_id):
        return SimpleNamespace(status=f"JobStatus.{self.state}", message="")

    def get_job_status(self, job_id):
        return f"JobStatus.{self.state}"

    def stop_job(self, job_id):
        ended = self.state in ("SUCCEEDED", "FAILED", "STOPPED")
        self.state = "STOPPED" if not ended else self.state
        return not ended

    def list_jobs(self):
        return self.jobs


@pytest.mark.parametrize("state,code", [("SUCCEEDED", 0), ("RUNNING", 0), ("PENDING", 0), ("FAILED", 1),
                                        ("STOPPED", 1)])
def test_status_exit_code_follows_the_job(state, code, monkeypatch, capsys):
    from tamis.pipeline.commands import cluster
    monkeypatch.setattr(cluster, "_client", lambda args: FakeClient(state))
    assert main(["status", "raysubmit_1"]) == code
    assert capsys.readouterr().out.strip() == f"raysubmit_1: {state}"


def test_list_and_stop_say_what_happened(monkeypatch, capsys):
    from tamis.pipeline.commands import cluster
    monkeypatch.setattr(cluster, "_client", lambda args: FakeClient())
    assert main(["list", "--address", "http://head:8265"]) == 0
    assert capsys.readouterr().out.strip() == "no jobs on the cluster at http://head:8265"
    assert main(["stop", "raysubmit_1"]) == 0
    assert capsys.readouterr().out.strip() == "raysubmit_1: STOPPED (stopped by this command)"
    monkeypatch.setattr(cluster, "_client", lambda args: FakeClient("SUCCEEDED"))
    assert main(["stop", "raysubmit_1"]) == 0
    assert capsys.readouterr().out.strip() == "raysubmit_1: already ended (SUCCEEDED); nothing to stop"


def test_submitted_jobs_print_plain_progress(monkeypatch, tmp_path):
    """`tamis logs --follow` shows progress lines while a stage runs: submit asks for them."""
    from tamis.pipeline.commands import cluster
    seen = {}

    class Submitting(FakeClient):
        def submit_job(self, entrypoint, runtime_env):
            seen["entrypoint"] = entrypoint
            return "raysubmit_2"
    monkeypatch.setattr(cluster, "_client", lambda args: Submitting())
    monkeypatch.chdir(REPO)
    assert main(["submit", "jobs/quickstart.yaml", "--no-ship-code", "--output", str(tmp_path / "o")]) == 0
    assert "--progress plain" in seen["entrypoint"] and "--no-progress" not in seen["entrypoint"]


def test_progress_moves_during_a_stream_and_knows_its_total(ray_session, tmp_path, monkeypatch, capsys):
    """Progress comes from the stream's manifest entries as batches are written (not when the stream
    ends) and knows the rows to come: the Parquet footer at once, the JSONL file once read. (Ray Data
    gathers one read task's batches into one block, so the entries come per input unit; see
    README.md.)"""
    from tamis.pipeline.runner import job as job_mod
    monkeypatch.setattr(job_mod, "PLAIN_EVERY_S", 0.0)
    import pyarrow.parquet as pq
    docs = pq.read_table(REPO / "data" / "sample" / "part-0.parquet").slice(0, 1200)
    inputs = tmp_path / "in"
    inputs.mkdir()
    pq.write_table(docs.slice(0, 400), inputs / "a.parquet")
    for i in range(4):  # 5 read tasks on 2 CPUs: the stream writes in waves
        (inputs / f"b{i}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n"
                                                    for t in docs["text"].to_pylist()[400 + 200 * i:600 + 200 * i]))
    spec = tmp_path / "job.yaml"
    spec.write_text(f"inputs: [{inputs}]\noutput: {tmp_path / 'run'}\n"
                    "stages:\n  - use: signals\n  - use: gopher_quality\n    keep: default\n")
    assert main(["run", str(spec), "--progress", "plain"]) == 0
    head = "tamis: signals → gopher_quality (then write): "
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith(head)]
    assert lines[-1].startswith(f"{head}1,200/1,200 rows, ") and "(done)" in lines[-1], lines
    rows = [int(x.split(": ")[2].split(" rows")[0].split("/")[0].replace(",", "")) for x in lines]
    assert any(0 < r < 1200 for r in rows), lines  # a line while the stream ran, with rows written
    assert any("ETA" in x for x in lines), lines


def test_train_rater_default_threads_finish_on_a_busy_machine():
    """All-core LightGBM (`--threads 0`) did not finish in 10 minutes on a busy 2-core machine where one
    thread took 78 s: the default is one thread, and the help says why."""
    parser = build_parser()
    args = parser.parse_args(["train-rater", "--labels", "l.parquet", "--score-column", "s", "--output", "o"])
    assert args.threads == 1
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train-rater"]
    assert "78 s" in next(a for a in sub._actions if "--threads" in a.option_strings).help


SLOW_STAGE = '''
import time
import pyarrow as pa
from tamis.pipeline.stage import Resources, Scorer


class SlowBatches(Scorer):
    """0.25 s per batch of 50 rows: a slow model, as perplexity is."""
    name = "slow_batches"
    columns = {"slow_batches_n": pa.int64()}
    resources = Resources(batch_size=50)

    def score(self, batch):
        time.sleep(0.25)
        return {"slow_batches_n": pa.array([batch.num_rows] * batch.num_rows, pa.int64())}
'''


def test_progress_moves_per_batch_inside_one_input_file(ray_session, tmp_path, monkeypatch, capsys):
    """One input file is one block for Ray Data, so written rows arrive at its end; the stream's last
    stage notes the rows it has finished (per batch, at most once a second), and the progress line
    moves with them: 0 rows for minutes was the perplexity job's complaint."""
    import sys
    from tamis.pipeline.runner import job as job_mod
    monkeypatch.setattr(job_mod, "PLAIN_EVERY_S", 0.0)
    import pyarrow.parquet as pq
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "slowplug.py").write_text(SLOW_STAGE)
    sys.path.insert(0, str(tmp_path / "plug"))
    pq.write_table(pq.read_table(REPO / "data" / "sample" / "part-0.parquet").slice(0, 600), tmp_path / "one.parquet")
    spec = tmp_path / "job.yaml"
    spec.write_text(f"inputs: [{tmp_path / 'one.parquet'}]\noutput: {tmp_path / 'run'}\n"
                    "stages:\n  - class: slowplug:SlowBatches\n")
    assert main(["run", str(spec), "--progress", "plain"]) == 0
    head = "tamis: slow_batches (then write): "
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith(head)]
    rows = [int(x.split(": ")[2].split(" rows")[0].split("/")[0].replace(",", "")) for x in lines]
    assert len({r for r in rows if 0 < r < 600}) >= 2, lines  # moved at least twice within the file
    assert rows == sorted(rows) and rows[-1] == 600, lines
    mid = next(x for x, r in zip(lines, rows) if 0 < r < 600)
    assert float(mid.split(" rows, ")[1].split(" MB")[0]) > 0, mid  # MB move with the rows


ACTOR_STAGE = '''
import pyarrow as pa
from tamis.pipeline.stage import Scorer


class Loaded(Scorer):
    """A stage with setup(): Ray Data runs it as an actor pool."""
    name = "loaded"
    columns = {"loaded_len": pa.int64()}

    def setup(self):
        self.offset_ = 0

    def score(self, batch):
        return {"loaded_len": pa.array([self.offset_ + len(t) for t in batch["text"].to_pylist()], pa.int64())}
'''


def test_a_run_with_an_actor_pool_prints_only_tamis_lines(tmp_path):
    """Ray's C++ core logs an ERROR line (`core_worker.cc ... constructor arguments in the object store`)
    whenever Ray Data starts an actor pool; `tamis run` drops that line, and only that line."""
    (tmp_path / "actorplug.py").write_text(ACTOR_STAGE)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"Document number {i} has a few words."}) + "\n" for i in range(50)))
    job = tmp_path / "job.yaml"
    job.write_text(f"inputs: [{docs}]\nstages:\n  - class: actorplug:Loaded\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([*CLI, "run", str(job), "--output", str(tmp_path / "run"), "--progress", "plain"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in RAY_NOISE:
        assert noise not in proc.stderr, proc.stderr[-3000:]
    assert any(line.startswith("tamis: loaded (then write): 50/50 rows") for line in proc.stderr.splitlines())


def test_the_stderr_filter_drops_only_rays_known_line(capfd):
    from tamis.pipeline.runner.stderr_filter import drop_harmless_ray_lines
    known = (b"[2026-12-03 16:32:39,121 E 5295 5295] core_worker.cc:2465: Actor with class name: "
             b"'MapWorker(MapBatches(read)->MapBatches(StageUDF))' and ID: 'ab12' has constructor arguments in "
             b"the object store and max_restarts > 0. If the arguments in the object store go out of scope or "
             b"are lost, the actor restart will fail. See https://github.com/ray-project/ray/issues/53727\n")
    other = b"[2026-12-03 16:32:40,000 E 5295 5295] core_worker.cc:100: a real error\n"
    with drop_harmless_ray_lines():
        os.write(2, known[:50])  # a line may come in pieces
        os.write(2, known[50:] + other)
        os.write(2, b"\rbar 50%")  # a progress bar's update has no newline: it passes at once
        os.write(2, b"[no newline at the end")
    err = capfd.readouterr().err
    assert "constructor arguments" not in err
    assert "a real error" in err and "\rbar 50%" in err and err.endswith("[no newline at the end")
