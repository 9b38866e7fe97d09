"""Duplicate ids: the first occurrence (by input file, then row) keeps the id, later ones are rejected.

Joins by `id` (every global stage's decisions) need ids to be unique, so the engine inserts this stage
before the first global stage (or at the end) of every job that does not list it.
"""
from __future__ import annotations

import polars as pl
import pyarrow as pa

from tamis.pipeline.stage import GlobalStage, check_fitted

_SCHEMA = pa.schema([("id", pa.string()), ("input_file", pa.string()), ("input_row", pa.int64()),
                     ("id_first_seen", pa.string())])


def _dupes(rows: pa.Table) -> pa.Table:
    """Over whole id groups: every row after the first (by file, row) of its id, with that first's place."""
    if rows.num_rows == 0:
        return _SCHEMA.empty_table()
    df = pl.from_arrow(rows.select(["id", "input_file", "input_row"])).sort(["id", "input_file", "input_row"])
    df = df.with_columns(pl.format("{}:{}", pl.col("input_file").first().over("id"),
                                   pl.col("input_row").first().over("id")).alias("id_first_seen"),
                         pl.int_range(pl.len()).over("id").alias("_rank"))
    rest = df.filter(pl.col("_rank") > 0).drop("_rank")
    return rest.to_arrow().cast(_SCHEMA) if rest.height else _SCHEMA.empty_table()


class UniqueIds(GlobalStage):
    """Rejects every repeat of an id with `id_first_seen` = file:row of the copy that keeps it."""

    name = "unique_ids"
    requires = ("input_file", "input_row")
    columns = {"id_first_seen": pa.string()}
    default_keep = {"duplicate_id": "id_first_seen is None"}
    join_on = ("id", "input_file", "input_row")

    def fit(self, data) -> "UniqueIds":
        self.decisions_ = data.partition_map(["id"], _dupes).to_arrow()
        if self.decisions_.num_rows == 0:
            self.decisions_ = _SCHEMA.empty_table()
        self.dupes_ = self.decisions_.num_rows
        return self

    def transform(self, batch: pa.Table) -> dict[str, pa.Array]:
        check_fitted(self, "decisions_")
        n = batch.num_rows
        if "id_first_seen" not in batch.column_names:
            return {"id_first_seen": pa.nulls(n, pa.string())}
        return {"id_first_seen": batch["id_first_seen"]}

    def report(self) -> dict:
        return {"duplicate_ids": int(getattr(self, "dupes_", 0))}
