"""Applying a stage to one Arrow batch: score the live rows, attach columns, mark rejections.

Pure functions, no Ray: `tamis.pipeline.runner.udf` wraps them in `map_batches`. Rows already rejected by
an earlier stage pass through untouched (their new columns are null); the first failing rule of the
first stage that rejects a row sets `reject_stage` / `reject_reason`.
"""
from __future__ import annotations

import json
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from tamis.pipeline.counts import BatchStats
from tamis.pipeline.rules import Rule, first_failure
from tamis.pipeline.stage import ORIGINAL_TEXT, Stage

REJECT_COLUMNS = ("reject_stage", "reject_reason")
STATS_COLUMN = "_tamis_stats"  # per-stage counters riding with the rows to the stream's sink


class StageError(RuntimeError):
    """A stage fails as a whole (a bug or a wrong setting, not a bad row): the job stops, naming it."""


class StageOutputError(StageError):
    """A stage returned columns that do not match what it declared (names, length, type)."""


def pop_stats(batch: pa.Table) -> tuple[pa.Table, list]:
    """Split a batch into its rows and the counters carried on them (`carry_stats`)."""
    if STATS_COLUMN not in batch.column_names:
        return batch, []
    carried = pc.drop_null(batch[STATS_COLUMN]).to_pylist()
    return batch.drop_columns([STATS_COLUMN]), [e for v in carried for e in json.loads(v)]


def carry_stats(batch: pa.Table, entries: list) -> pa.Table:
    """Attach `[stage, counters]` entries to the first row of a batch.

    The counters travel with the rows through fused tasks, actor pools, re-batching and the object
    store to the stream's sink, which records them in its manifest entry: a retried task's counters
    replace those of the failed try, and a resumed run keeps those of the work already done.
    """
    values = ([json.dumps(entries) if entries else None] + [None] * batch.num_rows)[:batch.num_rows]
    return batch.append_column(STATS_COLUMN, pa.array(values, pa.string()))


def with_reject_columns(batch: pa.Table) -> pa.Table:
    for col in REJECT_COLUMNS:
        if col not in batch.column_names:
            batch = batch.append_column(col, pa.nulls(batch.num_rows, pa.string()))
    return batch


def live_mask(batch: pa.Table) -> pa.Array:
    return pc.is_null(batch["reject_stage"]).combine_chunks() if isinstance(
        batch["reject_stage"], pa.ChunkedArray) else pc.is_null(batch["reject_stage"])


def _text_bytes(batch: pa.Table) -> int:
    if batch.num_rows == 0 or "text" not in batch.column_names:  # a fit's view may not read text
        return 0
    return int(pc.sum(pc.binary_length(batch["text"])).as_py() or 0)


def _check_outputs(name: str, out: dict, declared: dict[str, pa.DataType], n: int) -> dict[str, pa.Array]:
    missing = set(declared) - set(out)
    extra = set(out) - set(declared)
    if missing or extra:
        raise StageOutputError(f"stage {name!r} returned columns {sorted(out)}, declared {sorted(declared)}")
    fixed = {}
    for col, arr in out.items():
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if not isinstance(arr, pa.Array):
            arr = pa.array(arr, type=declared[col])
        if len(arr) != n:
            raise StageOutputError(f"stage {name!r} column {col!r} has {len(arr)} rows for a batch of {n}")
        if arr.type != declared[col]:
            try:
                arr = arr.cast(declared[col])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise StageOutputError(f"stage {name!r} column {col!r} is {arr.type}, declared "
                                       f"{declared[col]}: {e}") from None
        fixed[col] = arr
    return fixed


def _scatter(arr: pa.Array, live_idx: np.ndarray, n: int) -> pa.Array:
    """Place `arr` (one value per live row) into an array of `n` rows, null elsewhere."""
    if len(live_idx) == n:
        return arr
    take = np.full(n, len(arr), dtype=np.int64)
    take[live_idx] = np.arange(len(arr))
    return pa.concat_arrays([arr, pa.nulls(1, arr.type)]).take(pa.array(take))


