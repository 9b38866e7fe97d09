"""Duplicate ids: the first occurrence (by input file, then row) keeps the id, later ones are rejected.

Joins by `id` (every global stage's decisions) need ids to be unique, so the engine inserts this stage
before the first global stage (or at the end) of every job that does not list it.
"""
from __future__ import annotations

import polars as pl
import pyarrow as pa

from scorers.base import GlobalStage, check_fitted

_SCHEMA = pa.schema([("id", pa.string()), ("input_file", pa.string()), ("input_row", pa.int64()),
                     ("id_first_seen", pa.string())])


def _dupes(group: pa.Table) -> pa.Table:
    if group.num_rows < 2:
        return _SCHEMA.empty_table()
    df = pl.from_arrow(group).sort(["input_file", "input_row"])
    first = f"{df['input_file'][0]}:{df['input_row'][0]}"
    rest = df[1:]
    return pa.table({"id": rest["id"].to_arrow().cast(pa.string()),
                     "input_file": rest["input_file"].to_arrow().cast(pa.string()),
                     "input_row": rest["input_row"].to_arrow().cast(pa.int64()),
                     "id_first_seen": pa.array([first] * rest.height, pa.string())}, schema=_SCHEMA)


class UniqueIds(GlobalStage):
    """Rejects every repeat of an id with `id_first_seen` = file:row of the copy that keeps it."""

    name = "unique_ids"
    requires = ("input_file", "input_row")
    columns = {"id_first_seen": pa.string()}
    default_keep = {"duplicate_id": "id_first_seen is None"}
    join_on = ("id", "input_file", "input_row")

    def fit(self, data) -> "UniqueIds":
        self.decisions_ = data.groupby_map(["id"], _dupes, min_size=2).to_arrow()
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
