"""Issue 18, inputs: a job exits 0 only when its output is right.

Corrupt compressed input goes to quarantine whole; a changed input is not resumed as if unchanged;
ids of any JSON type survive; fields whose type drifts end in one output schema; input columns named
like tamis's own are kept under `source_*`, never used as tamis state.
"""
import gzip
import json
import os
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from tamis.pipeline.readers import (Quarantine, ReadStats, RESERVED_COLUMNS, conform, merge_read_stats,
                                    promote_types, read_file)
from tamis.pipeline.run_folder import RunFolder
from tamis.pipeline.runner.finalize import unify_output_schemas
from tamis.pipeline.runner.job import RunFailed, run_job
from tamis.pipeline.spec import SpecError, load_job


def read(path, **kw):
    stats, q = ReadStats(file=str(path)), Quarantine(str(path))
    batches = list(read_file(Path(path), stats, q, **kw))
    return batches, stats, q


def jsonl(rows) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rows)


@pytest.fixture(scope="module")
def fortunes(corpus_dir) -> list[dict]:
    df = pl.read_parquet(corpus_dir / "fortunes.parquet").unique("text", keep="first", maintain_order=True)
    return df.head(4000).select("id", "text", "license").to_dicts()


def job(tmp_path: Path, inputs: list, stages: str, read: str = "") -> object:
    spec = tmp_path / "job.yaml"
    spec.write_text(f"name: trust\n{read}stages:\n{stages}")
    return load_job(spec, inputs=[str(p) for p in inputs], output=str(tmp_path / "run"))


SIGNALS_DEDUP = "  - use: signals\n  - use: exact_dedup\n    keep: default\n"


