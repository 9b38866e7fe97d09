"""Issue 8 figures: peak memory when the input grows 4x, and wall time on 2 CPUs vs 1 CPU.

Input: shared-corpus documents in shards of 6,000 (1x = `--docs`, 4x = 4 * `--docs`; the default 4x is
96,000 documents, nearly the whole corpus), run through the quickstart stages.

- Memory: fresh `tamis run` subprocesses with their own embedded Ray (2 CPUs); the figure is the peak of
  the summed RSS of the driver and every Ray process it started, sampled every 0.2 s.
- Speed-up (4x, 8x and 16x input by default, `--sizes`): "N CPUs" means the whole job is pinned to N
  cores with `taskset`: the Ray cluster (`ray start --head --num-cpus N`), its workers and the driver.
  Without pinning, a "1 CPU" Ray still runs its driver, raylet and Ray Data's actors on the machine's
  other cores for free. Two ways:
  - cluster: the job joins a running cluster (`tamis run --address`), as jobs do on a real cluster;
    `--repeats` rounds, each starting a 1-CPU cluster (a warm-up job, one job per size, stop) and
    then a 2-CPU one, so that a drift in the host's load hits both alike; medians, fastest runs and
    the pairs of each round are printed, with the seconds the hypervisor stole from the pinned cores;
    the smallest and largest sizes split the wall time into a fixed part and a per-document part;
  - embedded: one cold `tamis run` that starts its own Ray (start-up included);
  - ceiling: the same scorers without Ray on the 4x shards, one process on one core vs two processes
    on two cores (half the shards each): what this machine allows for the work itself.

    .venv/bin/python benchmarks/bench_scaling.py [--docs 24000] [--repeats 2] [--sizes 4,8,16]
        [--parts memory,embedded,cluster,ceiling]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import psutil

from _corpus import corpus_table
from _measure import timed

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
DOCS_PER_SHARD = 6000
PARTS = ("memory", "embedded", "cluster", "ceiling")
PORT = 6405
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


def make_input(folder: Path, n_docs: int) -> float:
    """`n_docs` shared-corpus documents in shards of 6,000; past the corpus size (~98k) every document
    is used again with a new id (`#k` suffix), so the scorers see more real text to work on."""
    df = pl.from_arrow(corpus_table()).filter(pl.col("text").str.len_bytes() < 50_000)
    copies = [df.with_columns(pl.col("id").cast(pl.Utf8) + f"#{k}") for k in range(-(-n_docs // df.height))]
    df = pl.concat(copies).sample(n_docs, seed=3, shuffle=True)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(0, df.height, DOCS_PER_SHARD):
        df[i:i + DOCS_PER_SHARD].write_parquet(folder / f"part-{i // DOCS_PER_SHARD:03d}.parquet")
    return df["text"].str.len_bytes().sum() / 1e6


def job_file(inp: Path, out: Path, cpus: int) -> Path:
    job = out.parent / f"{out.name}.yaml"
    job.write_text(JOB.format(inp=inp, out=out, cpus=cpus))
    return job


def core_seconds(cores: int) -> tuple[float, float]:
    """(busy, stolen) seconds so far on cores 0..cores-1, from /proc/stat. Busy: every process's CPU
    time (user, nice, system, irq), which covers the Ray workers and actors that are not the driver's
    children. Stolen: time the hypervisor gave this VM's cores to other guests, the main source of
    run-to-run noise on a shared host."""
    busy = steal = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) < cores:
            v = [int(x) for x in vals]
            busy += v[0] + v[1] + v[2] + v[5] + v[6]
            steal += v[7]
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, steal / tick


def pinned(cores: int) -> list[str]:
    return ["taskset", "-c", ",".join(str(c) for c in range(cores))]


def cluster_walls(jobs: dict, warm: dict, repeats: int, tmp: Path) -> dict:
    """`repeats` rounds; in each, for 1 then 2 CPUs: start a Ray head pinned to that many cores, run
    its warm-up job `warm[cores]` (the first job on a cluster also starts Ray Data's own actors), run
    its jobs of `jobs` ({(cores, size): job file}) once, and stop the cluster. Rounds alternate the
    CPU counts so that a drift in the host's load hits both alike, and only one cluster is up at a
    time (an idle cluster's processes would run on the measured cores). Returns {(cores, size):
    [(wall seconds, CPU seconds spent on the pinned cores, seconds stolen from them)]}."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    out: dict = {key: [] for key in jobs}
    for _ in range(repeats):
        for cores in sorted({c for c, _ in jobs}):
            temp_dir = tmp / f"ray{cores}"
            subprocess.run([*pinned(cores), str(BIN / "ray"), "start", "--head", f"--port={PORT}",
                            f"--num-cpus={cores}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                            "--disable-usage-stats", "--object-store-memory=400000000", f"--temp-dir={temp_dir}"],
                           check=True, env=env, capture_output=True)
            try:
                for key in [(cores, None), *sorted(k for k in jobs if k[0] == cores)]:
                    job = warm[cores] if key[1] is None else jobs[key]
                    busy, steal = core_seconds(cores)
                    wall = timed([*pinned(cores), str(BIN / "tamis"), "run", str(job), "--address",
                                  f"127.0.0.1:{PORT}", "--no-progress", "--restart"], env)[0]
                    cpu, stolen = (b - a for a, b in zip((busy, steal), core_seconds(cores)))
                    print(f"  {cores} CPU(s), {job.stem}: {wall:.1f} s, {cpu:.1f} CPU s "
                          f"({cpu / wall / cores:.0%} busy), {stolen:.1f} s stolen", flush=True)
                    if key[1] is not None:
                        out[key].append((wall, cpu, stolen))
            finally:
                kill_tree(lambda cmd: any(str(temp_dir) in part or part.endswith(f":{PORT}") for part in cmd))
    return out


def kill_tree(match) -> None:
    """Kill the processes whose command line `match`es, and all their descendants (the dashboard
    agent and Ray client server would otherwise outlive the raylet and load later measurements)."""
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if match(proc.info["cmdline"] or []):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    procs = {p.pid: p for r in roots for p in (r, *r.children(recursive=True)) if p.pid != os.getpid()}
    for p in procs.values():
        try:
            p.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(list(procs.values()), timeout=10)


def score_files(folder: str, part: int, parts: int) -> None:
    """The scorers of the job without Ray on every `parts`-th shard from `part`; prints seconds."""
    import pyarrow.parquet as pq

    from tamis.pipeline.runner.apply import apply_stage
    from tamis.pipeline.rules import compile_rules
    from tamis.pipeline.registry import stage_class

    stages = []
    for name in ("signals", "gopher_quality", "gopher_repetition"):
        st = stage_class(name)()
        stages.append((name, st, compile_rules(st.default_rules()) if name != "signals" else []))
    t0 = time.perf_counter()
    for f in sorted(Path(folder).glob("*.parquet"))[part::parts]:
        batch = pq.read_table(f)
        for name, st, rules in stages:
            batch, _ = apply_stage(batch, name, st, rules, st.score)
    print(f"{time.perf_counter() - t0:.3f}")


def ceiling(folder: Path) -> tuple[float, float]:
    """The same scoring without Ray: one process on one core vs two processes on two cores (halves)."""
    env = {**os.environ, "POLARS_MAX_THREADS": "1", "OMP_NUM_THREADS": "1"}

    def start(core: int, part: int, parts: int):
        return subprocess.Popen(["taskset", "-c", str(core), sys.executable, __file__, "--score-part",
                                 str(folder), str(part), str(parts)], stdout=subprocess.PIPE, env=env)
    one = float(start(0, 0, 1).communicate()[0])
    procs = [start(c, c, 2) for c in (0, 1)]
    two = max(float(p.communicate()[0]) for p in procs)
    return one, two


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--score-part":
        return score_files(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=24000, help="documents in the 1x input (4x is four times)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sizes", default="4,8,16", help="cluster part: input sizes as multiples of --docs")
    ap.add_argument("--parts", default=",".join(PARTS), help="which measurements, comma-separated: " + ", ".join(PARTS))
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        sys.exit(f"unknown --parts {sorted(parts - set(PARTS))}; choose from {', '.join(PARTS)}")
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs at least 2 cores")
    tamis = str(BIN / "tamis")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mb4 = make_input(tmp / "x4", 4 * args.docs)
        if "memory" in parts:
            mb1 = make_input(tmp / "x1", args.docs)
            w1, m1 = timed([tamis, "run", str(job_file(tmp / "x1", tmp / "r1", 2)), "--no-progress"])
            w4, m4 = timed([tamis, "run", str(job_file(tmp / "x4", tmp / "r4", 2)), "--no-progress"])
            print(f"input 1x: {args.docs} docs {mb1:.1f} MB -> wall {w1:.1f} s, peak RSS {m1:.0f} MB")
            print(f"input 4x: {4 * args.docs} docs {mb4:.1f} MB -> wall {w4:.1f} s, peak RSS {m4:.0f} MB")
            print(f"peak RSS ratio 4x/1x: {m4 / m1:.2f}  (target <= 1.3)")
        if "embedded" in parts:
            cold = {c: timed([*pinned(c), tamis, "run", str(job_file(tmp / "x4", tmp / f"e{c}", c)),
                              "--no-progress"])[0] for c in (1, 2)}
            print(f"embedded, 4x input: 1 CPU {cold[1]:.1f} s, 2 CPUs {cold[2]:.1f} s -> {cold[1] / cold[2]:.2f}x")
        if "cluster" in parts:
            cluster(tmp, args.docs, args.repeats, [int(k) for k in args.sizes.split(",")])
        if "ceiling" in parts:
            one, two = ceiling(tmp / "x4")
            print(f"ceiling, the scorers without Ray on the 4x input: 1 core {one:.1f} s, 2 cores {two:.1f} s "
                  f"-> {one / two:.2f}x")


def cluster(tmp: Path, docs: int, repeats: int, factors: list[int]) -> None:
    """Speed-up on a running cluster for inputs of `factors` x `docs` documents, and the split of wall
    time into fixed + per document (from the smallest and largest input)."""
    sizes = {k: k * docs for k in factors}
    for k, n in sizes.items():
        if not (tmp / f"x{k}").is_dir():
            mb = make_input(tmp / f"x{k}", n)
            print(f"{k}x input: {n} docs {mb:.1f} MB")
    jobs = {(c, k): job_file(tmp / f"x{k}", tmp / f"c{c}x{k}", c) for c in (1, 2) for k in sizes}
    if not (tmp / "x1").is_dir():
        make_input(tmp / "x1", docs)
    warm = {c: job_file(tmp / "x1", tmp / f"w{c}", c) for c in (1, 2)}
    runs = cluster_walls(jobs, warm, repeats, tmp)
    med = {key: statistics.median(w for w, _, _ in r) for key, r in runs.items()}
    low = {key: min(w for w, _, _ in r) for key, r in runs.items()}
    cpu = {key: statistics.median(u for _, u, _ in r) for key, r in runs.items()}
    for (c, k), r in sorted(runs.items()):
        print(f"cluster, {c} CPU(s), {k}x input: " + ", ".join(f"{w:.1f}" for w, _, _ in r) +
              f" s (median {med[c, k]:.1f}; {cpu[c, k]:.1f} CPU s, {cpu[c, k] / med[c, k] / c:.0%} busy; "
              f"stolen " + ", ".join(f"{st:.1f}" for _, _, st in r) + " s)")
    for k in sizes:
        pairs = [a[0] / b[0] for a, b in zip(runs[1, k], runs[2, k])]
        print(f"cluster speed-up 2 CPUs vs 1 CPU, {k}x input: {med[1, k] / med[2, k]:.2f}x median, "
              f"{low[1, k] / low[2, k]:.2f}x fastest, pairs by round " +
              ", ".join(f"{p:.2f}" for p in pairs) + "  (target >= 1.8); "
              f"CPU seconds 2 CPUs / 1 CPU: {cpu[2, k] / cpu[1, k]:.2f}")
    a, b = min(sizes), max(sizes)
    if a != b:
        per_doc = {c: (med[c, b] - med[c, a]) / (sizes[b] - sizes[a]) for c in (1, 2)}
        fixed = {c: med[c, a] - per_doc[c] * sizes[a] for c in (1, 2)}
        print(f"wall = fixed + per-document ({a}x and {b}x): 1 CPU {fixed[1]:.1f} s + {1e3 * per_doc[1]:.3f} ms/doc, "
              f"2 CPUs {fixed[2]:.1f} s + {1e3 * per_doc[2]:.3f} ms/doc -> per-document part "
              f"{per_doc[1] / per_doc[2]:.2f}x faster")

if __name__ == "__main__":
    main()
