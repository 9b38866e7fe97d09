"""`tamis run JOB.yaml [--input PATH ...] [--output DIR] [--address ADDR] [--restart]`."""
from __future__ import annotations

import sys


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run a job spec (embedded Ray, or --address / RAY_ADDRESS)")
    p.add_argument("job", help="job spec YAML")
    p.add_argument("--input", action="append", metavar="PATH", help="input file, glob or folder (repeatable; "
                   "replaces the job's inputs)")
    p.add_argument("--output", metavar="DIR", help="run folder (replaces the job's output)")
    p.add_argument("--address", help="Ray address to join instead of starting an embedded Ray")
    p.add_argument("--restart", action="store_true", help="discard an earlier run in the output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from pipeline.report import format_table, load_reports
    from pipeline.run import run_job
    from pipeline.spec import load_job

    job = load_job(args.job, inputs=args.input, output=args.output, address=args.address)
    summary = run_job(job, restart=args.restart, progress=not args.no_progress)
    _, stages = load_reports(job.output)
    print(format_table(summary, stages))
    print(f"\ncurated:    {job.output / 'curated'}\nrejected:   {job.output / 'rejected'}\n"
          f"quarantine: {job.output / 'quarantine'}\nreports:    {job.output / 'reports'}  "
          f"(tamis report {job.output} --html report.html)")
    if not summary["conservation"]["holds"]:
        print(f"tamis: conservation broken: {summary['conservation']['equation']}", file=sys.stderr)
        return 1
    return 0
