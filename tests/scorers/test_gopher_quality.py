"""GopherQuality: one case per drop reason (like DataTrove's check_filter), real text, edge cases."""
from __future__ import annotations

import math
import pickle

import polars as pl
import pyarrow as pa
import pytest

from tamis.pipeline.rules import compile_rules, first_failure
from tamis.pipeline.text.words import split_words
from tamis.scorers.gopher.quality import GopherQuality

P = "gopher_quality_"
PROSE = (
    "The committee met on Tuesday to review the budget for the coming year. Members agreed that the "
    "library should have longer opening hours, and that the new reading room would open in the spring. "
    "Several speakers asked for more money to be spent on books for children, while others wanted to "
    "repair the old roof before winter. After a long debate, the chair proposed a compromise with both."
)


def batch(*texts: str) -> pa.Table:
    return pa.table({"id": [str(i) for i in range(len(texts))],
                     "text": pa.array(list(texts), pa.large_string())})


def scores(*texts: str, **params) -> pl.DataFrame:
    return pl.DataFrame(GopherQuality(**params).score(batch(*texts)))


def reason(text: str, rules: dict | None = None) -> str | None:
    """The first default rule the text fails (None = kept)."""
    sc = GopherQuality()
    out = pl.DataFrame(sc.score(batch(text)))
    return first_failure(out, compile_rules(rules or sc.default_rules()))[0]


@pytest.mark.parametrize("text, expected", [
    ("I am too small...", "short_doc"),
    ("word " * 100_001, "long_doc"),
    ("I am " * 30, "below_avg_threshold"),
    ("interconnection " * 60, "above_avg_threshold"),
    ("# comment " * 60, "too_many_hashes"),
    ("... comment " * 60, "too_many_ellipsis"),
    ("- the quick brown fox jumps over the lazy dog\n" * 10, "too_many_bullets"),
    ("the quick brown fox jumps over the lazy dog...\n" * 10, "too_many_end_ellipsis"),
    ("the ./!*?<><> apple <?////> orange  ++ interconnection !<>??? have " * 20, "below_alpha_threshold"),
    ("quick brown foxes jump over lazy dogs " * 9, "few_stop_words"),
    (PROSE, None),
])
def test_each_drop_reason(text, expected):
    assert reason(text) == (None if expected is None else P + expected)


def test_thresholds_are_rules_not_params():
    """DataTrove's own test uses min_doc_words=10; here that is a YAML rule, not a scorer parameter."""
    rules = {k: v.replace(">= 50", ">= 10").replace("<= 100000", "<= 1000")
             for k, v in GopherQuality.default_keep.items()}
    assert reason("I am too small...", rules) == P + "short_doc"
    assert reason("I am " * 20, rules) == P + "below_avg_threshold"
    assert reason("word " * 1001, rules) == P + "long_doc"


def test_values_on_a_small_document():
    text = "The cat's toys... and #tags\n- a list item\n- another one…"
    out = scores(text).row(0, named=True)
    words = split_words(pa.array([text]))["word"].to_list()
    assert words == ["The", "cat", "'s", "toys", "...", "and", "#", "tags", "-", "a", "list", "item", "-",
                     "another", "one", "…"]
    real = [w for w in words if w not in ("...", "#", "-", "…")]
    assert out[P + "word_count"] == len(real) == 11
    assert out[P + "mean_word_length"] == pytest.approx(sum(map(len, real)) / len(real))
    assert out[P + "hash_word_ratio"] == pytest.approx(1 / 16)
    assert out[P + "ellipsis_word_ratio"] == pytest.approx(2 / 16)
    assert out[P + "bullet_line_frac"] == pytest.approx(2 / 3)
    assert out[P + "end_ellipsis_line_frac"] == pytest.approx(1 / 3)
    assert out[P + "alpha_word_frac"] == pytest.approx(11 / 16)  # the 11 non-symbol words
    assert out[P + "stop_word_count"] == 1  # "The" is not "the": matching is case-sensitive, as in DataTrove


def test_line_breaks_follow_python_splitlines():
    out = scores("- a\r\n- b\r- c\x0bnot a bullet\u2028- d\n").row(0, named=True)
    assert out[P + "bullet_line_frac"] == pytest.approx(4 / 5)


def test_custom_stop_words_and_validation():
    assert scores(PROSE, stop_words=["committee", "roof", "absent"])[P + "stop_word_count"][0] == 2
    with pytest.raises(ValueError, match="stop_words"):
        GopherQuality(stop_words="the").validate()
    GopherQuality(stop_words=["the"]).validate()


def test_empty_batch_and_empty_text():
    sc = GopherQuality()
    empty = sc.score(batch())
    assert set(empty) == set(sc.columns) and all(len(a) == 0 for a in empty.values())
    assert all(empty[c].type == t for c, t in sc.columns.items())
    out = scores("", "   \n \n", PROSE)
    assert out[P + "word_count"].to_list()[:2] == [0, 0]
    assert out[P + "mean_word_length"].to_list()[:2] == [None, None]
    assert out[P + "alpha_word_frac"].to_list()[:2] == [None, None]
    assert out[P + "bullet_line_frac"][0] is None and out[P + "bullet_line_frac"][1] == 0.0
    reasons = first_failure(out, compile_rules(sc.default_rules())).to_list()
    assert reasons == [P + "short_doc", P + "short_doc", None]


def test_real_text_domains(corpus_dir):
    """Prose is kept, dictionary entries are too short, source code fails on alphabetic words."""
    speech = pl.read_parquet(corpus_dir / "sotu.parquet").head(3)["text"].to_list()
    code = [t for t in pl.read_parquet(corpus_dir / "python-stdlib.parquet").head(40)["text"].to_list()
            if len(t) > 2000][:3]
    entries = [t for t in pl.read_parquet(corpus_dir / "dict-wn.parquet").head(50)["text"].to_list()
               if len(t) < 200][:3]
    sc = GopherQuality()
    out = pl.DataFrame(sc.score(batch(*speech, *code, *entries)))
    reasons = first_failure(out, compile_rules(sc.default_rules())).to_list()
    assert reasons[:3] == [None, None, None]
    assert all(r is not None for r in reasons[3:6])
    assert reasons[6:] == [P + "short_doc"] * 3
    assert out[P + "word_count"][0] > 1000 and 4 < out[P + "mean_word_length"][0] < 6


def test_giant_document_in_reasonable_time(corpus_dir):
    text = "\n\n".join(pl.read_parquet(corpus_dir / "sotu.parquet")["text"].to_list())[:12_000_000]
    out = scores(text, "").row(0, named=True)
    assert out[P + "word_count"] > 1_500_000
    assert out[P + "stop_word_count"] == 8
    assert math.isfinite(out[P + "mean_word_length"])


def test_does_not_mutate_input_and_pickles():
    b = batch(PROSE)
    before = b.to_pydict()
    sc = pickle.loads(pickle.dumps(GopherQuality(stop_words=["a"])))
    sc.score(b)
    assert b.to_pydict() == before
    assert sc.get_params() == {"stop_words": ["a"]}
