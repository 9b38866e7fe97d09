"""A Parquet cache of judge answers that survives a killed run.

`CACHE.parquet` holds compacted rows; while a run is going, each flush writes a new part file to
`CACHE.parquet.parts/` (written to a temporary name, then renamed, so a kill never leaves half a
file). Loading reads both and keeps the latest row per key (id, dimension, prompt_version, model);
`compact()` merges the parts into the main file, again through an atomic rename. One run per cache
at a time.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

KEY = ("id", "dimension", "prompt_version", "model")
FINAL_STATUSES = ("ok", "unparsable")
SCHEMA = pa.schema([("id", pa.string()), ("dimension", pa.string()), ("prompt_version", pa.string()),
                    ("model", pa.string()), ("status", pa.string()), ("score", pa.float64()),
                    ("answer", pa.large_string()), ("error", pa.string()), ("attempts", pa.int64()),
                    ("latency_s", pa.float64()), ("finished_at", pa.float64())])


class LabelCache:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.parts = self.path.with_name(self.path.name + ".parts")

    def _files(self) -> list[Path]:
        files = [self.path] if self.path.is_file() else []
        if self.parts.is_dir():
            files += sorted(p for p in self.parts.glob("*.parquet"))
        return files

    def load(self) -> pa.Table:
        """All cached rows, latest answer per key."""
        tables = [pq.read_table(f).cast(SCHEMA) for f in self._files()]
        if not tables:
            return SCHEMA.empty_table()
        df = pl.from_arrow(pa.concat_tables(tables))
        df = df.sort("finished_at").unique(subset=list(KEY), keep="last", maintain_order=True)
        return df.to_arrow().cast(SCHEMA)

    def finished_keys(self, model: str) -> set[tuple[str, str, str]]:
        """(id, dimension, prompt_version) whose answer for `model` is final (ok or unparsable)."""
        t = pl.from_arrow(self.load()).filter(pl.col("model") == model,
                                              pl.col("status").is_in(list(FINAL_STATUSES)))
        return set(zip(t["id"].to_list(), t["dimension"].to_list(), t["prompt_version"].to_list()))

    def append(self, rows: list[dict]) -> None:
        self.parts.mkdir(parents=True, exist_ok=True)
        name = f"{len(list(self.parts.glob('*.parquet'))):06d}-{uuid.uuid4().hex[:8]}.parquet"
        _atomic_write(pa.Table.from_pylist(rows, schema=SCHEMA), self.parts / name)

    def compact(self) -> None:
        if not self.parts.is_dir():
            return
        parts = sorted(self.parts.glob("*.parquet"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.load(), self.path)
        for p in parts:
            p.unlink()
        for tmp in self.parts.glob(".*"):
            tmp.unlink()
        self.parts.rmdir()


def _atomic_write(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
