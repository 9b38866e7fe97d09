"""Signals: hand-computed values, RPv2 definitions, empty input, real text, a giant document."""
from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter

import polars as pl
import pyarrow as pa
import pytest

from tamis.scorers.signals import Signals

P = "signals_"


def scores(*texts: str) -> pl.DataFrame:
    b = pa.table({"id": [str(i) for i in range(len(texts))], "text": pa.array(list(texts), pa.large_string())})
    return pl.DataFrame(Signals().score(b))


def rpv2(text: str) -> dict:
    """The same signals computed the way RedPajama-v2's Python code does (document level)."""
    norm = unicodedata.normalize("NFD", text).lower().translate(str.maketrans("", "", string.punctuation))
    words = norm.split()
    raw = re.findall(r"\w+|[^\w\s]+", text)
    lines = [ln for ln in text.split("\n") if ln.strip()]
    out = {"word_count": len(words)}
    if words:
        c = Counter(words)
        out |= {"mean_word_length": sum(map(len, words)) / len(words),
                "unique_word_frac": len(c) / len(words),
                "unigram_entropy": -sum(x / len(words) * math.log(x / len(words)) for x in c.values())}
    if raw:
        out["non_alpha_word_frac"] = 1 - sum(bool(re.search("[a-zA-Z]", w)) for w in raw) / len(raw)
    if lines:
        out["upper_line_frac"] = sum(ln.upper() == ln and ln.lower() != ln for ln in lines) / len(lines)
        out["terminal_punct_line_frac"] = sum(ln.rstrip().endswith((".", "!", "?", "”")) for ln in lines) / len(lines)
    if text:
        out["numeric_char_frac"] = sum(ch.isnumeric() for ch in text) / len(text)
    return out


def test_hand_computed_values():
    out = scores("Hello world. HELLO WORLD!\n\nthe the the 123").row(0, named=True)
    assert out[P + "word_count"] == 8
    assert out[P + "mean_word_length"] == pytest.approx(32 / 8)
    assert out[P + "unique_word_frac"] == pytest.approx(4 / 8)
    counts = [2, 2, 3, 1]
    assert out[P + "unigram_entropy"] == pytest.approx(-sum(c / 8 * math.log(c / 8) for c in counts))
    assert out[P + "non_alpha_word_frac"] == pytest.approx(3 / 10)  # ".", "!", "123"
    assert out[P + "upper_line_frac"] == 0.0
    assert out[P + "numeric_char_frac"] == pytest.approx(3 / 42)
    assert out[P + "terminal_punct_line_frac"] == pytest.approx(1 / 2)


def test_upper_case_lines():
    out = scores("CHAPTER ONE\nIt was a dark night.\nTHE END.\n\n123\n").row(0, named=True)
    assert out[P + "upper_line_frac"] == pytest.approx(2 / 4)
    assert out[P + "terminal_punct_line_frac"] == pytest.approx(2 / 4)


def test_matches_rpv2_definitions_on_real_text(corpus_dir):
    texts = []
    for name in ("sotu", "fortunes", "python-stdlib", "dict-gcide", "bible-web"):
        texts += [t[:20_000] for t in pl.read_parquet(corpus_dir / f"{name}.parquet").head(4)["text"].to_list()]
    out = scores(*texts)
    for i, t in enumerate(texts):
        exp = rpv2(t)
        row = out.row(i, named=True)
        for k, v in exp.items():
            assert row[P + k] == pytest.approx(v, rel=1e-9, abs=1e-12), (i, k)


def test_empty_batch_and_empty_text():
    sc = Signals()
    b = pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.large_string())})
    empty = sc.score(b)
    assert set(empty) == set(sc.columns) and all(len(a) == 0 for a in empty.values())
    assert all(empty[c].type == t for c, t in sc.columns.items())
    row = scores("").row(0, named=True)
    assert row[P + "word_count"] == 0
    assert all(v is None for k, v in row.items() if k != P + "word_count")
    assert sc.default_rules() == {}


def test_giant_document(corpus_dir):
    text = "\n".join(pl.read_parquet(corpus_dir / "dict-gcide.parquet")["text"].to_list())[:8_000_000]
    row = scores(text).row(0, named=True)
    assert row[P + "word_count"] > 1_000_000
    assert 0 < row[P + "unique_word_frac"] < 0.2
    assert 5 < row[P + "unigram_entropy"] < 15
