"""Cross-document paragraph (or line) dedup: boilerplate repeated across documents is cut out.

Each paragraph (text between blank lines, `unit: paragraph`) or line (`unit: line`) of at least
`min_chars` characters is normalised (NFKC, case folded, whitespace collapsed) and hashed to 64 bits.
`fit` counts, per hash, the documents holding it and the smallest id among them: each batch yields
partial counts (`map_batches`), which are merged by hash across the cluster (`partition_map`); only
the hashes seen in two or more documents come back to the driver, as the fitted table `repeated_`
(hash, keep_id, doc_freq). `transform` removes a repeated unit from every document but `keep_id`, or
from all of them when its document frequency exceeds `max_doc_freq` (CCNet-style boilerplate removal;
None: always keep one copy). A document left empty is rejected (`emptied`) by the runner.

Collisions: two different units share a 64-bit hash with probability 2^-64 per pair. A unit is
wrongly removed only if its hash equals that of a repeated unit: with U distinct units and R repeated
ones, about U*R / 2^64 units are hit (U = 10^10, R = 10^8: ~0.05 units in the whole corpus).
`hash_bits` (tests only) truncates the hash to check that formula at a measurable rate.
"""
from __future__ import annotations

import polars as pl
import pyarrow as pa

from tamis.pipeline.stage import GlobalStage, check_fitted
from tamis.pipeline.text.normalize import normalize_expr

UNITS = {"paragraph": "\n\n", "line": "\n"}
_REPEATED = pa.schema([("h", pa.uint64()), ("keep_id", pa.string()), ("doc_freq", pa.int64())])


def _units(df: pl.DataFrame, sep: str, min_chars: int, hash_bits: int) -> pl.DataFrame:
    """(row, unit text, hash or null) for every unit of every document, in order."""
    mask = (1 << hash_bits) - 1 if hash_bits < 64 else None
    units = (df.with_row_index("row").with_columns(pl.col("text").str.split(sep).alias("u"))
             .explode("u").with_columns(normalize_expr("u").alias("norm")))
    h = pl.col("norm").hash(seed=7)
    if mask is not None:
        h = h & pl.lit(mask, pl.UInt64)
    return units.with_columns(pl.when(pl.col("norm").str.len_chars() >= min_chars).then(h)
                              .otherwise(None).alias("h"))


def _partial_counts(sep: str, min_chars: int, hash_bits: int):
    def fn(batch: pa.Table) -> pa.Table:
        df = pl.from_arrow(batch.select(["id", "text"])).with_columns(pl.col("id").cast(pl.String))
        u = _units(df, sep, min_chars, hash_bits).filter(pl.col("h").is_not_null()).unique(["id", "h"])
        part = u.group_by("h").agg(pl.col("id").min().alias("keep_id"), pl.len().cast(pl.Int64).alias("doc_freq"))
        return part.to_arrow().cast(_REPEATED) if part.height else _REPEATED.empty_table()
    return fn


def _merge(keys: pa.Table) -> pa.Table:
    """Whole hash groups: the smallest id and summed document frequency; only repeated hashes."""
    if keys.num_rows == 0:
        return _REPEATED.empty_table()
    df = (pl.from_arrow(keys).group_by("h").agg(pl.col("keep_id").min(), pl.col("doc_freq").sum())
          .filter(pl.col("doc_freq") >= 2))
    return df.to_arrow().cast(_REPEATED) if df.height else _REPEATED.empty_table()


class ParagraphDedup(GlobalStage):
    """Removes paragraphs (or lines) repeated across documents from all but the smallest-id document."""

    name = "paragraph_dedup"
    requires = ("text",)
    columns = {"paragraph_dedup_removed": pa.int32()}
    edits_text = True

    def __init__(self, unit: str = "paragraph", min_chars: int = 20, max_doc_freq: int | None = None,
                 hash_bits: int = 64, keep_original: bool = False):
        self.unit, self.min_chars, self.max_doc_freq = unit, min_chars, max_doc_freq
        self.hash_bits, self.keep_original = hash_bits, keep_original

    def validate(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"paragraph_dedup: unit must be one of {list(UNITS)}, got {self.unit!r}")
        if not isinstance(self.min_chars, int) or self.min_chars < 1:
            raise ValueError(f"paragraph_dedup: min_chars must be an integer >= 1, got {self.min_chars!r}")
        if self.max_doc_freq is not None and (not isinstance(self.max_doc_freq, int) or self.max_doc_freq < 1):
            raise ValueError(f"paragraph_dedup: max_doc_freq must be null or an integer >= 1, got {self.max_doc_freq!r}")
        if not isinstance(self.hash_bits, int) or not 8 <= self.hash_bits <= 64:
            raise ValueError(f"paragraph_dedup: hash_bits must be an integer in [8, 64], got {self.hash_bits!r}")

    def fit(self, data) -> "ParagraphDedup":
        parts = data.map_batches(_partial_counts(UNITS[self.unit], self.min_chars, self.hash_bits))
        rep = parts.partition_map(["h"], _merge).to_arrow()
        self.repeated_ = rep.cast(_REPEATED) if rep.num_rows else _REPEATED.empty_table()
        return self

    def transform(self, batch: pa.Table) -> dict[str, pa.Array]:
        check_fitted(self, "repeated_")
        sep = UNITS[self.unit]
        df = pl.from_arrow(batch.select(["id", "text"])).with_columns(pl.col("id").cast(pl.String))
        rep = pl.from_arrow(self.repeated_)
        u = _units(df, sep, self.min_chars, self.hash_bits).join(rep, on="h", how="left", maintain_order="left")
        drop = pl.col("keep_id").is_not_null() & (pl.col("id") != pl.col("keep_id"))
        if self.max_doc_freq is not None:
            drop = drop | (pl.col("doc_freq") > self.max_doc_freq)
        u = u.with_columns(drop.fill_null(False).alias("drop"))
        agg = u.group_by("row", maintain_order=True).agg(
            pl.col("u").filter(~pl.col("drop")).str.join(sep).alias("text"),
            pl.col("drop").sum().cast(pl.Int32).alias("removed")).sort("row")
        return {"text": agg["text"].to_arrow().cast(pa.large_string()),
                "paragraph_dedup_removed": agg["removed"].to_arrow().cast(pa.int32())}

    def report(self) -> dict:
        rep = getattr(self, "repeated_", None)
        if rep is None or rep.num_rows == 0:
            return {"repeated_units": 0}
        df = pl.from_arrow(rep)
        return {"repeated_units": df.height, "max_doc_freq_seen": int(df["doc_freq"].max()),
                "expected_false_removals_per_unit": df.height / 2.0 ** self.hash_bits}
