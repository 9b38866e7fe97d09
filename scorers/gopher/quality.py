"""Gopher quality signals (Rae et al. 2021, MassiveText, Appendix A; DataTrove `GopherQualityFilter`).

Words are DataTrove's English words (spaCy rules, see `tamis.pipeline.text.words`); "symbol words" are made only
of punctuation and are left out of the word count and the mean word length, as in DataTrove.
The default keep rules reproduce DataTrove's defaults, in its order, so the first failing rule is the
reason DataTrove gives (`gopher_quality_` + its reason).
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.text.words import NOT_SYMBOL_RE, PY_SPACE, tokenize
from tamis.pipeline.stage import Resources, Scorer

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
# Python's str.splitlines() boundaries, and the in-line whitespace str.strip() removes.
LINE_BREAKS_RE = r"\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\x{2028}\x{2029}]"
_INLINE_SPACE = "".join(c for c in PY_SPACE if c not in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
BULLET_LINE_RE = rf"(?m)^[{_INLINE_SPACE}]*[•\-]"
ELLIPSIS_LINE_RE = rf"(?m)(?:\.\.\.|…)[{_INLINE_SPACE}]*$"

P = "gopher_quality_"


class GopherQuality(Scorer):
    """Word count, mean word length, symbol ratios, bullet / ellipsis lines, alphabetic words, stop words.

    Ratios are null when their denominator is 0 (no words, no lines). `stop_words` is the list whose
    distinct members are counted (default: Gopher's eight; matching is case-sensitive, as in DataTrove).
    """

    name = "gopher_quality"
    requires = ("text",)
    columns = {
        P + "word_count": pa.int64(),
        P + "mean_word_length": pa.float64(),
        P + "hash_word_ratio": pa.float64(),
        P + "ellipsis_word_ratio": pa.float64(),
        P + "bullet_line_frac": pa.float64(),
        P + "end_ellipsis_line_frac": pa.float64(),
        P + "alpha_word_frac": pa.float64(),
        P + "stop_word_count": pa.int64(),
    }
    resources = Resources(cpus=1)
    default_keep = {
        P + "short_doc": f"{P}word_count >= 50",
        P + "long_doc": f"{P}word_count <= 100000",
        P + "below_avg_threshold": f"{P}mean_word_length >= 3",
        P + "above_avg_threshold": f"{P}mean_word_length <= 10",
        P + "too_many_hashes": f"{P}hash_word_ratio <= 0.1",
        P + "too_many_ellipsis": f"{P}ellipsis_word_ratio <= 0.1",
        P + "too_many_bullets": f"{P}bullet_line_frac <= 0.9",
        P + "too_many_end_ellipsis": f"{P}end_ellipsis_line_frac <= 0.3",
        P + "below_alpha_threshold": f"{P}alpha_word_frac >= 0.8",
        P + "few_stop_words": f"{P}stop_word_count >= 2",
    }

    def __init__(self, stop_words: list[str] | None = None):
        self.stop_words = stop_words

    def validate(self) -> None:
        if self.stop_words is not None and (
                isinstance(self.stop_words, str) or not all(isinstance(w, str) for w in self.stop_words)):
            raise ValueError("stop_words must be a list of strings")

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        n = batch.num_rows
        df = pl.from_arrow(batch.select(["text"])).with_columns(
            lines=pl.col("text").str.replace_all(LINE_BREAKS_RE, "\n"),
            **{k: pl.Series(v) for k, v in word_counts(batch.column("text"), self.stop_words).items()},
        )
        t, lines = pl.col("text"), pl.col("lines")
        n_lines = pl.when(t == "").then(0).otherwise(
            lines.str.count_matches("\n", literal=True) + 1 - lines.str.ends_with("\n").cast(pl.Int64))
        nw = pl.col("n_words").cast(pl.Float64)
        out = df.select(
            pl.col("n_real").alias(P + "word_count"),
            _ratio(pl.col("real_chars"), pl.col("n_real")).alias(P + "mean_word_length"),
            _ratio(t.str.count_matches("#", literal=True), nw).alias(P + "hash_word_ratio"),
            _ratio(t.str.count_matches("...", literal=True) + t.str.count_matches("…", literal=True),
                   nw).alias(P + "ellipsis_word_ratio"),
            _ratio(lines.str.count_matches(BULLET_LINE_RE), n_lines).alias(P + "bullet_line_frac"),
            _ratio(lines.str.count_matches(ELLIPSIS_LINE_RE), n_lines).alias(P + "end_ellipsis_line_frac"),
            _ratio(pl.col("n_alpha"), nw).alias(P + "alpha_word_frac"),
            pl.col("n_stop").alias(P + "stop_word_count"),
        )
        assert out.height == n
        return {c: out[c].to_arrow().cast(dt) for c, dt in self.columns.items()}


def word_counts(texts: pa.ChunkedArray, stop_words=None) -> dict[str, np.ndarray]:
    """Per document: words, non-symbol words and their characters, words with a letter, stop words."""
    words = tokenize(texts)
    doc, rows = words.token_index()
    vocab = words.vocab.select(pl.col("tokens").explode().alias("w"))
    w = pl.col("w")
    stops = list(STOP_WORDS if stop_words is None else dict.fromkeys(stop_words))
    feats = vocab.select(
        real=w.str.contains(NOT_SYMBOL_RE).fill_null(False),
        chars=w.str.len_chars().fill_null(0),
        alpha=w.str.contains(r"\p{L}").fill_null(False),
        stop=w.replace_strict(stops, list(range(len(stops))), default=-1, return_dtype=pl.Int64),
    )
    real, chars = feats["real"].to_numpy()[rows], feats["chars"].to_numpy()[rows]
    alpha, stop = feats["alpha"].to_numpy()[rows], feats["stop"].to_numpy()[rows]
    n = words.n_docs

    def per_doc(weights=None) -> np.ndarray:
        return np.bincount(doc, weights, minlength=n).astype(np.int64)

    hit = stop >= 0
    pairs = np.unique(doc[hit].astype(np.int64) * len(stops) + stop[hit]) if len(stops) else np.zeros(0, np.int64)
    return {
        "n_words": per_doc(),
        "n_real": per_doc(real),
        "real_chars": per_doc(np.where(real, chars, 0)),
        "n_alpha": per_doc(alpha),
        "n_stop": np.bincount(pairs // max(len(stops), 1), minlength=n).astype(np.int64),
    }


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    """num / den as float64, null where den is 0."""
    den = den.cast(pl.Float64)
    return pl.when(den > 0).then(num.cast(pl.Float64) / den).otherwise(None)
