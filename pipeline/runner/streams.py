"""Stream planning: a job's stages cut at its global stages, and the reads that feed each stream.

Stream 0 reads the inputs; stream k > 0 reads the segment written before its global stage(s).
Consecutive global stages head one stream together, so the data is written and read once for all.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tamis.pipeline.readers import Quarantine, ReadStats, read_file, split_unit
from tamis.pipeline.run_folder import RunFolder
from tamis.pipeline.runner.apply import live_mask
from tamis.pipeline.runner.udf import compiled_rules
from tamis.pipeline.runner.writers import write_atomic

UNIT_COL = "_tamis_unit"  # the read unit (file, or part of a big Parquet file) a row of stream 0 came from


def plan_streams(stages) -> list[tuple[list, list]]:
    """Split the stage list at global stages: [([], scorers), ([global, ...], scorers after them), ...];
    consecutive global stages head one stream together."""
    out: list[tuple[list, list]] = [([], [])]
    for p in stages:
        if not p.is_global:
            out[-1][1].append(p)
        elif out[-1][0] and not out[-1][1]:
            out[-1][0].append(p)
        else:
            out.append(([p], []))
    return out


def later_columns(stages) -> tuple:
    """(name, type) of the columns the given stages add, in the order they add them."""
    cols: dict = {}
    for p in stages:
        for c, t in p.stage.output_columns().items():
            cols.setdefault(c, t)
    return tuple(cols.items())


def requires(planned) -> tuple[str, ...]:
    """The columns a global stage's fit reads (its declared inputs and join keys)."""
    return tuple(dict.fromkeys((*planned.stage.required_columns(),
                                *[c for c in planned.stage.join_on if c != "id"])))


def reads(planned) -> tuple[str, ...]:
    """The segment columns a global stage's transform and keep rules read."""
    rule_cols = [c for r in compiled_rules(tuple(planned.rules.items())) for c in sorted(r.columns)]
    return tuple(dict.fromkeys((*requires(planned), *rule_cols)))


def segment_live(cols: tuple[str, ...]):
    """A batch function keeping the live rows of a segment and the columns `id` + `cols`."""
    keep = ["id", *[c for c in cols if c != "id"]]

    def fn(batch: pa.Table) -> pa.Table:
        return batch.filter(live_mask(batch)).select([c for c in keep if c in batch.column_names])
    return fn


def segment_rows(parquet_file: str) -> int:
    return pq.ParquetFile(parquet_file).metadata.num_rows


def read_units_fn(run_dir: str, text_field: str, id_field: str | None, batch_rows: int, max_line_bytes: int,
                  reserved: tuple = ()):
    """The read task of stream 0: each input unit's rows (tagged with `UNIT_COL`), its quarantine
    written and its read counts saved for resume. Input columns named like a stage's output
    (`reserved`) are kept as `source_<name>`."""
    def read(batch: pa.Table):
        folder = RunFolder(run_dir)
        for unit in batch["path"].to_pylist():
            path, row_groups = split_unit(unit)
            stats = ReadStats(file=path)
            q = Quarantine(path)
            for t in read_file(Path(path), stats, q, text_field, id_field, batch_rows, max_line_bytes, row_groups,
                               reserved):
                yield t.append_column(UNIT_COL, pa.array([unit] * t.num_rows, pa.string()))
            if q.rows:
                write_atomic(q.table(), folder.quarantine_file(folder.tag(unit)))
            target = folder.read_stats_file(unit)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_text(json.dumps(stats.__dict__))
            os.replace(tmp, target)
    return read


def read_expected(folder: RunFolder, units: list[str]) -> dict[str, int | None]:
    """Rows each input unit holds, for the units a previous run read to the end (None: unknown)."""
    out = {}
    for u in units:
        st = folder.read_stats_file(u)
        out[u] = json.loads(st.read_text())["rows_ok"] if st.is_file() else None
    return out
