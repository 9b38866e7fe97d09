"""Whole jobs side by side with DataTrove: Gopher filtering and MinHash dedup, read -> write.

Each side is one fresh command on the same Parquet shards, 2 workers, start-up included: wall
time and the peak summed RSS of its process tree (`_measure.timed`). tamis: `tamis run` on a job
file (embedded Ray, `num_cpus: 2`). DataTrove: `LocalPipelineExecutor`s, `workers=2`, one task per
shard (MinHash: its four steps, 14 bucket tasks, one clustering task, as its example script).
Prints the ratio and whether both keep the same documents (Gopher: same ids; MinHash: counts,
as the two hash differently).

    .venv/bin/python benchmarks/bench_jobs.py [--docs 20000] [--shards 4] [--repeats 1] [--jobs gopher,minhash]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _corpus import corpus_table  # noqa: E402
from _measure import timed  # noqa: E402

TAMIS = str(REPO / ".venv" / "bin" / "tamis")

GOPHER_YAML = """inputs: [{inp}]
ray: {{num_cpus: 2}}
stages:
  - use: gopher_repetition
    keep: default
  - use: gopher_quality
    keep: default
"""
GOPHER_DT = """
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter
inp, out, tasks = sys.argv[1:4]
LocalPipelineExecutor([ParquetReader(inp, text_key="text", id_key="id"), GopherRepetitionFilter(),
                       GopherQualityFilter(), ParquetWriter(out + "/kept")],
                      tasks=int(tasks), workers=2, logging_dir=out + "/logs").run()
"""
MINHASH_YAML = """inputs: [{inp}]
ray: {{num_cpus: 2}}
stages:
  - use: minhash_dedup
    params: {{ngram: 5, bands: 14, rows: 8, verify: false}}
    keep: default
"""
MINHASH_DT = """
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
from datatrove.pipeline.dedup.minhash import MinhashConfig
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter
from datatrove.utils.hashing import HashConfig
import datatrove.utils.hashes.xxhash as dx
def xxhash64(s):  # DataTrove 0.10 passes `str`, which xxhash >= 4 rejects: encode first
    import xxhash
    return xxhash.xxh64_intdigest(s.encode() if isinstance(s, str) else s)
dx.xxhash64 = xxhash64
inp, out, tasks = sys.argv[1:4]
tasks = int(tasks)
cfg = MinhashConfig(hash_config=HashConfig(precision=64), n_grams=5, num_buckets=14, hashes_per_bucket=8)
read = lambda: ParquetReader(inp, text_key="text", id_key="id")
LocalPipelineExecutor([read(), MinhashDedupSignature(output_folder=out + "/sigs", config=cfg)],
                      tasks=tasks, workers=2, logging_dir=out + "/l1").run()
LocalPipelineExecutor([MinhashDedupBuckets(input_folder=out + "/sigs", output_folder=out + "/buckets", config=cfg)],
                      tasks=cfg.num_buckets, workers=2, logging_dir=out + "/l2").run()
LocalPipelineExecutor([MinhashDedupCluster(input_folder=out + "/buckets", output_folder=out + "/ids", config=cfg)],
                      tasks=1, logging_dir=out + "/l3").run()
LocalPipelineExecutor([read(), MinhashDedupFilter(input_folder=out + "/ids"), ParquetWriter(out + "/kept")],
                      tasks=tasks, workers=2, logging_dir=out + "/l4").run()
