"""Run a planned job into its run folder: prepare (or resume) the folder, execute the streams on Ray,
write the reports."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from tamis.pipeline.readers import input_kind, input_units, merge_read_stats, split_unit
from tamis.pipeline.report import build_reports
from tamis.pipeline.run_folder import OUTPUTS, RunFolder, UnsafePath
from tamis.pipeline.runner.finalize import unify_output_schemas
from tamis.pipeline.runner.fits import decisions_ref, fit_global
from tamis.pipeline.runner.ray_data import over_files, read_segments, to_table
from tamis.pipeline.runner.session import init_ray, ship_plugin
from tamis.pipeline.runner.streams import (UNIT_COL, later_columns, plan_streams, read_expected, read_units_fn,
                                           segment_rows)
from tamis.pipeline.runner.apply import StageError
from tamis.pipeline.runner.udf import map_stage, progress_rows
from tamis.pipeline.counts import merge_summaries
from tamis.pipeline.runner.writers import write_stream
from tamis.pipeline.spec import Job, SpecError


def _canon(obj) -> object:
    return json.loads(json.dumps(obj, default=str))


def prepare_run_dir(job: Job, restart: bool = False) -> tuple[RunFolder, dict]:
    """Create the run folder, or reuse it to resume the same job; refuse a different job's folder.

    Returns the folder and its run record (`completed` tells whether there is anything left to do).
    """
    folder = RunFolder(job.output)
    marker = folder.record_file
    fp = _canon(job.fingerprint())
    if marker.is_file() and not restart:
        record = json.loads(marker.read_text())
        if record.get("fingerprint") != fp:
            raise SpecError(f"{folder.root} holds a run of a different job spec or inputs; pass --restart to "
                            f"replace it, or choose another --output")
        record["resumed"] = record.get("resumed", 0) + (0 if record.get("completed") else 1)
        marker.write_text(json.dumps(record, indent=1))
        return folder, record
    if folder.root.is_dir() and any(folder.root.iterdir()) and not marker.is_file():
        raise SpecError(f"{folder.root} exists and is not a tamis run folder; choose another --output")
    for d in OUTPUTS:
        shutil.rmtree(folder.root / d, ignore_errors=True)
    folder.root.mkdir(parents=True, exist_ok=True)
    record = {"job": job.source, "fingerprint": fp, "started": time.time(), "completed": False, "resumed": 0}
    marker.write_text(json.dumps(record, indent=1))
    return folder, record


class RunFailed(RuntimeError):
    """The run's output is not right (or not complete); `exit_code` is what `tamis run` exits with:
    1 when a stage failed as a whole, 3 when the output is incomplete or does not add up."""

    def __init__(self, message: str, exit_code: int = 3):
        super().__init__(message)
        self.exit_code = exit_code


def run_job(job: Job, restart: bool = False, progress: bool | str = True) -> dict:
    """Run (or resume) a job; returns the summary that `reports/summary.json` holds.

    Raises `RunFailed` when the output is not right: a stage failed as a whole, an input is corrupt,
    a stage quarantined more than `max_quarantine_share` of its rows, or the files on disk do not add
    up to the rows read. Reports are written either way; the run is marked complete only on success.
    """
    folder, record = prepare_run_dir(job, restart)
    if record.get("completed") and folder.summary_file.is_file():
        summary = json.loads(folder.summary_file.read_text())
        changed = changed_outputs(folder, summary)
        if changed:
            raise RunFailed(f"{folder.root} changed since its run completed ({changed}); pass --restart "
                            f"to redo it")
        return summary
    t0 = time.perf_counter()
    try:
        result = execute(job, folder, progress=progress)
    except UnsafePath as e:
        raise RunFailed(str(e)) from None
    except Exception as e:  # noqa: BLE001 - name the stage when a stage broke, whatever Ray wrapped it in
        failed = stage_error(e)
        if failed is None:
            raise
        raise RunFailed(failed, exit_code=1) from None
    output_schema = unify_output_schemas(folder)  # curated/ and rejected/ each read as one dataset
    summary = build_reports(folder, job, result, time.perf_counter() - t0)
    summary["resumed"] = record.get("resumed", 0)
    summary["output_schema"] = output_schema
    problems = outcome_problems(job, summary, result)
    summary["completed"] = not problems
    summary["problems"] = problems
    folder.summary_file.write_text(json.dumps(summary, indent=1, default=str))
    if problems:
        raise RunFailed("; ".join(problems))
    for seg in folder.segments():
        shutil.rmtree(seg, ignore_errors=True)  # intermediate data; manifests stay
    record.update(completed=True, finished=time.time())
    folder.record_file.write_text(json.dumps(record, indent=1))
    return summary


def changed_outputs(folder: RunFolder, summary: dict) -> str:
    """How the rows on disk differ from a completed run's summary ('' when they do not)."""
    on_disk = {part: folder.rows(part) for part in ("curated", "rejected", "quarantine")}
    want = {"curated": summary["curated"], "rejected": summary["rejected"], "quarantine": summary["quarantined"]}
    return ", ".join(f"{k}: {on_disk[k]} rows on disk, {want[k]} in the summary" for k in want
                     if on_disk[k] != want[k])


