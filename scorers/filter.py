"""`use: filter`: a stage that adds no column, only `keep:` rules over columns already there."""
from __future__ import annotations

import pyarrow as pa

from tamis.pipeline.stage import Scorer


class Filter(Scorer):
    """Applies the job's `keep:` rules (e.g. a licence allow-list) without computing anything."""

    name = "filter"
    requires = ()
    columns: dict = {}

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        return {}