def outputs(run: Path, part: str) -> pl.DataFrame:
    files = sorted((run / part).glob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed") if files else pl.DataFrame()


def read_stats(run: Path) -> list[dict]:
    return merge_read_stats([json.loads(p.read_text()) for p in sorted((run / "_work" / "read").glob("*.json"))])


def flip_middle(data: bytes, n: int = 8) -> bytes:
    bad = bytearray(data)
    for i in range(len(bad) // 2, len(bad) // 2 + n):
        bad[i] ^= 0xFF
    return bytes(bad)


# -- case 4: corrupt compressed input ----------------------------------------------------------------

def test_corrupt_gzip_sends_every_line_to_quarantine(tmp_path, fortunes):
    raw = jsonl(fortunes[:2000])
    p = tmp_path / "corrupt.jsonl.gz"
    p.write_bytes(flip_middle(gzip.compress(raw)))
    batches, stats, q = read(p)
    assert batches == []  # before: ~1000 rows of which some garbled were yielded as documents
    assert stats.corrupt and stats.corrupt.startswith("input corrupt: gzip")
    assert any(str(p) in w and "corrupt" in w for w in stats.warnings)
    lines = [r for r in q.rows if r[0] > 0]
    assert len(lines) >= 1000 and all(err == stats.corrupt for _, err, _ in lines)
    assert [r[0] for r in lines] == list(range(1, len(lines) + 1)) and lines[0][2] == raw.split(b"\n")[0] + b"\n"
    assert stats.rows_read == len(q.rows) == stats.rows_quarantined and stats.rows_ok == 0


@pytest.mark.parametrize("damage", ["flipped", "checksum-only", "truncated"])
def test_corrupt_or_truncated_zstd_goes_to_quarantine(tmp_path, fortunes, damage):
    """Frames with a content checksum (the zstd tool writes one by default) are verified; a frame
    without one can hide a flipped byte in a literal, which no reader can notice."""
    raw = jsonl(fortunes[:2000])
    data = zstandard.ZstdCompressor(write_checksum=damage != "truncated").compress(raw)
    if damage == "truncated":
        data = data[: len(data) // 2]  # zstandard's stream reader returns the half silently
    elif damage == "checksum-only":
        data = data[:-2] + bytes([data[-2] ^ 0xFF]) + data[-1:]
    else:
        data = flip_middle(data)
    p = tmp_path / "x.jsonl.zst"
    p.write_bytes(data)
    batches, stats, q = read(p)
    assert batches == [] and stats.corrupt.startswith("input corrupt: zstd")
    assert stats.rows_read == len(q.rows) > 0 and stats.rows_ok == 0


def test_intact_multi_member_gzip_and_multi_frame_zstd_read_whole(tmp_path, fortunes):
    a, b = jsonl(fortunes[:1500]), jsonl(fortunes[1500:3000])
    (tmp_path / "m.jsonl.gz").write_bytes(gzip.compress(a) + gzip.compress(b))
    c = zstandard.ZstdCompressor(write_checksum=True)
    (tmp_path / "m.jsonl.zst").write_bytes(c.compress(a) + c.compress(b))
    for name in ("m.jsonl.gz", "m.jsonl.zst"):
        batches, stats, q = read(tmp_path / name)
        assert sum(t.num_rows for t in batches) == 3000 and not q.rows and stats.corrupt is None


def test_corrupt_gzip_run_quarantines_the_file_and_conserves(ray_session, tmp_path, fortunes):
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(fortunes[2000:2500]))
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(flip_middle(gzip.compress(jsonl(fortunes[:2000]))))
    with pytest.raises(RunFailed, match="corrupt"):  # the job does not exit 0 (issue 18)
        run_job(job(tmp_path, [good, bad], SIGNALS_DEDUP), progress=False)
    run = tmp_path / "run"
    summary = json.loads((run / "reports" / "summary.json").read_text())
    assert summary["conservation"]["holds"]
    written = pl.concat([outputs(run, "curated"), outputs(run, "rejected")], how="diagonal_relaxed")
    assert set(written["input_file"].to_list()) == {str(good.resolve())} and written.height == 500
    q = outputs(run, "quarantine")
    assert q.filter(pl.col("file") == str(bad.resolve()))["error"].str.starts_with("input corrupt: gzip").all()
    stats = {s["file"]: s for s in read_stats(run)}
    assert stats[str(bad.resolve())]["corrupt"] and not stats[str(good.resolve())]["corrupt"]
    assert summary["quarantined"] == stats[str(bad.resolve())]["rows_read"] == q.height


# -- case 5: changed input after a finished run ------------------------------------------------------

@pytest.mark.parametrize("mode", ["stat", "content"])
def test_changed_input_is_not_resumed(ray_session, tmp_path, fortunes, mode):
    src = tmp_path / "in.jsonl"
    src.write_bytes(jsonl(fortunes[:300]))
    read_opt = "" if mode == "stat" else f"read: {{fingerprint: {mode}}}\n"  # stat is the default
    stages = "  - use: filter\n    keep: {empty: 'len(text) > 0'}\n"
    first = run_job(job(tmp_path, [src], stages, read_opt), progress=False)
    assert first["conservation"]["holds"] and first["rows_read"] == 300
    assert run_job(job(tmp_path, [src], stages, read_opt), progress=False) == first  # unchanged: same result
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched, same bytes
    if mode == "stat":
        with pytest.raises(SpecError, match="different job spec or inputs; pass --restart"):
            run_job(job(tmp_path, [src], stages, read_opt), progress=False)
    else:
        assert run_job(job(tmp_path, [src], stages, read_opt), progress=False) == first
    with open(src, "ab") as f:
        f.write(jsonl(fortunes[300:301]))
    with pytest.raises(SpecError, match="different job spec or inputs; pass --restart"):
        run_job(job(tmp_path, [src], stages, read_opt), progress=False)
    again = run_job(job(tmp_path, [src], stages, read_opt), restart=True, progress=False)
    assert again["rows_read"] == 301 and again["conservation"]["holds"]


def test_fingerprint_covers_hf_data_files_and_content(tmp_path):
    import datasets
    hf = tmp_path / "hf"
    datasets.Dataset.from_dict({"text": ["a", "b"]}).save_to_disk(str(hf))
    plain = tmp_path / "x.jsonl"
    plain.write_bytes(b'{"text": "a"}\n')
    spec = tmp_path / "job.yaml"
    spec.write_text("stages: []\n")

    def fp(mode):
        spec.write_text(f"read: {{fingerprint: {mode}}}\nstages: []\n")
        return load_job(spec, inputs=[str(hf), str(plain)], output=str(tmp_path / "run")).fingerprint()

    before = {m: fp(m) for m in ("stat", "content")}
    assert before["stat"] == fp("stat") and before["content"] == fp("content")
    assert before["stat"]["read"]["fingerprint"] == "stat"
    data = next(hf.glob("*.arrow"))
    blob = data.read_bytes()
    data.write_bytes(blob)  # same bytes, new mtime
    os.utime(data, ns=(1, 1))
    assert fp("stat")["inputs"] != before["stat"]["inputs"] and fp("content")["inputs"] == before["content"]["inputs"]
    datasets.Dataset.from_dict({"text": ["a", "c"]}).save_to_disk(str(tmp_path / "hf2"))
    data.write_bytes(next((tmp_path / "hf2").glob("*.arrow")).read_bytes())
    assert fp("content")["inputs"] != before["content"]["inputs"]


# -- case 6: ids of any JSON type --------------------------------------------------------------------

def test_ids_of_every_json_type_become_canonical_strings(tmp_path):
    ids = [{"$oid": "65a1"}, {"n": 1, "a": [2, {"z": 1, "b": None}]}, [1, "x"], 7, 1.5, True, False, None, "s"]
    p = tmp_path / "ids.jsonl"
    p.write_bytes(jsonl({"id": v, "text": f"doc {i}"} for i, v in enumerate(ids)))
    batches, stats, q = read(p)
    got = pa.concat_tables(batches)["id"].to_pylist()
    assert not q.rows and got[:7] == ['{"$oid":"65a1"}', '{"a":[2,{"b":null,"z":1}],"n":1}', '[1,"x"]', "7",
                                      "1.5", "true", "false"]
    assert got[7].endswith(":8") and got[8] == "s"  # a null id is generated, as a missing one
    pq.write_table(pa.table({"id": pa.array([1, 2, None], pa.int64()), "text": ["a", "b", "c"]}), tmp_path / "i.parquet")
    pq.write_table(pa.table({"id": [{"n": 2, "a": "x"}, None], "text": ["a", "b"]}), tmp_path / "s.parquet")
    pq.write_table(pa.table({"id": [1.5, 2.0], "text": ["a", "b"]}), tmp_path / "f.parquet")
    assert read(tmp_path / "i.parquet")[0][0]["id"].to_pylist()[:2] == ["1", "2"]
    assert read(tmp_path / "s.parquet")[0][0]["id"].to_pylist()[0] == '{"a":"x","n":2}'
    assert read(tmp_path / "f.parquet")[0][0]["id"].to_pylist() == ["1.5", "2.0"]  # as JSONL writes them


def test_object_ids_run_end_to_end(ray_session, tmp_path, fortunes):
    rows = [{"_id": {"$oid": f"{i:024x}"}, "text": r["text"]} for i, r in enumerate(fortunes[:100])]
    src = tmp_path / "mongo.jsonl"
    src.write_bytes(jsonl(rows))
    spec = tmp_path / "job.yaml"
    spec.write_text(f"fields: {{id: _id}}\nstages:\n{SIGNALS_DEDUP}")
    summary = run_job(load_job(spec, inputs=[str(src)], output=str(tmp_path / "run")), progress=False)
    assert summary["rows_read"] == 100 and summary["conservation"]["holds"] and summary["quarantined"] == 0
    run = tmp_path / "run"
    want = {f'{{"$oid":"{i:024x}"}}' for i in range(100)}
    cur, rej = outputs(run, "curated"), outputs(run, "rejected")
    assert cur.height == 100 and set(cur["_id"].to_list()) == want and rej.height == 0


# -- case 7: fields whose type drifts ----------------------------------------------------------------

def readable_as_one_dataset(folder: Path, tmp_path: Path) -> pa.Table:
    """curated/ (or rejected/) read whole by pyarrow, polars and datasets; returns pyarrow's table."""
    import datasets
    files = sorted(str(f) for f in folder.glob("*.parquet"))
    table = pq.read_table(folder)
    frame = pl.read_parquet(str(folder / "*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert table.num_rows == frame.height == ds.num_rows == sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return table


def test_drift_within_one_jsonl_file_runs_and_unifies(ray_session, tmp_path, fortunes):
    rows = [{"id": f"a{i}", "text": r["text"], "meta": i if i < 2100 else f"s{i}",
             "score": i if i % 2 else i + 0.5, "flag": bool(i % 2) if i < 3000 else i}
            for i, r in enumerate(fortunes[:4000])]
    src = tmp_path / "drift.jsonl"
    src.write_bytes(jsonl(rows))
    batches, stats, q = read(src)  # the reader's batches of one file share one schema
    assert len({t.schema for t in batches}) == 1 and batches[0].schema.field("meta").type == pa.string()
    assert any("'meta'" in w and "int64" in w for w in stats.warnings)
    summary = run_job(job(tmp_path, [src], SIGNALS_DEDUP), progress=False)  # before: ArrowTypeError
    assert summary["conservation"]["holds"] and summary["rows_read"] == 4000
    run = tmp_path / "run"
    unify_output_schemas(RunFolder(run))
    t = readable_as_one_dataset(run / "curated", tmp_path)
    by_id = dict(zip(t["id"].to_pylist(), t["meta"].to_pylist()))
    assert by_id["a7"] == "7" and by_id["a2100"] == "s2100" and t.schema.field("score").type == pa.float64()
    flags = dict(zip(t["id"].to_pylist(), t["flag"].to_pylist()))
    assert t.schema.field("flag").type == pa.int64() and flags["a1"] == 1 and flags["a3001"] == 3001


def test_drift_across_files_unified_after_the_run(ray_session, tmp_path, fortunes):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(jsonl({"id": f"a{i}", "text": r["text"], "meta": i, "tags": {"k": i}}
                        for i, r in enumerate(fortunes[:300])))
    b.write_bytes(jsonl({"id": f"b{i}", "text": r["text"], "meta": f"x{i}", "tags": "plain", "extra": 1.5}
                        for i, r in enumerate(fortunes[300:600])))
    summary = run_job(job(tmp_path, [a, b], SIGNALS_DEDUP), progress=False)
    assert summary["conservation"]["holds"]
    run = tmp_path / "run"
    assert "output_schema" in summary  # run_job unifies curated/ and rejected/ after the streams
    t = readable_as_one_dataset(run / "curated", tmp_path)
    got = dict(zip(t["id"].to_pylist(), zip(t["meta"].to_pylist(), t["tags"].to_pylist(), t["extra"].to_pylist())))
    assert got["a3"] == ("3", '{"k":3}', None) and got["b4"] == ("x4", "plain", 1.5)
    assert unify_output_schemas(RunFolder(run))["files_rewritten"] == []  # idempotent


def test_unify_output_schemas_on_hand_made_files(tmp_path):
    run = RunFolder(tmp_path / "run")
    cur, rej = run.output_dir("curated"), run.output_dir("rejected")
    cur.mkdir(parents=True)
    rej.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["1"], "n": [1], "b": [True], "s": [{"a": 1}], "l": [[1, 2]], "x": [{"a": 1}]}),
                   cur / "p1.parquet")
    pq.write_table(pa.table({"id": ["2"], "n": [2.5], "b": [3], "s": [{"b": "y"}], "l": [[0.5]], "x": [7],
                             "only": ["here"]}), cur / "p2.parquet")
    pq.write_table(pa.table({"id": ["3"], "n": pa.array([None], pa.null()), "b": [False], "reject_stage": ["f"]}),
                   rej / "p3.parquet")
    pq.write_table(pa.table({"id": ["4"], "n": ["four"], "reject_stage": ["f"]}), rej / "p4.parquet")
    done = unify_output_schemas(run)
    cols = done["columns"]
    assert cols["n"]["to"] == "string" and cols["b"]["to"] == "int64" and cols["x"]["to"] == "string"
    assert cols["s"]["to"] == "struct<a: int64, b: string>" and cols["l"]["to"] == "list<element: double>"
    assert sorted(done["files_rewritten"]) == ["curated/p1.parquet", "curated/p2.parquet", "rejected/p3.parquet",
                                               "rejected/p4.parquet"]
    c = pq.read_table(cur).to_pylist()
    assert c[0] == {"id": "1", "n": "1", "b": 1, "s": {"a": 1, "b": None}, "l": [1.0, 2.0], "x": '{"a":1}', "only": None}
    assert c[1] == {"id": "2", "n": "2.5", "b": 3, "s": {"a": None, "b": "y"}, "l": [0.5], "x": "7", "only": "here"}
    r = pl.read_parquet(str(rej / "*.parquet")).sort("id")
    assert r.columns == ["id", "n", "b", "reject_stage"] and r["n"].to_list() == [None, "four"]
    assert r["b"].to_list() == [0, None]
    assert not list(cur.glob(".*")) and unify_output_schemas(run)["files_rewritten"] == []


def test_promotion_rules():
    s, i, f, b, n = pa.string(), pa.int64(), pa.float64(), pa.bool_(), pa.null()
    assert promote_types(n, b) == b and promote_types(b, i) == i and promote_types(i, f) == f
    assert promote_types(f, s) == s and promote_types(s, pa.large_string()) == pa.large_string()
    assert promote_types(pa.list_(i), i) == s and promote_types(pa.struct([("a", i)]), pa.list_(i)) == s
    assert promote_types(pa.struct([("a", i)]), pa.struct([("a", s)])) == s  # arrow cannot merge: JSON text
    t = pa.table({"v": pa.array([1.0, float("nan"), None])})
    assert conform(t, pa.schema([("v", s)]))["v"].to_pylist() == ["1.0", "NaN", None]


# -- case 8: input columns named like tamis's own -----------------------------------------------------

def test_reserved_input_columns_are_kept_under_source_prefix(ray_session, tmp_path, fortunes):
    reserved = {"reject_stage": "upstream", "reject_reason": "old_rule", "input_file": "orig.jsonl",
                "input_row": 99, "status": "draft", "_tamis_unit": "u", "_tamis_stats": "not json",
                "_tamis_other": 1, "source_status": "already"}
    assert {"reject_stage", "reject_reason", "input_file", "input_row", "status", "_tamis_unit",
            "_tamis_stats"} <= set(RESERVED_COLUMNS)
    src = tmp_path / "reserved.jsonl"
    src.write_bytes(jsonl({**r, **reserved} for r in fortunes[:400]))
    batches, stats, _ = read(src)
    names = batches[0].column_names
    assert not {"_tamis_unit", "_tamis_stats", "_tamis_other", "reject_stage", "reject_reason", "status"} & set(names)
    assert {"source_reject_stage", "source_source_status", "source__tamis_stats", "source_input_row"} <= set(names)
    assert any(str(src) in w and "reject_stage" in w and "source_reject_stage" in w for w in stats.warnings)
    summary = run_job(job(tmp_path, [src], SIGNALS_DEDUP), progress=False)  # before: the job failed
    assert summary["conservation"]["holds"] and summary["rows_read"] == 400
    cur = outputs(tmp_path / "run", "curated")
    assert cur.height >= 390  # unique fortunes: nothing rejected for an input column named reject_stage
    row = cur.row(0, named=True)
    assert row["input_file"] == str(src.resolve()) and row["input_row"] >= 1
    names = {"status": "source_source_status", "source_status": "source_status"}  # source_status was taken
    for k, v in reserved.items():
        assert row[names.get(k, f"source_{k}")] == v, k


def test_text_and_id_columns_not_mapped_are_kept(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_bytes(b'{"body": "doc", "key": "k1", "text": "other", "id": 5}\n')
    batches, stats, _ = read(p, text_field="body", id_field="key")
    row = batches[0].to_pylist()[0]
    assert row["id"] == "k1" and row["text"] == "doc" and row["source_text"] == "other" and row["source_id"] == 5
    batches, _, _ = read(p, text_field="body", id_field="key", reserved=("signals_word_count",))
    pq.write_table(pa.table({"text": ["a"], "duplicate_of": ["x"]}), tmp_path / "d.parquet")
    batches, _, _ = read(tmp_path / "d.parquet", reserved=("duplicate_of",))
    assert batches[0]["source_duplicate_of"].to_pylist() == ["x"] and "duplicate_of" not in batches[0].column_names


@pytest.mark.parametrize("spool_bytes", [0, 200_000], ids=["all-on-disk", "memory-then-disk"])
def test_spooled_batches_read_like_held_ones(tmp_path, fortunes, monkeypatch, spool_bytes):
    """Beyond `SPOOL_MEMORY_BYTES` a file's batches wait in temporary Arrow files (a new one when the
    schema changes); they come back in order, unified, and the temporary files are gone."""
    from tamis.pipeline import readers
    rows = [{"id": f"a{i}", "text": r["text"], "meta": i if i < 1500 else f"s{i}"} for i, r in enumerate(fortunes)]
    src = tmp_path / "drift.jsonl.gz"
    src.write_bytes(gzip.compress(jsonl(rows)))
    held, _, _ = read(src, batch_rows=500)
    monkeypatch.setattr(readers, "SPOOL_MEMORY_BYTES", spool_bytes)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "spool"))
    (tmp_path / "spool").mkdir()
    monkeypatch.setattr(readers.tempfile, "tempdir", None)
    spooled, stats, q = read(src, batch_rows=500)
    assert pa.concat_tables(spooled).equals(pa.concat_tables(held)) and len(spooled) == len(fortunes) // 500
    assert pa.concat_tables(spooled)["meta"].to_pylist()[1499:1501] == ["1499", "s1500"]
    assert not q.rows and not list((tmp_path / "spool").iterdir())


def test_parquet_page_checksums_are_verified(tmp_path, fortunes):
    """A Parquet file written with page checksums: a damaged page stops the read there; the rows of
    the verified pages before it stay, the rest is one quarantined row and the input is marked corrupt."""
    p = tmp_path / "ck.parquet"
    pq.write_table(pa.table({"text": [r["text"] for r in fortunes]}), p, write_page_checksum=True,
                   compression="none", row_group_size=1000)
    p.write_bytes(flip_middle(p.read_bytes(), 4))
    batches, stats, q = read(p)
    assert stats.corrupt and "CRC" in stats.corrupt and q.rows[-1][0] == -1
    assert sum(t.num_rows for t in batches) < len(fortunes)
