"""Normalised word tokens, 64-bit token and window hashes, and a numpy Bloom filter.

A token is a maximal run of word characters (`\\w`: Unicode letters, digits, marks, `_`) after NFKC
and lower-casing; everything else separates tokens. ASCII texts, the common case, are tokenised
straight from their UTF-8 bytes with numpy lookup tables (NFKC is the identity on ASCII); other
texts first go through polars (NFKC, lower case, non-word runs -> one space). Tokens are hashed by
polars (`Series.hash` with a fixed seed: stable within one polars version, which every worker of a
job shares); a window hash is a polynomial over its token hashes finished with splitmix64.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

_C1, _C2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_P_TOKEN = np.uint64(0x9E3779B97F4A7C15)
_SEED_LEN = 0xD6E8FEB86659FD93
_MASK64 = (1 << 64) - 1
_WORD = np.zeros(256, bool)  # ASCII word bytes, plus every byte of a multi-byte UTF-8 character
for _c in b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_":
    _WORD[_c] = True
_WORD[0x80:] = True
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[ord("A"):ord("Z") + 1] += 32
_SEED_TOKEN = 0x5EED


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _C1
    x = x ^ (x >> np.uint64(27))
    x = x * _C2
    return x ^ (x >> np.uint64(31))


@dataclass
class Tokens:
    """Tokens of a batch of texts: `hashes` back to back, `offsets[d]:offsets[d+1]` for text d.

    `data` is the scanned UTF-8 (the text itself when ASCII, else its normalised form) and
    `start`/`end` each token's byte range in it, for showing spans.
    """

    hashes: np.ndarray
    offsets: np.ndarray
    data: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def span_text(self, a: int, b: int) -> str:
        """Text from token a to token b - 1, whitespace collapsed."""
        raw = self.data[self.start[a]:self.end[b - 1]].tobytes().decode("utf-8", "replace")
        return re.sub(r"\s+", " ", raw)


def tokenize(texts: pa.Array | pa.ChunkedArray | pl.Series) -> Tokens:
    s = (texts if isinstance(texts, pl.Series) else pl.Series("t", texts)).fill_null("").cast(pl.String)
    other = np.flatnonzero(s.str.contains(r"[^\x00-\x7F]").to_numpy())
    if other.size:
        s = s.clone()
        s.scatter(other, s.gather(other).str.normalize("NFKC").str.to_lowercase()
                  .str.replace_all(r"\W+", " "))
    arr = s.to_arrow()
    arr = (arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr).cast(pa.large_string())
    n = len(arr)
    off = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + n + 1]
    buf = arr.buffers()[2]
    data = (np.frombuffer(buf, dtype=np.uint8)[off[0]:off[-1]] if buf is not None and n
            else np.zeros(0, np.uint8))
    off = off - off[0]
    word = _WORD[data]
    edge = np.zeros(len(data) + 1, bool)  # a token cannot continue across texts
    edge[off] = True
    prev = np.concatenate([[False], word[:-1]]) & ~edge[:-1]
    nxt = np.concatenate([word[1:], [False]]) & ~edge[1:]
    start = np.flatnonzero(word & ~prev)
    end = np.flatnonzero(word & ~nxt) + 1
    # The tokens' bytes back to back (ASCII lower-cased), hashed by polars in one call.
    packed = _LOWER[data[word]]
    tok_off = np.zeros(len(start) + 1, np.int64)
    np.cumsum(end - start, out=tok_off[1:])
    tok = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(start),
                                           [None, pa.py_buffer(tok_off), pa.py_buffer(packed)])
    hashes = pl.Series("tok", tok).hash(seed=_SEED_TOKEN).to_numpy()
    return Tokens(hashes, np.searchsorted(start, off), data, start, end)


def window_hashes(tokens: Tokens, lengths) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Hashes of every window of each length in `lengths` that lies inside one text.

    Returns {length: (hashes uint64, index of the window's first token)}. Equal token runs give
    equal hashes wherever they sit; the length is folded in, so lengths never mix.
    """
    h, offs = tokens.hashes, tokens.offsets
    lengths = sorted({int(x) for x in lengths})
    total = len(h)
    doc_end = np.repeat(offs[1:], np.diff(offs))
    out = {}
    g = np.zeros(total, dtype=np.uint64)
    for j in range(1, (lengths[-1] if lengths else 0) + 1):
        size = total - j + 1
        if size <= 0:
            break
        g = g[:size] * _P_TOKEN + h[j - 1:j - 1 + size]
        if j in lengths:
            first = np.flatnonzero(np.arange(size) + j <= doc_end[:size])
            out[j] = (mix64(g[first] ^ np.uint64((j * _SEED_LEN) & _MASK64)), first)
    for j in lengths:
        out.setdefault(j, (np.zeros(0, np.uint64), np.zeros(0, np.int64)))
    return out


class BloomFilter:
    """A bit array with k probes per key, sized for `capacity` keys at false-positive rate `fp_rate`.

    Keys are uint64 hashes; probes follow enhanced double hashing (Dillinger & Manolios 2004),
    `p_i = key + i * step(key) + (i^3 - i) / 6 mod m`, which keeps small filters at their rate.
    The optimal size is 1.44 * log2(1 / fp_rate) bits per key (24 bits at 1e-5); m rounds it up to
    a power of two (at least 8 KiB), so a probe is a mask rather than a division: at most 2x the
    memory, and a false-positive rate at or below `fp_rate`. A lookup stops probing a key at its
    first zero bit, so a miss costs about two probes.
    """

    def __init__(self, capacity: int, fp_rate: float):
        capacity = max(int(capacity), 1)
        optimal = -capacity * math.log(fp_rate) / math.log(2) ** 2
        self.m = 1 << max(16, math.ceil(math.log2(optimal)))  # at least 8 KiB
        self.k = int(min(16, max(1, round(self.m / capacity * math.log(2)))))
        self.bits = np.zeros(self.m // 64, dtype=np.uint64)

    @property
    def nbytes(self) -> int:
        return self.bits.nbytes

    def _start(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.uint64]:
        mask = np.uint64(self.m - 1)
        return keys & mask, mix64(keys ^ np.uint64(_SEED_LEN)) | np.uint64(1), mask

    def add(self, keys: np.ndarray) -> None:
        pos, step, mask = self._start(np.unique(np.asarray(keys, dtype=np.uint64)))
        for i in range(self.k):
            np.bitwise_or.at(self.bits, pos >> np.uint64(6), np.uint64(1) << (pos & np.uint64(63)))
            pos = (pos + step) & mask
            step = (step + np.uint64(i + 1)) & mask

    def contains(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.uint64)
        pos, step, mask = self._start(keys)
        alive = np.arange(len(keys))
        for i in range(self.k):
            set_ = ((self.bits[pos >> np.uint64(6)] >> (pos & np.uint64(63))) & np.uint64(1)).astype(bool)
            alive, pos, step = alive[set_], pos[set_], step[set_]
            if not len(alive):
                break
            pos = (pos + step) & mask
            step = (step + np.uint64(i + 1)) & mask
        found = np.zeros(len(keys), dtype=bool)
        found[alive] = True
        return found
