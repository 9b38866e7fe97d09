"""Issue 8 figures: peak memory when the input grows 4x, and wall time on 2 CPUs vs 1 CPU.

Each run is a fresh `tamis run` subprocess (its own embedded Ray) on shared-corpus text; memory is
the peak of the summed RSS of the driver and every Ray process it started, sampled every 0.2 s.

    .venv/bin/python benchmarks/bench_scaling.py [--docs 6000]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / ".." / "shared" / "corpus"
JOB = """name: scaling
inputs: [{inp}]
output: {out}
ray: {{num_cpus: {cpus}, object_store_memory: 400000000}}
read: {{batch_rows: 500}}
stages:
  - use: signals
  - use: gopher_quality
    keep: default
  - use: gopher_repetition
    keep: default
  - use: exact_dedup
    keep: default
"""


def make_input(folder: Path, n_docs: int, n_files: int) -> float:
    frames = [pl.read_parquet(f) for f in sorted(CORPUS.glob("*.parquet"))]
    df = pl.concat(frames).filter(pl.col("text").str.len_bytes() < 50_000).sample(n_docs, seed=3, shuffle=True)
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-df.height // n_files)
    for i in range(n_files):
        df[i * per:(i + 1) * per].write_parquet(folder / f"part-{i:03d}.parquet")
    return df["text"].str.len_bytes().sum() / 1e6


def run(inp: Path, out: Path, cpus: int) -> tuple[float, float]:
    job = out.parent / f"{out.name}.yaml"
    job.write_text(JOB.format(inp=inp, out=out, cpus=cpus))
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "tamis"), "run", str(job), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            peak = max(peak, rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"run failed: {job}")
    return wall, peak / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=6000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mb1 = make_input(tmp / "x1", args.docs, 8)
        mb4 = make_input(tmp / "x4", 4 * args.docs, 32)
        w1, m1 = run(tmp / "x1", tmp / "r1", 2)
        w4, m4 = run(tmp / "x4", tmp / "r4", 2)
        w4_1cpu, _ = run(tmp / "x4", tmp / "r4c1", 1)
    print(f"input 1x: {args.docs} docs {mb1:.1f} MB -> wall {w1:.1f} s, peak RSS {m1:.0f} MB")
    print(f"input 4x: {4 * args.docs} docs {mb4:.1f} MB -> wall {w4:.1f} s, peak RSS {m4:.0f} MB")
    print(f"peak RSS ratio 4x/1x: {m4 / m1:.2f}  (target <= 1.3)")
    print(f"4x input, 1 CPU: {w4_1cpu:.1f} s; 2 CPUs: {w4:.1f} s; speed-up {w4_1cpu / w4:.2f}x (target >= 1.8)")


if __name__ == "__main__":
    main()
