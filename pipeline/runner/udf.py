"""The batch UDF: one stage applied to one batch on a Ray worker.

`StageUDF` scores a batch (`mode="score"`) or joins a global stage's decisions and transforms it
(`mode="transform"`), applies the stage's keep rules (`apply.apply_stage`), carries the stage's
counters with the rows, and isolates rows that break a stage by bisection (quarantine/).
"""
from __future__ import annotations

import json
import os
import sys
import time
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import ActorPoolStrategy

from tamis.pipeline.readers import QUARANTINE_SCHEMA
from tamis.pipeline.rules import compile_rules
from tamis.pipeline.run_folder import RunFolder
from tamis.pipeline.counts import BatchStats
from tamis.pipeline.runner.apply import StageError, apply_stage, carry_stats, pop_stats
from tamis.pipeline.runner.session import cluster_cpus
from tamis.pipeline.runner.writers import batch_key, write_atomic
from tamis.pipeline.stage import join_decisions


@lru_cache(maxsize=64)
def compiled_rules(items: tuple) -> list:
    return compile_rules(dict(items))


class TooManyFailures(StageError):
    """A stage failed on more rows of a batch than the job allows (`max_quarantine_share`)."""


_DECISIONS: dict[str, pa.Table] = {}  # per worker: the decisions of the last few global stages
_DECISIONS_KEPT = 4


def _decisions(ref) -> pa.Table:
    """The decisions table behind an object ref, fetched once per worker process."""
    key = ref.hex()
    if key not in _DECISIONS:
        while len(_DECISIONS) >= _DECISIONS_KEPT:
            _DECISIONS.pop(next(iter(_DECISIONS)))
        _DECISIONS[key] = ray.get(ref)
    return _DECISIONS[key]


MIN_BATCH_FOR_SHARE = 20  # below this many rows a batch's failure share says little (checked at the end)
BATCH_SHARE = 0.5  # more than half of such a batch failing stops the job at once (bad rows cluster)


class StageUDF:
    """Runs one stage on batches; used as a Ray actor (stateful) or called in tasks.

    A stage that breaks its contract (`apply.StageError`: wrong columns, length or type) stops the
    job at once. Any other exception from the stage's own code is retried in halves down to single
    rows, and only rows that fail alone go to quarantine/ with the error (recorded in the stream's
    manifest), so one bad document costs one row, not a batch. If more than half (or `ctx["max_share"]`
    if larger) of a batch of at least `MIN_BATCH_FOR_SHARE` rows fails, that is no bad data but a
    broken stage or setting: the job stops at once with the first error (`TooManyFailures`). The
    run-wide share (`max_quarantine_share`) is checked when the streams end (`job.outcome_problems`). Worker crashes are Ray's
    retries' business. With `count`, the stage's counters ride on the output
    (`apply.carry_stats`); a fit's view (`count=False`) carries none and quarantines nothing (its
    stream does).
    """

    def __init__(self, name: str, stage, rules: dict, count: bool, mode: str, decisions_ref=None,
                 ctx: dict | None = None):
        self.name, self.stage, self.rules, self.count, self.mode = name, stage, tuple(rules.items()), count, mode
        self.decisions_ref = decisions_ref
        self.ctx = ctx or {}
        self._ready = False

    def _setup(self):
        if not self._ready:
            if self.mode == "score":
                self.stage.setup()
            threads = self.ctx.get("threads", 1)
            if threads > 1 and "torch" in sys.modules:  # workers start with one thread (init_ray)
                sys.modules["torch"].set_num_threads(threads)
            self._ready = True

    def _transform(self, live: pa.Table) -> dict:
        if self.decisions_ref is not None:
            live = join_decisions(live, _decisions(self.decisions_ref), self.stage.join_on)
        return self.stage.transform(live)

    def _run(self, batch: pa.Table) -> tuple[pa.Table, BatchStats]:
        compute = self.stage.score if self.mode == "score" else self._transform
        return apply_stage(batch, self.name, self.stage, compiled_rules(self.rules), compute)

    def __call__(self, batch: pa.Table) -> pa.Table:
        self._setup()  # a model that cannot load fails the job at once, it is not a data problem
        batch, carried = pop_stats(batch)
        size = self.ctx.get("batch_size") or _rows_for_bytes(batch, SLICE_TEXT_BYTES)
        if batch.num_rows <= size:
            out, st = self._one(batch)
            self._progress(batch)
        else:  # the stage's batch size, sliced here: Ray's batcher would join blocks of other files
            parts = []
            for i in range(0, batch.num_rows, size):
                parts.append(self._one(batch.slice(i, size)))
                self._progress(batch.slice(i, size))
            out = pa.concat_tables([p for p, _ in parts], promote_options="permissive")
            st = sum((s for _, s in parts), BatchStats())
        if not self.count:
            return out
        st.extra[f"node:{ray.get_runtime_context().get_node_id()[:12]}"] = 1
        return carry_stats(out, [*carried, [self.name, st.__dict__]])

    def _progress(self, done: pa.Table) -> None:
        """With `ctx["progress_dir"]` (the last stage of a stream), note the rows this worker process
        has finished, at most every PROGRESS_EVERY_S, for the driver's progress line: Ray Data hands
        a task's output on as one block, so the written rows alone move once per read unit."""
        folder = self.ctx.get("progress_dir")
        if not folder or not self.count:
            return
        rows, size = getattr(self, "_done", (0, 0))
        self._done = (rows + done.num_rows, size + _text_bytes(done))
        now = time.monotonic()
        if now - getattr(self, "_noted", 0.0) < PROGRESS_EVERY_S:
            return
        self._noted = now
        note_progress(folder, self.name, *self._done)

    def _one(self, batch: pa.Table) -> tuple[pa.Table, BatchStats]:
        try:
            return self._run(batch)
        except StageError:
            raise
        except Exception:  # noqa: BLE001 - a stage bug must not lose the batch: isolate the bad rows
            failed: list = []
            out, st = self._bisect(batch, failed)
            self._check_share(batch.num_rows, failed)
            if self.count:
                for row, error in failed:
                    quarantine_batch(row, error, self.ctx,
                                     {self.name: BatchStats(extra={"quarantined_rows": row.num_rows})})
            return out, st

    def _bisect(self, batch: pa.Table, failed: list) -> tuple[pa.Table, BatchStats]:
        """Retry a failed batch in halves; rows that still fail on their own are appended to `failed`
        as (row, error) and left out."""
        try:
            return self._run(batch)
        except StageError:
            raise
        except Exception as e:  # noqa: BLE001
            if batch.num_rows > 1:
                half = batch.num_rows // 2
                (a, sa), (b, sb) = self._bisect(batch.slice(0, half), failed), self._bisect(batch.slice(half), failed)
                parts = [p for p in (a, b) if p.num_rows] or [a]
                return pa.concat_tables(parts, promote_options="permissive"), sa + sb
            failed.append((batch, f"stage {self.name!r} failed: {type(e).__name__}: {e}"))
            return batch.slice(0, 0), BatchStats()

    def _check_share(self, rows: int, failed: list) -> None:
        share = max(BATCH_SHARE, self.ctx.get("max_share", 1.0))
        if rows >= MIN_BATCH_FOR_SHARE and len(failed) > share * rows:
            raise TooManyFailures(f"stage {self.name!r} failed on {len(failed)} of {rows} rows of a batch: "
                                  f"a broken stage or setting, not bad data. First error: {failed[0][1]}")


