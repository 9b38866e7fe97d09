"""Line-level cleaning: C4's line rules, RefinedWeb's line corrections and Unicode repair (ftfy).

C4 (Raffel et al. 2020, Section 2.2; TFDS `c4_utils.py`, DataTrove `C4QualityFilter` defaults):
a line is dropped when it has a word over 1000 characters, does not end in terminal punctuation
(. ? ! " ', and not "..."), has fewer than 3 words, mentions "javascript", or holds a cookie / terms-of-use
phrase; Wikipedia citation marks ([1], [edit], [citation needed]) are removed. C4 drops the whole page
for "lorem ipsum" or a curly bracket: here those are counter columns, and the default keep rules
(`keep: default`) drop such documents, so a job decides (code corpora keep braces by leaving them out).
RefinedWeb (Penedo et al. 2023, Appendix G.2, the FineWeb authors' line-wise corrections; off by
default): lines mostly upper case, only numbers, social counters ("3 likes"), or a single word.
`fix_unicode` runs ftfy with DataTrove's `FTFYFormatter` settings (encoding repair, no normalisation).

Differences from C4, on purpose: kept lines are not stripped (only the decision uses the stripped
line), and the document rules count over the whole text. Every rule is a parameter; the per-rule
counters (`line_filter_<rule>`, lines removed) go to the output and to keep rules.
"""
from __future__ import annotations

import ftfy
import polars as pl
import pyarrow as pa

from tamis.pipeline.stage import Editor

P = "line_filter_"
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                     "use cookies")
CITATION_RE = r"\[\d*\]|\[edit\]|\[citation needed\]"
COUNTER_RE = (r"(?i)^[\d][\d,.]*[kKmM]?\s*(?:likes?|shares?|comments?|views?|retweets?|followers?|replies|"
              r"reply|votes?|reviews?|points?)$")
# ASCII text without control characters, escapes or HTML entities is what ftfy leaves as is
NEEDS_FTFY_RE = r"[^\x09\x0a\x0d\x20-\x7e]|&#?[A-Za-z0-9]+;"
FTFY_CONFIG = ftfy.TextFixerConfig(  # DataTrove FTFYFormatter defaults
    unescape_html="auto", remove_terminal_escapes=True, fix_encoding=True, restore_byte_a0=True,
    replace_lossy_sequences=True, decode_inconsistent_utf8=True, fix_c1_controls=True,
    fix_latin_ligatures=False, fix_character_width=False, uncurl_quotes=False, fix_line_breaks=False,
    fix_surrogates=True, remove_control_chars=True, normalization=None)

# line rules in the order a line is attributed to them (the first that fires)
LINE_RULES = ("long_word", "no_terminal_punct", "few_words", "javascript", "policy",
              "uppercase", "numeric", "counter", "single_word")
DOC_RULES = ("lorem_ipsum", "curly_bracket")


