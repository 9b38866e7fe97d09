"""`tamis submit | status | logs | stop | list`: jobs on a Ray cluster through the Ray Jobs API."""
from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
EXCLUDES = [".venv/**", ".git/**", "runs/**", "**/__pycache__/**", "benchmarks/_out/**", "*.parquet.tmp"]


def _address(args) -> str:
    return args.address or os.environ.get("RAY_JOBS_ADDRESS") or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS


def _client(args):
    from ray.job_submission import JobSubmissionClient
    return JobSubmissionClient(_address(args))


def add_parser(sub) -> None:
    common = {"help": f"Ray dashboard address (default $RAY_ADDRESS or {DEFAULT_ADDRESS})"}
    p = sub.add_parser("submit", help="run a job spec on a Ray cluster (Ray Jobs API)")
    p.add_argument("job", type=Path)
    p.add_argument("--address", **common)
    p.add_argument("--input", action="append", metavar="PATH", help="as for `tamis run` (paths as seen by the cluster)")
    p.add_argument("--output", metavar="DIR", help="as for `tamis run` (a path the cluster can write)")
    p.add_argument("--restart", action="store_true")
    p.add_argument("--pip", action="append", default=[], metavar="REQ",
                   help="extra pip requirement to install on the cluster (repeatable)")
    p.add_argument("--no-ship-code", action="store_true",
                   help="don't ship tamis's code (the cluster has tamis installed)")
    p.add_argument("--follow", action="store_true", help="stream the logs until the job ends")
    p.set_defaults(func=submit)
    for name, fn, helptext in (("status", status, "a submitted job's state"),
                               ("logs", logs, "a submitted job's logs"),
                               ("stop", stop, "stop a submitted job")):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("job_id")
        q.add_argument("--address", **common)
        if name == "logs":
            q.add_argument("--follow", action="store_true")
        q.set_defaults(func=fn)
    q = sub.add_parser("list", help="jobs on the cluster")
    q.add_argument("--address", **common)
    q.set_defaults(func=list_jobs)


def runtime_env(pip: list[str], ship_code: bool) -> dict:
    """Working dir = the current folder (job file, relative inputs); tamis's packages as py_modules;
    one library thread per Ray CPU (`ray_runner.THREAD_VARS`, or the values set here)."""
    import mixers
    import pipeline
    import scorers
    from pipeline.ray_runner import THREAD_VARS

    env: dict = {"working_dir": str(Path.cwd()), "excludes": EXCLUDES,
                 "env_vars": {k: os.environ.get(k, "1") for k in THREAD_VARS}}
    if ship_code:
        env["py_modules"] = [str(Path(m.__file__).parent) for m in (pipeline, scorers, mixers)]
    if pip:
        env["pip"] = list(pip)
    return env


def submit(args) -> int:
    from pipeline.spec import load_job

    load_job(args.job, inputs=args.input, output=args.output)  # fail here, not on the cluster
    try:
        rel = args.job.resolve().relative_to(Path.cwd())
    except ValueError:
        print(f"tamis: error: submit from a folder that contains the job file ({args.job}); that folder "
              f"is shipped to the cluster as the working directory", file=sys.stderr)
        return 2
    cmd = ["python", "-m", "pipeline.cli", "run", str(rel), "--no-progress"]
    for i in args.input or []:
        cmd += ["--input", i]
    if args.output:
        cmd += ["--output", args.output]
    if args.restart:
        cmd.append("--restart")
    client = _client(args)
    job_id = client.submit_job(entrypoint=shlex.join(cmd),
                               runtime_env=runtime_env(args.pip, not args.no_ship_code))
    print(job_id)
    if args.follow:
        args.job_id = job_id
        return logs(args, follow=True)
    return 0


def status(args) -> int:
    info = _client(args).get_job_info(args.job_id)
    print(f"{args.job_id}: {info.status}" + (f" ({info.message})" if info.message else ""))
    return 0


def logs(args, follow: bool | None = None) -> int:
    client = _client(args)
    if follow or getattr(args, "follow", False):
        import asyncio

        async def tail():
            async for chunk in client.tail_job_logs(args.job_id):
                print(chunk, end="", flush=True)
        asyncio.run(tail())
        state = client.get_job_status(args.job_id)
        return 0 if str(state) in ("SUCCEEDED", "JobStatus.SUCCEEDED") else 1
    print(client.get_job_logs(args.job_id), end="")
    return 0


def stop(args) -> int:
    client = _client(args)
    client.stop_job(args.job_id)
    for _ in range(60):
        if str(client.get_job_status(args.job_id)).split(".")[-1] in ("STOPPED", "SUCCEEDED", "FAILED"):
            break
        time.sleep(0.5)
    print(f"{args.job_id}: {client.get_job_status(args.job_id)}")
    return 0


def list_jobs(args) -> int:
    for info in _client(args).list_jobs():
        print(f"{info.submission_id or info.job_id}\t{info.status}\t{info.entrypoint}")
    return 0
