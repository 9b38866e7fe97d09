"""Streaming readers for JSONL (plain, .gz, .zst), Parquet, Arrow, `datasets.save_to_disk` folders and
WARC / WET files (`tamis.pipeline.warc`: one row per record).

`read_file` yields Arrow batches of documents with `id`, `text`, the input's other columns and the
provenance columns `input_file` / `input_row`. `input_units` splits large Parquet files into runs of
row groups (and large `.warc.gz` files into byte ranges), so that one big file is read by many tasks. Anything that cannot become a document
(malformed JSON, invalid UTF-8, a missing or non-string text field) goes to the `Quarantine` with the
file, the line or row, the error and the raw bytes; nothing is dropped silently.

A JSONL file's batches are held (`_Spool`) until the file has been read to its end: a compressed
stream that fails its checksum or is cut short sends all its lines to quarantine (`ReadStats.corrupt`
says why), and a field whose type drifts between batches is unified over the whole file
(`promote_types`), so that the batches of one file share one schema. Ids of any JSON type become
canonical strings; input columns named like tamis's own (`RESERVED_COLUMNS`, `_tamis*`) are kept
under `source_<name>`.
"""
from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Iterable, Iterator, Sequence

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tamis.pipeline.warc import BYTES_SEP, SCHEMA as WARC_SCHEMA, WARC_SUFFIXES, is_warc, read_warc, warc_units

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
    # Why the input could not be read whole and verified (a compressed stream failing its checksum or
    # cut short, an unreadable file); None when it was. Its rows are then in quarantine.
    corrupt: str | None = None


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
        if input_kind(Path(p)) == "warc":
            units += warc_units(p, split_bytes)
            continue
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
    """(file, (first row group, end row group) or None for the whole file) of a read unit; for a
    WARC unit (`FILE#bytes=A-B`, `warc.warc_units`) the byte range (A, B)."""
    path, sep, groups = unit.rpartition(UNIT_SEP)
    if not sep:
        path, sep, groups = unit.rpartition(BYTES_SEP)
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
        into["corrupt"] = into.get("corrupt") or st.get("corrupt")
    return list(out.values())


def input_kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "hf"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".arrow"):
        return "arrow"
    if is_warc(path):
        return "warc"
    return "jsonl"


def input_columns(path: Path, sample_lines: int = 1000) -> set[str]:
    """The columns an input offers, read cheaply: Parquet/Arrow/`datasets` schemas, or the keys of
    the first `sample_lines` JSON lines (for checking keep rules before a job starts)."""
    kind = input_kind(path)
    if kind == "parquet":
        return set(pq.read_schema(path).names)
    if kind == "warc":
        return set(WARC_SCHEMA.names)
    if kind in ("arrow", "hf"):
        for batch in _arrow_batches(path, kind, 1, None):
            return set(batch.schema.names)
        return set()
    keys: set[str] = set()
    with _open_lines(path) as fh:
        for i, line in enumerate(fh):
            if i >= sample_lines:
                break
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                keys.update(obj)
    return keys


# -- column types: one promotion lattice for a file's batches and for a run's outputs -------------

def _stringish(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            or (pa.types.is_dictionary(t) and _stringish(t.value_type)))


def _number_or_bool(t: pa.DataType) -> bool:
    return pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t)


