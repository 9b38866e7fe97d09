import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tamis.pipeline.readers import Quarantine, ReadStats, input_units, merge_read_stats, read_file, split_unit


def read(path, **kw):
    stats, q = ReadStats(file=str(path)), Quarantine(str(path))
    batches = list(read_file(path, stats, q, **kw))
    table = pa.concat_tables(batches) if batches else None
    return table, stats, q


def lines(tmp_path, name, raw: bytes, opener=open):
    p = tmp_path / name
    with opener(p, "wb") as f:
        f.write(raw)
    return p


GOOD = b'{"id": "a", "text": "first doc", "license": "MIT"}\n{"id": "b", "text": "second doc"}\n'


@pytest.mark.parametrize("name,opener", [("x.jsonl", open), ("x.jsonl.gz", gzip.open),
                                         ("x.jsonl.zst", lambda p, m: zstandard.open(p, m))])
def test_jsonl_plain_gz_zst(tmp_path, name, opener):
    t, stats, q = read(lines(tmp_path, name, GOOD, opener))
    assert t["id"].to_pylist() == ["a", "b"] and t["text"].to_pylist() == ["first doc", "second doc"]
    assert t["license"].to_pylist() == ["MIT", None] and t["input_row"].to_pylist() == [1, 2]
    assert stats.rows_read == 2 and not q.rows


def test_bad_lines_are_quarantined_with_line_numbers(tmp_path):
    raw = (b'{"id": "a", "text": "ok"}\n'
           b'{"id": "b", "text": "broken\n'
           b'{"id": "c", "text": "bad \xff\xfe bytes"}\n'
           b'[1, 2]\n'
           b'{"id": "e", "body": "no text"}\n'
           b'{"id": "f", "text": 42}\n'
           b'\n'
           b'{"id": "g", "text": ""}\n')
    t, stats, q = read(lines(tmp_path, "bad.jsonl", raw))
    assert t["id"].to_pylist() == ["a", "g"]
    errors = {row: err for row, err, _ in q.rows}
    assert errors[2].startswith("malformed JSON") and errors[3].startswith("invalid UTF-8")
    assert "expected a JSON object" in errors[4] and "missing text field 'text'" in errors[5]
    assert "is int" in errors[6]
    assert [r[2] for r in q.rows if r[0] == 3][0] == b'{"id": "c", "text": "bad \xff\xfe bytes"}\n'
    assert stats.rows_read == 7 == t.num_rows + len(q.rows)  # the blank line is not a row


def test_ids_generated_deterministically_and_field_mapping(tmp_path):
    p = lines(tmp_path, "m.jsonl", b'{"body": "x"}\n{"body": "y", "key": 7}\n')
    t1, _, _ = read(p, text_field="body", id_field="key")
    t2, _, _ = read(p, text_field="body", id_field="key")
    assert t1["id"].to_pylist() == t2["id"].to_pylist()
    assert t1["id"][1].as_py() == "7" and t1["id"][0].as_py().endswith(":1")
    assert "body" not in t1.column_names and t1["text"].to_pylist() == ["x", "y"]


def test_empty_file_warns(tmp_path):
    t, stats, q = read(lines(tmp_path, "empty.jsonl", b""))
    assert t is None and stats.rows_read == 0 and "empty input" in stats.warnings[0]


def test_giant_document_and_overlong_line(tmp_path):
    big = "word " * (10 * 1024 * 1024)  # 50 MB
    p = lines(tmp_path, "big.jsonl", json.dumps({"id": "big", "text": big}).encode() + b"\n" + GOOD)
    t, _, q = read(p)
    assert t["id"].to_pylist() == ["big", "a", "b"] and len(t["text"][0].as_py()) == len(big)
    t, stats, q = read(p, max_line_bytes=1 << 20)
    assert t["id"].to_pylist() == ["a", "b"] and q.rows[0][0] == 1 and "longer than" in q.rows[0][1]


