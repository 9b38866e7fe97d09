"""WARC / WET input: one row per record, bad records to quarantine with the byte offset, nothing lost."""
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard

from tamis.pipeline.readers import (INPUT_SUFFIXES, Quarantine, ReadStats, expand_inputs, input_columns, input_units,
                                    read_file, split_unit)
from tamis.pipeline.warc import decode_payload

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample_web" / "sample.warc.gz"
PAGE = "<html><head><title>T{i}</title></head><body><article><p>" + "Paragraph {i} of a page. " * 30 + "</p></article></body></html>"


def response(url: str, body: bytes, ctype: str = "text/html; charset=utf-8", status: str = "200 OK", i: int = 0,
             extra: str = "") -> bytes:
    http = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-{i:012d}>\r\n"
            f"WARC-Date: 2024-01-01T00:00:00Z\r\nWARC-Target-URI: {url}\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


def conversion(url: str, text: str, i: int) -> bytes:
    body = text.encode()
    head = (f"WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Record-ID: <urn:uuid:00000000-0000-0000-0001-{i:012d}>\r\n"
            f"WARC-Date: 2024-01-01T00:00:00Z\r\nWARC-Target-URI: {url}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body + b"\r\n\r\n"


def pages(n: int = 5) -> list[bytes]:
    return [response(f"https://site.org/{i}", PAGE.format(i=i).encode(), i=i) for i in range(n)]


def read(path: Path):
    stats, q = ReadStats(str(path)), Quarantine(str(path))
    tables = list(read_file(path, stats, q))
    return (pa.concat_tables(tables) if tables else None), stats, q


def test_warc_suffixes_are_inputs(tmp_path):
    for s in (".warc", ".warc.gz", ".warc.zst", ".warc.wet.gz"):
        assert s.endswith(INPUT_SUFFIXES)
    (tmp_path / "crawl").mkdir()
    (tmp_path / "crawl" / "a.warc.gz").write_bytes(b"".join(gzip.compress(r) for r in pages(1)))
    assert [p.name for p in expand_inputs([str(tmp_path / "crawl")], "test")] == ["a.warc.gz"]
    assert {"url", "warc_record_id", "content_type", "charset", "license"} <= input_columns(tmp_path / "crawl" / "a.warc.gz")


@pytest.mark.parametrize("name", ["c.warc", "c.warc.gz", "c.warc.zst"])
def test_each_record_is_a_row_with_its_metadata(tmp_path, name):
    recs = pages(3)
    raw = b"".join(recs)
    data = {"c.warc": raw, "c.warc.gz": b"".join(gzip.compress(r) for r in recs),
            "c.warc.zst": zstandard.ZstdCompressor().compress(raw)}[name]
    (tmp_path / name).write_bytes(data)
    t, stats, q = read(tmp_path / name)
    assert t.num_rows == 3 and stats.rows_read == 3 and not q.rows
    row = t.to_pylist()[1]
    assert row["id"] == row["warc_record_id"] == "<urn:uuid:00000000-0000-0000-0000-000000000001>"
    assert (row["url"], row["warc_date"], row["warc_type"]) == ("https://site.org/1", "2024-01-01T00:00:00Z", "response")
    assert (row["content_type"], row["charset"], row["http_status"], row["domain"]) == ("text/html", "utf-8", 200, "site.org")
    assert row["text"] == PAGE.format(i=1)
    assert row["input_row"] == row["warc_offset"]  # the byte offset: unique however the file is split
    if name == "c.warc":
        assert row["warc_offset"] == len(recs[0])
    if name == "c.warc.gz":
        assert row["warc_offset"] == len(gzip.compress(recs[0]))


def test_wet_conversion_records(tmp_path):
    (tmp_path / "x.warc.wet.gz").write_bytes(b"".join(gzip.compress(conversion(f"https://w.org/{i}", f"plain text {i}", i))
                                                      for i in range(2)))
    t, stats, q = read(tmp_path / "x.warc.wet.gz")
    assert t["text"].to_pylist() == ["plain text 0", "plain text 1"]
    assert t["warc_type"].to_pylist() == ["conversion"] * 2 and t["content_type"].to_pylist() == ["text/plain"] * 2


def test_non_html_records_are_rows_with_a_stand_in_text(tmp_path):
    recs = [response("https://s.org/a.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "image/png", i=1),
            response("https://s.org/old", b"", "text/html", "301 Moved Permanently", i=2, extra="Location: /new\r\n"),
            response("https://s.org/robots.txt", b"User-agent: *\n", "text/plain", i=3)]
    (tmp_path / "m.warc").write_bytes(b"".join(recs))
    t, stats, q = read(tmp_path / "m.warc")
    assert t["text"].to_pylist() == ["[image/png payload, 264 bytes, HTTP 200]", "[text/html payload, 0 bytes, HTTP 301]",
                                     "User-agent: *\n"]
    assert t["http_status"].to_pylist() == [200, 301, 200]


def test_charsets_declared_detected_and_broken():
    assert decode_payload("café".encode("cp1252"), "windows-1252") == "café"
    assert decode_payload('<meta charset="utf-8"><p>café'.encode(), None).endswith("café")
    assert decode_payload("café".encode(), "no-such-charset") == "café"  # unknown name: detected
    assert "caf" in decode_payload(b"caf\xff\xfe\xfd", "utf-8")  # never raises


def test_truncated_plain_warc_quarantines_the_cut_record_with_its_offset(tmp_path):
    recs = pages(3)
    raw = b"".join(recs)
    (tmp_path / "t.warc").write_bytes(raw[:-300])
    t, stats, q = read(tmp_path / "t.warc")
    assert t.num_rows == 2 and stats.rows_read == 3 and stats.rows_quarantined == 1
    row, why, rawq = q.rows[0]
    assert row == len(recs[0]) + len(recs[1]) and f"record at byte offset {row}: record cut short" in why
    assert str(tmp_path / "t.warc") in why and rawq


def test_truncated_gzip_warc(tmp_path):
    members = [gzip.compress(r) for r in pages(3)]
    (tmp_path / "t.warc.gz").write_bytes(b"".join(members)[:-60])
    t, stats, q = read(tmp_path / "t.warc.gz")
    assert t.num_rows == 2 and stats.rows_read == stats.rows_ok + stats.rows_quarantined == 3
    assert f"byte offset {len(members[0]) + len(members[1])}" in q.rows[0][1]


@pytest.mark.parametrize("name", ["d.warc", "d.warc.gz"])
def test_a_corrupt_record_in_the_middle_loses_only_itself(tmp_path, name):
    recs = pages(5)
    if name == "d.warc":
        parts = list(recs)
        parts[2] = b"XXXXXXXXXXXX" + parts[2][12:]  # its WARC/1.0 line destroyed
    else:
        parts = [gzip.compress(r) for r in recs]
        parts[2] = parts[2][:30] + b"\x00" * 40 + parts[2][70:]
    (tmp_path / name).write_bytes(b"".join(parts))
    t, stats, q = read(tmp_path / name)
    assert t["url"].to_pylist() == [f"https://site.org/{i}" for i in (0, 1, 3, 4)]
    assert stats.rows_read == 5 and stats.rows_quarantined == 1
    why = q.rows[0][1]
    assert f"after the record at byte offset {len(parts[0])}" in why
    assert f"reading resumed at byte offset {sum(map(len, parts[:3]))}" in why


def test_truncated_zstd_warc_is_reported_not_lost(tmp_path):
    plain = gzip.decompress(SAMPLE.read_bytes())  # 6 MB: the stream fails after many records were read
    (tmp_path / "z.warc.zst").write_bytes(zstandard.ZstdCompressor().compress(plain)[:-5000])
    t, stats, q = read(tmp_path / "z.warc.zst")
    assert t.num_rows > 100 and len(q.rows) == 1
    assert stats.rows_read == stats.rows_ok + stats.rows_quarantined  # the failing record counted once
    assert stats.corrupt.startswith("zstd stream unreadable") and str(tmp_path / "z.warc.zst") in q.rows[0][1]
    assert "nothing after it could be read" in q.rows[0][1]


def test_the_sample_crawl_reads_whole():
    t, stats, q = read(SAMPLE)
    assert not q.rows and stats.rows_read == t.num_rows > 250
    assert set(t["license"].to_pylist()) == {"MIT OR Apache-2.0 (The Rust Project Developers)", "CC0-1.0 (tamis sample)"}
    assert {"image/png", "image/svg+xml", "font/woff2", "text/plain"} <= set(t["content_type"].to_pylist())
    assert 301 in t["http_status"].to_pylist()
    assert any("1 warcinfo" in w for w in stats.warnings)
    json.dumps(stats.__dict__)


def test_a_big_gzip_warc_is_split_into_byte_ranges_that_read_each_record_once(tmp_path):
    members = [gzip.compress(r) for r in pages(40)]
    members[17] = members[17][:30] + b"\x00" * 40 + members[17][70:]  # one damaged member, inside a unit
    path = tmp_path / "big.warc.gz"
    path.write_bytes(b"".join(members))
    units = input_units([str(path)], split_bytes=2000)
    assert len(units) > 3 and all("#bytes=" in u for u in units)
    assert input_units([str(path)], split_bytes=10**9) == [str(path)]
    whole, _, wq = read(path)
    rows, quarantined, read_total = [], [], 0
    for u in units:
        p, rng = split_unit(u)
        stats, q = ReadStats(p), Quarantine(p)
        rows += [r for t in read_file(Path(p), stats, q, row_groups=rng) for r in t.to_pylist()]
        quarantined += q.rows
        read_total += stats.rows_read
        assert stats.rows_read == stats.rows_ok + stats.rows_quarantined
    assert sorted(r["url"] for r in rows) == sorted(whole["url"].to_pylist())  # each record once
    assert len(rows) == 39 and read_total == 40 and len(quarantined) == 1
    assert [r[:2] for r in quarantined] == [r[:2] for r in wq.rows]  # the same damage, offset and message
