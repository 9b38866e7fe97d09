"""Resume bookkeeping: which input units (files) of a stream are fully written.

Every write of a stream (segment, final output, or a quarantined batch) records an entry
`{unit-tag}-{batch-key}.json` listing the unit, the rows it covered and the files it wrote; entries are
written by atomic rename after the files. A unit is complete when its entries cover as many rows as
the unit holds; an incomplete unit is reset (its files and entries deleted) and redone, so a crash at
any point neither loses nor duplicates rows.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from pipeline.readers import file_tag


class Manifest:
    def __init__(self, run_dir: Path | str, stream: str):
        self.dir = Path(run_dir) / "_work" / "manifest" / stream

    def record(self, unit: str, key: str, rows: int, files: list[str], summary: pa.Table | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        entry = {"unit": unit, "rows": rows, "files": files,
                 "summary": summary.to_pylist() if summary is not None else None}
        path = self.dir / f"{file_tag(unit)}-{key}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)

    def entries(self) -> Iterator[dict]:
        if self.dir.is_dir():
            for p in sorted(self.dir.glob("*.json")):
                yield json.loads(p.read_text())

    def done_rows(self) -> dict[str, int]:
        rows: dict[str, int] = defaultdict(int)
        for e in self.entries():
            rows[e["unit"]] += e["rows"]
        return dict(rows)

    def reset(self, unit: str) -> None:
        """Delete what an incomplete unit wrote, so that redoing it cannot duplicate rows."""
        tag = file_tag(unit)
        if not self.dir.is_dir():
            return
        for p in self.dir.glob(f"{tag}-*.json"):
            for f in json.loads(p.read_text())["files"]:
                Path(f).unlink(missing_ok=True)
            p.unlink()

    def summary(self, chunk: int = 20_000):
        """The stream's write summaries merged by group (`writers.merge_summaries`), folded `chunk`
        entries at a time so the driver holds one row per group, not one per batch; None if empty."""
        import polars as pl

        from pipeline.writers import merge_summaries

        total, rows = None, []
        for e in self.entries():
            rows.extend(e["summary"] or [])
            if len(rows) >= chunk:
                total = merge_summaries([t for t in (total, pl.DataFrame(rows)) if t is not None])
                rows = []
        if rows:
            total = merge_summaries([t for t in (total, pl.DataFrame(rows)) if t is not None])
        return total


def pending_units(manifest: Manifest, expected: dict[str, int | None]) -> list[str]:
    """Units whose recorded rows do not match `expected` (None: unknown, i.e. never fully read)."""
    done = manifest.done_rows()
    todo = []
    for unit, n in expected.items():
        if n is None or done.get(unit, 0) != n:
            manifest.reset(unit)
            todo.append(unit)
    return todo
