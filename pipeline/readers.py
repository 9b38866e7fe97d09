"""Streaming readers for JSONL (plain, .gz, .zst), Parquet, Arrow and `datasets.save_to_disk` folders.

`read_file` yields Arrow batches of documents with `id`, `text`, the input's other columns and the
provenance columns `input_file` / `input_row`. `input_units` splits large Parquet files into runs of
row groups, so that one big file is read by many tasks. Anything that cannot become a document
(malformed JSON, invalid UTF-8, a missing or non-string text field) goes to the `Quarantine` with the
file, the line or row, the error and the raw bytes; nothing is dropped silently.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

QUARANTINE_SCHEMA = pa.schema([("file", pa.string()), ("row", pa.int64()), ("error", pa.string()),
                               ("raw", pa.large_binary())])
PROVENANCE = ("input_file", "input_row")


@dataclass
class ReadStats:
    file: str
    rows_read: int = 0
    rows_ok: int = 0
    rows_quarantined: int = 0
    bytes_read: int = 0
    warnings: list[str] = field(default_factory=list)


class Quarantine:
    """Collects rows that could not be parsed; `table()` gives them in `QUARANTINE_SCHEMA`."""

    def __init__(self, file: str):
        self.file = file
        self.rows: list[tuple[int, str, bytes | None]] = []

    def add(self, row: int, error: str, raw: bytes | None) -> None:
        self.rows.append((row, error, raw))

    def table(self) -> pa.Table:
        return pa.table({"file": [self.file] * len(self.rows), "row": [r[0] for r in self.rows],
                         "error": [r[1] for r in self.rows], "raw": [r[2] for r in self.rows]},
                        schema=QUARANTINE_SCHEMA)


def file_tag(path: str) -> str:
    """Short stable tag of a file path, used in generated ids and output names."""
    return hashlib.sha1(path.encode()).hexdigest()[:10]


UNIT_SEP = "#row_groups="


def input_units(paths: list[str], split_bytes: int) -> list[str]:
    """The read units of the inputs, one read task each: a Parquet file larger than `split_bytes`
    becomes parts of consecutive row groups of about `split_bytes` compressed (`FILE#row_groups=A-B`,
    groups A to B-1); any other input, a file of one row group, or one whose footer cannot be read (its
    read task reports why) is one unit."""
    units = []
    for p in paths:
        if input_kind(Path(p)) != "parquet" or os.path.getsize(p) <= split_bytes:
            units.append(p)
            continue
        try:
            meta = pq.ParquetFile(p).metadata
        except (OSError, pa.ArrowException):
            units.append(p)
            continue
        parts, start, size = [], 0, 0
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            size += sum(rg.column(j).total_compressed_size for j in range(rg.num_columns))
            if size >= split_bytes or i == meta.num_row_groups - 1:
                parts.append((start, i + 1))
                start, size = i + 1, 0
        units += [p] if len(parts) <= 1 else [f"{p}{UNIT_SEP}{a}-{b}" for a, b in parts]
    return units


def split_unit(unit: str) -> tuple[str, tuple[int, int] | None]:
    """(file, (first row group, end row group) or None for the whole file) of a read unit."""
    path, sep, groups = unit.rpartition(UNIT_SEP)
    if not sep:
        return unit, None
    a, b = groups.split("-")
    return path, (int(a), int(b))


def merge_read_stats(stats: list[dict]) -> list[dict]:
    """The read stats of a file's units summed into one entry per file, in first-seen order."""
    out: dict[str, dict] = {}
    for st in stats:
        if st["file"] not in out:
            out[st["file"]] = {**st, "warnings": list(st["warnings"])}
            continue
        into = out[st["file"]]
        for k in ("rows_read", "rows_ok", "rows_quarantined", "bytes_read"):
            into[k] += st[k]
        into["warnings"] += st["warnings"]
    return list(out.values())


def input_kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "hf"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".arrow"):
        return "arrow"
    return "jsonl"


