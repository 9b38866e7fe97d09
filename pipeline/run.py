"""`tamis run`: load a job, prepare (or resume) its run folder, execute it on Ray, write reports."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from pipeline.spec import Job, SpecError

RUN_FILE = "run.json"
OUTPUT_DIRS = ("curated", "rejected", "quarantine", "reports", "_work")


def _canon(obj) -> object:
    return json.loads(json.dumps(obj, default=str))


def prepare_run_dir(job: Job, restart: bool = False) -> tuple[Path, dict]:
    """Create the run folder, or reuse it to resume the same job; refuse a different job's folder.

    Returns the folder and its run record (`completed` tells whether there is anything left to do).
    """
    run_dir = job.output
    marker = run_dir / RUN_FILE
    fp = _canon(job.fingerprint())
    if marker.is_file() and not restart:
        record = json.loads(marker.read_text())
        if record.get("fingerprint") != fp:
            raise SpecError(f"{run_dir} holds a run of a different job spec or inputs; pass --restart to "
                            f"replace it, or choose another --output")
        record["resumed"] = record.get("resumed", 0) + (0 if record.get("completed") else 1)
        marker.write_text(json.dumps(record, indent=1))
        return run_dir, record
    if run_dir.is_dir() and any(run_dir.iterdir()) and not marker.is_file():
        raise SpecError(f"{run_dir} exists and is not a tamis run folder; choose another --output")
    for d in OUTPUT_DIRS:
        shutil.rmtree(run_dir / d, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"job": job.source, "fingerprint": fp, "started": time.time(), "completed": False, "resumed": 0}
    marker.write_text(json.dumps(record, indent=1))
    return run_dir, record


def run_job(job: Job, restart: bool = False, progress: bool = True) -> dict:
    """Run (or resume) a job; returns the summary that `reports/summary.json` holds."""
    from pipeline.ray_runner import run_pipeline
    from pipeline.report import build_reports

    run_dir, record = prepare_run_dir(job, restart)
    if record.get("completed") and (run_dir / "reports" / "summary.json").is_file():
        return json.loads((run_dir / "reports" / "summary.json").read_text())
    t0 = time.perf_counter()
    result = run_pipeline(job, run_dir, progress=progress)
    summary = build_reports(run_dir, job, result, time.perf_counter() - t0)
    summary["resumed"] = record.get("resumed", 0)
    (run_dir / "reports" / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    for seg in (run_dir / "_work").glob("seg-*"):
        shutil.rmtree(seg, ignore_errors=True)  # intermediate data; manifests stay
    record.update(completed=True, finished=time.time())
    (run_dir / RUN_FILE).write_text(json.dumps(record, indent=1))
    return summary