"""


def sample(n_docs: int, min_bytes: int, max_bytes: int, near_dups: float, seed: int = 0) -> pl.DataFrame:
    """`n_docs` corpus documents of `min_bytes` to `max_bytes`, drawn again under new ids when the
    corpus has fewer (`near_dups == 0`); else distinct documents plus a share `near_dups` of copies
    with their middle word dropped (new ids), so dedup has work to do."""
    df = pl.from_arrow(corpus_table(["id", "text"])).filter(pl.col("text").str.len_bytes().is_between(min_bytes, max_bytes))
    if near_dups == 0:
        copies = [df.with_columns(pl.col("id") + f"#{k}") for k in range(-(-n_docs // df.height))]
        return pl.concat(copies).sample(n_docs, seed=seed, shuffle=True)
    df = df.sample(min(n_docs, df.height), seed=seed, shuffle=True)
    k = int(near_dups * df.height)
    words = [t.split(" ") for t in df["text"].head(k)]
    near = pl.DataFrame({"id": df["id"].head(k) + "#near",
                         "text": [" ".join(w[:len(w) // 2] + w[len(w) // 2 + 1:]) for w in words]})
    return pl.concat([df, near]).sample(fraction=1.0, seed=seed, shuffle=True)


def run_pair(name: str, df: pl.DataFrame, shards: int, tmp: Path) -> dict:
    inp = tmp / "in"
    inp.mkdir(exist_ok=True)
    for i in range(shards):
        df[i::shards].write_parquet(inp / f"part-{i}.parquet")
    job = tmp / f"{name}.yaml"
    job.write_text((GOPHER_YAML if name == "gopher" else MINHASH_YAML).format(inp=inp))
    out = tmp / f"t-{name}"
    wall, rss = timed([TAMIS, "run", str(job), "--output", str(out), "--no-progress"])
    kept_ids = pl.read_parquet(out / "curated" / "*.parquet", columns=["id"])["id"]
    res = {"tamis": {"wall_s": round(wall, 1), "peak_rss_mb": round(rss), "kept": len(kept_ids)}}
    dt = tmp / f"d-{name}"
    wall, rss = timed([sys.executable, "-c", GOPHER_DT if name == "gopher" else MINHASH_DT, str(inp), str(dt), str(shards)])
    dt_ids = pl.read_parquet(dt / "kept" / "*.parquet", columns=["id"])["id"]
    res["datatrove"] = {"wall_s": round(wall, 1), "peak_rss_mb": round(rss), "kept": len(dt_ids)}
    if name == "gopher":
        res["same_ids"] = set(kept_ids.to_list()) == set(dt_ids.to_list())
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--min-bytes", type=int, default=1000, help="Gopher: corpus documents at least this long")
    ap.add_argument("--max-bytes", type=int, default=20_000, help="Gopher: and at most this long")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--jobs", default="gopher,minhash")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "_out" / "bench_jobs.json")
    args = ap.parse_args()
    report: dict = {}
    for name in args.jobs.split(","):
        df = (sample(args.docs, args.min_bytes, args.max_bytes, 0.0) if name == "gopher"
              else sample(args.docs, 200, 100_000, 0.1))
        mb = df["text"].str.len_bytes().sum() / 1e6
        runs = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                runs.append(run_pair(name, df, args.shards, Path(tmp)))
        t = statistics.median(r["tamis"]["wall_s"] for r in runs)
        d = statistics.median(r["datatrove"]["wall_s"] for r in runs)
        tr = max(r["tamis"]["peak_rss_mb"] for r in runs)
        dr = max(r["datatrove"]["peak_rss_mb"] for r in runs)
        report[name] = {"docs": df.height, "mb": round(mb, 1), "shards": args.shards, "runs": runs,
                        "speedup": round(d / t, 2), "rss_ratio": round(tr / dr, 2)}
        r = runs[-1]
        print(f"{name}: {df.height} docs, {mb:.1f} MB, {args.shards} shards, 2 workers each, median of {len(runs)}")
        print(f"  tamis      {t:6.1f} s  peak RSS {tr:6.0f} MB  kept {r['tamis']['kept']}")
        print(f"  DataTrove  {d:6.1f} s  peak RSS {dr:6.0f} MB  kept {r['datatrove']['kept']}")
        extra = f"  same kept ids: {r['same_ids']}" if "same_ids" in r else ""
        print(f"  speed-up {d / t:.2f}x, RSS {tr / dr:.2f}x of DataTrove's{extra}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
