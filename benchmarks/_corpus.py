"""The shared real-text corpus (`../shared/corpus`) for the benchmarks."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CORPUS = (Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus").resolve()


def corpus_table(columns: list[str] | None = None) -> pa.Table:
    """Every document of the corpus (all files concatenated, in file order)."""
    files = sorted(CORPUS.glob("*.parquet"))
    if not files:
        raise SystemExit(f"shared corpus not found at {CORPUS}")
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files], promote_options="permissive")
