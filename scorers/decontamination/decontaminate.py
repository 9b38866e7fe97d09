"""`use: decontaminate`: remove (or mark) training documents that share long n-grams with eval sets.

GPT-3's rule (Brown et al. 2020, appendix C): a training document is contaminated when it shares a
13-gram of normalised words with an evaluation item. Here words are NFKC, lower-cased runs of word
characters (punctuation dropped); an item is its named fields joined by a space. Items shorter
than `n` words (at least `exact_match_min_tokens`, at most `exact_match_max_tokens`) match only as
a whole, exactly; shorter ones are skipped and counted.

The eval index never holds the eval n-grams themselves: `fit` streams the eval sets into a Bloom
filter (3 to 6 bytes per n-gram at `bloom_fp_rate = 1e-5`), streams the corpus once, keeping only
the windows the filter lets through (true overlaps plus about one in 10^5 false positives), then
streams the eval sets again to keep exact (hash -> set, item) entries for those candidates only.
A Bloom false positive never survives that check, so it never removes a document.
"""
from __future__ import annotations

import re

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.scorers.decontamination.eval_sets import check_eval_set, read_eval_items
from tamis.scorers.decontamination.ngrams import BloomFilter, tokenize, window_hashes
from tamis.pipeline.stage import GlobalStage, Resources, check_fitted

_DECISIONS = pa.schema([("id", pa.string()), ("decontam_hits", pa.int64()), ("decontam_frac", pa.float64()),
                        ("decontam_set", pa.string()), ("decontam_item", pa.string()),
                        ("decontam_span", pa.string())])