_STAGE_ERROR = re.compile(r"\b(?:StageError|StageOutputError|TooManyFailures): (.+)")


def stage_error(e: BaseException) -> str | None:
    """The message of the `StageError` behind an exception, through Ray's wrappers (a
    `UserCodeException` keeps the worker's traceback only as text)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, StageError):
            return str(e)
        found = _STAGE_ERROR.findall(str(e))
        if found:
            return found[-1].strip()
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    return None


def outcome_problems(job: Job, summary: dict, result: dict) -> list[str]:
    """Why this run's output is not right, in words (empty when it is)."""
    problems = []
    if not summary["conservation"]["holds"]:
        c = summary["conservation"]
        problems.append(f"conservation broken: {c['equation']} (manifests list {c['manifests']})")
    for r in result["read_stats"]:
        if r.get("corrupt"):
            problems.append(f"input {r['file']} is corrupt ({r['corrupt']}); its rows are in quarantine/")
    share = job.spec.max_quarantine_share
    for name, st in result["stage_stats"].items():
        bad = st.get("extra", {}).get("quarantined_rows", 0)
        seen = st.get("rows_in", 0) + bad
        if bad and bad > share * seen:
            problems.append(f"stage {name!r} failed on {bad} of {seen} rows (more than "
                            f"max_quarantine_share={share:g}): a broken stage or setting; see quarantine/")
    return problems


