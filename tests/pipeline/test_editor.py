"""The editor stage kind: a stage that rewrites `text`, with every edit accounted for."""
import json
import sys

import polars as pl
import pyarrow as pa
import pytest

from tamis.pipeline.runner.apply import apply_stage
from tamis.pipeline.runner.job import run_job
from tamis.pipeline.spec import load_job
from tamis.pipeline.stage import Editor
from tamis.scorers.signals import Signals

PLUGIN = '''
import pyarrow as pa
import pyarrow.compute as pc
from tamis.pipeline.stage import Editor
from tamis.scorers.signals import Signals


class DropShortLines(Editor):
    """Removes lines shorter than `min_chars` (a toy line rule, as a user would write one)."""
    name = "drop_short_lines"
    columns = {"drop_short_lines_removed": pa.int32()}

    def __init__(self, min_chars: int = 20, keep_original: bool = False):
        self.min_chars, self.keep_original = min_chars, keep_original

    def edit(self, batch):
        texts, removed = [], []
        for t in batch["text"].to_pylist():
            lines = t.split("\\n")
            kept = [ln for ln in lines if len(ln.strip()) >= self.min_chars]
            texts.append("\\n".join(kept))
            removed.append(len(lines) - len(kept))
        return {"text": pa.array(texts, pa.large_string()), "drop_short_lines_removed": pa.array(removed, pa.int32())}
'''


class Upper(Editor):
    name = "upper"
    columns = {"upper_n": pa.int32()}

    def __init__(self, keep_original: bool = False):
        self.keep_original = keep_original

    def edit(self, batch):
        t = batch["text"]
        return {"text": pa.array([s.upper() if "x" in s else ("" if s == "empty" else s) for s in t.to_pylist()],
                                 pa.large_string()),
                "upper_n": pa.array([1] * batch.num_rows, pa.int32())}


def test_apply_stage_replaces_text_of_live_rows_and_rejects_emptied_rows():
    batch = pa.table({"id": ["a", "b", "c", "d"], "text": pa.array(["x1", "keep", "empty", "x2"], pa.large_string()),
                      "reject_stage": ["earlier", None, None, None], "reject_reason": ["r", None, None, None]})
    out, st = apply_stage(batch, "upper", Upper(keep_original=True), [], Upper(keep_original=True).edit)
    assert out["text"].to_pylist() == ["x1", "keep", "empty", "X2"]  # a rejected row is not edited
    assert out["reject_reason"].to_pylist() == ["r", None, "emptied", None]
    assert out["reject_stage"].to_pylist() == ["earlier", None, "upper", None]
    assert out["text_original"].to_pylist() == [None, "keep", "empty", "x2"]
    assert out["upper_n"].to_pylist() == [None, 1, 1, 1]
    assert (st.rows_in, st.rows_out) == (3, 2)
    assert st.extra == {"rows_edited": 1, "chars_removed": 0, "rows_emptied": 1}


def test_an_editor_must_return_text():
    class NoText(Upper):
        def edit(self, batch):
            return {"upper_n": pa.array([1] * batch.num_rows, pa.int32())}
    batch = pa.table({"id": ["a"], "text": pa.array(["x"], pa.large_string())})
    with pytest.raises(Exception, match="returned columns"):
        apply_stage(batch, "upper", NoText(), [], NoText().edit)


def test_an_editor_in_a_job_edits_text_for_later_stages_and_counts_edits(ray_session, tmp_path, corpus_dir):
    df = pl.read_parquet(corpus_dir / "git-doc.parquet").head(200)
    df.write_parquet(tmp_path / "docs.parquet")
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "editplug.py").write_text(PLUGIN)
    sys.path.insert(0, str(tmp_path / "plug"))
    job = tmp_path / "job.yaml"
    job.write_text(f"inputs: [{tmp_path / 'docs.parquet'}]\nstages:\n"
                   "  - class: editplug:DropShortLines\n    params: {min_chars: 70, keep_original: true}\n"
                   "  - use: signals\n    keep: {long_enough: 'signals_word_count >= 5'}\n")
    summary = run_job(load_job(job, output=str(tmp_path / "run")), progress=False)
    assert summary["conservation"]["holds"] and summary["rows_read"] == 200
    out = pl.concat([pl.read_parquet(f) for part in ("curated", "rejected")
                     for f in sorted((tmp_path / "run" / part).glob("*.parquet"))], how="diagonal_relaxed")
    edited = out.filter(pl.col("reject_stage").is_null() | (pl.col("reject_stage") != "drop_short_lines"))
    # every surviving line is long, and the original is kept beside it
    assert all(len(ln.strip()) >= 70 for t in edited["text"] for ln in t.split("\n"))
    assert (edited["text_original"].str.len_chars() >= edited["text"].str.len_chars()).all()
    # signals ran on the edited text
    words = edited.filter(pl.col("reject_stage").is_null())
    direct = Signals().score(pa.table({"text": words["text"].to_arrow()}))["signals_word_count"]
    assert words["signals_word_count"].to_list() == direct.to_pylist()
    report = json.loads(next((tmp_path / "run" / "reports").glob("*-drop_short_lines.json")).read_text())
    assert report["kind"] == "editor"
    removed = int((out["text_original"].str.len_chars() - out["text"].str.len_chars()).sum())  # emptied: 0
    assert report["edits"]["chars_removed"] == removed > 0
    assert report["edits"]["rows_emptied"] == report["rejections"]["emptied"] > 0
    assert 0 < report["edits"]["rows_edited"] <= 200


def test_editor_is_a_stage_kind_with_keep_original_column():
    assert "text_original" in Upper(keep_original=True).output_columns()
    assert "text_original" not in Upper().output_columns()
    assert issubclass(Upper, Editor) and not Upper.is_stateful()
