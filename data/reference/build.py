"""Rebuild data/reference/ from ../shared/corpus (run from the repo root):

    .venv/bin/python data/reference/build.py

Training data for the models the shipped jobs train on first use, so that they run from any clone:
- `lm.parquet`: ~2.2M characters of literature and tech-docs for `jobs/perplexity.yaml`'s reference LM;
- `positive.parquet` / `negative.parquet`: 400 documents each (first 5,000 characters) for
  `jobs/classifier.yaml`'s fastText classifier: long-form speeches, manuals and licences against
  short fragments (fortunes, jargon and Devil's Dictionary entries).
No document of data/sample/ is here (the jobs score the sample: a model must not have seen it).
Every row keeps the corpus's `id`, `domain`, `source` and `license` columns.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[1] / ".." / "shared" / "corpus"
COLS = ["id", "text", "domain", "source", "license"]


def sample_ids() -> set[str]:
    sample = HERE.parent / "sample"
    return set(pl.read_parquet(sample / "part-0.parquet", columns=["id"])["id"]) | set(
        pl.read_ndjson(sample / "part-1.jsonl.gz")["id"])


def pick(files: list[str], n: int, seen: set[str], chars: int | None, seed: int) -> pl.DataFrame:
    df = pl.concat([pl.read_parquet(CORPUS / f, columns=COLS) for f in files], how="diagonal_relaxed")
    df = df.filter(~pl.col("id").is_in(list(seen)) & (pl.col("text").str.len_chars() > 0))
    df = df.sample(n=min(n, df.height), seed=seed, shuffle=True)
    return df.with_columns(pl.col("text").str.slice(0, chars)) if chars else df


def main() -> None:
    seen = sample_ids()
    lm = pick(["shakespeare-milton.parquet", "dict-devil.parquet", "git-doc.parquet", "postgresql-doc-15.parquet",
               "debian-manuals.parquet"], 2000, seen, 4000, seed=1)
    lm = lm.filter(pl.col("text").str.len_chars().cum_sum() <= 2_200_000)
    pos = pick(["sotu.parquet", "git-doc.parquet", "postgresql-doc-15.parquet", "licenses-copyright.parquet"],
               400, seen, 5000, seed=2)
    neg = pick(["fortunes.parquet", "dict-jargon.parquet", "dict-devil.parquet"], 400, seen, 5000, seed=3)
    for name, df in (("lm", lm), ("positive", pos), ("negative", neg)):
        df.write_parquet(HERE / f"{name}.parquet", compression="zstd", compression_level=19)
        print(f"{name}.parquet: {df.height} documents, {df['text'].str.len_chars().sum():,} characters, "
              f"licences: {sorted(df['license'].unique())}")


if __name__ == "__main__":
    main()