def _open_lines(path: Path):
    name = path.name.lower()
    raw = open(path, "rb")
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if name.endswith(".zst"):
        import zstandard
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return raw


def _finish(records: list[dict], rows: list[int], path: str, text_field: str, id_field: str | None,
            stats: ReadStats) -> pa.Table:
    """Records -> Arrow with the union of their keys; a field of mixed types is kept as JSON text."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    cols = {}
    for k in keys:
        values = [r.get(k) for r in records]
        try:
            cols[k] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            cols[k] = pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
            msg = f"{path}: field {k!r} has mixed types; kept as JSON text"
            if msg not in stats.warnings:
                stats.warnings.append(msg)
    table = pa.table(cols)
    return _normalise(table, pa.array(rows, pa.int64()), path, text_field, id_field)


def _normalise(table: pa.Table, rows: pa.Array, path: str, text_field: str, id_field: str | None
               ) -> pa.Table:
    """Rename the mapped fields to `id`/`text`, fill missing ids, add provenance columns."""
    names = table.column_names
    text = table[text_field].cast(pa.large_string())
    generated = pc.binary_join_element_wise(pa.scalar(file_tag(path)), rows.cast(pa.string()), ":")
    if id_field and id_field in names:
        ids = table[id_field].cast(pa.string())
        ids = pc.if_else(pc.is_null(ids), generated, ids)
    else:
        ids = generated
    drop = {text_field, "text", "id", *PROVENANCE} | ({id_field} if id_field else set())
    rest = [(n, table[n]) for n in names if n not in drop]
    cols = [("id", ids), ("text", text)] + rest + [("input_file", pa.array([path] * table.num_rows, pa.string())),
                                                   ("input_row", rows)]
    return pa.table(dict(cols))


def _read_jsonl(path: Path, stats: ReadStats, q: Quarantine, text_field: str, id_field: str | None,
                batch_rows: int, max_line_bytes: int) -> Iterator[pa.Table]:
    records: list[dict] = []
    rows: list[int] = []
    try:
        yield from _parse_lines(path, stats, q, text_field, id_field, batch_rows, max_line_bytes, records, rows)
    finally:  # a truncated archive: what was parsed before the error still becomes documents
        if records:
            yield _finish(records, rows, str(path), text_field, id_field, stats)


def _parse_lines(path, stats, q, text_field, id_field, batch_rows, max_line_bytes, records, rows):
    with _open_lines(path) as fh:
        line_no = 0
        while True:
            line = fh.readline(max_line_bytes + 1)
            if not line:
                break
            line_no += 1
            if len(line) > max_line_bytes and not line.endswith(b"\n"):
                rest = len(line)
                while True:  # skip the remainder of an over-long line
                    more = fh.readline(1 << 24)
                    rest += len(more)
                    if not more or more.endswith(b"\n"):
                        break
                stats.rows_read += 1
                stats.bytes_read += rest
                q.add(line_no, f"line longer than read.max_line_bytes={max_line_bytes} ({rest} bytes)",
                      line[:4096])
                continue
            stats.bytes_read += len(line)
            if not line.strip():
                continue
            stats.rows_read += 1
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                try:
                    line.decode("utf-8")
                    why = f"malformed JSON: {e}"
                except UnicodeDecodeError as ue:
                    why = f"invalid UTF-8 at byte {ue.start}: {ue.reason}"
                q.add(line_no, why, line)
                continue
            if not isinstance(rec, dict):
                q.add(line_no, f"expected a JSON object, got {type(rec).__name__}", line)
                continue
            text = rec.get(text_field)
            if not isinstance(text, str):
                why = (f"missing text field {text_field!r}" if text_field not in rec
                       else f"text field {text_field!r} is {type(text).__name__}, expected a string")
                q.add(line_no, why, line)
                continue
            records.append(rec)
            rows.append(line_no)
            if len(records) >= batch_rows:
                yield _finish(records, rows, str(path), text_field, id_field, stats)
                records.clear()
                rows.clear()


def _arrow_batches(path: Path, kind: str, batch_rows: int, row_groups: tuple[int, int] | None
                   ) -> Iterator[pa.RecordBatch]:
    if kind == "parquet":
        groups = None if row_groups is None else list(range(*row_groups))
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, row_groups=groups)
        return
    if kind == "arrow":
        files = [path]
    else:  # datasets.save_to_disk folder
        state = json.loads((path / "state.json").read_text())
        files = [path / f["filename"] for f in state.get("_data_files", [])]
    for f in files:
        with pa.memory_map(str(f)) as src:
            try:
                reader = pa.ipc.open_stream(src)
            except pa.ArrowInvalid:
                reader = pa.ipc.open_file(src)
                for i in range(reader.num_record_batches):
                    yield from pa.Table.from_batches([reader.get_batch(i)]).to_batches(max_chunksize=batch_rows)
                continue
            for batch in reader:
                yield from pa.Table.from_batches([batch]).to_batches(max_chunksize=batch_rows)


def _read_columnar(path: Path, kind: str, stats: ReadStats, q: Quarantine, text_field: str,
                   id_field: str | None, batch_rows: int, row_groups: tuple[int, int] | None) -> Iterator[pa.Table]:
    offset = 0  # rows are numbered within the file, whatever part of it is read
    if row_groups is not None:
        meta = pq.ParquetFile(path).metadata
        offset = sum(meta.row_group(i).num_rows for i in range(row_groups[0]))
    for batch in _arrow_batches(path, kind, batch_rows, row_groups):
        table = pa.Table.from_batches([batch])
        n = table.num_rows
        rows = pa.array(range(offset, offset + n), pa.int64())
        offset += n
        stats.rows_read += n
        stats.bytes_read += table.nbytes
        if text_field not in table.column_names:
            for i, rec in enumerate(table.to_pylist()):
                q.add(offset - n + i, f"missing text column {text_field!r} (columns: {table.column_names})",
                      json.dumps(rec, default=str).encode())
            continue
        col = table[text_field]
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            for i, rec in enumerate(table.to_pylist()):
                q.add(offset - n + i, f"text column {text_field!r} has type {col.type}, expected string",
                      json.dumps(rec, default=str).encode())
            continue
        bad = pc.is_null(col)
        if pc.any(bad).as_py():
            for i in pc.indices_nonzero(bad).to_pylist():
                q.add(offset - n + i, f"text field {text_field!r} is null",
                      json.dumps(table.slice(i, 1).to_pylist()[0], default=str).encode())
            keep = pc.invert(bad)
            table, rows = table.filter(keep), rows.filter(keep)
        if table.num_rows:
            yield _normalise(table, rows, str(path), text_field, id_field)


def read_file(path: Path, stats: ReadStats, q: Quarantine, text_field: str = "text",
              id_field: str | None = "id", batch_rows: int = 2000,
              max_line_bytes: int = 256 * 1024**2, row_groups: tuple[int, int] | None = None) -> Iterator[pa.Table]:
    """Yield document batches of one input (of its Parquet `row_groups` A to B-1 if given); problems go
    to `q`, counts to `stats`."""
    kind = input_kind(path)
    try:
        if kind == "jsonl":
            gen = _read_jsonl(path, stats, q, text_field, id_field, batch_rows, max_line_bytes)
        else:
            gen = _read_columnar(path, kind, stats, q, text_field, id_field, batch_rows, row_groups)
        for t in gen:
            stats.rows_ok += t.num_rows
            yield t
    except (OSError, EOFError, pa.ArrowException, json.JSONDecodeError, KeyError, ValueError) as e:
        # A truncated archive or an unreadable file: what was read stays; the rest is reported.
        stats.warnings.append(f"{path}: stopped reading after {stats.rows_read} rows: {type(e).__name__}: {e}")
        q.add(-1, f"file unreadable past row {stats.rows_read}: {type(e).__name__}: {e}", None)
        stats.rows_read += 1
    stats.rows_quarantined = len(q.rows)
    if stats.rows_read == 0 and row_groups is None:
        stats.warnings.append(f"{path}: empty input (0 rows)")