def execute(job: Job, folder: RunFolder, progress: bool | str = True) -> dict:
    """Execute `job`'s streams into `folder`, resuming whatever an interrupted run left complete.

    Shape of a run: read the input units (one task each, streaming batches) -> per-batch stages as
    `map_batches` -> at each global stage the stream is written to a segment, the stage fits over
    its live rows, and its transform runs per batch with its decisions joined -> one final write of
    curated and rejected Parquet that returns small per-batch summaries, which the driver sums while
    a progress bar shows rows/s. Returns per-stage counters, fit reports, read stats and the summary.
    """
    spec = job.spec
    init_ray(spec.ray.address, spec.ray.num_cpus, spec.ray.object_store_memory)
    for p in job.stages:
        ship_plugin(type(p.stage))
        try:
            p.stage.prepare()
        except (OSError, ValueError) as e:  # a missing or refused model folder: the job's setting
            raise SpecError(f"stage {p.name!r}: {e}") from None
    text_field, id_field = spec.fields.text, spec.fields.id
    inputs = input_units([str(p) for p in job.input_files], spec.read.split_bytes)
    run_dir = str(folder.root)
    fit_reports: dict[str, dict] = {}
    streams = plan_streams(job.stages)
    units: list[str] = inputs
    for s, (heads, scorers) in enumerate(streams):
        last = s == len(streams) - 1
        stream = f"stream-{s:02d}"
        manifest = folder.manifest(stream)
        noted = folder.progress_dir(stream)  # the stream's last stage notes finished rows here
        shutil.rmtree(noted, ignore_errors=True)
        if s == 0:
            todo = manifest.pending(read_expected(folder, inputs))
            reserved = tuple(c for c, _ in later_columns(job.stages))
            ds = over_files(todo, read_units_fn(run_dir, text_field, id_field, spec.read.batch_rows,
                                                spec.read.max_line_bytes, reserved), len(todo))
            unit_col = UNIT_COL
        else:
            seg = folder.segment(s, heads[0].name)
            files = sorted(units)
            if not files:
                break
            rows = {folder.rel(f): segment_rows(f) for f in files}
            fitted: list = []
            for head in heads:
                fit_reports[head.name] = fit_global(head, files, seg, sum(rows.values()), fitted,
                                                    {"max_share": spec.max_quarantine_share})
                fitted.append((head, decisions_ref(head)))
            todo = manifest.pending(rows)
            ds = read_segments([str(folder.path(t)) for t in todo] or files[:1], unit_root=run_dir)
            unit_col = "path"
            ctx = {"run_dir": run_dir, "stream": stream, "unit_col": unit_col,
                   "max_share": spec.max_quarantine_share}
            for i, (head, ref) in enumerate(fitted):
                tail = {"progress_dir": str(noted)} if i == len(fitted) - 1 and not scorers else {}
                ds = map_stage(ds, head, True, "transform", ref, {**ctx, **tail})
        ctx = {"run_dir": run_dir, "stream": stream, "unit_col": unit_col,
               "max_share": spec.max_quarantine_share}
        for i, p in enumerate(scorers):
            tail = {"progress_dir": str(noted)} if i == len(scorers) - 1 else {}
            ds = map_stage(ds, p, True, "score", None, {**ctx, **tail})
        pad: tuple = ()
        if last:
            target = "final"
        else:
            seg_next = folder.segment(s + 1, streams[s + 1][0][0].name)
            seg_next.mkdir(parents=True, exist_ok=True)
            target = folder.rel(seg_next)
            pad = later_columns([p for hs, sc in streams[s + 1:] for p in (*hs, *sc)])
        if todo:
            total = rows_estimate(folder, todo) if s == 0 else sum(rows.get(t, 0) for t in todo)
            # named after the stages the user wrote (not the `unique_ids` tamis adds before a global stage)
            names = " → ".join(p.name for p in (*heads, *scorers) if p.index >= 0)
            later = [p.name for hs, sc in streams[s + 1:] for p in (*hs, *sc) if p.index >= 0]
            desc = f"{names or 'read'} (then {later[0] if later else 'write'})" if names or later else "write"
            _drain(ds.map_batches(write_stream, fn_args=(run_dir, stream, unit_col, target, text_field,
                                                         id_field, pad, job.tokenizer), batch_format="pyarrow"),
                   progress, desc, total, manifest, noted)
        if not last:
            units = sorted(f for e in folder.manifest(stream).entries() for f in e["files"]
                           if Path(f).parent == folder.path(target))
    read_stats = merge_read_stats([json.loads(folder.read_stats_file(u).read_text()) for u in inputs])
    parts, stage_stats = [], {}
    for s in range(len(streams)):
        part, stages = folder.manifest(f"stream-{s:02d}").totals()
        parts += [part] if part is not None else []
        stage_stats.update(stages)  # each stage runs in one stream
    summary = merge_summaries(parts) if parts else None
    return {"stage_stats": {k: v.__dict__ for k, v in stage_stats.items()},
            "fit_reports": fit_reports, "read_stats": read_stats, "summary": summary}


def rows_estimate(folder: RunFolder, units: list[str]):
    """A function giving the rows `units` hold, for the ETA of stream 0 (None while unknown): a Parquet
    unit's rows from its footer; another's from its read stats once it is read, else its size times
    the rows per byte of the units of that kind read so far."""
    exact: dict[str, int] = {}
    size: dict[str, tuple[str, int]] = {}
    for u in units:
        path, groups = split_unit(u)
        try:
            if input_kind(Path(path)) == "parquet":
                meta = pq.ParquetFile(path).metadata
                a, b = groups or (0, meta.num_row_groups)
                exact[u] = sum(meta.row_group(i).num_rows for i in range(a, b))
            else:  # a split WARC file's unit: its byte range
                size[u] = (input_kind(Path(path)), groups[1] - groups[0] if groups else os.path.getsize(path))
        except (OSError, ValueError, pa.ArrowException):  # its read task says why
            return lambda: None

    def estimate() -> int | None:
        done = {u: n for u, n in read_expected(folder, list(size)).items() if n is not None}
        total = sum(exact.values()) + sum(done.values())
        for u, (kind, nbytes) in size.items():
            if u not in done:
                read = [(done[v], size[v][1]) for v in done if size[v][0] == kind]
                if not read:
                    return None
                total += round(nbytes * sum(r for r, _ in read) / max(1, sum(b for _, b in read)))
        return total
    return estimate


