"""Connected components: distributed large-star / small-star on Ray Data (`connected_components_data`)
against the in-memory scipy path (`components`), and the driver's memory as edges grow.

Edges are generated inside Ray tasks (clusters of 9 documents chained by 8 edges, ids scrambled so
that id order and chain order differ), so the driver never holds them on the distributed path. For
each size: wall time and the driver's peak RSS growth (read from /proc after resetting it) for the
distributed run, then the same for collecting the edges and running scipy on the driver. (No
tracemalloc: beside Ray's native threads it can crash the interpreter.)

    .venv/bin/python benchmarks/bench_components.py --edges 250000 1000000 [--cpus 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import ray  # noqa: E402

from tamis.pipeline.runner import ray_data, session  # noqa: E402
from tamis.scorers.dedup.components import components, connected_components_data  # noqa: E402

CLUSTER = 9


def _gen(batch: pa.Table) -> pa.Table:
    i = batch["id"].to_numpy()
    c, j = i // (CLUSTER - 1), i % (CLUSTER - 1)
    a, b = c * CLUSTER + j, c * CLUSTER + j + 1

    def name(k):
        return pa.array([f"doc-{x:013d}" for x in (k * 2654435761) % (1 << 42)], pa.string())
    return pa.table({"a": name(a), "b": name(b)})


def _rss_kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def measure(fn):
    _reset_peak()
    rss0 = _rss_kb("VmRSS")
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    return out, {"wall_s": round(wall, 1), "rss_peak_growth_mb": round((_rss_kb("VmHWM") - rss0) / 1024, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edges", type=int, nargs="+", default=[250_000, 1_000_000])
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    session.init_ray(address=None, num_cpus=args.cpus, object_store_memory=4 << 30)
    ray_data.LOCAL_GROUPBY_ROWS = 0
    results = []
    for n in args.edges:
        blocks = max(2 * args.cpus, n // 250_000)
        edges = ray_data.RayData(ray.data.range(n, override_num_blocks=blocks).map_batches(
            _gen, batch_format="pyarrow")).materialize()
        stats = {}

        def distributed():
            labels = connected_components_data(edges, stats=stats).materialize()
            return labels.count()
        nodes, dist = measure(distributed)

        def scipy_path():
            t = edges.to_arrow()
            return components(t["a"], t["b"]).num_rows
        nodes2, local = measure(scipy_path)
        assert nodes == nodes2 == n // (CLUSTER - 1) * CLUSTER + (n % (CLUSTER - 1) + 1 if n % (CLUSTER - 1) else 0)
        row = {"edges": n, "nodes": nodes, "rounds": stats["rounds"], "distributed": dist, "collect_and_scipy": local}
        print(json.dumps(row), flush=True)
        results.append(row)
    out = REPO / "benchmarks" / "_out" / "bench_components.json"
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