PROGRESS_EVERY_S = 1.0
# A stage without its own batch size sees slices of about this much text: Ray Data hands a whole read
# unit (an input file, or 32 MiB of a big Parquet file) to a task as one block.
SLICE_TEXT_BYTES = 2 << 20


def _text_bytes(batch: pa.Table) -> int:
    return int(pc.sum(pc.binary_length(batch["text"])).as_py() or 0) if "text" in batch.column_names else 0


def _rows_for_bytes(batch: pa.Table, target: int) -> int:
    if batch.num_rows == 0 or "text" not in batch.column_names:
        return max(batch.num_rows, 1)
    size = _text_bytes(batch)
    return max(1, batch.num_rows if size <= target else batch.num_rows * target // size)


def note_progress(folder: str, stage: str, rows: int, size: int) -> None:
    """Write `rows` and their text bytes `size` (what this process finished of `stage`) to its
    progress file, atomically."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{stage}-{os.getpid()}-{ray.get_runtime_context().get_node_id()[:12]}")
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{rows} {size}")
    os.replace(tmp, path)


def progress_rows(folder: str | os.PathLike) -> tuple[int, int]:
    """Rows and text bytes the workers have noted in `folder` (display figures: a retried task
    counts twice)."""
    rows = size = 0
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0, 0
    for n in names:
        if not n.endswith(".tmp"):
            try:
                with open(os.path.join(folder, n)) as f:
                    r, b = f.read().split()
                rows, size = rows + int(r), size + int(b)
            except (OSError, ValueError):  # being replaced: counted on the next look
                pass
    return rows, size


def quarantine_batch(batch: pa.Table, error: str, ctx: dict, stages: dict | None = None) -> None:
    """Write a failing batch to quarantine/ (raw row as JSON) and record it, with the stage counters
    `stages`, for resume."""
    unit_col = ctx["unit_col"]
    folder = RunFolder(ctx["run_dir"])
    for unit in pc.unique(batch[unit_col]).to_pylist():
        part = batch.filter(pc.equal(batch[unit_col], unit))
        rows = part["input_row"].to_pylist() if "input_row" in part.column_names else [None] * part.num_rows
        files = part["input_file"].to_pylist() if "input_file" in part.column_names else [unit] * part.num_rows
        raw = [json.dumps(r, default=str).encode() for r in part.drop_columns([unit_col]).to_pylist()]
        table = pa.table({"file": files, "row": rows, "error": [error] * part.num_rows, "raw": raw},
                         schema=QUARANTINE_SCHEMA)
        key = batch_key(part)
        path = folder.quarantine_file(f"stage-{folder.tag(unit)}-{key}")
        write_atomic(table, path)
        folder.manifest(ctx["stream"]).record(unit, key, part.num_rows, [path], stages=stages)
        stages = None  # counted once, with the first unit


def map_stage(ds, planned, count: bool, mode: str, decisions_ref=None, ctx: dict | None = None):
    """`ds.map_batches` of one planned stage: an actor pool for a stage with `setup()`, tasks otherwise."""
    r = planned.resources
    ctx = {**(ctx or {}), "threads": max(1, int(r.cpus)), "batch_size": r.batch_size}
    args = (planned.name, planned.stage, planned.rules, count, mode, decisions_ref, ctx)
    kwargs: dict[str, Any] = {"batch_format": "pyarrow", "num_cpus": r.cpus, "zero_copy_batch": True}
    if r.gpus:
        kwargs["num_gpus"] = r.gpus
    if r.batch_size:  # whole blocks from Ray (one input file's rows each), cut to size in StageUDF
        kwargs["batch_size"] = None
    if mode == "score" and type(planned.stage).is_stateful():
        size = r.actors or max(1, int(cluster_cpus() // max(r.cpus, 1e-9)) or 1)
        return ds.map_batches(StageUDF, compute=ActorPoolStrategy(min_size=1, max_size=size),
                              fn_constructor_args=args, **kwargs)
    return ds.map_batches(StageUDF(*args), **kwargs)  # killed workers: Ray Data retries (session.py)
