"""WARC and WET input: one row per record, parsed with FastWARC (the resiliparse project).

`read_warc` yields Arrow batches with `id` (the WARC-Record-ID), `text`, `url`, `warc_record_id`,
`warc_date`, `warc_type`, `content_type` (MIME type of the payload, lowercased, no parameters),
`charset` (the HTTP charset, if the server sent one), `http_status`, `warc_offset` (the record's byte
offset in the file; for `.warc.gz` that of its gzip member), `license` (a `WARC-License` header if
the record carries one, else null) and `domain` (the URL's host, lowercased, without `www.`: the
run report's provenance groups by it), plus the provenance columns `input_file` / `input_row` (the
record's byte offset, as `warc_offset`: unique in the file however it is split into read units).

Every `response`, `resource` and `conversion` (WET) record becomes a row, whatever its payload:
- a text payload (text/*, HTML, XHTML, XML, JSON) is decoded to `text`: with the HTTP charset when
  Python knows it, else as UTF-8 when it is valid UTF-8, else with the charset resiliparse detects
  (HTML `<meta>` included), falling back to UTF-8 and Windows-1252 (undecodable bytes replaced, never
  an error);
- any other payload (an image, a PDF, a font) and an empty one (a redirect) is not decoded: `text` is a
  one-line stand-in such as `[image/png payload, 2,048 bytes, HTTP 200]`, so that the row is counted
  and the extraction stage rejects it with a reason (`not_html`, `redirect`) instead of it vanishing.
`warcinfo`, `request`, `metadata` and `revisit` records describe other records and are not documents:
they are counted in the read warnings, not read as rows.

A record cut short (fewer payload bytes than its Content-Length), a response whose HTTP headers do not
parse, and bytes that are not a WARC record go to the quarantine with the file and the byte offset;
reading resumes at the next record found after the damage (a gzip member that decompresses to
`WARC/`, or a `WARC/1.` line in a plain file), so one bad record loses nothing else. Quarantine rows
carry the byte offset as their `row`.

A `.warc.gz` larger than `read.split_bytes` is read by several tasks (`warc_units`): byte ranges, each
holding the records whose gzip member starts in it; a task finds its first record by the same
resynchronisation (a candidate member must decompress to `WARC/`), so no index is needed.

Suffixes: `.warc`, `.warc.gz`, `.warc.zst` (a zstd stream: offsets are then positions in the
decompressed stream), and the same with `.wet` (Common Crawl names WET files `*.warc.wet.gz`).
"""
from __future__ import annotations

import codecs
import zlib
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pyarrow as pa
from fastwarc.stream_io import ZstdReader
from fastwarc.warc import ArchiveIterator, WarcRecordType
from resiliparse.parse.encoding import bytes_to_str, detect_encoding

WARC_SUFFIXES = (".warc", ".warc.gz", ".warc.zst", ".wet", ".wet.gz", ".wet.zst")
DOCUMENT_TYPES = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion
LICENSE_HEADER = "WARC-License"  # not a standard WARC header: how data/sample_web records its licences
# Payload types decoded to text; anything else gets a stand-in text.
_TEXT_TYPES = ("text/", "application/xhtml+xml", "application/xml", "application/json",
               "application/javascript", "application/rss+xml", "application/atom+xml")
COLUMNS = {"url": pa.string(), "warc_record_id": pa.string(), "warc_date": pa.string(),
           "warc_type": pa.string(), "content_type": pa.string(), "charset": pa.string(),
           "http_status": pa.int32(), "warc_offset": pa.int64(), "license": pa.string(), "domain": pa.string()}
SCHEMA = pa.schema([("id", pa.string()), ("text", pa.large_string()), *COLUMNS.items()])


def is_warc(path: Path) -> bool:
    return path.name.lower().endswith(WARC_SUFFIXES)


def _compression(path: Path) -> str | None:
    name = path.name.lower()
    return "gzip" if name.endswith(".gz") else "zstd" if name.endswith(".zst") else None


def _known_codec(name: str | None) -> str | None:
    if not name:
        return None
    try:
        return codecs.lookup(name.strip().strip("'\"")).name
    except LookupError:
        return None


def decode_payload(payload: bytes, charset: str | None) -> str:
    """Payload bytes as text: the declared `charset` if Python knows it; else UTF-8 if the bytes are
    valid UTF-8, else the detected charset (resiliparse: BOM, HTML meta, byte statistics); falling back
    to UTF-8 then Windows-1252, undecodable bytes replaced."""
    enc = _known_codec(charset)
    if enc is None:
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            enc = detect_encoding(payload, from_html_meta=True)
    return bytes_to_str(payload, enc, errors="replace", fallback_encodings=("utf-8", "cp1252"))


