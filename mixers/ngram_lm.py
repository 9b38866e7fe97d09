"""Interpolated Kneser-Ney n-gram LM over integer token ids, in numpy (the CPU proxy of RegMix runs).

Chen & Goodman (1998) interpolated KN with one discount per order, `D = n1 / (n1 + 2 n2)` (Ney's
estimate from counts of counts). The highest order uses raw counts, lower orders continuation counts
(the number of distinct left extensions), the unigram level interpolates with the uniform
distribution over the vocabulary, so every token has a non-zero probability. n-grams are packed into
int64 keys (`sum id_j * V**j`), counted with `np.unique` and looked up with `np.searchsorted`.
"""
from __future__ import annotations

import numpy as np


class KneserNeyLM:
    """`fit(ids) -> self`; `mean_nll(ids)` = mean negative log-likelihood in nats per token."""

    def __init__(self, order: int = 5, vocab_size: int = 256):
        self.order = order
        self.vocab_size = vocab_size

    def fit(self, ids: np.ndarray) -> "KneserNeyLM":
        V, n = int(self.vocab_size), int(self.order)
        if n < 1:
            raise ValueError(f"order must be >= 1, got {n}")
        if float(V) ** n >= 2.0 ** 62:
            raise ValueError(f"vocab_size**order must fit in int64 (vocab {V}, order {n}); lower order")
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= V):
            raise ValueError(f"token ids must lie in [0, {V})")
        grams_by_order = []
        g = ids
        for k in range(1, n + 1):
            if k > 1:
                g = g[:-1] * V + ids[k - 1:]
            grams_by_order.append(g)
        tables = [None] * n
        keys, counts = np.unique(grams_by_order[n - 1], return_counts=True)
        tables[n - 1] = _table(keys, counts.astype(np.float64), V)
        longer = keys
        for k in range(n - 1, 0, -1):   # continuation counts: distinct (k+1)-grams ending in a k-gram
            keys, counts = np.unique(longer % (V ** k), return_counts=True)
            tables[k - 1] = _table(keys, counts.astype(np.float64), V)
            longer = np.unique(grams_by_order[k - 1])
        self.tables_ = tables
        return self

    def token_probs(self, ids: np.ndarray) -> np.ndarray:
        """P(ids[t] | ids[:t]) for every position (the first tokens use the orders they can)."""
        V = int(self.vocab_size)
        ids = np.asarray(ids, dtype=np.int64)
        p = np.full(ids.size, 1.0 / V)
        g = ids
        for k, tab in enumerate(self.tables_, start=1):
            if k > 1:
                g = g[:-1] * V + ids[k - 1:]
            if g.size == 0:
                break
            pos = slice(k - 1, None)
            total, n_follow = _lookup(tab["ctx"], g // V, tab["ctx_total"], tab["ctx_n1p"])
            (count,) = _lookup(tab["keys"], g, tab["counts"])
            d = tab["discount"]
            seen = total > 0
            lower = p[pos]
            interp = (np.maximum(count - d, 0.0) + d * n_follow * lower) / np.where(seen, total, 1.0)
            p[pos] = np.where(seen, interp, lower)
        return p

    def mean_nll(self, ids: np.ndarray) -> float:
        if not hasattr(self, "tables_"):
            raise RuntimeError("KneserNeyLM is not fitted: call fit() first")
        return float(-np.mean(np.log(self.token_probs(ids))))


def _table(keys: np.ndarray, counts: np.ndarray, V: int) -> dict:
    n1, n2 = float(np.sum(counts == 1)), float(np.sum(counts == 2))
    d = n1 / (n1 + 2 * n2) if n1 > 0 else 0.5
    d = float(np.clip(d, 0.05, 0.95))
    ctx = keys // V          # sorted because keys are sorted and key = ctx * V + token
    uctx, start = np.unique(ctx, return_index=True)
    total = np.add.reduceat(counts, start) if counts.size else np.zeros(0)
    n1p = np.diff(np.append(start, counts.size)).astype(np.float64)
    return {"keys": keys, "counts": counts, "ctx": uctx, "ctx_total": total, "ctx_n1p": n1p,
            "discount": d}


def _lookup(sorted_keys: np.ndarray, query: np.ndarray, *values: np.ndarray) -> list[np.ndarray]:
    """Each of `values` at the `query` keys of `sorted_keys` (0 where a key is missing)."""
    if sorted_keys.size == 0:
        return [np.zeros(query.size) for _ in values]
    i = np.minimum(np.searchsorted(sorted_keys, query), sorted_keys.size - 1)
    hit = sorted_keys[i] == query
    return [np.where(hit, v[i], 0.0) for v in values]