def test_parquet_missing_text_column_and_nulls(tmp_path):
    pq.write_table(pa.table({"id": ["a", "b"], "body": ["x", "y"]}), tmp_path / "m.parquet")
    t, stats, q = read(tmp_path / "m.parquet")
    assert t is None and len(q.rows) == 2 and "missing text column 'text'" in q.rows[0][1]
    assert json.loads(q.rows[1][2]) == {"id": "b", "body": "y"}
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["x", None]}), tmp_path / "n.parquet")
    t, stats, q = read(tmp_path / "n.parquet")
    assert t["id"].to_pylist() == ["a"] and q.rows[0][:2] == (1, "text field 'text' is null")


def test_hf_save_to_disk_and_arrow(tmp_path):
    import datasets
    datasets.Dataset.from_dict({"text": ["a", "b", "c"], "domain": ["x", "y", "z"]}).save_to_disk(str(tmp_path / "hf"))
    t, stats, q = read(tmp_path / "hf", batch_rows=2)
    assert t["text"].to_pylist() == ["a", "b", "c"] and t["domain"].to_pylist() == ["x", "y", "z"]


def test_truncated_gzip_quarantines_what_was_read(tmp_path):
    """A cut-short archive cannot be verified (its checksum is at the end): the lines that can be read
    go to quarantine with the reason, none become documents, and the rest is one more row (-1)."""
    full = gzip.compress(GOOD * 2000)
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(full[: len(full) // 2])
    t, stats, q = read(p)
    assert t is None and stats.warnings and q.rows[-1][0] == -1 and stats.corrupt.startswith(
        "input corrupt: gzip stream truncated")
    assert len(q.rows) > 1 and all(err == stats.corrupt for _, err, _ in q.rows[:-1])
    assert stats.rows_read == len(q.rows) == stats.rows_quarantined


def test_real_corpus_parquet(corpus_dir):
    t, stats, q = read(corpus_dir / "reuters-tm.parquet")
    assert t.num_rows == 81 and not q.rows and set(t.column_names) >= {"id", "text", "domain", "license"}


def test_big_parquet_is_split_into_row_group_units_that_read_like_the_whole_file(tmp_path, corpus_dir):
    """A Parquet file over `split_bytes` is read as runs of row groups; the parts give the same ids,
    rows and text as the whole file, and their read stats sum back to one entry per file."""
    docs = pq.read_table(corpus_dir / "dict-gcide.parquet").slice(0, 3000).drop_columns(["id"])
    big = tmp_path / "big.parquet"
    pq.write_table(docs, big, row_group_size=500)  # 6 row groups, ids generated from the row number
    small = lines(tmp_path, "x.jsonl", GOOD)
    size = big.stat().st_size
    assert input_units([str(big), str(small)], size) == [str(big), str(small)]  # not over the limit
    assert input_units([str(small)], 1) == [str(small)]  # JSONL is never split
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(big.read_bytes()[:size // 2])  # no footer: one unit, whose reader quarantines it
    assert input_units([str(broken)], 1) == [str(broken)]
    assert read(broken)[2].rows[0][1].startswith("file unreadable")
    units = input_units([str(big)], 1)
    assert units == [f"{big}#row_groups={i}-{i + 1}" for i in range(6)]
    halves = input_units([str(big)], size // 2)
    assert 2 <= len(halves) <= 3 and split_unit(halves[0]) == (str(big), (0, split_unit(halves[0])[1][1]))
    whole, whole_stats, _ = read(big)
    parts, stats = [], []
    for unit in halves:
        path, groups = split_unit(unit)
        t, st, q = read(Path(path), row_groups=groups)
        parts.append(t)
        stats.append(st.__dict__)
    got = pa.concat_tables(parts)
    for col in ("id", "input_row", "text", "input_file"):
        assert got[col].to_pylist() == whole[col].to_pylist()
    assert got["input_row"].to_pylist() == list(range(3000))
    merged = merge_read_stats(stats)
    assert len(merged) == 1 and {k: merged[0][k] for k in ("file", "rows_read", "rows_ok")} == {
        "file": str(big), "rows_read": 3000, "rows_ok": 3000}
    assert whole_stats.rows_read == 3000