def _mime(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def _inflate(payload: bytes, encoding: str | None) -> bytes:
    """Undo an HTTP Content-Encoding a crawler kept (gzip, deflate); other payloads as they are."""
    enc = (encoding or "").strip().lower()
    if enc in ("gzip", "x-gzip", "deflate"):
        try:
            return zlib.decompressobj(47 if enc != "deflate" else zlib.MAX_WBITS).decompress(payload)
        except zlib.error:
            try:
                return zlib.decompress(payload, -zlib.MAX_WBITS)  # raw deflate, as some servers send it
            except zlib.error:
                return payload
    return payload


class _Batch:
    def __init__(self):
        self.cols: dict[str, list] = {name: [] for name in SCHEMA.names}
        self.rows: list[int] = []

    def add(self, row: int, values: dict) -> None:
        for k, v in self.cols.items():
            v.append(values.get(k))
        self.rows.append(row)

    def table(self) -> pa.Table:
        return pa.table({k: pa.array(v, SCHEMA.field(k).type) for k, v in self.cols.items()}, schema=SCHEMA)


def _open(path: Path, offset: int):
    fh = open(path, "rb")
    fh.seek(offset)
    return ZstdReader(fh) if _compression(path) == "zstd" else fh


def _next_record_start(path: Path, after: int) -> int | None:
    """The offset of the first record that starts after byte `after`: a gzip member decompressing to
    `WARC/` (.gz), a line `WARC/1.` (plain); None when there is none. Not for zstd streams."""
    gz = _compression(path) == "gzip"
    magic = b"\x1f\x8b\x08" if gz else b"WARC/1."
    with open(path, "rb") as fh:
        pos = after + 1
        fh.seek(pos)
        tail = b""
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                return None
            buf = tail + chunk
            base = pos - len(tail)
            i = buf.find(magic)
            while i >= 0:
                if gz:
                    try:
                        head = zlib.decompressobj(31).decompress(buf[i:i + 4096], 8)
                    except zlib.error:
                        head = b""
                    if head.startswith(b"WARC/"):
                        return base + i
                elif i == 0 and base == 0 or buf[i - 1:i] == b"\n":
                    return base + i
                i = buf.find(magic, i + 1)
            tail = buf[-16:]
            pos += len(chunk)


def _tail_intact(path: Path, start: int) -> str | None:
    """Whether the file ends cleanly after the record starting at `start` (the last one read): None
    if so, else why not. Catches a file cut inside the last record's headers, which ends the parser
    silently."""
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read()
    if _compression(path) == "gzip":
        while data:
            d = zlib.decompressobj(31)
            try:
                d.decompress(data)
            except zlib.error as e:
                return f"gzip data error ({e})"
            if not d.eof:
                return "gzip stream cut short"
            data = d.unused_data.lstrip(b"\x00")
        return None
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return "file ends inside the record's headers"
    length = next((int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n"))
                   if k.strip().lower() == b"content-length" and v.strip().isdigit()), None)
    if length is None:
        return "record without Content-Length"
    if len(rest) < length:
        return f"record cut short: {len(rest):,} of {length:,} bytes"
    if rest[length:].strip(b"\r\n"):
        return "unparsed bytes after the last record"
    return None


def warc_units(path: str, split_bytes: int) -> list[str]:
    """The read units of a WARC file: a `.warc.gz` larger than `split_bytes` becomes byte ranges of
    about `split_bytes` (`FILE#bytes=A-B`: the records whose gzip member starts in [A, B), found by
    resynchronising at A); any other WARC file is one unit (a plain or zstd file cannot be entered
    safely in the middle)."""
    size = Path(path).stat().st_size
    if _compression(Path(path)) != "gzip" or size <= split_bytes:
        return [path]
    cuts = list(range(0, size, split_bytes)) + [size]
    return [f"{path}{BYTES_SEP}{a}-{b}" for a, b in zip(cuts, cuts[1:])]


BYTES_SEP = "#bytes="


def read_warc(path: Path, stats, q, batch_rows: int = 2000,
              byte_range: tuple[int, int] | None = None) -> Iterator[tuple[pa.Table, pa.Array]]:
    """(batch of `SCHEMA` rows, their byte offsets) for every document record of `path` (of the
    records starting in `byte_range` if given), before `readers._normalise` adds provenance; bad
    records to `q` (`readers.Quarantine`, row = byte offset), counts to `stats`."""
    batch, skipped = _Batch(), {}
    zstd = _compression(path) == "zstd"
    size = path.stat().st_size
    begin, end = byte_range if byte_range is not None else (0, size)
    offset = 0 if begin == 0 else _next_record_start(path, begin - 1)
    last = None
    while offset is not None and offset < end:
        src = _open(path, offset)
        resume = None
        try:
            for rec in ArchiveIterator(src, parse_http=True, auto_decode="none", strict_mode=False):
                if rec.stream_pos >= end and byte_range is not None:
                    break  # the next unit's first record
                last = rec.stream_pos
                rtype = rec.record_type
                if not rtype & DOCUMENT_TYPES:
                    skipped[str(rtype)] = skipped.get(str(rtype), 0) + 1
                    rec.consume()
                    continue
                values, why, raw = _record_values(rec)  # a read error here is counted once, below
                stats.rows_read += 1
                stats.bytes_read += len(raw)
                if why:
                    q.add(last, f"{path}: record at byte offset {last}: {why}", raw[:4096])
                else:
                    batch.add(last, values)
                if len(batch.rows) >= batch_rows:
                    yield batch.table(), pa.array(batch.rows, pa.int64())
                    batch = _Batch()
            else:  # the file's end: check that it ends where its last record does
                err = None if zstd or last is None else _tail_intact(path, last)
                if err is not None and not (q.rows and q.rows[-1][0] == last):  # not already quarantined
                    resume = _next_record_start(path, last)
                    stats.rows_read += 1
                    q.add(last, f"{path}: damaged data after the record at byte offset {last}: {err}; "
                          + ("nothing after it could be read" if resume is None
                             else f"reading resumed at byte offset {resume}"), None)
        except (OSError, ValueError) as e:
            bad = last if last is not None else offset
            resume = None if zstd else _next_record_start(path, bad)
            stats.rows_read += 1
            where = f"after the record at byte offset {bad}" if last is not None else f"at byte offset {bad}"
            q.add(bad, f"{path}: unreadable data {where}: {type(e).__name__}: {e}; "
                  + ("nothing after it could be read" if resume is None else f"reading resumed at byte offset {resume}"),
                  None)
            if resume is None and zstd:
                stats.corrupt = f"zstd stream unreadable after byte {bad} of the decompressed stream: {e}"
            last = None
        finally:
            src.close()
        offset = resume
    if batch.rows:
        yield batch.table(), pa.array(batch.rows, pa.int64())
    if skipped:
        stats.warnings.append(f"{path}: records that are not documents, not read: "
                              + ", ".join(f"{n} {k}" for k, n in sorted(skipped.items())))


def _record_values(rec) -> tuple[dict, str | None, bytes]:
    """(row values, why the record is bad or None, raw payload bytes)."""
    h = rec.headers
    declared = rec.content_length
    payload = rec.reader.read()
    values = {"id": rec.record_id, "warc_record_id": rec.record_id, "url": h.get("WARC-Target-URI"),
              "warc_date": h.get("WARC-Date"), "warc_type": str(rec.record_type), "warc_offset": rec.stream_pos,
              "license": h.get(LICENSE_HEADER)}
    try:
        host = (urlsplit(values["url"] or "").hostname or "").rstrip(".") or None
    except ValueError:
        host = None
    values["domain"] = host[4:] if host and host.startswith("www.") else host
    if len(payload) < declared:
        return values, f"record cut short: {len(payload):,} of {declared:,} payload bytes", payload
    http = rec.is_http
    wtype = h.get("Content-Type")
    if (rec.record_type == WarcRecordType.response and (wtype is None or "application/http" in wtype)
            and (not http or rec.http_headers.status_code is None)):
        return values, "HTTP headers do not parse (record cut short or not HTTP)", payload
    if http:
        hh = rec.http_headers
        values["http_status"] = hh.status_code
        values["content_type"] = _mime(hh.get("Content-Type"))
        values["charset"] = rec.http_charset
        payload = _inflate(payload, hh.get("Content-Encoding"))
    else:
        values["content_type"] = _mime(h.get("WARC-Identified-Payload-Type") or h.get("Content-Type"))
    ctype = values["content_type"]
    if payload and (ctype is None or ctype.startswith(_TEXT_TYPES) or ctype.endswith(("+xml", "+json"))):
        values["text"] = decode_payload(payload, values.get("charset"))
    if not (values.get("text") or "").strip():
        status = f", HTTP {values['http_status']}" if values.get("http_status") is not None else ""
        values["text"] = f"[{ctype or 'unknown'} payload, {len(payload):,} bytes{status}]"
    return values, None, payload