def set_column(batch: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    """Add a column; if it exists (e.g. `duplicate_of` from an earlier dedup) keep its non-null values."""
    if name in batch.column_names:
        old = batch[name]
        if old.type != arr.type:
            arr = arr.cast(old.type)
        merged = pc.coalesce(old, arr)
        return batch.set_column(batch.column_names.index(name), name, merged)
    return batch.append_column(name, arr)


def apply_stage(batch: pa.Table, name: str, stage: Stage, rules: list[Rule], compute) -> tuple[pa.Table, BatchStats]:
    """Run `compute(live_rows) -> columns` on the live rows of `batch`, then the keep rules."""
    wall0, cpu0 = time.perf_counter(), time.process_time()
    batch = with_reject_columns(batch)
    n = batch.num_rows
    live = live_mask(batch)
    live_idx = np.flatnonzero(live.to_numpy(zero_copy_only=False))
    sub = batch if len(live_idx) == n else batch.filter(live)
    bytes_in = _text_bytes(sub)
    declared = stage.output_columns()
    editor = stage.edits_text
    if editor:
        declared = {"text": pa.large_string(), **declared}
    out = compute(sub) if sub.num_rows else {c: pa.array([], t) for c, t in declared.items()}
    if editor and ORIGINAL_TEXT in declared:
        out = {**out, ORIGINAL_TEXT: sub["text"]}
    out = _check_outputs(name, out, declared, sub.num_rows)
    edit_stats: dict = {}
    if editor:
        batch, emptied, edit_stats = _apply_edit(batch, sub, out.pop("text"), live, live_idx, name)
    for col, arr in out.items():
        batch = set_column(batch, col, _scatter(arr, live_idx, n))
    if editor and len(live_idx):  # an edit that leaves nothing rejects the row (before the rules)
        live_idx = np.flatnonzero(live_mask(batch).to_numpy(zero_copy_only=False))
    if rules and len(live_idx):
        sub = batch.take(pa.array(live_idx)) if len(live_idx) != n else batch
        cols = sorted({c for r in rules for c in r.columns})
        # A column the inputs have but this batch lacks (a JSON key absent from all its rows) is null
        # here; a column nothing provides was refused when the job loaded (`spec.check_rule_columns`).
        for c in cols:
            if c not in sub.column_names:
                sub = sub.append_column(c, pa.nulls(sub.num_rows))
        reasons = first_failure(pl.from_arrow(sub.select(cols)) if cols else pl.DataFrame(
            {"_": [0] * sub.num_rows}), rules).to_arrow().cast(pa.string())
        if pc.any(pc.is_valid(reasons)).as_py():
            stage_col = pc.if_else(pc.is_valid(reasons), pa.scalar(name), pa.scalar(None, pa.string()))
            batch = batch.set_column(batch.column_names.index("reject_stage"), "reject_stage",
                                     pc.coalesce(batch["reject_stage"], _scatter(stage_col, live_idx, n)))
            batch = batch.set_column(batch.column_names.index("reject_reason"), "reject_reason",
                                     pc.coalesce(batch["reject_reason"], _scatter(reasons, live_idx, n)))
    live_after = batch.filter(live_mask(batch))
    rows_in = int(pc.sum(live).as_py() or 0)
    stats = BatchStats(batches=1, rows_in=rows_in, rows_out=live_after.num_rows,
                       bytes_in=bytes_in, bytes_out=_text_bytes(live_after),
                       wall_s=time.perf_counter() - wall0, cpu_s=time.process_time() - cpu0, extra=edit_stats)
    return batch, stats


EMPTIED = "emptied"  # reject reason of a row an editor left without text


def _apply_edit(batch: pa.Table, sub: pa.Table, new: pa.Array, live: pa.Array, live_idx: np.ndarray,
                name: str) -> tuple[pa.Table, pa.Array, dict]:
    """Replace `text` of the live rows by an editor's output; reject rows it emptied. Returns the
    batch, the emptied mask over the live rows, and the edit counters."""
    old = sub["text"].combine_chunks() if isinstance(sub["text"], pa.ChunkedArray) else sub["text"]
    emptied = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(new), ""), True)
    new = pc.if_else(emptied, old, new)  # an emptied row is rejected with the text it had
    n = batch.num_rows
    text = pc.if_else(live, _scatter(new, live_idx, n), batch["text"].combine_chunks()
                      if isinstance(batch["text"], pa.ChunkedArray) else batch["text"])
    batch = batch.set_column(batch.column_names.index("text"), "text", text)
    if pc.any(emptied).as_py():
        reason = pc.if_else(emptied, pa.scalar(EMPTIED), pa.scalar(None, pa.string()))
        stage_col = pc.if_else(emptied, pa.scalar(name), pa.scalar(None, pa.string()))
        for col, arr in (("reject_stage", stage_col), ("reject_reason", reason)):
            batch = batch.set_column(batch.column_names.index(col), col,
                                     pc.coalesce(batch[col], _scatter(arr, live_idx, n)))
    kept = pc.invert(emptied)
    changed = pc.and_(kept, pc.not_equal(old, new))
    removed = pc.subtract(pc.utf8_length(old.filter(kept)), pc.utf8_length(new.filter(kept)))
    stats = {"rows_edited": int(pc.sum(changed).as_py() or 0), "chars_removed": int(pc.sum(removed).as_py() or 0),
             "rows_emptied": int(pc.sum(emptied).as_py() or 0)}
    return batch, emptied, stats
