"""Which copy a dedup stage keeps: `lowest_id`, `longest`, or `max:<column>` (ties -> lowest id)."""
from __future__ import annotations

import polars as pl
import pyarrow as pa

KEEP_HELP = "keep must be 'lowest_id', 'longest' or 'max:<score column>'"


def check_keep(keep: str) -> None:
    if keep in ("lowest_id", "longest") or (isinstance(keep, str) and keep.startswith("max:") and len(keep) > 4):
        return
    raise ValueError(f"{KEEP_HELP}, got {keep!r}")


def keep_requires(keep: str) -> tuple[str, ...]:
    """Columns the rule reads besides `id`."""
    if keep == "longest":
        return ("text",)
    if keep.startswith("max:"):
        return (keep[4:],)
    return ()


def priority(batch: pa.Table, keep: str) -> pa.Array:
    """A float64 per row; within a duplicate group the row with the smallest (priority, id) is kept."""
    check_keep(keep)
    n = batch.num_rows
    if keep == "lowest_id":
        return pa.array([0.0] * n, pa.float64())
    df = pl.from_arrow(batch.select(list(keep_requires(keep))))
    if keep == "longest":
        expr = -pl.col("text").str.len_bytes().cast(pl.Float64)
    else:
        expr = (-pl.col(keep[4:]).cast(pl.Float64)).fill_null(float("inf")).fill_nan(float("inf"))
    return df.select(expr.alias("p"))["p"].to_arrow()
