"""MinHash building blocks, vectorised over a whole batch: shingles, signatures, LSH bands.

Every function works on a batch at once: documents are concatenated into one flat uint64 array plus a
per-document count (Arrow's list layout), so there is no Python loop over documents, shingles or
permutations. Hashing is 64-bit throughout.

- Words: the text normalised by `tamis.pipeline.text.normalize` (NFKC, case folded, whitespace collapsed), split
  on spaces, each word hashed by polars (seeded 64-bit; stable within one polars version, i.e. within
  one job's environment).
- Shingles: word n-grams (default 5, as FineWeb and Lee et al. 2022). A document with fewer than n
  words is one shingle of all its words, so short duplicates are still found; an empty text has no
  shingle and is never a near-duplicate (exact dedup handles those).
- Permutations: h_i(x) = (a_i * x + b_i) mod 2^64 with odd a_i. datasketch and DataTrove write
  (a x + b) mod (2^61 - 1) but compute the product in numpy uint64, which wraps mod 2^64 first; we
  keep the multiply-add and drop the extra modulo. Inputs are already mixed (murmur3 finaliser), and
  `tests/scorers/test_minhash.py` checks that the estimates are unbiased.
- LSH: `bands` bands of `rows` signature values, each band hashed to one uint64 bucket key.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.text.normalize import normalize_expr

WORD_SEED = 0x7A3155
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_POLY = np.uint64(0x9E3779B97F4A7C15)
_CHUNK = 8192  # shingles per signature block: the (K, chunk) uint64 block (7 MB at K=112) stays in cache


def fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: a bijection that spreads every input bit over the output."""
    x = np.asarray(x, dtype=np.uint64).copy()
    x ^= x >> np.uint64(33)
    x *= _M1
    x ^= x >> np.uint64(33)
    x *= _M2
    x ^= x >> np.uint64(33)
    return x


