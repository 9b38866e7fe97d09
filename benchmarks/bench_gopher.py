"""Gopher quality + repetition: tamis scorers + keep rules vs DataTrove's two filters, one core each.

Same documents for both (stratified over every shared-corpus source), both signals on every
document, timed as CPU seconds of this process (POLARS_MAX_THREADS=1, DataTrove in-process, one
document at a time as its executor calls `filter`). Prints docs/s, the ratio and how often the
keep/drop decisions agree; `--giant-mb` also times tamis alone on one document of that size.

    .venv/bin/python benchmarks/bench_gopher.py --docs 5000
"""
from __future__ import annotations

import os

os.environ["POLARS_MAX_THREADS"] = "1"  # before polars is imported

import argparse  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tamis.pipeline.rules import compile_rules, first_failure  # noqa: E402
from tamis.scorers.gopher.quality import GopherQuality  # noqa: E402
from tamis.scorers.gopher.repetition import GopherRepetition  # noqa: E402

CORPUS = (REPO / ".." / "shared" / "corpus").resolve()


def load_sample(n_docs: int, max_bytes: int, seed: int = 0) -> pl.DataFrame:
    files = sorted(CORPUS.glob("*.parquet"))
    per = -(-n_docs // len(files))
    frames = []
    for f in files:
        df = pl.read_parquet(f, columns=["id", "text", "domain", "source"])
        df = df.filter(pl.col("text").str.len_bytes() <= max_bytes)
        frames.append(df.sample(min(per, df.height), seed=seed))
    out = pl.concat(frames)
    if out.height < n_docs:  # small sources: top up from the rest
        rest = pl.concat([pl.read_parquet(f, columns=["id", "text", "domain", "source"]) for f in files])
        rest = rest.filter(pl.col("text").str.len_bytes() <= max_bytes, ~pl.col("id").is_in(out["id"].implode()))
        out = pl.concat([out, rest.sample(n_docs - out.height, seed=seed)])
    return out.head(n_docs)


def run_tamis(batch: pa.Table, batch_size: int) -> tuple[float, list[bool]]:
    scorers = [GopherQuality(), GopherRepetition()]
    rules = compile_rules({k: v for s in scorers for k, v in s.default_rules().items()})
    for s in scorers:  # warm up (regex compilation), as DataTrove's spaCy is loaded before timing
        s.score(batch.slice(0, 8))
    keep: list[bool] = []
    t = time.process_time()
    for start in range(0, batch.num_rows, batch_size):
        part = batch.slice(start, batch_size)
        cols = {}
        for s in scorers:
            cols |= s.score(part)
        keep += first_failure(pl.DataFrame(cols), rules).is_null().to_list()
    return time.process_time() - t, keep


def run_datatrove(texts: list[str], ids: list[str]) -> tuple[float, list[bool]]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    flts = [GopherQualityFilter(), GopherRepetitionFilter()]
    flts[0].filter(Document(text="warm up the spaCy tokenizer", id="0"))
    keep = []
    t = time.process_time()
    for text, i in zip(texts, ids):
        doc = Document(text=text, id=i)
        keep.append(all(f.filter(doc) is True for f in flts))
    return time.process_time() - t, keep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--max-bytes", type=int, default=20_000, help="skip longer documents when sampling")
    ap.add_argument("--batch-size", type=int, default=1024, help="rows per tamis batch")
    ap.add_argument("--giant-mb", type=float, default=0, help="also time tamis on one document this big")
    args = ap.parse_args()

    df = load_sample(args.docs, args.max_bytes)
    mb = df["text"].str.len_bytes().sum() / 1e6
    print(f"{df.height} documents, {mb:.1f} MB, {df['source'].n_unique()} sources, polars threads=1")
    t_tamis, k_tamis = run_tamis(df.to_arrow(), args.batch_size)
    print(f"tamis      {t_tamis:8.2f} s CPU  {df.height / t_tamis:9.0f} docs/s  {mb / t_tamis:6.2f} MB/s")
    t_dt, k_dt = run_datatrove(df["text"].to_list(), df["id"].to_list())
    print(f"datatrove  {t_dt:8.2f} s CPU  {df.height / t_dt:9.0f} docs/s  {mb / t_dt:6.2f} MB/s")
    agree = sum(a == b for a, b in zip(k_tamis, k_dt)) / df.height
    print(f"ratio {t_dt / t_tamis:.1f}x   keep/drop agreement {agree:.4%}   kept {sum(k_tamis)}/{df.height}")
    if args.giant_mb:
        texts = pl.concat([pl.read_parquet(f, columns=["text"]) for f in sorted(CORPUS.glob("*.parquet"))])["text"]
        big, size = [], 0
        for t in texts.sample(fraction=1.0, shuffle=True, seed=1).to_list():
            if size >= args.giant_mb * 1e6:
                break
            big.append(t)
            size += len(t.encode())
        batch = pa.table({"text": pa.array(["\n\n".join(big)], pa.large_string())})
        t_big, _ = run_tamis(batch, 1)
        print(f"giant doc  {size / 1e6:.1f} MB: {t_big:.1f} s CPU")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
