"""What a run counts: per-stage counters (`BatchStats`) and per-batch output summaries.

Both are small and mergeable: workers produce them per batch, manifests store them, and the driver
sums them without holding one row per batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

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


def summarize(batch: pa.Table) -> pa.Table:
    """Rows, text bytes, whitespace tokens and the 5 smallest ids per (status, stage, reason, licence,
    source, domain): small, and mergeable across batches (`merge_summaries`)."""
    df = pl.from_arrow(batch.select([c for c in ("id", "text", *SUMMARY_KEYS[1:]) if c in batch.column_names]))
    for c in SUMMARY_KEYS[3:]:
        if c not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Utf8).alias(c))
        else:
            df = df.with_columns(pl.col(c).cast(pl.Utf8))
    df = df.with_columns(
        pl.when(pl.col("reject_stage").is_null()).then(pl.lit("curated")).otherwise(pl.lit("rejected")).alias("status"),
        pl.col("text").str.len_bytes().alias("bytes"),
        pl.col("text").str.count_matches(r"\S+").alias("tokens"),
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
