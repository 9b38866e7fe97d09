"""`tamis run JOB.yaml [--input PATH ...] [--output DIR] [--address ADDR] [--restart] [--progress MODE]`."""
from __future__ import annotations

import os
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a job spec (embedded Ray, or --address / RAY_ADDRESS)")
    p.add_argument("job", help="job spec YAML")
    p.add_argument("--input", action="append", metavar="PATH", help="input file, glob or folder (repeatable; "
                   "replaces the job's inputs)")
    p.add_argument("--output", metavar="DIR", help="run folder (replaces the job's output)")
    p.add_argument("--address", help="Ray address to join instead of starting an embedded Ray")
    p.add_argument("--restart", action="store_true", help="discard an earlier run in the output folder")
    p.add_argument("--text-column", metavar="COL", help="input column holding the text (replaces the job's "
                   "fields.text)")
    p.add_argument("--id-column", metavar="COL", help="input column holding the document id (replaces the "
                   "job's fields.id)")
    p.add_argument("--progress", choices=("auto", "bar", "plain", "none"), default="auto",
                   help="bar: a progress bar; plain: a line every 10 s (for logs); auto (default): a bar on "
                        "a terminal, else plain lines")
    p.add_argument("--no-progress", action="store_true", help="no progress output (= --progress none)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Exit 0 only when the output is right; 1 when a stage failed as a whole, 2 on a configuration
    error, 3 when the output is incomplete or does not add up (see docs/guarantees.md)."""
    from tamis.pipeline.commands.cluster import MISSING_MODULE_HINT, _missing_module
    from tamis.pipeline.report import format_table, load_reports
    from tamis.pipeline.runner.job import RunFailed, progress_mode, run_job
    from tamis.pipeline.runner.session import check_address
    from tamis.pipeline.runner.stderr_filter import drop_harmless_ray_lines
    from tamis.pipeline.spec import load_job

    job = load_job(args.job, inputs=args.input, output=args.output, address=args.address,
                   text_column=args.text_column, id_column=args.id_column)
    check_address(job.spec.ray.address or os.environ.get("RAY_ADDRESS"))  # before the run folder is made
    try:
        mode = progress_mode("none" if args.no_progress else args.progress)  # before stderr becomes a pipe
        with drop_harmless_ray_lines():
            summary = run_job(job, restart=args.restart, progress=mode)
    except RunFailed as e:
        if (job.output / "reports" / "summary.json").is_file():
            print(format_table(*load_reports(job.output)))
        print(f"tamis: run failed: {e}\n  the run folder {job.output} is kept as it is; it is not marked "
              f"complete", file=sys.stderr)
        if _missing_module(str(e)):
            print(f"tamis: error: {MISSING_MODULE_HINT}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # a Ray task error from a node that cannot import tamis's packages
        if not _missing_module(f"{type(e).__name__}: {e}"):
            raise
        print(f"tamis: error: {MISSING_MODULE_HINT} ({str(e).strip().splitlines()[-1][:200]})", file=sys.stderr)
        return 1
    _, stages = load_reports(job.output)
    print(format_table(summary, stages))
    quarantine = job.output / "quarantine"
    held = quarantine.is_dir() and any(quarantine.iterdir())
    print(f"\ncurated:    {job.output / 'curated'}\nrejected:   {job.output / 'rejected'}\n"
          f"quarantine: {quarantine if held else 'none'}\nreports:    {job.output / 'reports'}  "
          f"(tamis report {job.output} --html report.html)")
    return 0
