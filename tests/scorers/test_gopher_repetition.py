"""GopherRepetition: one case per drop reason, exactness of the vectorised n-gram scan, edge cases."""
from __future__ import annotations

import random
import string
from collections import Counter

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tamis.pipeline.rules import compile_rules, first_failure
from tamis.scorers.gopher.ngram_repetition import ngram_repetition
from tamis.scorers.gopher.repetition import DUP_NGRAMS, TOP_NGRAMS, GopherRepetition

P = "gopher_repetition_"
FRODO = ("I wish it need not have happened in my time,' said Frodo. 'So do I,' said Gandalf, 'and so do all "
         "who live to see such times. But that is not for them to decide. All we have to decide is what to "
         "do with the time that is given us.'")


def batch(*texts: str) -> pa.Table:
    return pa.table({"id": [str(i) for i in range(len(texts))],
                     "text": pa.array(list(texts), pa.large_string())})


def scores(*texts: str) -> pl.DataFrame:
    return pl.DataFrame(GopherRepetition().score(batch(*texts)))


def reasons(*texts: str) -> list[str | None]:
    sc = GopherRepetition()
    return first_failure(pl.DataFrame(sc.score(batch(*texts))), compile_rules(sc.default_rules())).to_list()


def synthetic(seed: int) -> str:
    """Filler words around a segment repeated 2-4 times (seeds below found against DataTrove)."""
    rnd = random.Random(seed)

    def word(lo, hi):
        return "".join(rnd.choice(string.ascii_lowercase) for _ in range(rnd.randint(lo, hi)))

    seg = [word(3, 12) for _ in range(rnd.randint(3, 12))]
    k, nfill = rnd.randint(2, 4), rnd.randint(5, 80)
    parts = []
    for _ in range(k):
        parts += [word(3, 9) for _ in range(rnd.randint(0, nfill // k + 1))] + seg
    parts += [word(3, 9) for _ in range(rnd.randint(0, nfill))]
    return " ".join(parts)


# DataTrove's own check_filter cases (tests/pipeline/filters/test_filters.py), same reasons here.
@pytest.mark.parametrize("text, expected", [
    ("", "empty"),
    ("I am your father.\n" * 4, "dup_line_frac"),
    ("I am your father.\n\n" * 4, "dup_para_frac"),
    ("I am groot.\n\nYou are a wizard.\n\nI am your father.\n\n" + f"{'x' * 30}.\n\n" * 2, "dup_para_char_frac"),
    ("I am groot.\nYou are a wizard.\nI am your father.\n" + f"{'x' * 40}.\n" * 2, "dup_line_char_frac"),
    ("I am Frank, I am Frank, I am Frank", "top_2_gram"),
    ("I am Frank, you are Jhon. I am Frank. I am Frank you are Jhon", "top_3_gram"),
    ("I am a solo traveller " * 4 + FRODO, "duplicated_5_n_grams"),
    (FRODO, None),
])
def test_datatrove_cases(text, expected):
    assert reasons(text) == [None if expected is None else P + expected]


@pytest.mark.parametrize("seed, expected", [
    (8, "top_2_gram"), (0, "top_3_gram"), (5, "top_4_gram"), (10, "duplicated_5_n_grams"),
    (15, "duplicated_6_n_grams"), (7, "duplicated_7_n_grams"), (88, "duplicated_8_n_grams"),
    (163, "duplicated_9_n_grams"), (58, "duplicated_10_n_grams"), (1, None),
])
def test_every_ngram_reason(seed, expected):
    assert reasons(synthetic(seed)) == [None if expected is None else P + expected]


def test_default_rules_follow_datatrove_order_and_thresholds():
    keep = GopherRepetition.default_keep
    assert list(keep)[:5] == [P + r for r in ("empty", "dup_para_frac", "dup_para_char_frac", "dup_line_frac",
                                              "dup_line_char_frac")]
    assert list(keep)[5:] == [f"{P}top_{n}_gram" for n in (2, 3, 4)] + [f"{P}duplicated_{n}_n_grams"
                                                                           for n in range(5, 11)]
    assert TOP_NGRAMS == {2: 0.2, 3: 0.18, 4: 0.16}
    assert DUP_NGRAMS == {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


def test_line_and_paragraph_values():
    text = "\na\n\nb\n\n\na\nc\n"
    out = scores(text).row(0, named=True)
    # paragraphs of text.strip(): ["a", "b", "a\nc"]; lines of re.split("\n+"): ["", "a", "b", "a", "c", ""]
    assert out[P + "dup_para_frac"] == 0.0
    assert out[P + "dup_line_frac"] == pytest.approx(2 / 6)
    assert out[P + "dup_line_char_frac"] == pytest.approx(1 / len(text))


def reference(words: list[str]) -> dict:
    """DataTrove's find_top_duplicate / find_all_duplicate, written out plainly."""
    out = {}
    for n in TOP_NGRAMS:
        grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
        if grams:
            g, c = Counter(grams).most_common(1)[0]
            out[("top", n)] = len(g) * c
        else:
            out[("top", n)] = 0
    for n in DUP_NGRAMS:
        seen, idx, rep = set(), 0, 0
        while idx < len(words) - n + 1:
            g = "".join(words[idx:idx + n])
            if g in seen:
                rep += len(g)
                idx += n
            else:
                seen.add(g)
                idx += 1
        out[("dup", n)] = rep
    return out


@pytest.mark.parametrize("vocab", [2, 3, 5, 40])
def test_ngram_scan_matches_reference_exactly(vocab):
    """Random documents, from fully periodic to almost unique, several per batch."""
    rnd = np.random.default_rng(vocab)
    docs = [[f"w{x}" * int(1 + x % 3) for x in rnd.integers(0, vocab, rnd.integers(0, 120))] for _ in range(40)]
    words = [w for d in docs for w in d]
    doc = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
    h = pl.Series(words, dtype=pl.String).hash(3).to_numpy()
    length = np.array([len(w) for w in words], dtype=np.int64)
    got = ngram_repetition(doc, h, length, len(docs), tuple(TOP_NGRAMS), tuple(DUP_NGRAMS))
    for i, d in enumerate(docs):
        exp = reference(d)
        assert {k: int(v[i]) for k, v in got.items()} == exp, (i, d)


def test_empty_batch_and_empty_text():
    sc = GopherRepetition()
    empty = sc.score(batch())
    assert set(empty) == set(sc.columns) and all(len(a) == 0 for a in empty.values())
    out = scores("", "  ", "one two")
    assert all(v is None for v in out.row(0))
    assert out[P + "dup_line_frac"][1] == 0.0 and out[P + "top_2gram_char_frac"][1] == 0.0
    assert out[P + "top_2gram_char_frac"][2] == pytest.approx(7 / 7)
    assert out[P + "top_3gram_char_frac"][2] == 0.0  # fewer than 3 words: no 3-gram


def test_real_text(corpus_dir):
    """Distinct prose passes; a licence repeated four times fails on duplicated paragraphs."""
    speech = pl.read_parquet(corpus_dir / "sotu.parquet").head(2)["text"].to_list()
    licence = pl.read_parquet(corpus_dir / "licenses-copyright.parquet").head(1)["text"][0]
    got = reasons(*speech, "\n\n".join([licence] * 4))
    assert got[:2] == [None, None]
    assert got[2] in (P + "dup_para_frac", P + "dup_para_char_frac")
    out = scores(*speech)
    assert (out[P + "dup_5gram_char_frac"] < 0.15).all()


def test_giant_document_in_reasonable_time(corpus_dir):
    texts = pl.read_parquet(corpus_dir / "shakespeare-milton.parquet")["text"].to_list()
    text = "\n\n".join(texts)[:10_000_000]
    out = scores(text).row(0, named=True)
    assert all(v is not None and 0.0 <= v <= 1.0 for v in out.values())
