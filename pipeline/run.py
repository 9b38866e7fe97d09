"""`tamis run`: load a job, prepare its run folder, execute it on Ray, write reports."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from pipeline.spec import Job, SpecError

RUN_FILE = "run.json"
OUTPUT_DIRS = ("curated", "rejected", "quarantine", "reports", "_work")


def prepare_run_dir(job: Job, restart: bool = False) -> Path:
    """Create the run folder; refuse to mix a different job's outputs into it unless `restart`."""
    run_dir = job.output
    marker = run_dir / RUN_FILE
    fp = job.fingerprint()
    if marker.is_file() and not restart:
        old = json.loads(marker.read_text()).get("fingerprint")
        if old != json.loads(json.dumps(fp, default=str)):
            raise SpecError(f"{run_dir} holds a run of a different job spec or inputs; pass --restart to "
                            f"replace it, or choose another --output")
    elif run_dir.is_dir() and any(run_dir.iterdir()) and not marker.is_file() and not restart:
        raise SpecError(f"{run_dir} exists and is not a tamis run folder; choose another --output")
    for d in OUTPUT_DIRS:
        shutil.rmtree(run_dir / d, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"job": job.source, "fingerprint": fp, "started": time.time()},
                                 indent=1, default=str))
    return run_dir


def run_job(job: Job, restart: bool = False, progress: bool = True) -> dict:
    from pipeline.ray_runner import run_pipeline
    from pipeline.report import build_reports

    run_dir = prepare_run_dir(job, restart)
    t0 = time.perf_counter()
    result = run_pipeline(job, run_dir, progress=progress)
    summary = build_reports(run_dir, job, result, time.perf_counter() - t0)
    shutil.rmtree(run_dir / "_work", ignore_errors=True)
    return summary