class Decontaminate(GlobalStage):
    """Documents that contain n-grams (default 13) of the named evaluation sets."""

    name = "decontaminate"
    requires = ("text",)
    columns = {f.name: f.type for f in _DECISIONS if f.name != "id"}
    resources = Resources(cpus=1)
    default_keep = {"decontam_{decontam_set}": "decontam_hits == 0"}

    def __init__(self, eval_sets: list[dict] | None = None, n: int = 13, threshold: float = 0.0,
                 mode: str = "remove", exact_match_max_tokens: int | None = None,
                 exact_match_min_tokens: int = 8, bloom_fp_rate: float = 1e-5, max_span_tokens: int = 50):
        self.eval_sets = eval_sets
        self.n = n
        self.threshold = threshold
        self.mode = mode
        self.exact_match_max_tokens = exact_match_max_tokens
        self.exact_match_min_tokens = exact_match_min_tokens
        self.bloom_fp_rate = bloom_fp_rate
        self.max_span_tokens = max_span_tokens

    def validate(self) -> None:
        if not isinstance(self.eval_sets, (list, tuple)) or not self.eval_sets:
            raise ValueError("eval_sets must be a non-empty list of {name, path, fields}")
        for i, spec in enumerate(self.eval_sets):
            check_eval_set(spec, i)
        names = [s["name"] for s in self.eval_sets]
        if len(set(names)) != len(names):
            raise ValueError(f"eval_sets names must be unique, got {names}")
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be an integer >= 1, got {self.n!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if self.mode not in ("remove", "mark"):
            raise ValueError(f"mode must be 'remove' or 'mark', got {self.mode!r}")
        lo, hi = self._exact_range()
        if not isinstance(self.exact_match_min_tokens, int) or lo < 1:
            raise ValueError(f"exact_match_min_tokens must be an integer >= 1, got {self.exact_match_min_tokens!r}")
        if self.exact_match_max_tokens is not None and (not isinstance(hi, int) or hi < 0):
            raise ValueError(f"exact_match_max_tokens must be an integer >= 0, got {hi!r}")
        if not 0.0 < float(self.bloom_fp_rate) < 0.5:
            raise ValueError(f"bloom_fp_rate must be in (0, 0.5), got {self.bloom_fp_rate!r}")
        if not isinstance(self.max_span_tokens, int) or self.max_span_tokens < 1:
            raise ValueError(f"max_span_tokens must be an integer >= 1, got {self.max_span_tokens!r}")

    def _exact_range(self) -> tuple[int, int]:
        hi = self.n - 1 if self.exact_match_max_tokens is None else self.exact_match_max_tokens
        return self.exact_match_min_tokens, hi

    def default_rules(self) -> dict[str, str]:
        if self.mode == "mark":
            return {}
        t = float(self.threshold)
        return {"decontam_{decontam_set}": "decontam_hits == 0" if t == 0.0
                else f"decontam_hits == 0 or decontam_frac < {t!r}"}

    # ------------------------------------------------------------------ fit
    def fit(self, data) -> "Decontaminate":
        self.validate()
        n, (lo, hi) = self.n, self._exact_range()
        stats, capacity, exact_lengths = [], 0, set()
        for spec in self.eval_sets:  # eval pass 1: size the filter
            st = {"items": 0, "ngram_items": 0, "exact_items": 0, "skipped_items": 0, "ngrams": 0}
            for texts, _ in read_eval_items(spec):
                counts = tokenize(texts).counts
                exact, ngram = _kinds(counts, n, lo, hi)
                st["items"] += len(counts)
                st["exact_items"] += int(exact.sum())
                st["ngram_items"] += int(ngram.sum())
                st["ngrams"] += int((counts[ngram] - n + 1).sum())
                exact_lengths.update(np.unique(counts[exact]).tolist())
            st["skipped_items"] = st["items"] - st["exact_items"] - st["ngram_items"]
            capacity += st["ngrams"] + st["exact_items"]
            stats.append(st)
        bloom = BloomFilter(capacity, float(self.bloom_fp_rate))
        for spec in self.eval_sets:  # eval pass 2: fill it
            for texts, _ in read_eval_items(spec):
                bloom.add(_EvalKeys(texts, n, lo, hi).keys)
        lengths = sorted({n} | exact_lengths)
        found = data.map_batches(_positives_fn(bloom, lengths, n)).to_arrow()  # the one corpus pass
        found = found.cast(_POSITIVES) if found.num_rows else _POSITIVES.empty_table()
        cand = np.unique(found["key"].to_numpy())
        index = _Index()
        for si, spec in enumerate(self.eval_sets):  # eval pass 3: exact entries of the candidates
            for texts, ids in read_eval_items(spec):
                index.add(_EvalKeys(texts, n, lo, hi), cand, si, ids)
        names = [s["name"] for s in self.eval_sets]
        self.decisions_ = _decisions(found, index, names, self.max_span_tokens)
        self.eval_stats_ = stats
        self.index_stats_ = {"n": n, "exact_lengths": sorted(exact_lengths), "eval_keys": capacity,
                             "bloom_bytes": bloom.nbytes, "bloom_probes": bloom.k,
                             "bloom_fp_rate": float(self.bloom_fp_rate), "bloom_positives": found.num_rows,
                             "candidate_keys": int(len(cand)), "confirmed_keys": index.size}
        return self

    # ------------------------------------------------------------ transform
    def transform(self, batch: pa.Table) -> dict[str, pa.Array]:
        check_fitted(self, "decisions_")
        n = batch.num_rows
        cols = {c: (batch[c] if c in batch.column_names else pa.nulls(n, t)) for c, t in self.columns.items()}
        df = pl.DataFrame({c: pa.chunked_array([v]) if isinstance(v, pa.Array) else v for c, v in cols.items()})
        out = df.select(pl.col("decontam_hits").cast(pl.Int64).fill_null(0),
                        pl.col("decontam_frac").cast(pl.Float64).fill_null(0.0),
                        *[pl.col(c).cast(pl.String) for c in ("decontam_set", "decontam_item", "decontam_span")])
        return {c: out[c].to_arrow().cast(t) for c, t in self.columns.items()}

    def report(self) -> dict:
        check_fitted(self, "decisions_")
        d = pl.from_arrow(self.decisions_)
        flagged = d.filter((pl.col("decontam_hits") > 0) & (pl.col("decontam_frac") >= float(self.threshold)))
        sets = []
        for spec, st in zip(self.eval_sets, self.eval_stats_):
            f = flagged.filter(pl.col("decontam_set") == spec["name"])
            top = f.sort(["decontam_hits", "id"], descending=[True, False]).head(3)
            sets.append({"name": spec["name"], **st, "docs_contaminated": f.height,
                         "docs_removed": f.height if self.mode == "remove" else 0,
                         "docs_below_threshold": d.filter(pl.col("decontam_set") == spec["name"]).height - f.height,
                         "items_matched": f["decontam_item"].n_unique(),
                         "examples": [{"id": r["id"], "item": r["decontam_item"], "hits": r["decontam_hits"],
                                       "span": r["decontam_span"]} for r in top.iter_rows(named=True)]})
        return {"mode": self.mode, "threshold": float(self.threshold), "eval_sets": sets, "index": self.index_stats_}


_POSITIVES = pa.schema([("id", pa.string()), ("key", pa.uint64()), ("pos", pa.int64()), ("len", pa.int64()),
                        ("ngrams", pa.int64())])


def _kinds(counts: np.ndarray, n: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Items matched whole (exact) and items matched by their n-grams."""
    exact = (counts >= lo) & (counts <= hi)
    return exact, (counts > hi) & (counts >= n)


class _EvalKeys:
    """Keys of one batch of eval items: every n-gram of long items, the whole of short ones.

    `keys[i]` belongs to item `row[i]` of the batch and covers its tokens `pos[i] : pos[i] + size[i]`.
    """

    def __init__(self, texts: pl.Series, n: int, lo: int, hi: int):
        self.tokens = tok = tokenize(texts)
        offs, counts = tok.offsets, tok.counts
        exact, ngram = _kinds(counts, n, lo, hi)
        keys, rows, pos, size = [], [], [], []
        for length, (h, first) in window_hashes(tok, {n} | set(np.unique(counts[exact]).tolist())).items():
            row = np.searchsorted(offs, first, side="right") - 1
            keep = ngram[row] if length == n else np.zeros(len(row), bool)
            keep |= exact[row] & (counts[row] == length) & (first == offs[row])
            keys.append(h[keep])
            rows.append(row[keep])
            pos.append(first[keep] - offs[row[keep]])
            size.append(np.full(int(keep.sum()), length, np.int64))
        self.keys, self.row, self.pos, self.size = (np.concatenate(x) for x in (keys, rows, pos, size))

    def item_text(self, row: int) -> tuple[bytes, np.ndarray, np.ndarray]:
        """The scanned text of item `row` and its tokens' byte ranges in it."""
        tok = self.tokens
        a, b = tok.offsets[row], tok.offsets[row + 1]
        base = tok.start[a]
        return tok.data[base:tok.end[b - 1]].tobytes(), tok.start[a:b] - base, tok.end[a:b] - base


def _isin_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0 or len(keys) == 0:
        return np.zeros(len(keys), bool)
    idx = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[idx] == keys


def _positives_fn(bloom: BloomFilter, lengths: list[int], n: int):
    """The corpus pass: each window of a batch that the Bloom filter lets through, as a row."""
    def positives(batch: pa.Table) -> pa.Table:
        if batch.num_rows == 0:
            return _POSITIVES.empty_table()
        tok = tokenize(batch["text"])
        doc, key, first, size = [], [], [], []
        for length, (h, f) in window_hashes(tok, lengths).items():
            hit = np.flatnonzero(bloom.contains(h))
            doc.append(np.searchsorted(tok.offsets, f[hit], side="right") - 1)
            key.append(h[hit])
            first.append(f[hit])
            size.append(np.full(len(hit), length, np.int64))
        doc, key, first, size = (np.concatenate(x) for x in (doc, key, first, size))
        ngrams = np.maximum(tok.counts - n + 1, 0)
        return pa.table({"id": batch["id"].take(pa.array(doc, pa.int64())).cast(pa.string()),
                         "key": pa.array(key, pa.uint64()), "pos": pa.array(first - tok.offsets[doc]),
                         "len": pa.array(size), "ngrams": pa.array(ngrams[doc], pa.int64())}, schema=_POSITIVES)
    return positives


class _Index:
    """Exact entries (key -> eval set, item, position in the item) for candidate keys only."""

    def __init__(self):
        self.codes: dict[tuple[int, str], int] = {}
        self.code_set: list[int] = []
        self.code_item: list[str] = []
        self.texts: dict[int, tuple[bytes, np.ndarray, np.ndarray]] = {}
        self.parts: list[pl.DataFrame] = []

    def add(self, ev: _EvalKeys, cand: np.ndarray, set_idx: int, ids: pl.Series) -> None:
        hit = np.flatnonzero(_isin_sorted(ev.keys, cand))
        if not hit.size:
            return
        ids = ids.to_list()
        code_of_row = {}
        for row in np.unique(ev.row[hit]).tolist():
            k = (set_idx, ids[row])
            if k not in self.codes:
                self.codes[k] = len(self.code_set)
                self.code_set.append(set_idx)
                self.code_item.append(ids[row])
                self.texts[self.codes[k]] = ev.item_text(row)
            code_of_row[row] = self.codes[k]
        codes = np.array([code_of_row[r] for r in ev.row[hit].tolist()], np.int64)
        self.parts.append(pl.DataFrame({"key": ev.keys[hit], "code": codes, "item_pos": ev.pos[hit]}))

    @property
    def size(self) -> int:
        return sum(p.height for p in self.parts)

    def table(self) -> pl.DataFrame:
        """One entry per key: the first set and item that contain it."""
        if not self.parts:
            return pl.DataFrame(schema={"key": pl.UInt64, "code": pl.Int64, "item_pos": pl.Int64})
        return pl.concat(self.parts).unique("key", keep="first", maintain_order=True)


def _decisions(found: pa.Table, index: _Index, names: list[str], max_span: int) -> pa.Table:
    """Per document with a confirmed window: hits, fraction, the item with most hits, a span."""
    hits = pl.from_arrow(found).join(index.table(), on="key", how="inner")
    if hits.height == 0:
        return _DECISIONS.empty_table()
    per_doc = hits.group_by("id").agg(pl.len().alias("hits"), pl.col("ngrams").first())
    best = (hits.group_by("id", "code").agg(pl.len().alias("c"))
            .sort(["id", "c", "code"], descending=[False, True, False]).unique("id", keep="first"))
    runs = (hits.join(best.select("id", "code"), on=["id", "code"], how="semi")
            .sort("id", "pos").group_by("id", maintain_order=True)
            .agg("code", "pos", "len", "item_pos"))
    spans = {r["id"]: _span(r, index, max_span) for r in runs.iter_rows(named=True)}
    out = per_doc.join(best.select("id", "code"), on="id").sort("id")
    code = out["code"].to_numpy()
    return pa.table({
        "id": out["id"].to_arrow().cast(pa.string()),
        "decontam_hits": out["hits"].to_arrow().cast(pa.int64()),
        "decontam_frac": out.select((pl.col("hits") / pl.max_horizontal(pl.col("ngrams"), 1)).clip(0.0, 1.0))
        .to_series().to_arrow().cast(pa.float64()),
        "decontam_set": pa.array([names[index.code_set[c]] for c in code], pa.string()),
        "decontam_item": pa.array([index.code_item[c] for c in code], pa.string()),
        "decontam_span": pa.array([spans[i] for i in out["id"].to_list()], pa.string()),
    }, schema=_DECISIONS)


def _span(run: dict, index: _Index, max_span: int) -> str:
    """The eval item's text over the first run of overlapping hit windows (at most `max_span` tokens)."""
    pos, size, item_pos = run["pos"], run["len"], run["item_pos"]
    end, lo, hi = pos[0] + size[0], item_pos[0], item_pos[0] + size[0]
    for p, s, q in zip(pos[1:], size[1:], item_pos[1:]):
        if p > end or hi - lo >= max_span:
            break
        end, lo, hi = max(end, p + s), min(lo, q), max(hi, q + s)
    data, start, stop = index.texts[run["code"][0]]
    hi = min(hi, lo + max_span)
    return re.sub(r"\s+", " ", data[start[lo]:stop[hi - 1]].decode("utf-8", "replace"))
