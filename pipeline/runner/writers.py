"""Idempotent Parquet writes: a batch's file name comes from its content, written by atomic rename.

A retried Ray task rewrites the same file instead of adding a copy, and no reader ever sees a
half-written file (issue 8's resume relies on both).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tamis.pipeline.counts import merge_stats, summarize
from tamis.pipeline.run_folder import RunFolder
from tamis.pipeline.runner.apply import live_mask, pop_stats, with_reject_columns



def batch_key(batch: pa.Table) -> str:
    """A stable name for a batch: hash of its ids (the same rows give the same name)."""
    h = hashlib.sha1()
    ids = batch["id"].combine_chunks() if isinstance(batch["id"], pa.ChunkedArray) else batch["id"]
    for buf in ids.cast(pa.large_string()).buffers():
        if buf is not None:
            h.update(memoryview(buf))
    h.update(str(batch.num_rows).encode())
    return h.hexdigest()[:20]


def write_atomic(table: pa.Table, path: Path, compression: str = "zstd") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, compression=compression)
    os.replace(tmp, path)


def restore_field_names(table: pa.Table, text_field: str, id_field: str | None) -> pa.Table:
    """Give `text` / `id` back the names the input used (fields mapping in the job)."""
    names = list(table.column_names)
    if text_field != "text":
        names[names.index("text")] = text_field
    if id_field and id_field != "id":
        names[names.index("id")] = id_field
    return table.rename_columns(names)


def _final_files(batch: pa.Table, folder: RunFolder, name: str, text_field: str, id_field: str | None) -> list[Path]:
    live = live_mask(batch)
    files = []
    for part, table in (("curated", batch.filter(live).drop_columns(["reject_stage", "reject_reason"])),
                        ("rejected", batch.filter(pc.invert(live)))):
        if table.num_rows:
            path = folder.output_dir(part) / name
            write_atomic(restore_field_names(table, text_field, id_field), path)
            files.append(path)
    return files


def write_stream(batch: pa.Table, run_dir: str, stream: str, unit_col: str, target: str,
                 text_field: str, id_field: str | None, pad: tuple = (), tokenizer: str | None = None) -> pa.Table:
    """Sink of a stream: per input unit in the batch, write its rows and record a manifest entry.

    `target` is "final" (curated/ + rejected/) or a segment folder before a global stage. Rows that
    are already rejected skip the segment: they go to rejected/ now, with typed null columns `pad`
    ((name, type) of every later stage's output) so that all of rejected/ shares one schema, and only
    live rows are written again and again through the global stages. The stage counters the batch
    carries are recorded with its first unit. Summaries count tokens of `tokenizer` if named.
    """
    folder = RunFolder(run_dir)
    batch, carried = pop_stats(with_reject_columns(batch))
    stages = merge_stats(carried)
    manifest = folder.manifest(stream)
    units = pc.unique(batch[unit_col]).to_pylist()
    for unit in units:
        part = batch.filter(pc.equal(batch[unit_col], unit)) if len(units) > 1 else batch
        part = part.drop_columns([unit_col])  # bookkeeping (the read unit or segment file), not data
        key = batch_key(part)
        name = f"part-{folder.tag(unit)}-{key}.parquet"
        nbytes = part.column("text").nbytes if "text" in part.column_names else 0  # for the progress
        if target == "final":
            files = _final_files(part, folder, name, text_field, id_field)
            manifest.record(unit, key, part.num_rows, files, summarize(part, tokenizer), stages, text_bytes=nbytes)
            stages = None
            continue
        live = live_mask(part)
        files, summary, alive = [], None, part
        if part.num_rows and not pc.all(live).as_py():
            dead = part.filter(pc.invert(live))
            for col, typ in pad:
                if col not in dead.column_names:
                    dead = dead.append_column(col, pa.nulls(dead.num_rows, typ))
            files, summary = _final_files(dead, folder, name, text_field, id_field), summarize(dead, tokenizer)
            alive = part.filter(live)
        if alive.num_rows:
            path = folder.path(target) / name
            write_atomic(alive, path, compression="lz4")
            files.append(path)
        manifest.record(unit, key, part.num_rows, files, summary, stages, text_bytes=nbytes)
        stages = None
    return pa.table({"rows": [batch.num_rows]})
