"""What a run counts: per-stage counters (`BatchStats`) and per-batch output summaries.

Both are small and mergeable: workers produce them per batch, manifests store them, and the driver
sums them without holding one row per batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import polars as pl
import pyarrow as pa

from tamis.pipeline.export.tokenize import encode_ids, load_tokenizer

SUMMARY_KEYS = ("status", "reject_stage", "reject_reason", "license", "source", "domain")


@dataclass
class BatchStats:
    """Counters one call adds to a stage's report; sums across workers with `+`."""

    batches: int = 0
    rows_in: int = 0
    rows_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def __add__(self, other: "BatchStats") -> "BatchStats":
        extra = dict(self.extra)
        for k, v in other.extra.items():
            extra[k] = extra.get(k, 0) + v
        return BatchStats(self.batches + other.batches, self.rows_in + other.rows_in,
                          self.rows_out + other.rows_out, self.bytes_in + other.bytes_in,
                          self.bytes_out + other.bytes_out, self.wall_s + other.wall_s,
                          self.cpu_s + other.cpu_s, extra)


def merge_stats(entries, into: dict[str, BatchStats] | None = None) -> dict[str, BatchStats]:
    """Sum `[stage, counters dict]` pairs by stage, onto `into` if given."""
    out: dict[str, BatchStats] = {} if into is None else into
    for name, counters in entries:
        out[name] = out.get(name, BatchStats()) + BatchStats(**counters)
    return out


N_EXAMPLES = 5
WORDS = r"\S+"


@lru_cache(maxsize=2)
def _tokenizer(path: str):
    return load_tokenizer(path)


def token_counts(texts: pl.Series, tokenizer: str) -> pl.Series:
    """Tokens of `tokenizer` (a folder with `tokenizer.json`, no special tokens added) per text, null
    for a null text."""
    ids = encode_ids(_tokenizer(tokenizer), texts.fill_null("").to_list(), add_special_tokens=False)
    counts = pl.Series(texts.name, [len(x) for x in ids], pl.Int64)
    return counts.set(texts.is_null(), None) if texts.null_count() else counts


def tokens_expr(tokenizer: str | None = None) -> pl.Expr:
    """Tokens per row of the `text` column, as an expression for lazy scans: whitespace-separated
    words, or `token_counts` of the job's `tokenizer` when it names one."""
    if tokenizer is None:
        return pl.col("text").str.count_matches(WORDS).cast(pl.Int64)
    return pl.col("text").map_batches(lambda s: token_counts(s, tokenizer), return_dtype=pl.Int64)


def token_unit(tokenizer: str | None) -> str:
    """What `tokens` counts, as reports say it."""
    return f"tokens of {tokenizer}" if tokenizer else "whitespace-separated words"


def summarize(batch: pa.Table, tokenizer: str | None = None) -> pa.Table:
    """Rows, text bytes, tokens (`tokens_expr`) and the 5 smallest ids per (status, stage, reason,
    licence, source, domain): small, and mergeable across batches (`merge_summaries`)."""
    df = pl.from_arrow(batch.select([c for c in ("id", "text", *SUMMARY_KEYS[1:]) if c in batch.column_names]))
    for c in SUMMARY_KEYS[3:]:
        if c not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Utf8).alias(c))
        else:
            df = df.with_columns(pl.col(c).cast(pl.Utf8))
    df = df.with_columns(
        pl.when(pl.col("reject_stage").is_null()).then(pl.lit("curated")).otherwise(pl.lit("rejected")).alias("status"),
        pl.col("text").str.len_bytes().alias("bytes"),
        tokens_expr(tokenizer).alias("tokens"),
        pl.col("id").cast(pl.Utf8),
    )
    out = df.group_by(list(SUMMARY_KEYS)).agg(pl.len().alias("rows"), pl.col("bytes").sum(),
                                               pl.col("tokens").sum(), pl.col("id").bottom_k(N_EXAMPLES).alias("examples"))
    return out.with_columns(pl.col(["rows", "bytes", "tokens"]).cast(pl.Int64)).to_arrow()


def merge_summaries(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Sum `summarize` tables by their keys, keeping the 5 smallest example ids of each group."""
    df = pl.concat(parts, how="diagonal_relaxed").with_columns(
        pl.col(list(SUMMARY_KEYS)).cast(pl.Utf8), pl.col("examples").cast(pl.List(pl.Utf8)))
    return df.group_by(list(SUMMARY_KEYS)).agg(
        pl.col("rows").sum(), pl.col("bytes").sum(), pl.col("tokens").sum(),
        pl.col("examples").explode().drop_nulls().bottom_k(N_EXAMPLES))