def word_hashes(texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the normalised words of every text, flat (uint64), and words per text (int64)."""
    df = pl.DataFrame({"t": texts}).select(normalize_expr("t").alias("n"))
    df = df.select(pl.col("n").str.split(" ").alias("w"), (pl.col("n") == "").alias("empty"))
    counts = (df["w"].list.len().to_numpy().astype(np.int64)
              - df["empty"].to_numpy().astype(np.int64))
    words = df["w"].explode()
    if df["empty"].any():
        words = words.filter(words != "")
    return words.hash(seed=WORD_SEED).to_numpy().astype(np.uint64, copy=False), counts


def shingle_hashes(words: np.ndarray, counts: np.ndarray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the word n-grams of every document (flat, in order), and shingles per doc.

    A document with 0 < w < ngram words yields one shingle of its w words; with 0 words, none.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n_words = words.shape[0]
    n_sh = np.where(counts >= ngram, counts - ngram + 1, np.minimum(counts, 1))
    if n_words == 0:
        return np.zeros(0, np.uint64), n_sh
    starts = np.cumsum(counts) - counts
    # A polynomial over every window of the flat word array (zero-padded at the end) ...
    padded = np.concatenate([words, np.zeros(ngram - 1, np.uint64)])
    h = padded[:n_words].copy()
    for k in range(1, ngram):
        h *= _POLY
        h += padded[k:k + n_words]
    # ... documents shorter than n words: one shingle of all their words, at their first word ...
    short = np.flatnonzero((counts > 0) & (counts < ngram))
    if short.shape[0]:
        hs = words[starts[short]].copy()
        for k in range(1, ngram - 1):
            more = counts[short] > k
            hs[more] = hs[more] * _POLY + words[starts[short[more]] + k]
        h[starts[short]] = hs
    # ... then keep the windows that start at word <= max(w - n, 0) of their own document.
    pos_in_doc = np.arange(n_words, dtype=np.int64) - np.repeat(starts, counts)
    keep = pos_in_doc <= np.repeat(np.maximum(counts - ngram, 0), counts)
    return fmix64(h[keep] ^ np.uint64(ngram)), n_sh


def ranges(lengths: np.ndarray) -> np.ndarray:
    """0..len-1 for each length, concatenated (np.arange per segment, without a loop)."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    return np.arange(total, dtype=np.int64) - np.repeat(ends - lengths, lengths)


def doc_shingles(texts: pa.Array | pa.ChunkedArray, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of raw texts: normalise, split, hash words, combine n-grams."""
    words, counts = word_hashes(texts)
    return shingle_hashes(words, counts, ngram)


def unique_per_doc(flat: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each document's shingle set: sorted, duplicates removed (flat values, new counts)."""
    if flat.shape[0] == 0:
        return flat, np.zeros(len(counts), np.int64)
    doc = np.repeat(np.arange(len(counts)), counts)
    order = np.lexsort((flat, doc))
    flat, doc = flat[order], doc[order]
    first = np.ones(flat.shape[0], bool)
    first[1:] = (flat[1:] != flat[:-1]) | (doc[1:] != doc[:-1])
    return flat[first], np.bincount(doc[first], minlength=len(counts)).astype(np.int64)


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of the num_perm hash functions; a is odd, so every h_i is a bijection of uint64."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    b = rng.integers(0, 2**63, num_perm, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, num_perm, dtype=np.uint64)
    return a, b


def signatures(flat: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signatures, shape (docs, num_perm); a document without shingles gets all 2^64 - 1.

    Works in blocks of `_CHUNK` shingles: each block's (K, chunk) matrix of a*x + b is reduced to
    per-(document part) minima with `np.minimum.reduceat` along its contiguous rows, then the parts
    are reduced per document.
    """
    counts = np.asarray(counts, dtype=np.int64)
    k = a.shape[0]
    out = np.full((len(counts), k), np.iinfo(np.uint64).max, dtype=np.uint64)
    has = np.flatnonzero(counts > 0)
    n = flat.shape[0]
    if n == 0:
        return out
    doc_starts = np.cumsum(counts[has]) - counts[has]
    cuts = np.union1d(doc_starts, np.arange(0, n, _CHUNK))  # segment starts: doc starts and block starts
    part_min = np.empty((k, cuts.shape[0]), dtype=np.uint64)
    buf = np.empty((k, _CHUNK), dtype=np.uint64)
    a_col, b_col = a[:, None], b[:, None]
    seg = np.searchsorted(cuts, np.arange(0, n, _CHUNK))
    for i, lo in enumerate(range(0, n, _CHUNK)):
        hi = min(lo + _CHUNK, n)
        m = buf[:, :hi - lo]
        np.multiply(a_col, flat[None, lo:hi], out=m)
        np.add(m, b_col, out=m)
        s0 = seg[i]
        s1 = seg[i + 1] if i + 1 < seg.shape[0] else cuts.shape[0]
        part_min[:, s0:s1] = np.minimum.reduceat(m, cuts[s0:s1] - lo, axis=1)
    first_part = np.searchsorted(cuts, doc_starts)
    out[has] = np.minimum.reduceat(part_min, first_part, axis=1).T
    return out


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 bucket key per (document, band) from `rows` consecutive signature values."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands * rows = {bands * rows} exceeds the {sig.shape[1]} permutations")
    v = sig[:, :bands * rows].reshape(sig.shape[0], bands, rows)
    h = v[:, :, 0].copy()
    for r in range(1, rows):
        h = h * _POLY + v[:, :, r]
    return fmix64(h)


def collision_probability(s, bands: int, rows: int):
    """P(two documents with Jaccard s share at least one band) = 1 - (1 - s^rows)^bands."""
    s = np.asarray(s, dtype=np.float64)
    return 1.0 - (1.0 - s ** rows) ** bands


def optimal_params(threshold: float, num_perm: int, fp_weight: float = 0.5,
                   fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted false-positive area below
    `threshold` plus false-negative area above it (datasketch's `_optimal_param`, on a grid)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    b, r = np.meshgrid(np.arange(1, num_perm + 1), np.arange(1, num_perm + 1), indexing="ij")
    ok = b * r <= num_perm
    b, r = b[ok], r[ok]
    s = np.linspace(0.0, 1.0, 2001)
    p = collision_probability(s[None, :], b[:, None], r[:, None])
    below = s <= threshold
    fp = np.trapezoid(np.where(below, p, 0.0), s, axis=1)
    fn = np.trapezoid(np.where(below, 0.0, 1.0 - p), s, axis=1)
    best = int(np.argmin(fp_weight * fp + fn_weight * fn))
    return int(b[best]), int(r[best])
