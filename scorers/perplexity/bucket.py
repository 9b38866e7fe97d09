"""CCNet perplexity buckets: head / middle / tail by per-domain perplexity percentiles.

Wenzek et al. 2019 (`cc_net/perplexity.py`, `PerplexityBucket`): a document is `head` when its
perplexity is below the 30th percentile of its language's distribution, `middle` below the 60th,
`tail` otherwise. CCNet reads fixed per-language cutoffs computed offline (`cutoff.csv`); tamis
computes the cutoffs from the job's own data, per value of `by` (default `domain`; `None` for one
global cutoff pair). Each group's column goes to one worker (`Data.groupby_map`), which returns two
numbers; the driver only sees the cutoff table.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from tamis.pipeline.stage import GlobalStage, Resources, check_fitted

BUCKETS = ("head", "middle", "tail")
_ALL = "__ppl_bucket_all__"


class PplBucket(GlobalStage):
    """`ppl_bucket` (string: head / middle / tail; null when the score or the group's cutoffs are
    missing) from the `head`/`tail` percentiles of `column`, computed per `by` group."""

    name = "ppl_bucket"
    requires = ("ppl", "domain")
    columns = {"ppl_bucket": pa.string()}
    resources = Resources(cpus=1)
    default_keep = {"ppl_missing": "ppl_bucket is not None", "ppl_tail": "ppl_bucket != 'tail'"}

    def __init__(self, column: str = "ppl", by: str | None = "domain", head: float = 30.0,
                 tail: float = 60.0):
        self.column = column
        self.by = by
        self.head = head
        self.tail = tail

    def required_columns(self) -> tuple[str, ...]:
        """The columns this instance reads (`requires` holds those of the defaults)."""
        return (self.column,) + ((self.by,) if self.by else ())

    def validate(self) -> None:
        if not isinstance(self.column, str) or not self.column:
            raise ValueError("column must name a score column, e.g. 'ppl' or 'kenlm_ppl'")
        if self.by is not None and (not isinstance(self.by, str) or not self.by):
            raise ValueError("by must be a column name or null")
        if not (0 < float(self.head) < float(self.tail) < 100):
            raise ValueError(f"need 0 < head < tail < 100, got head={self.head}, tail={self.tail}")

    def _group_cutoffs(self, group: pa.Table) -> pa.Table:
        key = self.by or _ALL
        vals = pl.from_arrow(group.select([self.column]))[self.column].cast(pl.Float64)
        vals = vals.drop_nulls().drop_nans().to_numpy()
        name = group.column(key)[0].as_py() if group.num_rows else None
        if vals.size == 0:
            lo = hi = None
        else:
            lo, hi = (float(v) for v in np.percentile(vals, [self.head, self.tail]))
        return pa.table({key: pa.array([name], group.schema.field(key).type if group.num_rows else pa.string()),
                         "head_cutoff": pa.array([lo], pa.float64()),
                         "tail_cutoff": pa.array([hi], pa.float64()),
                         "n": pa.array([int(vals.size)], pa.int64())})

    def fit(self, data) -> "PplBucket":
        """Per group: the `head` and `tail` percentiles (linear interpolation) of the non-null,
        non-NaN scores. `cutoffs_` is a small table: key, head_cutoff, tail_cutoff, n."""
        if self.by:
            table = data.groupby_map([self.by], self._group_cutoffs).to_arrow()
        else:
            column = self.column
            with_key = data.map_batches(
                lambda b: pa.table({column: b.column(column),
                                    _ALL: pa.array([_ALL] * b.num_rows, pa.string())}))
            table = with_key.groupby_map([_ALL], self._group_cutoffs).to_arrow()
        self.cutoffs_ = table.filter(pc.greater(table.column("n"), 0))
        return self

    def transform(self, batch: pa.Table) -> dict[str, pa.Array]:
        check_fitted(self, "cutoffs_")
        key = self.by or _ALL
        df = pl.from_arrow(batch.select(list(self.required_columns())))
        if not self.by:
            df = df.with_columns(pl.lit(_ALL).alias(_ALL))
        cut = pl.from_arrow(self.cutoffs_).select(key, "head_cutoff", "tail_cutoff")
        if df.height and cut.height:
            cut = cut.with_columns(pl.col(key).cast(df.schema[key]))
        df = df.join(cut, on=key, how="left", nulls_equal=True, maintain_order="left")
        v = pl.col(self.column).cast(pl.Float64)
        bucket = (pl.when(v.is_null() | v.is_nan() | pl.col("head_cutoff").is_null()).then(pl.lit(None, dtype=pl.Utf8))
                  .when(v < pl.col("head_cutoff")).then(pl.lit("head"))
                  .when(v < pl.col("tail_cutoff")).then(pl.lit("middle"))
                  .otherwise(pl.lit("tail")))
        out = df.select(bucket.cast(pl.Utf8).alias("ppl_bucket"))["ppl_bucket"]
        return {"ppl_bucket": out.to_arrow().cast(pa.string())}

    def report(self) -> dict:
        check_fitted(self, "cutoffs_")
        key = self.by or _ALL
        return {"percentiles": [self.head, self.tail],
                "cutoffs": {str(r[key]) if self.by else "all": {"head": r["head_cutoff"],
                                                                "tail": r["tail_cutoff"], "n": r["n"]}
                            for r in self.cutoffs_.to_pylist()}}
