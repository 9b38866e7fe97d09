"""Pure MinHash functions: shingles, signatures, bands, LSH parameters, connected components."""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tamis.scorers.dedup.components import component_labels, components, keep_per_component
from tamis.scorers.dedup.lsh import (band_hashes, collision_probability, doc_shingles, fmix64, optimal_params,
                              permutations, shingle_hashes, signatures, unique_per_doc, word_hashes)
from tamis.scorers.dedup import lsh as _minhash
from tamis.pipeline.text.normalize import normalize_text


def _split(flat, counts):
    return np.split(flat, np.cumsum(counts)[:-1]) if len(counts) else []


def _ref_shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = normalize_text(pa.array([text]))[0].as_py().split()
    if not words:
        return set()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@pytest.fixture(scope="module")
def corpus_texts(corpus_dir):
    df = pl.read_parquet(corpus_dir / "sotu.parquet", columns=["text"]).head(6)
    df = pl.concat([df, pl.read_parquet(corpus_dir / "fortunes.parquet", columns=["text"]).head(40)])
    return [t[:20000] for t in df["text"].to_list()]


def test_word_hashes_normalise_case_and_whitespace():
    w, c = word_hashes(pa.array(["Hello  World\n\tagain", "hello world again", "HELLO WORLD AGAIN ", "", "   "]))
    assert c.tolist() == [3, 3, 3, 0, 0]
    a, b, d = _split(w, c)[:3]
    assert (a == b).all() and (b == d).all()


def test_shingle_counts_short_and_empty_docs():
    texts = pa.array(["a b c d e f g", "a b", "", "x y z w v", "a b c d"])
    sh, counts = doc_shingles(texts, 5)
    assert counts.tolist() == [3, 1, 0, 1, 1]
    assert sh.dtype == np.uint64 and sh.shape[0] == 6
    parts = _split(sh, counts)
    assert parts[1][0] != parts[4][0]            # "a b" vs "a b c d": different short shingles
    sh3, c3 = doc_shingles(pa.array(["a b c d e f g", "b c d e f g h"]), 3)
    assert c3.tolist() == [5, 5]
    p = _split(sh3, c3)
    assert (p[0][1:] == p[1][:4]).all()          # shared 3-grams hash the same in either document


