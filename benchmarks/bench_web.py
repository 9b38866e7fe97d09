"""WARC -> main text, whole jobs: tamis (`extract`, trafilatura and resiliparse) vs DataTrove
(`WarcReader` + `Trafilatura` + `ParquetWriter`), same WARC files, same trafilatura settings.

Input: `--copies` copies of data/sample_web/sample.warc.gz (289 records, 281 HTML pages each), one
file per copy, so that both systems have files to spread over `--cpus` workers. Settings on both
sides: `favor_precision=True, include_comments=False, include_tables=False, deduplicate=False`.
DataTrove reads only HTML responses (its reader drops the other records); tamis reads every record
and rejects the non-HTML ones with a reason. DataTrove runs as `--cpus` processes of one worker each
(`local_tasks` / `local_rank_offset`), since its `workers=2` pool hung on this machine. Each job runs as a fresh subprocess; the figures are
wall seconds and the peak of the summed RSS of the process and every process it starts (Ray's
workers, DataTrove's worker pool and its extractor sandboxes), sampled every 0.2 s.

    .venv/bin/python benchmarks/bench_web.py [--copies 4] [--cpus 2]
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
import zlib
from pathlib import Path

import polars as pl

from _measure import timed

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
SAMPLE = REPO / "data" / "sample_web" / "sample.warc.gz"
JOB = """name: bench_web
inputs: [{inp}]
output: {out}
ray: {{num_cpus: {cpus}}}
read: {{batch_rows: 200}}
stages:
  - use: extract
    params: {{extractor: {extractor}}}
    keep: default
"""
DATATROVE = """
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.readers import WarcReader
from datatrove.pipeline.writers import ParquetWriter

rank, procs = int(sys.argv[1]), int(sys.argv[2])
LocalPipelineExecutor(pipeline=[
    WarcReader({inp!r}, glob_pattern="*.warc.gz"),
    Trafilatura(favour_precision=True, include_tables=False, deduplicate=False, timeout=10),
    ParquetWriter({out!r}),
], tasks={tasks}, workers=1, local_tasks={tasks} // procs, local_rank_offset=rank * ({tasks} // procs),
   logging_dir={logs!r}).run()
"""


def copy_of_sample(i: int) -> bytes:
    """The sample with record ids made unique to copy `i` (tamis ids are the WARC-Record-IDs)."""
    data, out = SAMPLE.read_bytes(), []
    while data:
        d = zlib.decompressobj(31)
        rec = d.decompress(data)
        data = d.unused_data
        rec = rec.replace(b"<urn:uuid:", f"<urn:uuid:{i:03d}".encode(), 1)
        out.append(gzip.compress(rec, mtime=0))
    return b"".join(out)


def docs(folder: Path) -> pl.DataFrame:
    files = sorted(folder.rglob("*.parquet"))
    return pl.concat([pl.read_parquet(f, columns=["id", "text"]) for f in files])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    try:
        inp = tmp / "warc"
        inp.mkdir()
        for i in range(args.copies):
            (inp / f"part-{i:03d}.warc.gz").write_bytes(copy_of_sample(i))
        results = {}
        for name, extractor in (("tamis trafilatura", "trafilatura"), ("tamis resiliparse", "resiliparse")):
            out = tmp / name.replace(" ", "_")
            job = tmp / f"{out.name}.yaml"
            job.write_text(JOB.format(inp=inp, out=out, cpus=args.cpus, extractor=extractor))
            wall, rss = timed([str(BIN / "tamis"), "run", str(job), "--no-progress"])
            results[name] = (wall, rss, docs(out / "curated"))
        out = tmp / "datatrove"
        script = tmp / "dt.py"
        script.write_text(DATATROVE.format(inp=str(inp), out=str(out), tasks=args.copies, cpus=args.cpus,
                                           logs=str(tmp / "dt_logs")))
        # one process per CPU, each running its share of the tasks: DataTrove's own `workers=2` pool hung
        # here (its Trafilatura sandbox forks a process inside each pool worker)
        py = BIN / "python"
        wall, rss = timed(["bash", "-c", " & ".join(f"{py} {script} {r} {args.cpus}" for r in range(args.cpus))
                           + " & wait"])
        results["datatrove trafilatura"] = (wall, rss, docs(out))
        base = results["datatrove trafilatura"][0]
        print(f"{args.copies} x {SAMPLE.name} ({args.copies * 289} records), {args.cpus} CPUs")
        print(f"{'system':24s} {'wall s':>8s} {'docs/s':>8s} {'vs DT':>6s} {'peak RSS MB':>12s} {'docs':>6s}")
        for name, (wall, rss, df) in results.items():
            n = df.height
            print(f"{name:24s} {wall:8.1f} {n / wall:8.1f} {base / wall:5.2f}x {rss:12.0f} {n:6d}")
        a, b = results["tamis trafilatura"][2], results["datatrove trafilatura"][2]
        both = a.join(b, on="id", suffix="_dt")
        same = int((both["text"] == both["text_dt"]).sum())
        print(f"tamis trafilatura vs DataTrove: {same:,} of {both.height:,} documents both kept have the same text; "
              f"kept only by DataTrove: {b.height - both.height} (non-2xx HTML pages, which tamis rejects)")
        print(json.dumps({k: {"wall_s": round(v[0], 2), "peak_rss_mb": round(v[1]), "docs": v[2].height}
                          for k, v in results.items()}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
