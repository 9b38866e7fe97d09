"""The only module that imports Ray: runs a planned job on Ray Data (embedded or a cluster).

Shape of a run: read shards (one task per input file, streaming batches) -> per-batch stages as
`map_batches` (an actor pool for stages with `setup()`, tasks otherwise) -> at each global stage the
stream is written to `_work/seg-K/`, the stage fits over a `RayData` view of the live rows, its
decisions are joined back by `id` and its `transform` runs per batch -> one final write of curated and
rejected Parquet that returns small per-batch summaries, which the driver sums while a progress bar
shows rows/s. Consecutive global stages share one segment: each fits over the view with the earlier
ones' transforms applied, so the data is written and read once for all of them.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import ActorPoolStrategy

from pipeline.apply import BatchStats, apply_stage, carry_stats, live_mask, pop_stats
from pipeline.readers import (Quarantine, ReadStats, file_tag, input_units, merge_read_stats, read_file,
                              split_unit)
from pipeline.rules import compile_rules
from pipeline.manifest import Manifest, pending_units
from pipeline.writers import merge_summaries, write_atomic, write_stream

log = logging.getLogger("tamis")
RETRIES = 4  # Ray task retries / actor restarts per stage: a killed worker process loses nothing


# ---------------------------------------------------------------- session
THREAD_VARS = ("POLARS_MAX_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def init_ray(address: str | None = None, num_cpus: int | None = None,
             object_store_memory: int | None = None) -> None:
    """Join `address` / RAY_ADDRESS if given, else start an embedded local Ray."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "configure_logging": True}
    # One library thread per worker (polars, BLAS, OpenMP, torch): Ray already runs one task per CPU,
    # and a thread pool per task on top oversubscribes the cores (1.23x -> 1.45x on 2 CPUs). A stage
    # that asks for more CPUs gets that many torch threads (`_StageUDF`); variables the driver
    # already has (a submitted job's runtime env, the user's shell) are left alone.
    threads = {k: "1" for k in THREAD_VARS if k not in os.environ}
    if threads:
        kwargs["runtime_env"] = {"env_vars": threads}
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local": always a fresh embedded Ray, even where a `ray start` cluster runs on this machine
        ray.init(address="local", num_cpus=num_cpus, object_store_memory=object_store_memory,
                 include_dashboard=False, **kwargs)
    ctx = ray.data.DataContext.get_current()
    # Per-operator CPU reservations leave a CPU idle between tasks on small clusters (measured: 32
    # tasks of 0.5 s on 2 CPUs took 12.0 s with them, 9.1 s without, 8.4 s as plain Ray tasks); the
    # object-store backpressure policies stay on, so memory stays bounded.
    ctx.op_resource_reservation_enabled = False
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def shutdown_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


def map_tasks(fn: Callable, items: list, *, num_cpus: float = 1.0, num_gpus: float = 0.0,
              desc: str | None = None, max_retries: int = 3) -> list:
    """Run `fn(item)` for every item as Ray tasks; results in input order, with a progress bar."""
    from tqdm import tqdm

    init_ray()
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=max_retries)(fn)
    refs = [remote.remote(item) for item in items]
    index = {r: i for i, r in enumerate(refs)}
    out: list = [None] * len(refs)
    pending = list(refs)
    with tqdm(total=len(refs), desc=desc or getattr(fn, "__name__", "tasks"), disable=None) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                out[index[r]] = ray.get(r)
                bar.update(1)
    return out


# ---------------------------------------------------------------- Data over Ray
LOCAL_GROUPBY_ROWS = 300_000
LOCAL_FIT_ROWS = 20_000  # segments up to this many rows are fitted on the driver (LocalData)


