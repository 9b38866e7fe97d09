"""Global fits: fit a global stage over the live rows of a segment, save the fit for resume, and
hand its decisions to the workers."""
from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from tamis.pipeline.data import LocalData
from tamis.pipeline.runner import fit_state
from tamis.pipeline.runner.ray_data import RayData, read_segments
from tamis.pipeline.runner.session import map_tasks
from tamis.pipeline.runner.streams import reads, requires, segment_live
from tamis.pipeline.runner.udf import StageUDF, map_stage

LOCAL_FIT_ROWS = 20_000  # segments up to this many rows are fitted on the driver (LocalData)


def check_columns(have: list[str], needed, name: str) -> None:
    missing = [c for c in needed if c not in have]
    if missing:
        raise RuntimeError(f"stage {name!r} needs columns {missing}, which neither the input nor an "
                           f"earlier stage provides (have: {have})")


def fit_global(planned, files: list[str], seg: Path, rows: int, before: list, ctx: dict) -> dict:
    """Fit a global stage over the live rows of a segment, after the transforms of the global stages
    `before` it in the same stream ([(planned, decisions ref)]), or load the fit a killed run saved
    (as data: `fit_state`). Returns the stage's fit report."""
    saved = seg / f"{planned.name}.fit"
    report = fit_state.load(saved, planned.stage)
    if report is not None:
        return report
    t0, c0 = time.perf_counter(), time.process_time()
    needed = requires(planned)
    have = pq.read_schema(files[0]).names
    check_columns([*have, *[c for p, _ in before for c in p.stage.output_columns()]], needed, planned.name)
    earlier = [c for p, _ in before for c in reads(p)]
    cols = [c for c in dict.fromkeys(["id", "reject_stage", *earlier, *needed]) if c in have]
    local = rows <= LOCAL_FIT_ROWS
    if local:  # read and fit in place: a Ray Data pass costs more than the work
        table = pa.concat_tables([pq.read_table(f, columns=cols) for f in files], promote_options="permissive")
        for p, ref in before:
            table = StageUDF(p.name, p.stage, p.rules, False, "transform", ref, ctx)(table)
        data = LocalData(segment_live(needed)(table), map_tasks)
    else:
        view = read_segments(files, cols)
        for p, ref in before:
            view = map_stage(view, p, False, "transform", ref, ctx)
        data = RayData(view.map_batches(segment_live(needed), batch_format="pyarrow"), rows)
    state_before = dict(vars(planned.stage))
    planned.stage.fit(data)
    report = {"fit_wall_s": time.perf_counter() - t0, "fit_driver_cpu_s": time.process_time() - c0,
              "rows_at_fit": rows, "fit_on": "driver" if local else "ray", **(planned.stage.report() or {})}
    fit_state.save(saved, fit_state.changed_attributes(state_before, planned.stage), report)
    return report


def decisions_ref(planned):
    """An object ref to the fitted stage's `decisions_` table (None when it has none)."""
    dec = getattr(planned.stage, "decisions_", None)
    if dec is None:
        return None
    table = dec.to_arrow() if isinstance(dec, RayData) else dec
    return ray.put(table) if table.num_rows else None
