"""Resume bookkeeping: which input units (files) of a stream are fully written.

Every write of a stream (segment, final output, or a quarantined batch) records an entry
`{unit-tag}-{batch-key}.json` listing the unit, the rows it covered, the files it wrote, their output
summary and the stage counters of the work behind them; entries are written by atomic rename after
the files, so a retried task replaces its entry and a resumed run keeps those of finished work. A
unit is complete when its entries cover as many rows as the unit holds; an incomplete unit is reset
(its files and entries deleted) and redone, so a crash at any point neither loses nor duplicates rows.
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

    def record(self, unit: str, key: str, rows: int, files: list[str], summary: pa.Table | None = None,
               stages: dict | None = None) -> None:
        """`stages`: {stage name: `apply.BatchStats`} for the work this entry covers."""
        self.dir.mkdir(parents=True, exist_ok=True)
        entry = {"unit": unit, "rows": rows, "files": files,
                 "summary": summary.to_pylist() if summary is not None else None,
                 "stages": {k: v.__dict__ for k, v in (stages or {}).items()}}
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

    def totals(self, chunk: int = 20_000) -> tuple:
        """(the stream's write summaries merged by group (`writers.merge_summaries`), or None if there
        are none; {stage: `apply.BatchStats`} summed). Summaries are folded `chunk` rows at a time, so
        the driver holds one row per group, not one per batch."""
        import polars as pl

        from pipeline.apply import merge_stats
        from pipeline.writers import merge_summaries

        total, rows, stages = None, [], {}
        for e in self.entries():
            rows.extend(e["summary"] or [])
            if len(rows) >= chunk:
                total = merge_summaries([t for t in (total, pl.DataFrame(rows)) if t is not None])
                rows = []
            merge_stats(e.get("stages", {}).items(), into=stages)
        if rows:
            total = merge_summaries([t for t in (total, pl.DataFrame(rows)) if t is not None])
        return total, stages


def pending_units(manifest: Manifest, expected: dict[str, int | None]) -> list[str]:
    """Units whose recorded rows do not match `expected` (None: unknown, i.e. never fully read)."""
    done = manifest.done_rows()
    todo = []
    for unit, n in expected.items():
        if n is None or done.get(unit, 0) != n:
            manifest.reset(unit)
            todo.append(unit)
    return todo