def test_shingle_sets_match_string_ngrams_on_corpus(corpus_texts):
    """|A & B| and |A | B| of the hashed shingle sets equal those of the word 5-gram string sets."""
    rng = np.random.default_rng(0)
    edited = []
    for t in corpus_texts:
        words = t.split()
        for i in rng.choice(len(words), size=max(1, len(words) // 30), replace=False):
            words[i] = f"zz{i}"
        edited.append(" ".join(words))
    sh, counts = doc_shingles(pa.array(corpus_texts + edited), 5)
    sets = [set(x.tolist()) for x in _split(sh, counts)]
    n = len(corpus_texts)
    for i in range(n):
        ra, rb = _ref_shingles(corpus_texts[i]), _ref_shingles(edited[i])
        assert len(sets[i]) == len(ra)
        assert len(sets[i] & sets[n + i]) == len(ra & rb)
        assert len(sets[i] | sets[n + i]) == len(ra | rb)


def test_unique_per_doc():
    flat = np.array([5, 3, 5, 1, 7, 7, 2], np.uint64)
    vals, counts = unique_per_doc(flat, np.array([4, 0, 3]))
    assert counts.tolist() == [3, 0, 2]
    assert vals.tolist() == [1, 3, 5, 2, 7]


def test_signatures_equal_brute_force_across_block_boundaries():
    rng = np.random.default_rng(3)
    ch = _minhash._CHUNK
    counts = np.array([1, 0, 2 * ch + 5, 3, ch - 9, ch + 1, 0, 1, 700])   # docs straddle the blocks
    flat = rng.integers(0, 2**64, int(counts.sum()), dtype=np.uint64)
    a, b = permutations(112, seed=7)
    sig = signatures(flat, counts, a, b)
    assert sig.shape == (len(counts), 112) and sig.dtype == np.uint64
    for d, part in enumerate(_split(flat, counts)):
        if len(part) == 0:
            assert (sig[d] == np.iinfo(np.uint64).max).all()
        else:
            assert (sig[d] == (part[:, None] * a + b).min(axis=0)).all()


@pytest.mark.parametrize("jac", [0.3, 0.6, 0.8, 0.95])
def test_signature_agreement_estimates_jaccard_without_bias(jac):
    rng = np.random.default_rng(int(jac * 100))
    a, b = permutations(128, seed=1)
    n, trials, errs = 300, 200, []
    inter = int(round(2 * n * jac / (1 + jac)))
    true = inter / (2 * n - inter)
    for _ in range(trials):
        common = rng.integers(0, 2**64, inter, dtype=np.uint64)
        x = fmix64(np.concatenate([common, rng.integers(0, 2**64, n - inter, dtype=np.uint64)]))
        y = fmix64(np.concatenate([common, rng.integers(0, 2**64, n - inter, dtype=np.uint64)]))
        s = signatures(np.concatenate([x, y]), np.array([n, n]), a, b)
        errs.append((s[0] == s[1]).mean() - true)
    sd = np.sqrt(true * (1 - true) / 128)
    assert abs(np.mean(errs)) < 4 * sd / np.sqrt(trials)      # unbiased
    assert 0.8 * sd < np.std(errs) < 1.25 * sd                 # binomial spread: permutations independent


def test_band_hashes_follow_signature_rows():
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 2**64, (3, 112), dtype=np.uint64)
    sig[1] = sig[0]
    sig[2] = sig[0]
    sig[2, 17] ^= np.uint64(1)                                  # row 17 lies in band 2 (rows 16..23)
    bh = band_hashes(sig, 14, 8)
    assert bh.shape == (3, 14)
    assert (bh[0] == bh[1]).all()
    assert (bh[0] != bh[2]).tolist() == [i == 2 for i in range(14)]
    with pytest.raises(ValueError, match="bands"):
        band_hashes(sig, 15, 8)


def test_collision_probability_fineweb_numbers():
    p = collision_probability([0.7, 0.75, 0.8, 0.85], 14, 8)
    assert np.round(p, 2).tolist() == [0.56, 0.77, 0.92, 0.99]


@pytest.mark.parametrize("threshold,num_perm", [(0.5, 64), (0.7, 112), (0.8, 112), (0.9, 128)])
def test_optimal_params_match_datasketch(threshold, num_perm):
    lsh = pytest.importorskip("datasketch.lsh")
    assert optimal_params(threshold, num_perm) == tuple(lsh._optimal_param(threshold, num_perm, 0.5, 0.5))


def test_optimal_params_rejects_bad_threshold():
    with pytest.raises(ValueError, match="threshold"):
        optimal_params(1.2, 112)


def test_component_labels_chain_star_and_isolated():
    labels = component_labels(np.array([0, 1, 4, 6]), np.array([1, 2, 5, 4]), 8)
    assert labels[0] == labels[1] == labels[2]
    assert labels[4] == labels[5] == labels[6]
    assert len({labels[0], labels[4], labels[3], labels[7]}) == 4


def test_components_on_string_ids():
    t = components(pa.array(["a", "c", "x"]), pa.array(["b", "b", "y"], pa.large_string()))
    comp = dict(zip(t["id"].to_pylist(), t["component"].to_pylist()))
    assert set(comp) == {"a", "b", "c", "x", "y"}
    assert comp["a"] == comp["b"] == comp["c"] != comp["x"] == comp["y"]
    assert components(pa.array([], pa.string()), pa.array([], pa.string())).num_rows == 0


def test_keep_per_component_picks_lowest_priority_and_reports_pair_jaccard():
    pairs = pl.DataFrame({"hub": ["b", "b", "x"], "member": ["c", "d", "y"],
                          "hub_priority": [-5.0, -5.0, 0.0], "member_priority": [-1.0, -9.0, 0.0],
                          "jaccard": [0.9, 0.85, 1.0]})
    out = {r["id"]: r for r in keep_per_component(pairs).iter_rows(named=True)}
    assert {i: r["kept"] for i, r in out.items()} == {"b": "d", "c": "d", "d": "d", "x": "x", "y": "x"}
    assert out["d"]["jaccard"] is None and out["x"]["jaccard"] is None
    assert out["b"]["jaccard"] == 0.85        # paired with the kept "d"
    assert out["c"]["jaccard"] == 0.9         # not paired with "d": its best pair
    assert out["c"]["size"] == 3 and out["y"]["size"] == 2
    assert keep_per_component(pairs.head(0)).height == 0


def test_unigram_shingles_are_mixed_word_hashes():
    words = np.arange(1, 8, dtype=np.uint64)
    sh, counts = shingle_hashes(words, np.array([3, 0, 4]), 1)
    assert counts.tolist() == [3, 0, 4]
    assert (sh == fmix64(words ^ np.uint64(1))).all()
    sh2, counts2 = shingle_hashes(words, np.array([3, 0, 4]), 2)
    assert counts2.tolist() == [2, 0, 3] and len(set(sh2.tolist())) == 5
