"""`RunFolder`: every path of a run folder, and the resume bookkeeping (manifests).

    run.json          the run record (job fingerprint, completed)
    curated/          kept rows                      rejected/   rows with reject_stage, reject_reason
    quarantine/       unreadable input, rows that broke a stage (file, row, error, raw)
    reports/          one JSON per stage, summary.json
    _work/read/       per input unit: rows read, ok, quarantined
    _work/manifest/   per stream: one entry per write (below)
    _work/seg-NN-*/   the live rows before a global stage, and its fitted state
    _work/progress/   per stream and worker process: rows its last stage has finished (display only)

A run folder is data. Every path written into it or read from it resolves inside it (`path`),
manifests store paths relative to it (a moved or copied folder resumes), and nothing in it is executed.

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

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tamis.pipeline.counts import merge_stats, merge_summaries
from tamis.pipeline.readers import file_tag

OUTPUTS = ("curated", "rejected", "quarantine", "reports", "_work")


class UnsafePath(ValueError):
    """A path named inside a run folder's bookkeeping that points outside the folder."""


class RunFolder:
    """The paths of one run folder. Cheap to build and to pickle (workers build their own)."""

    def __init__(self, root: Path | str):
        self.root = Path(root).absolute()

    # -- outputs -------------------------------------------------------------------------------
    @property
    def record_file(self) -> Path:
        return self.root / "run.json"

    def output_dir(self, part: str) -> Path:
        assert part in OUTPUTS, part
        return self.root / part

    def output_files(self, *parts: str) -> list[Path]:
        return sorted(p for part in parts for p in self.output_dir(part).glob("*.parquet"))

    def rows(self, part: str) -> int:
        """Rows in the Parquet files of an output folder, from their footers."""
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.output_files(part))

    def quarantine_file(self, name: str) -> Path:
        return self.root / "quarantine" / f"{name}.parquet"

    def report_file(self, name: str) -> Path:
        return self.root / "reports" / f"{name}.json"

    @property
    def summary_file(self) -> Path:
        return self.report_file("summary")

    # -- work area -----------------------------------------------------------------------------
    @property
    def work(self) -> Path:
        return self.root / "_work"

    def read_stats_file(self, unit: str) -> Path:
        return self.work / "read" / f"{file_tag(unit)}.json"

    def progress_dir(self, stream: str) -> Path:
        return self.work / "progress" / stream

    def segment(self, stream: int, first_stage: str) -> Path:
        return self.work / f"seg-{stream:02d}-{first_stage}"

    def segments(self) -> list[Path]:
        return sorted(self.work.glob("seg-*"))

    def manifest(self, stream: str) -> "Manifest":
        return Manifest(self, stream)

    @staticmethod
    def tag(unit: str) -> str:
        return file_tag(unit)

    # -- safety --------------------------------------------------------------------------------
    def rel(self, path: Path | str) -> str:
        """`path` relative to the folder (it must lie inside)."""
        return self.path(path).relative_to(self.root).as_posix()

    def path(self, name: Path | str) -> Path:
        """Resolve a path stored in the folder's bookkeeping; refuse one that leaves the folder."""
        p = Path(name)
        full = (p if p.is_absolute() else self.root / p).resolve()
        root = self.root.resolve()
        if full != root and root not in full.parents:
            raise UnsafePath(f"{self.root}: bookkeeping names {str(name)!r}, which lies outside the run "
                             f"folder; refusing to touch it (was the folder tampered with?)")
        return full


class Manifest:
    """The write entries of one stream (`stream-NN`) of a run folder."""

    def __init__(self, folder: RunFolder | Path | str, stream: str):
        self.folder = folder if isinstance(folder, RunFolder) else RunFolder(folder)
        self.dir = self.folder.work / "manifest" / stream

    def record(self, unit: str, key: str, rows: int, files: list, summary: pa.Table | None = None,
               stages: dict | None = None, text_bytes: int = 0) -> None:
        """`stages`: {stage name: `BatchStats`} for the work this entry covers; `text_bytes`: the
        size of its texts, for the progress the driver shows (`job._drain` reads new entries)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        entry = {"unit": unit, "rows": rows, "text_bytes": text_bytes, "files": [self.folder.rel(f) for f in files],
                 "summary": summary.to_pylist() if summary is not None else None,
                 "stages": {k: v.__dict__ for k, v in (stages or {}).items()}}
        path = self.dir / f"{file_tag(unit)}-{key}.json"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry))
        os.replace(tmp, path)

    def entries(self) -> Iterator[dict]:
        """Entries with `files` as absolute paths inside the folder (`UnsafePath` otherwise)."""
        if self.dir.is_dir():
            for p in sorted(self.dir.glob("*.json")):
                e = json.loads(p.read_text())
                e["files"] = [str(self.folder.path(f)) for f in e["files"]]
                yield e

    def done_rows(self) -> dict[str, int]:
        rows: dict[str, int] = defaultdict(int)
        for e in self.entries():
            rows[e["unit"]] += e["rows"]
        return dict(rows)

    def reset(self, unit: str) -> None:
        """Delete what an incomplete unit wrote, so that redoing it cannot duplicate rows."""
        if not self.dir.is_dir():
            return
        for p in self.dir.glob(f"{file_tag(unit)}-*.json"):
            for f in json.loads(p.read_text())["files"]:
                self.folder.path(f).unlink(missing_ok=True)
            p.unlink()

    def totals(self, chunk: int = 20_000) -> tuple:
        """(the stream's write summaries merged by group (`counts.merge_summaries`), or None if there
        are none; {stage: `BatchStats`} summed). Summaries are folded `chunk` rows at a time, so
        the driver holds one row per group, not one per batch."""
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

    def pending(self, expected: dict[str, int | None]) -> list[str]:
        """Units whose recorded rows do not match `expected` (None: unknown, i.e. never fully read);
        what they wrote is reset."""
        done = self.done_rows()
        todo = []
        for unit, n in expected.items():
            if n is None or done.get(unit, 0) != n:
                self.reset(unit)
                todo.append(unit)
        return todo
