"""CCNet perplexity under a KenLM n-gram model (ARPA or KenLM binary).

Wenzek et al. 2019 (`cc_net/perplexity.py`, `DocLM`): each line of a document is normalised
(`text_normalizer.normalize`: strip, lower-case, strip accents, digits -> 0, unicode punctuation
mapped to ASCII, control characters removed), optionally cut into SentencePiece pieces, and scored
as a sentence (`<s> ... </s>`). The document's perplexity is

    ppl = 10 ** (-Σ_lines log10 P(line) / Σ_lines (tokens(line) + 1))

where the +1 counts `</s>`. Output: `kenlm_ppl` (float64; null for empty text) and `kenlm_tokens`
(the denominator). Normalisation and counting are polars expressions; only the KenLM and
SentencePiece calls loop in Python, as their APIs take one line at a time.
"""
from __future__ import annotations

import importlib.util
import math
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.stage import Resources, Scorer

# cc_net/text_normalizer.py UNICODE_PUNCT (punct=1: replace), including its "１" -> '"' quirk.
UNICODE_PUNCT = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"', "１": '"',
    "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":", "？": "?", "！": "!",
    "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ", "～": "~", "’": "'",
    "…": "...", "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]", "％": "%", "►": "-",
}
_CONTROL = r"[\x00-\x1f\x7f-\x9f]"


def normalize_expr(col: pl.Expr) -> pl.Expr:
    """CCNet's `normalize(line)` (accent, case, numbers, punct=1) as one polars expression."""
    return (col.str.strip_chars().str.to_lowercase().str.normalize("NFD")
            .str.replace_all(r"\p{Mn}", "")
            .str.replace_all(r"\d", "0")
            .str.replace_many(list(UNICODE_PUNCT), list(UNICODE_PUNCT.values()))
            .str.replace_all(_CONTROL, ""))


class KenLM(Scorer):
    """Document perplexity under a KenLM model, CCNet's formula: `kenlm_ppl`, `kenlm_tokens`.

    `model`: an ARPA or KenLM binary file (CCNet ships `{lang}.arpa.bin`). `sp_model`: the
    SentencePiece model the LM was trained on (CCNet's `{lang}.sp.model`); without one, lines are
    split on whitespace. `normalize`: apply CCNet's line normalisation first (default True).
    """

    name = "kenlm"
    requires = ("text",)
    columns = {"kenlm_ppl": pa.float64(), "kenlm_tokens": pa.int64()}
    resources = Resources(cpus=1, batch_size=1024)
    packages = ("kenlm",)

    def __init__(self, model: str = "", sp_model: str | None = None, normalize: bool = True,
                 newline: str = "\n"):
        self.model = model
        self.sp_model = sp_model
        self.normalize = normalize
        self.newline = newline

    def validate(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("model must name a KenLM .arpa or binary file")
        if not isinstance(self.newline, str) or not self.newline:
            raise ValueError("newline must be a non-empty string")
        if self.sp_model is not None:
            if not isinstance(self.sp_model, str):
                raise ValueError("sp_model must be a SentencePiece model path or null")
            if importlib.util.find_spec("sentencepiece") is None:
                raise ValueError("sp_model needs the sentencepiece package: pip install sentencepiece")

    def setup(self) -> None:
        import kenlm

        path = Path(self.model).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"kenlm: no model file at {path}")
        self.lm_ = kenlm.Model(str(path))
        self.sp_ = None
        if self.sp_model:
            import sentencepiece

            self.sp_ = sentencepiece.SentencePieceProcessor(model_file=str(Path(self.sp_model).expanduser()))

    def lines(self, batch: pa.Table) -> pl.DataFrame:
        """One row per (document, line) of the non-empty documents, normalised: `doc`, `line`."""
        df = pl.from_arrow(batch.select(["text"])).with_row_index("doc")
        df = df.filter(pl.col("text").str.len_bytes() > 0)
        line = pl.col("text").str.split(self.newline).alias("line")
        df = df.select("doc", line).explode("line")
        if self.normalize:
            df = df.with_columns(normalize_expr(pl.col("line")))
        return df

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        if not hasattr(self, "lm_"):
            self.setup()
        n = batch.num_rows
        log10p = np.zeros(n, dtype=np.float64)
        tokens = np.zeros(n, dtype=np.int64)
        df = self.lines(batch)
        if df.height:
            lines = df["line"].to_list()
            if self.sp_ is not None:
                lines = [" ".join(p) for p in self.sp_.encode(lines, out_type=str)]
            lm_score = self.lm_.score
            line_lp = np.fromiter((lm_score(s) for s in lines), dtype=np.float64, count=len(lines))
            line_tok = pl.Series(lines, dtype=pl.Utf8).str.count_matches(r"\S+").to_numpy() + 1
            doc = df["doc"].to_numpy()
            np.add.at(log10p, doc, line_lp)
            np.add.at(tokens, doc, line_tok)
        with np.errstate(divide="ignore", invalid="ignore"):
            ppl = np.power(10.0, -log10p / tokens)
        return {"kenlm_ppl": pa.array(ppl, pa.float64(), mask=tokens == 0),
                "kenlm_tokens": pa.array(tokens, pa.int64())}


def write_arpa(sentences: Iterable[str], path: str | Path, discount: float = 0.5) -> dict:
    """Write a bigram ARPA model estimated from whitespace-tokenised `sentences`.

    Absolute discounting with back-off to an add-one unigram; `<unk>` gets one pseudo-count. For
    tests and demos where KenLM's `lmplz` is not installed. Returns `{"uni": {w: (log10p,
    log10bo)}, "bi": {(v, w): log10p}}`, the numbers written.
    """
    uni_c: Counter = Counter()
    bi_c: Counter = Counter()
    for s in sentences:
        toks = ["<s>"] + s.split() + ["</s>"]
        uni_c.update(toks[1:])
        bi_c.update(zip(toks[:-1], toks[1:]))
    vocab = sorted(set(uni_c) | {"<unk>"})
    total = sum(uni_c.values()) + len(vocab)
    p_uni = {w: (uni_c[w] + 1) / total for w in vocab}
    ctx_total: Counter = Counter()
    ctx_types: Counter = Counter()
    for (v, _), c in bi_c.items():
        ctx_total[v] += c
        ctx_types[v] += 1
    p_bi = {(v, w): (c - discount) / ctx_total[v] for (v, w), c in bi_c.items()}
    seen: Counter = Counter()  # unigram mass of the words seen after each context
    for v, w in p_bi:
        seen[v] += p_uni[w]
    uni: dict[str, tuple[float, float]] = {}
    for w in ["<s>"] + vocab:
        lp = -99.0 if w == "<s>" else math.log10(p_uni[w])
        if ctx_total[w]:
            left = discount * ctx_types[w] / ctx_total[w]
            bo = math.log10(left / (1.0 - seen[w]))
        else:
            bo = 0.0
        uni[w] = (lp, bo)
    bi = {k: math.log10(p) for k, p in p_bi.items()}
    lines = ["", "\\data\\", f"ngram 1={len(uni)}", f"ngram 2={len(bi)}", "", "\\1-grams:"]
    lines += [f"{lp:.6f}\t{w}\t{bo:.6f}" for w, (lp, bo) in uni.items()]
    lines += ["", "\\2-grams:"]
    lines += [f"{lp:.6f}\t{v} {w}" for (v, w), lp in sorted(bi.items())]
    lines += ["", "\\end\\", ""]
    Path(path).write_text("\n".join(lines), encoding="utf-8")
    return {"uni": uni, "bi": bi}
