"""Gopher n-gram repetition over many documents at once, on arrays of word hashes (numpy + polars).

Input: the words of a batch as parallel arrays in text order (`doc` sorted, a 64-bit hash and the
character length of each word). An n-gram at position i is identified by a rolling hash of the word
hashes i..i+n-1. Level n only looks at positions whose (n-1)-grams at i and i+1 both repeat,
because an n-gram cannot repeat otherwise; for natural text this shrinks each level quickly.

* top n-gram (DataTrove `find_top_duplicate`): characters of the most frequent n-gram joined by
  spaces times its count; ties go to the n-gram seen first (Counter.most_common order).
* duplicate n-grams (DataTrove `find_all_duplicate`): a greedy left-to-right scan that, on an n-gram
  seen before, counts its characters (without spaces) and jumps n words. The scan is sequential:
  `greedy_dup_chars` walks runs of repeated positions (one step per run, not per word) and checks
  the result; documents where the check fails (the first occurrence of a counted n-gram was jumped
  over) are rescanned exactly, visiting only positions of repeated n-grams (`_scan_events`).
"""
from __future__ import annotations

import numpy as np
import polars as pl

_MIX = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xD6E8FEB86659FD93)


def _groups(keys: np.ndarray, doc: np.ndarray, pos: np.ndarray, stats: bool = True):
    """Which (doc, key) occur more than once: (mask over the input, count and first position of those)."""
    k = pl.Series((keys ^ (doc.astype(np.uint64) * _MIX2)) * _MIX)
    rep = k.is_duplicated().to_numpy()
    if not stats or not rep.any():
        return rep, None, None
    df = pl.DataFrame({"k": k.filter(pl.Series(rep)), "p": pos[rep]}).select(
        c=pl.len().over("k"), f=pl.col("p").min().over("k"))
    return rep, df["c"].to_numpy().astype(np.int64), df["f"].to_numpy().astype(np.int64)


def ngram_repetition(doc: np.ndarray, h: np.ndarray, length: np.ndarray, n_docs: int,
                     top_ns=(2, 3, 4), dup_ns=(5, 6, 7, 8, 9, 10)) -> dict[tuple[str, int], np.ndarray]:
    """Per document: ("top", n) -> top n-gram characters, ("dup", n) -> duplicated n-gram characters."""
    out = {("top", n): np.zeros(n_docs, np.int64) for n in top_ns}
    out |= {("dup", n): np.zeros(n_docs, np.int64) for n in dup_ns}
    if len(h) == 0:
        return out
    doc = doc.astype(np.int64)
    h = h.astype(np.uint64)
    starts = np.searchsorted(doc, np.arange(n_docs), "left")
    ends = np.searchsorted(doc, np.arange(n_docs), "right")
    cum = np.concatenate([[0], np.cumsum(length, dtype=np.int64)])
    # R: positions whose (n-1)-gram repeats in its document, G: that (n-1)-gram's hash.
    pos = np.arange(len(h), dtype=np.int64)
    rep, _, _ = _groups(h, doc, pos, stats=False)
    R, G = pos[rep], h[rep]
    with np.errstate(over="ignore"):
        for n in range(2, max((*top_ns, *dup_ns), default=1) + 1):
            sel = np.flatnonzero(R[1:] == R[:-1] + 1)  # the (n-1)-gram at i+1 repeats too
            pos, g = R[sel], G[sel]
            ok = pos + n <= ends[doc[pos]]
            pos, g = pos[ok], g[ok] * _MIX + h[pos[ok] + n - 1]
            rep, c, f = _groups(g, doc[pos], pos)
            R, G = pos[rep], g[rep]
            if n in top_ns:
                out[("top", n)] = _top_chars(doc, R, c, f, starts, ends, cum, n, n_docs)
            if n in dup_ns and len(R):
                out[("dup", n)] = greedy_dup_chars(R, f, doc, cum, n, n_docs)
    return out