def _arrow_promotion(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    try:
        return pa.unify_schemas([pa.schema([("v", a)]), pa.schema([("v", b)])],
                                promote_options="permissive").field("v").type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def promote_types(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """The one type that values of types `a` and `b` of a column share: null < bool < integer <
    float < string; a string beside anything else is a string (the other values as JSON text); two
    nested types (struct, list) merge as Arrow's permissive promotion can (struct fields united, list
    items promoted), else, like nested beside anything else, they become JSON text."""
    if a.equals(b):
        return a
    if pa.types.is_null(a) or pa.types.is_null(b):
        return b if pa.types.is_null(a) else a
    if _stringish(a) or _stringish(b):
        return pa.large_string() if pa.types.is_large_string(a) or pa.types.is_large_string(b) else pa.string()
    if pa.types.is_nested(a) or pa.types.is_nested(b):
        both = pa.types.is_nested(a) and pa.types.is_nested(b)
        return (both and _arrow_promotion(a, b)) or pa.string()
    if pa.types.is_boolean(a) or pa.types.is_boolean(b):  # bool < integer < float
        other = b if pa.types.is_boolean(a) else a
        return other if pa.types.is_integer(other) or pa.types.is_floating(other) else pa.string()
    if _number_or_bool(a) and _number_or_bool(b):
        if pa.uint64() in (a, b) and (pa.types.is_signed_integer(a) or pa.types.is_signed_integer(b)):
            return pa.float64()  # uint64 beside a signed type: Arrow's int64 could not hold its values
        return _arrow_promotion(a, b) or pa.float64()
    return _arrow_promotion(a, b) or pa.string()


def unify_types(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """Every column of `schemas` (in order of first appearance) with the type `promote_types` gives."""
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            types[f.name] = promote_types(types[f.name], f.type) if f.name in types else f.type
    return pa.schema(list(types.items()))


def _json_default(v):
    return v.decode("utf-8", "backslashreplace") if isinstance(v, (bytes, bytearray)) else str(v)


def json_text(v, sort_keys: bool = False) -> str | None:
    """A value as text: a string as it is, anything else as compact JSON (`1`, `1.5`, `true`,
    `{"a":1}`; NaN and infinities as `NaN`, `Infinity`, `-Infinity`); None stays None."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    out = orjson.dumps(v, default=_json_default, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    return orjson.loads(out) if out[:1] == b'"' else out.decode()  # a date, a decimal: its text, unquoted


def _as_text(col: pa.ChunkedArray | pa.Array, to: pa.DataType, sort_keys: bool = False) -> pa.ChunkedArray:
    """A column as `json_text` strings; integers, booleans and strings through Arrow's cast (the same text)."""
    t = col.type
    if pa.types.is_null(t):
        return pa.chunked_array([pa.nulls(len(col), to)])
    if _stringish(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
        out = col.cast(to)
        return out if isinstance(out, pa.ChunkedArray) else pa.chunked_array([out])
    return pa.chunked_array([pa.array([json_text(v, sort_keys) for v in col.to_pylist()], to)])


def _cast_column(col: pa.ChunkedArray, to: pa.DataType, name: str) -> pa.ChunkedArray:
    if col.type.equals(to):
        return col
    if pa.types.is_null(col.type):
        return pa.chunked_array([pa.nulls(len(col), to)])
    if _stringish(to) and not _stringish(col.type):
        return _as_text(col, to)
    try:  # integers to floats may round (beyond 2**53); every other cast must be exact
        return col.cast(to, safe=not (pa.types.is_integer(col.type) and pa.types.is_floating(to)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise ValueError(f"column {name!r}: cannot convert {col.type} to {to}: {e}") from None


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with exactly the columns of `schema`, in its order and types (`promote_types`'s
    conversions; a missing column is all null)."""
    if table.schema.equals(schema):
        return table
    extra = set(table.column_names) - set(schema.names)
    if extra:
        raise ValueError(f"columns {sorted(extra)} are not in the target schema")
    cols = [_cast_column(table[f.name], f.type, f.name) if f.name in table.column_names
            else pa.chunked_array([pa.nulls(table.num_rows, f.type)]) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


# -- tamis's own column names ---------------------------------------------------------------------

RESERVED_COLUMNS = ("id", "text", "reject_stage", "reject_reason", "input_file", "input_row", "status",
                    "_tamis_unit", "_tamis_stats")
RESERVED_PREFIX = "_tamis"  # any column starting with it is tamis's bookkeeping
SOURCE_PREFIX = "source_"  # an input column named like one of tamis's is kept as source_<name>


def reserved_renames(names: Iterable[str], text_field: str, id_field: str | None,
                     reserved: Collection[str] = ()) -> dict[str, str]:
    """{input column: new name} for the input columns that collide with tamis's names
    (`RESERVED_COLUMNS`, `RESERVED_PREFIX*`, and `reserved`, e.g. the job's stage columns), other than
    the fields mapped to `text` and `id`: `source_<name>`, with more `source_` while that is taken."""
    names = list(names)
    taken = {*RESERVED_COLUMNS, *reserved}
    used = {*names, *taken}
    out = {}
    for n in names:
        if n in (text_field, id_field) or not (n in taken or n.startswith(RESERVED_PREFIX)):
            continue
        new = SOURCE_PREFIX + n
        while new in used:
            new = SOURCE_PREFIX + new
        used.add(new)
        out[n] = new
    return out


def _warn_renames(renames: dict[str, str], path: str, stats: ReadStats) -> None:
    if renames:
        stats.warnings.append(f"{path}: input column(s) named like tamis's own columns kept under new names: "
                              + ", ".join(f"{a} -> {b}" for a, b in renames.items()))


# -- ids ----------------------------------------------------------------------------------------

def canonical_id(v) -> str | None:
    """An id of any JSON type as a string: strings as they are, numbers and booleans as their JSON
    text (`1`, `1.5`, `true`), objects and arrays as compact JSON with sorted keys."""
    return json_text(v, sort_keys=True)


def _id_strings(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return _as_text(col, pa.string(), sort_keys=True)


# -- JSONL ----------------------------------------------------------------------------------------

class _ZstdFrames(io.RawIOBase):
    """Zstandard frames one after another as one stream. A frame cut short, or failing its checks
    (content checksum when the frame has one), raises: zstandard's own stream reader returns a
    truncated frame silently."""

    def __init__(self, raw):
        import zstandard
        self._raw, self._dctx, self._error = raw, zstandard.ZstdDecompressor(), zstandard.ZstdError
        self._obj = None  # the frame being decoded
        self._buf, self._pos = memoryview(b""), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self._pos >= len(self._buf):
            chunk = self._raw.read(1 << 18)
            if not chunk:
                if self._obj is not None:
                    raise EOFError("compressed file ended before the end of its last frame")
                return 0
            self._buf, self._pos = memoryview(self._decode(chunk)), 0
        n = min(len(b), len(self._buf) - self._pos)
        b[:n] = self._buf[self._pos:self._pos + n]
        self._pos += n
        return n

    def _decode(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            if self._obj is None:
                self._obj = self._dctx.decompressobj()
            try:
                out.append(self._obj.decompress(chunk))
            except self._error as e:
                raise OSError(f"data error ({str(e).removeprefix('zstd decompress error: ')})") from None
            chunk = b""
            if self._obj.eof:
                chunk, self._obj = self._obj.unused_data, None
        return b"".join(out)

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_lines(path: Path):
    name = path.name.lower()
    raw = open(path, "rb")
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if name.endswith(".zst"):
        return io.BufferedReader(_ZstdFrames(raw), buffer_size=1 << 20)
    return raw


# Errors of reading a JSONL stream (BadGzipFile and _ZstdFrames' errors are OSErrors).
_STREAM_ERRORS = (OSError, EOFError, zlib.error)


def _corrupt_reason(path: Path, e: BaseException) -> str:
    name = path.name.lower()
    fmt = "gzip" if name.endswith(".gz") else "zstd" if name.endswith(".zst") else None
    if fmt is None:
        return f"input unreadable: {type(e).__name__}: {e}"
    if isinstance(e, EOFError):
        what = f"stream truncated ({str(e)[:1].lower()}{str(e)[1:]})"
    elif isinstance(e, zlib.error):
        what = f"data error ({e})"
    else:
        what = str(e)
    return f"input corrupt: {fmt} {what}"


def _lines(fh, max_line_bytes: int) -> Iterator[tuple[int, bytes, int, bool]]:
    """(line number, bytes, size, over-long) of each line; an over-long line gives its first
    `max_line_bytes + 1` bytes and its whole size."""
    line_no = 0
    while True:
        line = fh.readline(max_line_bytes + 1)
        if not line:
            return
        line_no += 1
        size, long = len(line), len(line) > max_line_bytes and not line.endswith(b"\n")
        while long:  # skip the remainder of an over-long line
            more = fh.readline(1 << 24)
            size += len(more)
            if not more or more.endswith(b"\n"):
                break
        yield line_no, line, size, long


def _table_of(records: list[dict], path: str, id_field: str | None, stats: ReadStats) -> pa.Table:
    """Records -> Arrow with the union of their keys: ids as `canonical_id` strings; a field of mixed
    types within the batch takes the type `promote_types` gives (JSON text for non-strings in a string)."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    cols = {}
    for k in keys:
        values = [r.get(k) for r in records]
        if k == id_field:
            values = [canonical_id(v) for v in values]
        try:
            cols[k] = pa.array(values)
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
        kinds = {type(v) for v in values if v is not None}
        try:
            if kinds <= {bool, int}:
                cols[k] = pa.array([None if v is None else int(v) for v in values], pa.int64())
            elif kinds <= {bool, int, float}:
                cols[k] = pa.array([None if v is None else float(v) for v in values], pa.float64())
        except OverflowError:  # an integer beyond int64
            pass
        if k not in cols:
            cols[k] = pa.array([json_text(v) for v in values], pa.string())
        msg = (f"{path}: field {k!r} has values of types {', '.join(sorted(t.__name__ for t in kinds))}; "
               f"unified to {cols[k].type}" + (" (non-strings as JSON text)" if cols[k].type == pa.string() else ""))
        if msg not in stats.warnings:
            stats.warnings.append(msg)
    return pa.table(cols)


def _normalise(table: pa.Table, rows: pa.Array, path: str, text_field: str, id_field: str | None,
               renames: dict[str, str]) -> pa.Table:
    """Rename the mapped fields to `id`/`text` (ids as strings), fill missing ids, keep colliding
    input columns under `renames`, add provenance columns."""
    names = table.column_names
    text = table[text_field].cast(pa.large_string())
    generated = pc.binary_join_element_wise(pa.scalar(file_tag(path)), rows.cast(pa.string()), ":")
    if id_field and id_field in names:
        ids = _id_strings(table[id_field])
        ids = pc.if_else(pc.is_null(ids), generated, ids)
    else:
        ids = generated
    rest = [(renames.get(n, n), table[n]) for n in names if n not in (text_field, id_field)]
    cols = [("id", ids), ("text", text)] + rest + [("input_file", pa.array([path] * table.num_rows, pa.string())),
                                                   ("input_row", rows)]
    return pa.table(dict(cols))


SPOOL_MEMORY_BYTES = 128 << 20


class _Spool:
    """The batches of one file, held until the file has been read to its end: in memory up to
    `SPOOL_MEMORY_BYTES`, then in temporary Arrow IPC files under $TMPDIR (one per run of equal
    schemas; uncompressed: lz4 cost 0.6 s of CPU per 190 MB, a write to the page cache 0.1 s)."""

    def __init__(self, limit: int | None = None):
        self.limit, self.held = SPOOL_MEMORY_BYTES if limit is None else limit, 0
        self.parts: list[tuple[pa.Table | str, list]] = []  # (table, rows) or (IPC file, [rows per batch])
        self.schemas: list[pa.Schema] = []
        self._dir: str | None = None
        self._writer = None
        self._schema: pa.Schema | None = None

    def add(self, table: pa.Table, rows: pa.Array) -> None:
        if not any(table.schema.equals(s) for s in self.schemas):
            self.schemas.append(table.schema)
        if self._dir is None and self.held + table.nbytes <= self.limit:
            self.held += table.nbytes
            self.parts.append((table, rows))
            return
        if self._writer is None or not table.schema.equals(self._schema):
            self._close_writer()
            self._dir = self._dir or tempfile.mkdtemp(prefix="tamis-read-")
            path = os.path.join(self._dir, f"{len(self.parts)}.arrow")
            self._writer = pa.ipc.new_stream(path, table.schema)
            self._schema = table.schema
            self.parts.append((path, []))
        self._writer.write_batch(table.combine_chunks().to_batches()[0])
        self.parts[-1][1].append(rows)

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __iter__(self) -> Iterator[tuple[pa.Table, pa.Array]]:
        """The batches in order, each let go of once given."""
        self._close_writer()
        for i, (part, rows) in enumerate(self.parts):
            self.parts[i] = (None, None)
            if isinstance(part, pa.Table):
                yield part, rows
                continue
            for batch, r in zip(pa.ipc.open_stream(pa.memory_map(part)), rows):
                yield pa.Table.from_batches([batch]), r

    def close(self) -> None:
        self._close_writer()
        self.parts.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def _read_jsonl(path: Path, stats: ReadStats, q: Quarantine, text_field: str, id_field: str | None,
                batch_rows: int, max_line_bytes: int, reserved: Collection[str]) -> Iterator[pa.Table]:
    """The documents of a JSONL file, yielded once the whole file has been read (and, compressed,
    verified): batches of one schema (drifting fields unified), colliding columns renamed. A stream
    that fails its checks or is cut short yields nothing: every line goes to quarantine (`_salvage`)."""
    spool = _Spool()
    before = (stats.rows_read, stats.bytes_read, len(stats.warnings), len(q.rows))
    try:
        try:
            for records, rows in _parse_lines(path, stats, q, text_field, batch_rows, max_line_bytes):
                spool.add(_table_of(records, str(path), id_field, stats), pa.array(rows, pa.int64()))
        except _STREAM_ERRORS as e:
            spool.close()
            stats.rows_read, stats.bytes_read = before[:2]
            del stats.warnings[before[2]:], q.rows[before[3]:]
            _salvage(path, stats, q, _corrupt_reason(path, e), max_line_bytes)
            return
        schema = unify_types(spool.schemas)
        for f in schema:
            kinds = sorted({str(s.field(f.name).type) for s in spool.schemas if f.name in s.names} - {"null"})
            if len(kinds) > 1:
                stats.warnings.append(f"{path}: field {f.name!r} has types {', '.join(kinds)} across batches; "
                                      f"unified to {f.type}")
        renames = reserved_renames(schema.names, text_field, id_field, reserved)
        _warn_renames(renames, str(path), stats)
        for table, rows in spool:
            yield _normalise(conform(table, schema), rows, str(path), text_field, id_field, renames)
    finally:
        spool.close()


def _salvage(path: Path, stats: ReadStats, q: Quarantine, reason: str, max_line_bytes: int) -> None:
    """Every line of a corrupt input that can still be read goes to quarantine with `reason`; the
    rest of the file, past the error, is one more quarantined row (row -1)."""
    stats.corrupt = reason
    line_no = 0
    try:
        with _open_lines(path) as fh:
            for line_no, line, size, long in _lines(fh, max_line_bytes):
                stats.bytes_read += size
                if long or line.strip():
                    stats.rows_read += 1
                    q.add(line_no, reason, line[:4096] if long else line)
    except _STREAM_ERRORS:
        stats.rows_read += 1
        q.add(-1, f"{reason}; nothing after line {line_no} could be read", None)
    stats.warnings.append(f"{path}: {reason}: all {stats.rows_read} rows quarantined, none curated")


def _parse_lines(path: Path, stats: ReadStats, q: Quarantine, text_field: str, batch_rows: int,
                 max_line_bytes: int) -> Iterator[tuple[list[dict], list[int]]]:
    """(records, line numbers) of `batch_rows` documents at a time; bad lines go to `q`."""
    records: list[dict] = []
    rows: list[int] = []
    with _open_lines(path) as fh:
        for line_no, line, size, long in _lines(fh, max_line_bytes):
            stats.bytes_read += size
            if long:
                stats.rows_read += 1
                q.add(line_no, f"line longer than read.max_line_bytes={max_line_bytes} ({size} bytes)",
                      line[:4096])
                continue
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
                yield records, rows
                records, rows = [], []
    if records:
        yield records, rows


def _arrow_batches(path: Path, kind: str, batch_rows: int, row_groups: tuple[int, int] | None
                   ) -> Iterator[pa.RecordBatch]:
    if kind == "parquet":
        groups = None if row_groups is None else list(range(*row_groups))
        # pages written with a CRC (write_page_checksum) are verified; a failing page stops the read
        yield from pq.ParquetFile(path, page_checksum_verification=True).iter_batches(batch_size=batch_rows,
                                                                                      row_groups=groups)
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
                   id_field: str | None, batch_rows: int, row_groups: tuple[int, int] | None,
                   reserved: Collection[str] = ()) -> Iterator[pa.Table]:
    offset = 0  # rows are numbered within the file, whatever part of it is read
    if row_groups is not None:
        meta = pq.ParquetFile(path).metadata
        offset = sum(meta.row_group(i).num_rows for i in range(row_groups[0]))
    renames = None
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
        if renames is None:
            renames = reserved_renames(table.column_names, text_field, id_field, reserved)
            _warn_renames(renames, str(path), stats)
        if table.num_rows:
            yield _normalise(table, rows, str(path), text_field, id_field, renames)


def _read_warc(path: Path, stats: ReadStats, q: Quarantine, batch_rows: int, reserved: Collection[str],
               byte_range: tuple[int, int] | None) -> Iterator[pa.Table]:
    """WARC / WET records as documents (`tamis.pipeline.warc`): `id` is the WARC-Record-ID, `input_row`
    the record's byte offset."""
    renames = reserved_renames(WARC_SCHEMA.names, "text", "id", reserved)
    _warn_renames(renames, str(path), stats)
    for table, rows in read_warc(path, stats, q, batch_rows, byte_range):
        yield _normalise(table, rows, str(path), "text", "id", renames)


def read_file(path: Path, stats: ReadStats, q: Quarantine, text_field: str = "text",
              id_field: str | None = "id", batch_rows: int = 2000,
              max_line_bytes: int = 256 * 1024**2, row_groups: tuple[int, int] | None = None,
              reserved: Collection[str] = ()) -> Iterator[pa.Table]:
    """Yield document batches of one input (of its Parquet `row_groups` A to B-1 if given); problems go
    to `q`, counts to `stats`. Input columns named like tamis's own or in `reserved` (e.g. the job's
    stage columns) are kept as `source_<name>` (`reserved_renames`)."""
    kind = input_kind(path)
    try:
        if kind == "jsonl":
            gen = _read_jsonl(path, stats, q, text_field, id_field, batch_rows, max_line_bytes, reserved)
        elif kind == "warc":  # `row_groups` is then a byte range (`split_unit`)
            gen = _read_warc(path, stats, q, batch_rows, reserved, row_groups)
        else:
            gen = _read_columnar(path, kind, stats, q, text_field, id_field, batch_rows, row_groups, reserved)
        for t in gen:
            stats.rows_ok += t.num_rows
            yield t
    except (OSError, EOFError, pa.ArrowException, json.JSONDecodeError, KeyError, ValueError) as e:
        # An unreadable file: what was read stays; the rest is reported, and the input marked corrupt.
        stats.warnings.append(f"{path}: stopped reading after {stats.rows_read} rows: {type(e).__name__}: {e}")
        stats.corrupt = f"file unreadable past row {stats.rows_read}: {type(e).__name__}: {e}"
        q.add(-1, stats.corrupt, None)
        stats.rows_read += 1
    stats.rows_quarantined = len(q.rows)
    if stats.rows_read == 0 and row_groups is None:
        stats.warnings.append(f"{path}: empty input (0 rows)")


class InputError(ValueError):
    """Inputs that name nothing readable; the message names the input."""


INPUT_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".parquet", ".arrow",
                  *WARC_SUFFIXES)


def is_hf_dataset_dir(p: Path) -> bool:
    """A `datasets.save_to_disk` folder (a dataset or a dataset dict)."""
    return p.is_dir() and any((p / f).is_file() for f in ("state.json", "dataset_dict.json"))


def expand_inputs(inputs: list[str], source: str) -> list[Path]:
    """Files, globs and folders -> a sorted list of input files (HF `save_to_disk` folders kept whole)."""
    if not inputs:
        raise InputError(f"{source}: inputs: no input given (set 'inputs:' or pass --input)")
    out: list[Path] = []
    for i, item in enumerate(inputs):
        item_path = Path(os.path.expanduser(item))
        matches = sorted(glob.glob(str(item_path), recursive=True)) if glob.has_magic(item) else [str(item_path)]
        if not matches or not all(Path(m).exists() for m in matches):
            raise InputError(f"{source}: inputs[{i}]: no such file or folder: {item}")
        for m in map(Path, matches):
            if m.is_dir() and not is_hf_dataset_dir(m):
                hf = sorted(d.parent for d in m.rglob("state.json"))
                files = [f for f in m.rglob("*") if f.is_file() and f.name.endswith(INPUT_SUFFIXES)
                         and not any(part.startswith((".", "_")) for part in f.relative_to(m).parts)
                         and not any(h in f.parents for h in hf)]
                if not files and not hf:
                    raise InputError(f"{source}: inputs[{i}]: folder {m} holds no input files "
                                    f"({', '.join(INPUT_SUFFIXES)} or a datasets save_to_disk folder)")
                out.extend(sorted(files + hf))
            else:
                out.append(m)
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(key)
    return unique


def _input_data_files(path: Path) -> list[Path]:
    """The files behind an input: the file itself; for a `datasets.save_to_disk` folder its state.json
    and data files; for any other folder every file in it."""
    if not path.is_dir():
        return [path]
    state = path / "state.json"
    if state.is_file():
        data = [path / f["filename"] for f in json.loads(state.read_text()).get("_data_files", [])]
        return [state, *data]
    return sorted(f for f in path.rglob("*") if f.is_file())


def input_fingerprint(path: Path, mode: str = "stat") -> dict:
    """What identifies an input's content for resuming a run: per file behind it, its size and
    modification time in ns (`stat`), or the sha256 of its bytes, read streaming (`content`)."""
    path = Path(path)
    out = []
    for f in _input_data_files(path):
        name = f.relative_to(path).as_posix() if path.is_dir() else f.name
        if mode == "content":
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            out.append([name, h.hexdigest()])
        else:
            st = f.stat()
            out.append([name, st.st_size, st.st_mtime_ns])
    return {"path": str(path), "files": out}


def run_outputs(path: Path) -> Path:
    """A run folder stands for its curated rows; any other path for itself."""
    return path / "curated" if (path / "run.json").is_file() and (path / "curated").is_dir() else path


def iter_documents(paths: str | Path | Sequence, text_field: str = "text", id_field: str | None = "id",
                   source: str = "inputs") -> Iterator[tuple[Path, pa.Table, "ReadStats", "Quarantine"]]:
    """(file, batch, stats, quarantine) for every document batch of files / folders / globs / run
    folders, read as `tamis run` reads them (ids generated when `id_field` is missing); rows that
    cannot be read are counted in the file's `Quarantine`, never returned."""
    paths = [paths] if isinstance(paths, (str, bytes)) or hasattr(paths, "__fspath__") else list(paths)
    for f in expand_inputs([str(run_outputs(Path(p))) for p in paths], source):
        stats, q = ReadStats(str(f)), Quarantine(str(f))
        for t in read_file(f, stats, q, text_field, id_field):
            yield f, t, stats, q
        if stats.rows_ok == 0 and q.rows:
            raise InputError(f"{f}: no readable documents with a string column {text_field!r} "
                             f"(first error: {q.rows[0][1]})")


def read_documents(paths: str | Path | Sequence, text_field: str = "text", id_field: str | None = "id",
                   columns: Sequence[str] | None = None, source: str = "inputs") -> pa.Table:
    """Every readable document of `paths` as one table (only `columns` if given): `iter_documents`
    collected, for commands that work on a sample in memory (annotate, learn-weights, mix)."""
    tables = []
    for f, t, _, _ in iter_documents(paths, text_field, id_field, source):
        if columns is not None:
            missing = [c for c in columns if c not in t.column_names]
            if missing:
                raise InputError(f"{f}: no column(s) {missing}; it has {t.column_names}")
            t = t.select(list(columns))
        tables.append(t)
    if not tables:
        empty = {"id": pa.array([], pa.string()), "text": pa.array([], pa.large_string())}
        return pa.table({c: empty.get(c, pa.array([], pa.string())) for c in (columns or empty)})
    return pa.concat_tables(tables, promote_options="permissive")