class LineFilter(Editor):
    """Drops lines by C4 / RefinedWeb rules, removes citation marks, repairs Unicode; counts each rule."""

    name = "line_filter"
    columns = {P + "unicode_fixed": pa.int32(), P + "citations": pa.int32(),
               **{P + r: pa.int32() for r in LINE_RULES}, **{P + r: pa.int32() for r in DOC_RULES}}

    def __init__(self, fix_unicode: bool = True, citations: bool = True, max_word_length: int = 1000,
                 terminal_punct: bool = True, min_words: int = 3, javascript: bool = True, policy: bool = True,
                 uppercase: bool = False, numeric: bool = False, counter: bool = False, single_word: bool = False,
                 lorem_ipsum: bool = True, curly_bracket: bool = True, keep_original: bool = False):
        self.fix_unicode, self.citations, self.max_word_length = fix_unicode, citations, max_word_length
        self.terminal_punct, self.min_words, self.javascript, self.policy = terminal_punct, min_words, javascript, policy
        self.uppercase, self.numeric, self.counter, self.single_word = uppercase, numeric, counter, single_word
        self.lorem_ipsum, self.curly_bracket = lorem_ipsum, curly_bracket
        self.keep_original = keep_original

    def validate(self) -> None:
        for p in ("max_word_length", "min_words"):
            v = getattr(self, p)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"line_filter: {p} must be an integer >= 0 (0 turns the rule off), got {v!r}")
        for p in ("fix_unicode", "citations", "terminal_punct", "javascript", "policy", "uppercase", "numeric",
                  "counter", "single_word", "lorem_ipsum", "curly_bracket", "keep_original"):
            if not isinstance(getattr(self, p), bool):
                raise ValueError(f"line_filter: {p} must be true or false, got {getattr(self, p)!r}")

    def default_rules(self) -> dict[str, str]:
        """C4's page rules: no "lorem ipsum", no curly bracket (those switched on)."""
        return {P + r: f"{P}{r} == 0" for r in DOC_RULES if getattr(self, r)}

    def _line_flags(self) -> list[tuple[str, pl.Expr]]:
        s = pl.col("line").str.strip_chars()
        low = s.str.to_lowercase()
        words = s.str.count_matches(r"\S+")
        letters = s.str.count_matches(r"\p{L}")
        rules = {
            "long_word": self.max_word_length > 0
            and s.str.split(" ").list.eval(pl.element().str.len_chars()).list.max() > self.max_word_length,
            "no_terminal_punct": self.terminal_punct and (~s.str.contains(r"[.?!\"']$") | s.str.ends_with("...")),
            "few_words": self.min_words > 0 and words < self.min_words,
            "javascript": self.javascript and low.str.contains("javascript", literal=True),
            "policy": self.policy and pl.any_horizontal([low.str.contains(p, literal=True) for p in POLICY_SUBSTRINGS]),
            "uppercase": self.uppercase and (letters > 0) & (s.str.count_matches(r"\p{Lu}") > 0.5 * letters),
            "numeric": self.numeric and s.str.contains(r"^[\d\W_]+$") & s.str.contains(r"\d"),
            "counter": self.counter and s.str.contains(COUNTER_RE),
            "single_word": self.single_word and words == 1,
        }
        return [(r, e) for r, e in rules.items() if e is not False]

    def edit(self, batch: pa.Table) -> dict[str, pa.Array]:
        texts = pl.from_arrow(batch["text"]).alias("t").fill_null("")
        n = len(texts)
        fixed = [0] * n
        if self.fix_unicode:
            todo = texts.str.contains(NEEDS_FTFY_RE).arg_true().to_list()
            if todo:
                vals = texts.to_list()
                for i in todo:
                    new = ftfy.fix_text(vals[i], config=FTFY_CONFIG)
                    fixed[i] = int(new != vals[i])
                    vals[i] = new
                texts = pl.Series("t", vals, pl.String)
        df = pl.DataFrame({"t": texts})
        doc = df.select(
            (pl.col("t").str.count_matches(CITATION_RE) if self.citations else pl.lit(0)).alias("citations"),
            (pl.col("t").str.to_lowercase().str.count_matches("lorem ipsum", literal=True)
             if self.lorem_ipsum else pl.lit(0)).alias("lorem_ipsum"),
            (pl.col("t").str.count_matches("{", literal=True) if self.curly_bracket else pl.lit(0)).alias("curly_bracket"))
        if self.citations:
            df = df.with_columns(pl.col("t").str.replace_all(CITATION_RE, ""))
        flags = self._line_flags()
        out = {P + "unicode_fixed": pa.array(fixed, pa.int32())}
        if flags:
            code = pl.lit(0)
            for k, (_, e) in reversed(list(enumerate(flags, 1))):
                code = pl.when(e).then(k).otherwise(code)
            lines = (df.with_row_index("row").with_columns(pl.col("t").str.split("\n").alias("line"))
                     .explode("line").with_columns(code.fill_null(0).alias("code")))
            agg = lines.group_by("row", maintain_order=True).agg(
                pl.col("line").filter(pl.col("code") == 0).str.join("\n").alias("t"),
                *[(pl.col("code") == k).sum().alias(r) for k, (r, _) in enumerate(flags, 1)]).sort("row")
            df = agg.select("t")
            for r, _ in flags:
                out[P + r] = agg[r].to_arrow().cast(pa.int32())
        for r in LINE_RULES:
            out.setdefault(P + r, pa.array([0] * n, pa.int32()))
        for r in ("citations", *DOC_RULES):
            out[P + r] = doc[r].to_arrow().cast(pa.int32())
        return {"text": df["t"].to_arrow().cast(pa.large_string()), **out}
