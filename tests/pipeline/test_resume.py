"""Crash safety: a killed `tamis run` resumes without loss or duplicates; failing stages quarantine."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from tamis.pipeline.runner.job import run_job
from tamis.pipeline.spec import load_job

REPO = Path(__file__).resolve().parents[2]

SLOW = '''
import os, time
import pyarrow as pa
import pyarrow.compute as pc
from tamis.pipeline.stage import Scorer


class Slow(Scorer):
    """Length in characters, slowly (so the test can kill the run half-way)."""
    name = "slow"
    columns = {"slow_len": pa.int64()}

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def score(self, batch):
        time.sleep(self.delay)
        return {"slow_len": pc.cast(pc.utf8_length(batch["text"]), pa.int64())}


class Flaky(Scorer):
    """Raises on any batch holding a document whose text contains the word in `poison`."""
    name = "flaky"
    columns = {"flaky_ok": pa.bool_()}

    def __init__(self, poison: str = "Saxony"):
        self.poison = poison

    def score(self, batch):
        if pc.any(pc.match_substring(batch["text"], self.poison)).as_py():
            raise ValueError("cannot score " + self.poison)
        return {"flaky_ok": pa.array([True] * batch.num_rows)}


class Suicidal(Scorer):
    """Kills its own worker process the first time it runs (marker file), like an OOM kill."""
    name = "suicidal"
    columns = {"suicidal_len": pa.int64()}

    def __init__(self, marker: str = ""):
        self.marker = marker

    def score(self, batch):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), 9)
        return {"suicidal_len": pc.cast(pc.utf8_length(batch["text"]), pa.int64())}
'''


@pytest.fixture(scope="module")
def shards(tmp_path_factory, corpus_dir):
    d = tmp_path_factory.mktemp("shards")
    df = pl.read_parquet(corpus_dir / "dict-devil.parquet").head(600)
    for i in range(6):
        df[i * 100:(i + 1) * 100].write_ndjson(d / f"part-{i}.jsonl")
    (d / "plug").mkdir()
    (d / "plug" / "crashy.py").write_text(SLOW)
    return d


def job_file(shards, tmp_path, stage: str, inputs: str = "", read: str = "") -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(f"inputs: [{inputs or shards}]\nread: {{batch_rows: 20{read}}}\nstages:\n{stage}\n"
                 "  - use: exact_dedup\n    keep: default\n")
    return p


def curated_ids(run: Path) -> list[str]:
    return sorted(pl.read_parquet(run / "curated", columns=["id"])["id"].to_list())


def stage_counters(run: Path) -> dict[str, tuple]:
    """Per stage report: (batches, rows in, quarantined rows)."""
    reps = [json.loads(f.read_text()) for f in sorted((run / "reports").glob("[0-9][0-9]-*.json"))]
    return {r["stage"]: (r["batches"], r["rows_in"], r["quarantined_rows"]) for r in reps}


@pytest.mark.parametrize("split", [False, True], ids=["six-files", "one-file-in-six-parts"])
def test_sigkill_then_resume_gives_identical_output(ray_session, shards, tmp_path, split):
    """Six files: killed once all are scored (in the global stage). One file in six parts: killed
    once two parts are written, so the resumed run redoes the other parts of the same file."""
    stage = f"  - class: crashy:Slow\n    params: {{delay: {1.0 if split else 0.3}}}"
    env = {**os.environ, "PYTHONPATH": f"{shards / 'plug'}:{REPO}"}
    if split:  # the same 600 documents as one Parquet file of 6 row groups, read in 6 parts
        one = tmp_path / "one.parquet"
        pl.concat([pl.read_ndjson(f) for f in sorted(shards.glob("part-*.jsonl"))]).write_parquet(one, row_group_size=100)
    job = job_file(shards, tmp_path, stage, *((str(one), ", split_bytes: 1") if split else ()))
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "tamis.pipeline.cli", "run", str(job), "--output", str(out),
                             "--no-progress"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "_work" / "manifest" / "stream-00"
    deadline = time.time() + 300
    want = 2 if split else 6
    while time.time() < deadline and len(list(manifest.glob("*.json"))) < want:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(manifest.glob("*.json")))
    assert done >= want, "the run never got going"
    assert done < 6 or not split, "the kill came after the last part"
    assert not (out / "reports" / "summary.json").exists()
    sys.path.insert(0, str(shards / "plug"))
    summary = run_job(load_job(job, output=str(out)), progress=False)
    assert summary["resumed"] == 1 and summary["conservation"]["holds"]
    clean = run_job(load_job(job, output=str(tmp_path / "clean")), progress=False)
    ids = curated_ids(out)
    assert len(ids) == len(set(ids)) and ids == curated_ids(tmp_path / "clean")
    assert summary["rows_read"] == clean["rows_read"] == 600
    assert summary["curated"] == clean["curated"] and summary["rejected"] == clean["rejected"]
    # The counters of the work the killed run finished survive in its manifests: none lost or doubled.
    assert stage_counters(out) == stage_counters(tmp_path / "clean")
    assert stage_counters(out)["slow"] == (6, 600, 0)  # a batch per unit: Ray Data joins the reads
    units = {json.loads(p.read_text())["unit"] for p in manifest.glob("*.json")}
    assert len(units) == 6 and all(("#row_groups=" in u) == split for u in units)
    # Running a finished job again changes nothing.
    again = run_job(load_job(job, output=str(out)), progress=False)
    assert again["curated"] == summary["curated"] and curated_ids(out) == ids


def test_failing_stage_quarantines_only_the_failing_rows(ray_session, shards, tmp_path):
    sys.path.insert(0, str(shards / "plug"))
    job = job_file(shards, tmp_path, "  - class: crashy:Flaky\n    params: {poison: 'politic'}")
    summary = run_job(load_job(job, output=str(tmp_path / "run")), progress=False)
    assert summary["conservation"]["holds"] and summary["quarantined"] == 29  # docs containing 'politic'
    q = pl.concat([pl.read_parquet(f) for f in (tmp_path / "run" / "quarantine").glob("*.parquet")])
    assert q["error"].str.contains("cannot score politic").all()
    assert q["raw"].cast(pl.Utf8).str.contains("politic").all()
    assert q["file"].str.ends_with(".jsonl").all() and q["row"].min() >= 1
    assert stage_counters(tmp_path / "run")["flaky"][2] == 29


def test_killed_worker_is_retried_with_identical_output(ray_session, shards, tmp_path):
    sys.path.insert(0, str(shards / "plug"))
    marker = tmp_path / "killed-once"
    job = job_file(shards, tmp_path, f"  - class: crashy:Suicidal\n    params: {{marker: '{marker}'}}")
    summary = run_job(load_job(job, output=str(tmp_path / "run")), progress=False)
    assert marker.exists() and summary["conservation"]["holds"] and summary["quarantined"] == 0
    ref = job_file(shards, tmp_path / "ref" if (tmp_path / "ref").mkdir() is None else tmp_path,
                   "  - class: crashy:Slow")
    clean = run_job(load_job(ref, output=str(tmp_path / "clean")), progress=False)
    assert curated_ids(tmp_path / "run") == curated_ids(tmp_path / "clean")
    assert summary["curated"] == clean["curated"] and summary["rejected"] == clean["rejected"]
    # The killed task's retry is counted once.
    assert stage_counters(tmp_path / "run")["suicidal"] == stage_counters(tmp_path / "clean")["slow"]
