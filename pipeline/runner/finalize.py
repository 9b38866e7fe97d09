"""After the streams: one schema per output folder, so that curated/ and rejected/ read as one dataset.

Inputs whose fields differ in type from file to file (an `int` here, a `string` there) give output
files of different schemas; pyarrow, polars and `datasets` then refuse to read the folder whole.
`unify_output_schemas` reads the Parquet footers of curated/ and rejected/ (cheap), gives every column
the type `tamis.pipeline.readers.promote_types` gives over all files of both folders, and rewrites
(atomically) only the files whose schema differs from their folder's: columns cast or JSON-encoded,
missing columns added as nulls, columns in one order.
"""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tamis.pipeline.readers import conform, promote_types
from tamis.pipeline.run_folder import RunFolder

PARTS = ("curated", "rejected")


def _rewrite(path: Path, schema: pa.Schema) -> None:
    """Rewrite one Parquet file in `schema`, batch by batch, under a temporary name in its folder, then
    rename it into place (a reader never sees a half-written file; a crash leaves the old one)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.unify.tmp")
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as out:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
                try:
                    out.write_table(conform(pa.Table.from_batches([batch]), schema))
                except ValueError as e:
                    raise ValueError(f"{path}: {e}") from None
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def unify_output_schemas(folder: RunFolder) -> dict:
    """Give all Parquet files of curated/ (and of rejected/) one schema; returns what it did:
    `files_rewritten` (paths relative to the run folder), `columns` ({column: {"from": [types],
    "to": type}} for columns of more than one non-null type) and `columns_added` ({part: columns that
    some of its files lacked, now null there})."""
    files = {part: folder.output_files(part) for part in PARTS}
    schemas = {f: pq.read_schema(f).remove_metadata() for fs in files.values() for f in fs}
    types: dict[str, pa.DataType] = {}
    seen: dict[str, list[str]] = {}
    for schema in schemas.values():
        for f in schema:
            types[f.name] = promote_types(types[f.name], f.type) if f.name in types else f.type
            if not pa.types.is_null(f.type) and str(f.type) not in seen.setdefault(f.name, []):
                seen[f.name].append(str(f.type))
    rewritten, added = [], {}
    for part, fs in files.items():
        names = list(dict.fromkeys(n for f in fs for n in schemas[f].names))
        target = pa.schema([(n, types[n]) for n in names])
        missing = sorted({n for f in fs for n in names if n not in schemas[f].names})
        if missing:
            added[part] = missing
        for f in fs:
            if not schemas[f].equals(target):
                _rewrite(f, target)
                rewritten.append(folder.rel(f))
    return {"files_rewritten": rewritten,
            "columns": {n: {"from": seen.get(n, []), "to": str(types[n])} for n in types if len(seen.get(n, [])) > 1},
            "columns_added": added}