def _top_chars(doc, pos, c, f, starts, ends, cum, n, n_docs) -> np.ndarray:
    """Characters (with spaces) of the most frequent n-gram times its count, per document.

    `pos` are the positions of repeated n-grams (count `c`, first position `f`); a document without
    one scores its first n-gram once, as Counter.most_common does.
    """
    top = np.zeros(n_docs, np.int64)
    has = ends - starts >= n
    s = starts[has]
    top[has] = cum[s + n] - cum[s] + n - 1
    m = pos == f  # one row per repeated n-gram, at its first occurrence
    if m.any():
        d, cc, ff = doc[pos[m]], c[m], f[m]
        ch = cum[ff + n] - cum[ff] + n - 1
        order = np.lexsort((ff, -cc, d))  # per doc: highest count, then first seen
        d, cc, ch = d[order], cc[order], ch[order]
        lead = np.ones(len(d), bool)
        lead[1:] = d[1:] != d[:-1]
        top[d[lead]] = ch[lead] * cc[lead]
    return top


def greedy_dup_chars(ev, first, doc, cum, n, n_docs) -> np.ndarray:
    """DataTrove's greedy duplicate n-gram scan: duplicated characters per document.

    `ev` are the sorted positions of every n-gram that occurs at least twice in its document and
    `first` the position of its first occurrence (the n-gram's id). Unique n-grams never count and
    never change the scan's path, so only these positions are visited.
    """
    out = np.zeros(n_docs, np.int64)
    dup = ev[ev > first]
    if len(dup) == 0:
        return out
    # Fast path: assume each repeated position the scan lands on is a duplicate. The scan then
    # enters each run of consecutive repeated positions once and jumps n at a time inside it.
    brk = np.flatnonzero(np.diff(dup) != 1) + 1
    run_s = dup[np.concatenate([[0], brk])]
    run_e = dup[np.concatenate([brk - 1, [len(dup) - 1]])]
    entries, counts = _walk_runs(run_s.tolist(), run_e.tolist(), doc[run_s].tolist(), n)
    entries, counts = np.asarray(entries, np.int64), np.asarray(counts, np.int64)
    hit = np.repeat(entries, counts) + n * (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    out += np.bincount(doc[hit], cum[hit + n] - cum[hit], minlength=n_docs).astype(np.int64)
    # The assumption holds when each hit's first occurrence was visited, i.e. not within n-1 words
    # after an earlier hit. Otherwise (it may still hold) the document is rescanned exactly.
    q = first[np.searchsorted(ev, hit)]
    j = np.searchsorted(hit, q) - 1
    jumped = (j >= 0) & (q - hit[np.maximum(j, 0)] < n)
    bad = np.unique(doc[hit[jumped]])
    if len(bad):  # otherwise: scan those documents exactly, event by event
        m = np.isin(doc[ev], bad)
        e = ev[m]
        out[bad] = 0
        docs, totals = _scan_events(e.tolist(), first[m].tolist(), (cum[e + n] - cum[e]).tolist(),
                                    doc[e].tolist(), n)
        out[docs] = totals
    return out


def _walk_runs(run_s: list, run_e: list, run_d: list, n: int) -> tuple[list, list]:
    """Sequential step of the fast path: where the scan enters each run, how many hits it makes."""
    entries, counts = [], []
    p, cur = -1, -1
    for s, e, d in zip(run_s, run_e, run_d):
        if d != cur:
            cur, p = d, s
        elif p <= s:
            p = s
        elif p > e:
            continue
        k = (e - p) // n + 1
        entries.append(p)
        counts.append(k)
        p += k * n
    return entries, counts


def _scan_events(ev: list, first: list, chars: list, docs: list, n: int) -> tuple[list, list]:
    """Exact greedy scan over repeated positions only (DataTrove's loop minus the unique n-grams)."""
    out_docs, out_totals = [], []
    cur, seen, p, total = -1, set(), -1, 0
    for x, f, c, d in zip(ev, first, chars, docs):
        if d != cur:
            if cur >= 0:
                out_docs.append(cur)
                out_totals.append(total)
            cur, seen, p, total = d, set(), -1, 0
        if x < p:
            continue
        if f in seen:
            total += c
            p = x + n
        else:
            seen.add(f)
            p = x + 1
    out_docs.append(cur)
    out_totals.append(total)
    return out_docs, out_totals