PLAIN_EVERY_S = 10.0  # seconds between plain progress lines (logs of submitted jobs, pipes)


def progress_mode(progress: bool | str) -> str:
    """'bar' (tqdm), 'plain' (a line every PLAIN_EVERY_S, for logs) or 'none'. 'auto' / True: a bar
    on a terminal, plain lines otherwise (`tamis logs --follow` of a submitted job shows them)."""
    if progress is False or progress == "none":
        return "none"
    if progress in (True, "auto"):
        return "bar" if sys.stderr.isatty() else "plain"
    return str(progress)


class _Written:
    """Rows and text bytes of the manifest entries written since it was made (one per batch and
    unit): the write tasks' own results reach the driver per read task (Ray Data gathers a task's
    one-row outputs into one block), the entries as each batch is written."""

    def __init__(self, manifest):
        self.dir = manifest.dir
        self.seen = set(self._names())
        self.rows = self.bytes = 0

    def _names(self) -> list[str]:
        try:
            return [n for n in os.listdir(self.dir) if n.endswith(".json") and not n.startswith(".")]
        except FileNotFoundError:
            return []

    def scan(self) -> None:
        for n in self._names():
            if n in self.seen:
                continue
            try:
                e = json.loads((self.dir / n).read_text())
            except (OSError, ValueError):  # replaced under us: read it on the next scan
                continue
            self.seen.add(n)
            self.rows += int(e.get("rows", 0))
            self.bytes += int(e.get("text_bytes", 0))


def _drain(ds, progress: bool | str, desc: str, total=None, manifest=None, noted=None) -> int:
    """Consume a stream's write tasks (per-batch `rows` counts) and show rows, MB, rows/s and (when
    `total` rows are known: a number, or a function giving the best estimate so far) an ETA, per
    batch: the rows the stream's last stage has finished (`noted`, a progress folder) or, when
    more, the rows written (the stream's `manifest`); return the rows written."""
    mode = progress_mode(progress)
    estimate = total if callable(total) else (lambda: total)
    written = _Written(manifest) if manifest is not None else None
    state = {"total": estimate(), "rows": 0, "bytes": 0}
    t0 = time.monotonic()

    def line(done: bool = False) -> None:
        el, rows, tot = time.monotonic() - t0, state["rows"], state["total"]
        rate = rows / el if el > 0 else 0.0
        eta = f", ETA {(tot - rows) / rate:.0f} s" if tot and rate and not done and rows < tot else ""
        of = f"/{tot:,}" if tot else ""
        print(f"tamis: {desc}: {rows:,}{of} rows, {state['bytes'] / 1e6:.1f} MB, {rate:,.0f} rows/s, "
              f"{el:.0f} s{eta}{' (done)' if done else ''}", file=sys.stderr, flush=True)

    with tqdm(desc=desc, total=state["total"], unit=" rows", disable=mode != "bar", mininterval=0.5) as bar:
        def show() -> None:
            if written is None:
                return
            written.scan()
            known = estimate()
            if known is not None and known != state["total"]:
                state["total"] = bar.total = known
            rows, size = progress_rows(noted) if noted is not None else (0, 0)
            if written.rows >= rows:
                rows, size = written.rows, written.bytes
            rows = min(rows, state["total"]) if state["total"] else rows  # a retried batch notes twice
            rows, size = max(rows, state["rows"]), max(size, state["bytes"])
            bar.update(rows - state["rows"])
            state["rows"], state["bytes"] = rows, size
            bar.set_postfix_str(f"{size / 1e6:.1f} MB")

        stop = threading.Event()

        def watch() -> None:
            last = time.monotonic()
            while not stop.wait(0.5 if mode == "bar" else max(0.25, min(1.0, PLAIN_EVERY_S))):
                show()
                if mode == "plain" and time.monotonic() - last >= PLAIN_EVERY_S:
                    last = time.monotonic()
                    line()

        watcher = threading.Thread(target=watch, daemon=True, name="tamis-progress")
        if mode != "none":
            watcher.start()
        done = 0
        try:
            for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                b = to_table(b)
                if b.num_rows:
                    done += int(pc.sum(b["rows"]).as_py() or 0)
        finally:
            stop.set()
            if watcher.is_alive():
                watcher.join()
        if mode != "none":
            show()
            if written is None:
                state["rows"] = done
    if mode == "plain":
        line(done=True)
    return done
