"""Gopher repetition signals (Rae et al. 2021, Table A1; DataTrove `GopherRepetitionFilter`).

Paragraphs are the stripped text split on `\\n{2,}`, lines the text split on `\\n+`; a duplicate is
every occurrence after the first. Character fractions divide by the characters of the whole text.
Top n-gram: characters of the most frequent word n-gram (joined by spaces) times its count.
Duplicate n-grams: characters of n-grams seen before, in DataTrove's greedy left-to-right scan.
Words are DataTrove's English words (`tamis.pipeline.text.words`). All columns are null for an empty text.
"""
from __future__ import annotations

import polars as pl
import pyarrow as pa

from tamis.scorers.gopher.ngram_repetition import ngram_repetition
from tamis.pipeline.text.words import PY_SPACE, tokenize
from tamis.pipeline.stage import Resources, Scorer

P = "gopher_repetition_"
TOP_NGRAMS = {2: 0.20, 3: 0.18, 4: 0.16}
DUP_NGRAMS = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
PARAGRAPH_RE = r"[^\n]+(?:\n[^\n]+)*"  # the pieces of re.split(r"\n{2,}", text.strip())
_HASH_SEED = 0x7A315


def _default_keep() -> dict[str, str]:
    rules = {
        P + "empty": f"{P}dup_line_frac is not None",
        P + "dup_para_frac": f"{P}dup_para_frac <= 0.3",
        P + "dup_para_char_frac": f"{P}dup_para_char_frac <= 0.2",
        P + "dup_line_frac": f"{P}dup_line_frac <= 0.3",
        P + "dup_line_char_frac": f"{P}dup_line_char_frac <= 0.2",
    }
    rules |= {f"{P}top_{n}_gram": f"{P}top_{n}gram_char_frac <= {t}" for n, t in TOP_NGRAMS.items()}
    rules |= {f"{P}duplicated_{n}_n_grams": f"{P}dup_{n}gram_char_frac <= {t}" for n, t in DUP_NGRAMS.items()}
    return rules


class GopherRepetition(Scorer):
    """Duplicate paragraph / line fractions, top 2-4-gram and duplicated 5-10-gram character fractions."""

    name = "gopher_repetition"
    requires = ("text",)
    columns = {
        P + "dup_para_frac": pa.float64(),
        P + "dup_para_char_frac": pa.float64(),
        P + "dup_line_frac": pa.float64(),
        P + "dup_line_char_frac": pa.float64(),
        **{f"{P}top_{n}gram_char_frac": pa.float64() for n in TOP_NGRAMS},
        **{f"{P}dup_{n}gram_char_frac": pa.float64() for n in DUP_NGRAMS},
    }
    resources = Resources(cpus=1)
    default_keep = _default_keep()

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        n = batch.num_rows
        text = pl.from_arrow(batch.select(["text"])).with_row_index("doc")
        paras = _duplicates(text.select("doc", part=pl.col("text").str.strip_chars(PY_SPACE)
                                        .str.extract_all(PARAGRAPH_RE)), "para")
        lines = _duplicates(text.select("doc", part=pl.col("text").str.replace_all(r"\n+", "\n")
                                        .str.split("\n")), "line")
        words = tokenize(batch.column("text"))
        doc, rows = words.token_index()
        vocab = words.vocab.select(w=pl.col("tokens").explode()).select(
            h=pl.col("w").hash(_HASH_SEED), length=pl.col("w").str.len_chars().cast(pl.Int64))
        grams = ngram_repetition(doc, vocab["h"].to_numpy()[rows], vocab["length"].to_numpy()[rows],
                                 n, tuple(TOP_NGRAMS), tuple(DUP_NGRAMS))
        df = (text.join(paras, on="doc", how="left", maintain_order="left")
              .join(lines, on="doc", how="left", maintain_order="left")
              .with_columns(chars=pl.col("text").str.len_chars().cast(pl.Float64))
              .with_columns(pl.Series(f"g_{kind}_{k}", v) for (kind, k), v in grams.items()))
        chars = pl.col("chars")
        nonempty = chars > 0

        def frac(num: pl.Expr, den: pl.Expr) -> pl.Expr:
            return pl.when(nonempty).then(num.fill_null(0).cast(pl.Float64)
                                          / den.fill_null(0).cast(pl.Float64).clip(1.0, None))

        out = df.select(
            frac(pl.col("dup_para"), pl.col("n_para")).alias(P + "dup_para_frac"),
            frac(pl.col("dup_para_chars"), chars).alias(P + "dup_para_char_frac"),
            frac(pl.col("dup_line"), pl.col("n_line")).alias(P + "dup_line_frac"),
            frac(pl.col("dup_line_chars"), chars).alias(P + "dup_line_char_frac"),
            *[frac(pl.col(f"g_top_{k}"), chars).alias(f"{P}top_{k}gram_char_frac") for k in TOP_NGRAMS],
            *[frac(pl.col(f"g_dup_{k}"), chars).alias(f"{P}dup_{k}gram_char_frac") for k in DUP_NGRAMS],
        )
        assert out.height == n
        return {c: out[c].to_arrow().cast(dt) for c, dt in self.columns.items()}


def _duplicates(parts: pl.DataFrame, what: str) -> pl.DataFrame:
    """Per doc: number of parts, of repeated parts (after the first), and their characters."""
    parts = parts.explode("part").drop_nulls("part").with_columns(
        dup=~pl.struct("doc", "part").is_first_distinct())
    parts = parts.with_columns(dup_chars=pl.col("part").str.len_chars() * pl.col("dup"))
    return parts.group_by("doc").agg(
        pl.len().alias(f"n_{what}"),
        pl.col("dup").sum().alias(f"dup_{what}"),
        pl.col("dup_chars").sum().alias(f"dup_{what}_chars"),
    )
