"""Cheap document statistics in the style of RedPajama-v2's quality signals (Weber et al. 2024).

Word statistics use RPv2's normalised words: NFD, lower-case, ASCII punctuation removed, split on
whitespace (`rps_doc_word_count`, `_mean_word_length`, `_frac_unique_words`, `_unigram_entropy`,
natural log). The non-alphabetic fraction uses RPv2's raw words (`\\w+|[^\\w\\s]+`, NLTK's
WordPunctTokenizer) without an ASCII letter. Line statistics are document-level fractions over
non-blank lines (RPv2 stores them per line). Ratios are null when their denominator is 0.
No rule is applied by default: these columns describe documents for your own rules and mixers.
"""
from __future__ import annotations

import string

import polars as pl
import pyarrow as pa

from tamis.pipeline.text.words import escape_class
from tamis.pipeline.stage import Resources, Scorer

P = "signals_"
_ASCII_PUNCT = f"[{escape_class(string.punctuation)}]"
RAW_WORD_RE = r"[\p{L}\p{N}_]+|[^\p{L}\p{N}_\s\x1c-\x1f]+"  # Python re's \w+|[^\w\s]+ (no marks in \w)
NONBLANK_LINE_RE = r"(?m)^[^\S\n]*\S"
UPPER_LINE_RE = r"(?m)^[^\p{Ll}\n]*\p{Lu}[^\p{Ll}\n]*$"
TERMINAL_LINE_RE = r"(?m)[.!?”][^\S\n]*$"


class Signals(Scorer):
    """Word count, mean word length, unique-word fraction, unigram entropy, non-alphabetic word
    fraction, upper-case line fraction, numeric character fraction, terminal-punctuation line fraction."""

    name = "signals"
    requires = ("text",)
    columns = {
        P + "word_count": pa.int64(),
        P + "mean_word_length": pa.float64(),
        P + "unique_word_frac": pa.float64(),
        P + "unigram_entropy": pa.float64(),
        P + "non_alpha_word_frac": pa.float64(),
        P + "upper_line_frac": pa.float64(),
        P + "numeric_char_frac": pa.float64(),
        P + "terminal_punct_line_frac": pa.float64(),
    }
    resources = Resources(cpus=1)
    default_keep: dict[str, str] = {}

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        n = batch.num_rows
        text = pl.from_arrow(batch.select(["text"])).with_row_index("doc")
        t = pl.col("text")
        words = text.select("doc", w=t.str.normalize("NFD").str.to_lowercase()
                            .str.replace_all(_ASCII_PUNCT, "").str.extract_all(r"\S+")).explode("w")
        words = words.filter(pl.col("w").is_not_null())
        # Unigram entropy from per-(doc, word) counts: H = ln N - sum(c ln c) / N.
        counts = words.group_by("doc", "w").agg(c=pl.len()).group_by("doc").agg(
            n_unique=pl.len(), c_ln_c=(pl.col("c") * pl.col("c").log()).sum())
        per_word = words.group_by("doc").agg(n_words=pl.len(), n_chars=pl.col("w").str.len_chars().sum())
        df = (text.join(per_word, on="doc", how="left", maintain_order="left")
              .join(counts, on="doc", how="left", maintain_order="left")
              .with_columns(pl.col("n_words", "n_chars", "n_unique").fill_null(0)))
        nw = pl.col("n_words").cast(pl.Float64)
        raw = t.str.extract_all(RAW_WORD_RE)
        n_raw = raw.list.len()
        n_raw_alpha = raw.list.eval(pl.element().str.contains("[a-zA-Z]")).list.sum()
        lines = t.str.count_matches(NONBLANK_LINE_RE)
        out = df.select(
            pl.col("n_words").cast(pl.Int64).alias(P + "word_count"),
            _ratio(pl.col("n_chars"), nw).alias(P + "mean_word_length"),
            _ratio(pl.col("n_unique"), nw).alias(P + "unique_word_frac"),
            pl.when(nw > 0).then(nw.log() - pl.col("c_ln_c") / nw).alias(P + "unigram_entropy"),
            _ratio(n_raw - n_raw_alpha, n_raw).alias(P + "non_alpha_word_frac"),
            _ratio(t.str.count_matches(UPPER_LINE_RE), lines).alias(P + "upper_line_frac"),
            _ratio(t.str.count_matches(r"\p{N}"), t.str.len_chars()).alias(P + "numeric_char_frac"),
            _ratio(t.str.count_matches(TERMINAL_LINE_RE), lines).alias(P + "terminal_punct_line_frac"),
        )
        assert out.height == n
        return {c: out[c].to_arrow().cast(dt) for c, dt in self.columns.items()}


def _ratio(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    den = den.cast(pl.Float64)
    return pl.when(den > 0).then(num.cast(pl.Float64) / den)

