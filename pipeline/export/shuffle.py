"""The seeded global order of an export, without holding the dataset: every document copy gets a
64-bit key from `(seed, id, copy)`; the output is the copies sorted by key.

Pass 2 cuts the key range into equal buckets (`bucket_of`: the key's top bits times the bucket
count) and sorts each bucket in its own task, so the buckets in order are the global sort; since the
keys are i.i.d. uniform, that order is a uniformly random permutation, the same for any bucket
count, input split or worker count. Pass 3 cuts the ordered documents into shards of at most
`shard_tokens` (`cuts`).
"""
from __future__ import annotations

import numpy as np
import xxhash

GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def id_hashes(ids) -> np.ndarray:
    """A 64-bit hash per document id (xxh3, stable across versions and machines)."""
    h = xxhash.xxh3_64_intdigest
    return np.fromiter((h(i.encode() if i is not None else b"") for i in ids), np.uint64, count=len(ids))


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, vectorised: a bijection on uint64 that scrambles every bit."""
    x = np.asarray(x, np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def order_keys(id_hash: np.ndarray, copy: np.ndarray, seed: int) -> np.ndarray:
    """The sort key of each document copy."""
    with np.errstate(over="ignore"):
        salt = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * GOLDEN
        return mix64(mix64(id_hash ^ salt) + np.asarray(copy, np.uint64) * GOLDEN)


def uniform(id_hash: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """A uniform [0, 1) draw per document from its id, independent of `order_keys` (another salt)."""
    with np.errstate(over="ignore"):
        x = mix64(id_hash ^ mix64(np.uint64(seed * 1_000_003 + salt)))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def bucket_of(keys: np.ndarray, n_buckets: int) -> np.ndarray:
    """Bucket of each key: equal key ranges, in key order (bucket b < b' means smaller keys)."""
    return ((keys >> np.uint64(32)) * np.uint64(n_buckets) >> np.uint64(32)).astype(np.int64)


def cuts(lengths_per_bucket, shard_tokens: int) -> list[list[tuple[int, int, int]]]:
    """Shards of consecutive documents over the buckets in order, each with at most `shard_tokens`
    tokens (a longer document gets a shard of its own): per shard a list of (bucket, first doc, end doc).
    Sequential over documents, but one `searchsorted` per shard piece, not a Python step per document."""
    shards: list[list[tuple[int, int, int]]] = []
    cur: list[tuple[int, int, int]] = []
    fill = 0
    for b, lengths in enumerate(lengths_per_bucket):
        lengths = np.asarray(lengths, np.int64)
        cum = np.concatenate([[0], np.cumsum(lengths)])
        i, n = 0, len(lengths)
        while i < n:
            room = shard_tokens - fill
            j = int(np.searchsorted(cum, cum[i] + room, side="right")) - 1  # docs i..j-1 fit
            if j <= i:
                if fill == 0:  # one document longer than a shard: alone
                    j = i + 1
                else:
                    shards.append(cur)
                    cur, fill = [], 0
                    continue
            cur.append((b, i, j))
            fill += int(cum[j] - cum[i])
            i = j
            if fill >= shard_tokens:
                shards.append(cur)
                cur, fill = [], 0
    if cur:
        shards.append(cur)
    return shards
