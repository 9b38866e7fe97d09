"""Idempotent Parquet writes: a batch's file name comes from its content, written by atomic rename.

A retried Ray task rewrites the same file instead of adding a copy, and no reader ever sees a
half-written file (issue 8's resume relies on both).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.apply import live_mask, merge_stats, pop_stats, with_reject_columns

SUMMARY_KEYS = ("status", "reject_stage", "reject_reason", "license", "source", "domain")


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


N_EXAMPLES = 5


def summarize(batch: pa.Table) -> pa.Table:
    """Rows, text bytes, whitespace tokens and the 5 smallest ids per (status, stage, reason, licence,
    source, domain): small, and mergeable across batches (`merge_summaries`)."""
    df = pl.from_arrow(batch.select([c for c in ("id", "text", *SUMMARY_KEYS[1:]) if c in batch.column_names]))
    for c in SUMMARY_KEYS[3:]:
        if c not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=pl.Utf8).alias(c))
        else:
            df = df.with_columns(pl.col(c).cast(pl.Utf8))
    df = df.with_columns(
        pl.when(pl.col("reject_stage").is_null()).then(pl.lit("curated")).otherwise(pl.lit("rejected")).alias("status"),
        pl.col("text").str.len_bytes().alias("bytes"),
        pl.col("text").str.count_matches(r"\S+").alias("tokens"),
        pl.col("id").cast(pl.Utf8),
    )
    out = df.group_by(list(SUMMARY_KEYS)).agg(pl.len().alias("rows"), pl.col("bytes").sum(),
                                               pl.col("tokens").sum(), pl.col("id").bottom_k(N_EXAMPLES).alias("examples"))
    return out.with_columns(pl.col(["rows", "bytes", "tokens"]).cast(pl.Int64)).to_arrow()


def merge_summaries(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """Sum `summarize` tables by their keys, keeping the 5 smallest example ids of each group."""
    df = pl.concat(parts, how="diagonal_relaxed").with_columns(
        pl.col(list(SUMMARY_KEYS)).cast(pl.Utf8), pl.col("examples").cast(pl.List(pl.Utf8)))
    return df.group_by(list(SUMMARY_KEYS)).agg(
        pl.col("rows").sum(), pl.col("bytes").sum(), pl.col("tokens").sum(),
        pl.col("examples").explode().drop_nulls().bottom_k(N_EXAMPLES))


def _final_files(batch: pa.Table, run_dir: str, name: str, text_field: str, id_field: str | None) -> list[str]:
    live = live_mask(batch)
    files = []
    for part, table in (("curated", batch.filter(live).drop_columns(["reject_stage", "reject_reason"])),
                        ("rejected", batch.filter(pc.invert(live)))):
        if table.num_rows:
            path = Path(run_dir) / part / name
            write_atomic(restore_field_names(table, text_field, id_field), path)
            files.append(str(path))
    return files


def write_stream(batch: pa.Table, run_dir: str, stream: str, unit_col: str, target: str,
                 text_field: str, id_field: str | None, pad: tuple = ()) -> pa.Table:
    """Sink of a stream: per input unit in the batch, write its rows and record a manifest entry.

    `target` is "final" (curated/ + rejected/) or a segment folder before a global stage. Rows that
    are already rejected skip the segment: they go to rejected/ now, with typed null columns `pad`
    ((name, type) of every later stage's output) so that all of rejected/ shares one schema, and only
    live rows are written again and again through the global stages. The stage counters the batch
    carries are recorded with its first unit.
    """
    from pipeline.manifest import Manifest
    from pipeline.readers import file_tag

    batch, carried = pop_stats(with_reject_columns(batch))
    stages = merge_stats(carried)
    manifest = Manifest(run_dir, stream)
    units = pc.unique(batch[unit_col]).to_pylist()
    for unit in units:
        part = batch.filter(pc.equal(batch[unit_col], unit)) if len(units) > 1 else batch
        part = part.drop_columns([unit_col])  # bookkeeping (the read unit or segment file), not data
        key = batch_key(part)
        name = f"part-{file_tag(unit)}-{key}.parquet"
        if target == "final":
            files = _final_files(part, run_dir, name, text_field, id_field)
            manifest.record(unit, key, part.num_rows, files, summarize(part), stages)
            stages = None
            continue
        live = live_mask(part)
        files, summary, alive = [], None, part
        if part.num_rows and not pc.all(live).as_py():
            dead = part.filter(pc.invert(live))
            for col, typ in pad:
                if col not in dead.column_names:
                    dead = dead.append_column(col, pa.nulls(dead.num_rows, typ))
            files, summary = _final_files(dead, run_dir, name, text_field, id_field), summarize(dead)
            alive = part.filter(live)
        if alive.num_rows:
            path = Path(target) / name
            write_atomic(alive, path, compression="lz4")
            files.append(str(path))
        manifest.record(unit, key, part.num_rows, files, summary, stages)
        stages = None
    return pa.table({"rows": [batch.num_rows]})
