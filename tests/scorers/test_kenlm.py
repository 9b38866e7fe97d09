"""KenLM: CCNet's formula on a hand-written bigram ARPA, checked against a hand computation."""
from __future__ import annotations

import importlib.util
import math
import pickle
import re

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

pytest.importorskip("kenlm")

from tamis.scorers.perplexity.kenlm import KenLM, normalize_expr, write_arpa  # noqa: E402

SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a cat ran",
             "the cat ran to the dog", "a dog sat"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("kenlm") / "tiny.arpa"
    probs = write_arpa(SENTENCES, path)
    return path, probs


def hand_log10(line: str, probs: dict) -> float:
    """log10 P(line </s> | <s>) under a bigram back-off model, from the numbers in the ARPA."""
    uni, bi = probs["uni"], probs["bi"]
    toks = ["<s>"] + [w if w in uni else "<unk>" for w in line.split()] + ["</s>"]
    total = 0.0
    for v, w in zip(toks[:-1], toks[1:]):
        total += bi[(v, w)] if (v, w) in bi else uni[v][1] + uni[w][0]
    return total


def test_formula_matches_hand_computation(tiny):
    path, probs = tiny
    docs = ["The cat sat\nA DOG ran to the zebra", "the mat", "cat\n\nthe dog sat on the log"]
    out = KenLM(model=str(path)).score(pa.table({"text": docs}))
    for doc, got, n in zip(docs, out["kenlm_ppl"].to_pylist(), out["kenlm_tokens"].to_pylist()):
        lines = [l.strip().lower() for l in doc.split("\n")]
        log10p = sum(hand_log10(l, probs) for l in lines)
        tokens = sum(len(l.split()) + 1 for l in lines)
        assert n == tokens
        assert got == pytest.approx(10 ** (-log10p / tokens), rel=1e-5)
    # an empty line is a sentence of its own (`</s>` given `<s>`), as in CCNet
    assert out["kenlm_tokens"][2].as_py() == 2 + 1 + 7


def test_empty_text_and_empty_batch(tiny):
    s = KenLM(model=str(tiny[0]))
    out = s.score(pa.table({"text": pa.array(["", "the cat"], pa.large_string())}))
    assert out["kenlm_ppl"].type == pa.float64() and out["kenlm_tokens"].type == pa.int64()
    assert out["kenlm_ppl"].to_pylist()[0] is None and out["kenlm_tokens"].to_pylist() == [0, 3]
    empty = s.score(pa.table({"text": pa.array([], pa.large_string())}))
    assert len(empty["kenlm_ppl"]) == 0 and len(empty["kenlm_tokens"]) == 0


def test_ccnet_normalisation():
    s = pl.Series(["  Héllo WORLD 1984 ١٢ “quoted” — x\x01y…  ", "Ｎａïve　“ｔｅｓｔ”，ok！"])
    got = s.to_frame("t").select(normalize_expr(pl.col("t")))["t"].to_list()
    assert got[0] == 'hello world 0000 00 "quoted"  -  xy...'
    assert got[1] == 'ｎａive　"ｔｅｓｔ",ok!'


def test_normalize_off_keeps_case_so_scores_change(tiny):
    path, _ = tiny
    batch = pa.table({"text": ["THE CAT SAT"]})
    on = KenLM(model=str(path)).score(batch)["kenlm_ppl"][0].as_py()
    off = KenLM(model=str(path), normalize=False).score(batch)["kenlm_ppl"][0].as_py()
    assert off > on  # upper-case words are <unk> without normalisation


def test_real_text_scores_lower_than_shuffled(corpus_dir, tmp_path):
    """Bigram LM on four Austen novels: held-out Emma paragraphs beat their word-shuffled copies."""
    df = pl.read_parquet(corpus_dir / "janeausten.parquet")
    train = df.filter(~pl.col("id").str.contains("Emma"))["text"].str.slice(0, 150_000)
    lines = (train.to_frame("text").select(normalize_expr(pl.col("text").str.split("\n").explode()))
             ["text"].to_list())
    write_arpa([l for l in lines if l], tmp_path / "austen.arpa")
    emma = df.filter(pl.col("id").str.contains("Emma"))["text"][0]
    paras = [re.sub(r"\s+", " ", p).strip() for p in emma.split("\n\n")]
    paras = [p for p in paras if len(p.split()) >= 40][:100]
    rng = np.random.default_rng(0)
    shuffled = [" ".join(rng.permutation(p.split())) for p in paras]
    s = KenLM(model=str(tmp_path / "austen.arpa"))
    clean = s.score(pa.table({"text": paras}))["kenlm_ppl"].to_numpy()
    noisy = s.score(pa.table({"text": shuffled}))["kenlm_ppl"].to_numpy()
    assert (clean < noisy).mean() >= 0.95


def test_pickles_before_setup_and_validates(tiny):
    s = KenLM(model=str(tiny[0]))
    assert not hasattr(s, "lm_")
    clone = pickle.loads(pickle.dumps(s))
    assert clone.score(pa.table({"text": ["a cat"]}))["kenlm_tokens"][0].as_py() == 3
    with pytest.raises(ValueError, match="model"):
        KenLM().validate()
    with pytest.raises(ValueError, match="newline"):
        KenLM(model="x.arpa", newline="").validate()
    if importlib.util.find_spec("sentencepiece") is None:
        with pytest.raises(ValueError, match="sentencepiece"):
            KenLM(model="x.arpa", sp_model="en.sp.model").validate()
    with pytest.raises(FileNotFoundError):
        KenLM(model=str(tiny[0]) + ".missing").setup()


def test_write_arpa_is_a_normalised_model(tiny):
    """Sanity of the test helper: next-word probabilities after a context sum to 1."""
    _, probs = tiny
    uni, bi = probs["uni"], probs["bi"]
    words = [w for w in uni if w != "<s>"]
    for ctx in ("<s>", "the", "cat", "zebra" if "zebra" in uni else "<unk>"):
        total = sum(10 ** (bi[(ctx, w)] if (ctx, w) in bi else uni[ctx][1] + uni[w][0]) for w in words)
        assert math.isclose(total, 1.0, rel_tol=1e-9), ctx