class RayData:
    """`pipeline.data.Data` backed by a Ray Dataset (see that module for the contract).

    `rows` is the number of documents behind the view when known. Below `LOCAL_GROUPBY_ROWS` a
    `groupby_map` or `partition_map` collects its (narrow, key-only) input and groups in memory, which
    is seconds faster than a Ray hash shuffle; above it, the shuffle runs across the cluster.
    """

    def __init__(self, ds: "ray.data.Dataset", rows: int | None = None):
        self.ds = ds
        self.rows = rows

    def map_batches(self, fn):
        return RayData(self.ds.map_batches(fn, batch_format="pyarrow"), self.rows)

    def _local(self):
        if self.rows is not None and self.rows <= LOCAL_GROUPBY_ROWS:
            from pipeline.data import LocalData
            return LocalData(self.to_arrow())
        return None

    def _partitions(self) -> int:
        # a partition must stay one block (Ray Data splits blocks past 128 MiB): <= 1M narrow key rows
        return max(2 * int(ray.cluster_resources().get("CPU", 1)), -(-(self.rows or 0) // 1_000_000), 2)

    def groupby_map(self, keys, fn):
        if (local := self._local()) is not None:
            return local.groupby_map(list(keys), fn)
        return RayData(self.ds.groupby(list(keys), num_partitions=self._partitions()).map_groups(
            fn, batch_format="pyarrow"))

    def partition_map(self, keys, fn):
        if (local := self._local()) is not None:
            return local.partition_map(list(keys), fn)
        return RayData(self.ds.repartition(self._partitions(), shuffle=True, keys=list(keys)).map_batches(
            fn, batch_size=None, batch_format="pyarrow"))

    def sample(self, n: int, seed: int = 0) -> pa.Table:
        total = self.count()
        if total == 0:
            return self.to_arrow()
        frac = min(1.0, 1.2 * n / total)
        got = _to_table(self.ds.random_sample(frac, seed=seed).take_batch(
            n, batch_format="pyarrow") if frac < 1.0 else self.ds.take_batch(n, batch_format="pyarrow"))
        return got.slice(0, n)

    def iter_batches(self, batch_size: int = 65536) -> Iterator[pa.Table]:
        for b in self.ds.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
            yield _to_table(b)

    def to_arrow(self) -> pa.Table:
        blocks = [_to_table(b) for b in self.ds.iter_batches(batch_size=None, batch_format="pyarrow")]
        blocks = [b for b in blocks if b.num_rows]
        return pa.concat_tables(blocks, promote_options="permissive") if blocks else pa.table({})

    def count(self) -> int:
        return self.ds.count()

    def from_arrow(self, table: pa.Table) -> "RayData":
        return RayData(ray.data.from_arrow(table))


def _to_table(b) -> pa.Table:
    return b if isinstance(b, pa.Table) else pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else pa.table(b)


# ---------------------------------------------------------------- stage functions
@lru_cache(maxsize=64)
def _rules(items: tuple) -> list:
    return compile_rules(dict(items))


_DECISIONS: dict[str, pa.Table] = {}  # per worker: the decisions of the last few global stages
_DECISIONS_KEPT = 4


def _join_key(table: pa.Table, keys: tuple[str, ...]) -> pa.Array:
    if len(keys) == 1:
        return table[keys[0]].cast(pa.string())
    return pc.binary_join_element_wise(*[table[k].cast(pa.string()) for k in keys], "\x1f")


def _join_decisions(batch: pa.Table, dec: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    """Left join of `dec` (columns other than `keys` renamed `_dec_*`) onto the batch, any column types."""
    pos = pc.index_in(_join_key(batch, keys), value_set=_join_key(dec, keys))
    for col in dec.column_names:
        if col.startswith("_dec_"):
            batch = batch.append_column(col, dec[col].take(pos))
    return batch


def _transform_fn(stage):
    def compute(sub: pa.Table) -> dict:
        dec = [c for c in sub.column_names if c.startswith("_dec_")]
        if dec:
            sub = sub.drop_columns([c[5:] for c in dec if c[5:] in sub.column_names])
            sub = sub.rename_columns([c[5:] if c.startswith("_dec_") else c for c in sub.column_names])
        return stage.transform(sub)
    return compute


class _StageUDF:
    """Runs one stage on batches; used as a Ray actor (stateful) or called in tasks.

    An exception from the stage's own code does not fail the job: the batch is retried in halves
    down to single rows, and only rows that fail alone go to quarantine/ with the error (recorded in
    the stream's manifest), so one bad document costs one row, not a batch, and nothing loops
    forever. Worker crashes are Ray's retries' business. With `count`, the stage's counters ride on
    the output (`apply.carry_stats`); a fit's view (`count=False`) carries none.
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

    def _run(self, batch: pa.Table) -> tuple[pa.Table, BatchStats]:
        if self.mode == "score":
            compute = self.stage.score
        else:
            if self.decisions_ref is not None:
                key = self.decisions_ref.hex()
                if key not in _DECISIONS:
                    while len(_DECISIONS) >= _DECISIONS_KEPT:
                        _DECISIONS.pop(next(iter(_DECISIONS)))
                    _DECISIONS[key] = ray.get(self.decisions_ref)
                batch = _join_decisions(batch, _DECISIONS[key], self.stage.join_on)
            compute = _transform_fn(self.stage)
        out, st = apply_stage(batch, self.name, self.stage, _rules(self.rules), compute)
        drop = [c for c in out.column_names if c.startswith("_dec_")]
        return (out.drop_columns(drop) if drop else out), st

    def __call__(self, batch: pa.Table) -> pa.Table:
        self._setup()  # a model that cannot load fails the job at once, it is not a data problem
        batch, carried = pop_stats(batch)
        try:
            out, st = self._run(batch)
        except Exception:  # noqa: BLE001 - a stage bug must not lose the batch: isolate the bad rows
            out, st = self._bisect(batch)
        if not self.count:
            return out
        st.extra[f"node:{ray.get_runtime_context().get_node_id()[:12]}"] = 1
        return carry_stats(out, [*carried, [self.name, st.__dict__]])

    def _bisect(self, batch: pa.Table) -> tuple[pa.Table, BatchStats]:
        """Retry a failed batch in halves; only the rows that still fail on their own are quarantined."""
        try:
            return self._run(batch)
        except Exception as e:  # noqa: BLE001
            if batch.num_rows > 1:
                half = batch.num_rows // 2
                (a, sa), (b, sb) = self._bisect(batch.slice(0, half)), self._bisect(batch.slice(half))
                parts = [p for p in (a, b) if p.num_rows] or [a]
                return pa.concat_tables(parts, promote_options="permissive"), sa + sb
            if self.count:  # else a fit's view: the row is left out, its stream quarantines it
                quarantine_batch(batch, f"stage {self.name!r} failed: {type(e).__name__}: {e}", self.ctx,
                                 {self.name: BatchStats(extra={"quarantined_rows": batch.num_rows})})
            return batch.slice(0, 0), BatchStats()


def quarantine_batch(batch: pa.Table, error: str, ctx: dict, stages: dict | None = None) -> None:
    """Write a failing batch to quarantine/ (raw row as JSON) and record it, with the stage counters
    `stages`, for resume."""
    from pipeline.manifest import Manifest
    from pipeline.readers import QUARANTINE_SCHEMA
    from pipeline.writers import batch_key

    unit_col = ctx["unit_col"]
    for unit in pc.unique(batch[unit_col]).to_pylist():
        part = batch.filter(pc.equal(batch[unit_col], unit))
        rows = part["input_row"].to_pylist() if "input_row" in part.column_names else [None] * part.num_rows
        files = part["input_file"].to_pylist() if "input_file" in part.column_names else [unit] * part.num_rows
        raw = [json.dumps(r, default=str).encode() for r in part.drop_columns([unit_col]).to_pylist()]
        table = pa.table({"file": files, "row": rows, "error": [error] * part.num_rows, "raw": raw},
                         schema=QUARANTINE_SCHEMA)
        key = batch_key(part)
        path = Path(ctx["run_dir"]) / "quarantine" / f"stage-{file_tag(unit)}-{key}.parquet"
        write_atomic(table, path)
        Manifest(ctx["run_dir"], ctx["stream"]).record(unit, key, part.num_rows, [str(path)], stages=stages)
        stages = None  # counted once, with the first unit


def _map_stage(ds, planned, count: bool, mode: str, decisions_ref=None, ctx: dict | None = None):
    r = planned.resources
    ctx = {**(ctx or {}), "threads": max(1, int(r.cpus))}
    args = (planned.name, planned.stage, planned.rules, count, mode, decisions_ref, ctx)
    kwargs: dict[str, Any] = {"batch_format": "pyarrow", "num_cpus": r.cpus, "zero_copy_batch": True}
    if r.gpus:
        kwargs["num_gpus"] = r.gpus
    if r.batch_size:
        kwargs["batch_size"] = r.batch_size
    if mode == "score" and type(planned.stage).is_stateful():
        size = r.actors or max(1, int(ray.cluster_resources().get("CPU", 1) // max(r.cpus, 1e-9)) or 1)
        return ds.map_batches(_StageUDF, compute=ActorPoolStrategy(min_size=1, max_size=size),
                              fn_constructor_args=args, max_restarts=RETRIES, max_task_retries=RETRIES,
                              **kwargs)
    return ds.map_batches(_StageUDF(*args), max_retries=RETRIES, **kwargs)


def _ship_plugin(cls) -> None:
    """Send a plug-in's code with the tasks when its module is not part of an installed package.

    A scorer in the user's own file (`class: my_scorers:MyScorer`) then runs on workers and cluster
    nodes that cannot import that file.
    """
    import sys
    import sysconfig

    from ray import cloudpickle

    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None) or ""
    installed = (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])
    ours = str(Path(__file__).resolve().parents[1])
    if module and path and not path.startswith(installed) and not path.startswith(ours):
        cloudpickle.register_pickle_by_value(module)


# ---------------------------------------------------------------- reading
UNIT_COL = "_tamis_unit"  # the read unit (file, or part of a big Parquet file) a row of stream 0 came from


def _read_shard_fn(run_dir: str, text_field: str, id_field: str | None, batch_rows: int, max_line_bytes: int):
    def read(batch: pa.Table):
        for unit in batch["path"].to_pylist():
            path, row_groups = split_unit(unit)
            stats = ReadStats(file=path)
            q = Quarantine(path)
            for t in read_file(Path(path), stats, q, text_field, id_field, batch_rows, max_line_bytes, row_groups):
                yield t.append_column(UNIT_COL, pa.array([unit] * t.num_rows, pa.string()))
            tag = file_tag(unit)
            if q.rows:
                write_atomic(q.table(), Path(run_dir) / "quarantine" / f"{tag}.parquet")
            tmp = Path(run_dir) / "_work" / "read" / f".{tag}.json.tmp"
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(stats.__dict__))
            os.replace(tmp, tmp.with_name(f"{tag}.json"))
    return read


SEGMENT_TASK_BYTES = 64 << 20


def _read_segments(files: list[str], columns: list[str] | None = None, paths: bool = False):
    """A dataset over Parquet files tamis wrote itself, ~64 MB of files per read task.

    `ray.data.read_parquet` starts metadata actors on every call (seconds of CPU each on a small
    machine), and one task per batch-sized segment file costs more in scheduling than in reading.
    """
    def read(batch: pa.Table):
        import pyarrow.parquet as pq
        for path in batch["path"].to_pylist():
            t = pq.read_table(path, columns=columns)
            yield t.append_column("path", pa.array([path] * t.num_rows, pa.string())) if paths else t

    size = sum(os.path.getsize(f) for f in files)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return _over_files(files, read, min(len(files), max(2 * cpus, -(-size // SEGMENT_TASK_BYTES))))


def _over_files(files: list[str], read, tasks: int):
    """A dataset of `tasks` read tasks, each calling generator `read` on its share of `files` (a
    table with a `path` column)."""
    ds = ray.data.from_items([{"path": f} for f in files], override_num_blocks=max(1, tasks))
    return ds.map_batches(read, batch_size=None, batch_format="pyarrow", max_retries=RETRIES)


def _segment_live(requires: tuple[str, ...]):
    cols = ["id", *[c for c in requires if c != "id"]]

    def fn(batch: pa.Table) -> pa.Table:
        return batch.filter(live_mask(batch)).select([c for c in cols if c in batch.column_names])
    return fn


def _missing_columns(ds_schema_names: list[str], requires, name: str) -> None:
    missing = [c for c in requires if c not in ds_schema_names]
    if missing:
        raise RuntimeError(f"stage {name!r} needs columns {missing}, which neither the input nor an "
                           f"earlier stage provides (have: {ds_schema_names})")


# ---------------------------------------------------------------- the run
def _streams(stages) -> list[tuple[list, list]]:
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


def _read_expected(run_dir: Path, files: list[str]) -> dict[str, int | None]:
    out = {}
    for f in files:
        st = run_dir / "_work" / "read" / f"{file_tag(f)}.json"
        out[f] = json.loads(st.read_text())["rows_ok"] if st.is_file() else None
    return out


def _requires(planned) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*planned.stage.required_columns(),
                                *[c for c in planned.stage.join_on if c != "id"])))


def _reads(planned) -> tuple[str, ...]:
    """The segment columns a global stage's transform and keep rules read."""
    rule_cols = [c for r in _rules(tuple(planned.rules.items())) for c in sorted(r.columns)]
    return tuple(dict.fromkeys((*_requires(planned), *rule_cols)))


def _fit_global(planned, files: list[str], seg: Path, progress_rows: int, before: list) -> dict:
    """Fit a global stage over the live rows of a segment, after the transforms of the global stages
    `before` it in the same stream ([(planned, decisions ref)]), or load the fit a killed run saved."""
    import pickle

    import pyarrow.parquet as pq

    saved = seg / f"{planned.name}.pkl"
    if saved.is_file():
        with open(saved, "rb") as fh:
            planned.stage, report = pickle.load(fh)
        return report
    t0, c0 = time.perf_counter(), time.process_time()
    requires = _requires(planned)
    have = pq.read_schema(files[0]).names
    _missing_columns([*have, *[c for p, _ in before for c in p.stage.output_columns()]], requires, planned.name)
    earlier = [c for p, _ in before for c in _reads(p)]
    cols = [c for c in dict.fromkeys(["id", "reject_stage", *earlier, *requires]) if c in have]
    local = progress_rows <= LOCAL_FIT_ROWS
    if local:  # read and fit in place: a Ray Data pass costs more than the work
        from pipeline.data import LocalData
        table = pa.concat_tables([pq.read_table(f, columns=cols) for f in files], promote_options="permissive")
        for p, ref in before:
            table = _StageUDF(p.name, p.stage, p.rules, False, "transform", ref)(table)
        data = LocalData(_segment_live(requires)(table))
    else:
        view = _read_segments(files, cols)
        for p, ref in before:
            view = _map_stage(view, p, False, "transform", ref)
        data = RayData(view.map_batches(_segment_live(requires), batch_format="pyarrow"), progress_rows)
    planned.stage.fit(data)
    report = {"fit_wall_s": time.perf_counter() - t0, "fit_driver_cpu_s": time.process_time() - c0,
              "rows_at_fit": progress_rows, "fit_on": "driver" if local else "ray", **(planned.stage.report() or {})}
    tmp = seg / f".{planned.name}.pkl.tmp"
    with open(tmp, "wb") as fh:
        pickle.dump((planned.stage, report), fh)
    os.replace(tmp, saved)
    return report


def run_pipeline(job, run_dir: Path, progress: bool = True) -> dict:
    """Execute `job` into `run_dir`, resuming whatever an interrupted run left complete.

    Returns per-stage worker stats, global-stage fit reports, read stats and the output summary.
    """
    from tqdm import tqdm

    spec = job.spec
    init_ray(spec.ray.address, spec.ray.num_cpus, spec.ray.object_store_memory)
    for p in job.stages:
        _ship_plugin(type(p.stage))
        p.stage.prepare()
    text_field, id_field = spec.fields.text, spec.fields.id
    inputs = input_units([str(p) for p in job.input_files], spec.read.split_bytes)
    fit_reports: dict[str, dict] = {}
    streams = _streams(job.stages)
    units: list[str] = inputs
    for s, (heads, scorers) in enumerate(streams):
        last = s == len(streams) - 1
        stream = f"stream-{s:02d}"
        manifest = Manifest(run_dir, stream)
        if s == 0:
            todo = pending_units(manifest, _read_expected(run_dir, inputs))
            ds = _over_files(todo, _read_shard_fn(str(run_dir), text_field, id_field, spec.read.batch_rows,
                                                  spec.read.max_line_bytes), len(todo))
            unit_col = UNIT_COL
        else:
            seg = run_dir / "_work" / f"seg-{s:02d}-{heads[0].name}"
            files = sorted(units)
            if not files:
                break
            rows = {f: _rows(f) for f in files}
            fitted: list = []
            for head in heads:
                fit_reports[head.name] = _fit_global(head, files, seg, sum(rows.values()), fitted)
                fitted.append((head, _decisions_ref(head)))
            todo = pending_units(manifest, rows)
            ds = _read_segments(todo or files[:1], paths=True)
            unit_col = "path"
            ctx = {"run_dir": str(run_dir), "stream": stream, "unit_col": unit_col}
            for head, ref in fitted:
                ds = _map_stage(ds, head, True, "transform", ref, ctx)
        ctx = {"run_dir": str(run_dir), "stream": stream, "unit_col": unit_col}
        for p in scorers:
            ds = _map_stage(ds, p, True, "score", None, ctx)
        pad: tuple = ()
        if last:
            target = "final"
        else:
            target = str(run_dir / "_work" / f"seg-{s + 1:02d}-{streams[s + 1][0][0].name}")
            Path(target).mkdir(parents=True, exist_ok=True)
            pad = _later_columns([p for hs, sc in streams[s + 1:] for p in (*hs, *sc)])
        if todo:
            _drain(ds.map_batches(write_stream, fn_args=(str(run_dir), stream, unit_col, target, text_field,
                                                         id_field, pad), batch_format="pyarrow",
                                  max_retries=RETRIES),
                   progress, "curate" if last else f"to {streams[s + 1][0][0].name}", tqdm)
        if not last:
            units = sorted(f for e in Manifest(run_dir, stream).entries() for f in e["files"]
                           if f.startswith(target))
    read_stats = merge_read_stats([json.loads((run_dir / "_work" / "read" / f"{file_tag(u)}.json").read_text())
                                   for u in inputs])
    parts, stage_stats = [], {}
    for s in range(len(streams)):
        part, stages = Manifest(run_dir, f"stream-{s:02d}").totals()
        parts += [part] if part is not None else []
        stage_stats.update(stages)  # each stage runs in one stream
    summary = merge_summaries(parts) if parts else None
    return {"stage_stats": {k: v.__dict__ for k, v in stage_stats.items()},
            "fit_reports": fit_reports, "read_stats": read_stats,
            "summary": summary}


def _later_columns(stages) -> tuple:
    """(name, type) of the columns the given stages add, in the order they add them."""
    cols: dict = {}
    for p in stages:
        for c, t in p.stage.output_columns().items():
            cols.setdefault(c, t)
    return tuple(cols.items())


def _rows(parquet_file: str) -> int:
    import pyarrow.parquet as pq
    return pq.ParquetFile(parquet_file).metadata.num_rows


def _decisions_ref(planned):
    dec = getattr(planned.stage, "decisions_", None)
    if dec is None:
        return None
    table = dec.to_arrow() if isinstance(dec, RayData) else dec
    if not table.num_rows:
        return None
    keys = planned.stage.join_on
    return ray.put(table.rename_columns([c if c in keys else f"_dec_{c}" for c in table.column_names]))


def _drain(ds, progress: bool, desc: str, tqdm) -> int:
    """Consume a dataset of `rows` counts, showing rows/s; return the total."""
    total = 0
    with tqdm(desc=desc, unit=" rows", disable=not progress, mininterval=0.5) as bar:
        for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            b = _to_table(b)
            if b.num_rows == 0:
                continue
            n = int(pc.sum(b["rows"]).as_py() or 0)
            total += n
            bar.update(n)
    return total
