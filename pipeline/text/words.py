"""Vectorised English word splitting that reproduces DataTrove's `split_into_words(text, "en")`.

DataTrove splits English with the rule-based tokenizer of `spacy.blank("en")` and strips the tokens.
That tokenizer works on whitespace-free chunks: it peels prefixes and suffixes (punctuation, quotes,
`'s`, units after digits, a final `.` after a lower-case letter), keeps URLs whole, splits the rest on
infixes (`a-b`, `a/b`, `lower.Upper`, `...`) and applies ~1,300 special cases (`don't` -> `do n't`,
`U.S.` whole). Here the same rules run as polars regex passes over the unique chunks of a batch
(Rust regexes have no look-around, so each look-behind is matched as a captured context character).
Where the emulation differs from spaCy is listed in docs/quality_signals.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.text.spacy_en_specials import AFFIX_FORMS, CURRENCY, ICONS, SPECIALS, UNITS


def escape_class(chars: str) -> str:
    """Escape characters for a regex class, valid for both Rust `regex` and Python `re`."""
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$#&-~" else c for c in chars)


def _alt(items) -> str:
    return "|".join(escape_class(s) for s in items)


# Python's str.isspace(): Unicode White_Space plus the separators \x1c-\x1f.
PY_SPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) \
    + "\u2028\u2029\u202f\u205f\u3000"
CHUNK_RE = r"[^\s\x1c-\x1f]+"

# datatrove.utils.text.PUNCTUATION: a word made only of these is a "symbol word".
DT_PUNCTUATION = (
    "!/\u2014\u201d:\uff05\uff11\u3008&(\u3001\u2501\\\u3010#%\u300c\u300d\uff0c\u3011\uff1b+^]~\u201c"
    "\u300a\u201e';\u2019{|\u2236\xb4[=-`*\uff0e\uff08\u2013\uff1f\uff01\uff1a$\uff5e\xab\u3009,><\u300b)?"
    "\uff09\u3002\u2026@_.\"}\u25ba\xbb"
    + "".join(map(chr, [*range(0, 9), 11, 12, *range(13, 32), *range(127, 160)]))
)
NOT_SYMBOL_RE = f"[^{escape_class(DT_PUNCTUATION)}]"

_PUNCT = "…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = "'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_CUR1 = "".join(c for c in CURRENCY if len(c) == 1)
# spaCy counts the CJK symbol blocks (e.g. "。") as uncased letters.
_CJK = r"\x{2E80}-\x{2FFF}\x{3000}-\x{303F}\x{31C0}-\x{33FF}\x{FE30}-\x{FE4F}\x{1F200}-\x{1F2FF}"
_ALPHA = r"\p{L}" + _CJK
_LOWER, _UPPER = r"\p{Ll}\p{Lo}" + _CJK, r"\p{Lu}\p{Lo}" + _CJK

# spaCy's prefix list, first match wins; `\+(?![0-9])` becomes group 2 plus a consumed context.
PREFIX_RE = (rf"^(?:([§%=—–{escape_class(_PUNCT + _QUOTES + _CUR1)}{ICONS}]|\.\.+|US\$|C\$|A\$)"
             rf"|(\+)(?:[^0-9]|$))")
# spaCy's suffix list, leftmost match wins; each look-behind becomes a consumed context character
# in front of its group (those alternatives come last, so ties keep spaCy's order).
SUFFIX_RE = (
    rf"(?:([{escape_class(_PUNCT + _QUOTES + '—–')}{ICONS}]|……|\.\.+|'s|'S|’s|’S)$"
    rf"|[0-9](\+|{_alt(CURRENCY)}|{_alt(UNITS)})$"
    rf"|°[FfCcKk](\.)$"
    rf"|[0-9{_LOWER}%²\-\+{escape_class(_PUNCT + '|' + _QUOTES)}](\.)$"
    rf"|[{_UPPER}][{_UPPER}](\.)$)"
)
_N_SUFFIX_GROUPS = 5
# spaCy's infixes as one alternation (context, infix, context); every match is wrapped in spaces.
_INFIX_PARTS = [
    ("", r"\.\.+|…|[" + ICONS + "]", ""),
    ("[0-9]", r"[+\-*^]", r"[0-9\-]"),
    (f"[{_LOWER}{escape_class(_QUOTES)}]", r"\.", f"[{_UPPER}{escape_class(_QUOTES)}]"),
    (f"[{_ALPHA}]", ",", f"[{_ALPHA}]"),
    (f"[{_ALPHA}0-9]", "-|–|—|--|---|——|~", f"[{_ALPHA}]"),
    (f"[{_ALPHA}0-9]", "[:<>=/]", f"[{_ALPHA}]"),
]
INFIX_RE = "|".join(f"({a})({b})({c})" for a, b, c in _INFIX_PARTS)
INFIX_REPL = " ".join("".join(f"${{{3 * i + j + 1}}}" for i in range(len(_INFIX_PARTS))) for j in range(3))
# spaCy's URL_MATCH without its private-IP look-aheads (IPs are never infix-split anyway) and with
# unbounded label lengths ({0,62} makes the Rust automaton ~25x slower).
_H = r"[A-Za-z0-9\x{a1}-\x{ffff}]"
URL_RE = (
    r"^(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?"
    r"(?:(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}"
    r"(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))"
    rf"|(?:(?:{_H}[A-Za-z0-9\x{{a1}}-\x{{ffff}}_-]*)?{_H}\.)+[{_LOWER}]{{2,}})"
    r"(?::\d{2,5})?(?:[/?#]\S*)?$"
)
# Chunks the affix loop would split in an obvious way: letters only, or letters and digits ending in
# a digit (one token); a word ending in "." after a lower-case letter or two capitals; a word wrapped
# in single-character prefixes and suffixes.
SIMPLE_RE = r"^(?:\p{L}+|[\p{L}\p{N}]*[0-9])$"
WORD_DOT_RE = rf"^\p{{L}}*(?:[{_LOWER}]|[{_UPPER}][{_UPPER}])\.$"
WRAPPED_RE = (rf"^(?P<pre>[§%=—–{escape_class(_PUNCT + _QUOTES + _CUR1)}{ICONS}]*)(?P<core>\p{{L}}+)"
              rf"(?P<suf>[{escape_class(_PUNCT.replace('…', '') + _QUOTES + '—–')}{ICONS}]*)$")
_CHUNK_SEED = 0x5EED
MAX_AFFIX_ROUNDS = 8  # spaCy peels one prefix and one suffix per round; longer runs go in bulk

_SPECIALS = pl.DataFrame(
    {"chunk": list(SPECIALS), "tokens": [list(v) for v in SPECIALS.values()]},
    schema={"chunk": pl.String, "tokens": pl.List(pl.String)},
)
_KEYS = pl.Series("keys", list(SPECIALS), pl.String).implode()  # for is_in()
_MERGE = sorted(((" " + " ".join(k) + " ", " " + " ".join(v) + " ") for k, v in AFFIX_FORMS.items()),
                key=lambda kv: -len(kv[0]))


def _first_group(s: pl.Expr, pattern: str, n_groups: int) -> pl.Expr:
    """The text of whichever capture group of `pattern` matched (one regex pass)."""
    m = s.str.extract_groups(pattern)
    return pl.coalesce([m.struct.field(str(g)) for g in range(1, n_groups + 1)])


def _round_plan() -> tuple[list[dict], dict]:
    """The expressions of one peeling round (built once: building polars expressions costs time)."""
    s, pre_len, suf_len, n = pl.col("s"), pl.col("pre_len"), pl.col("suf_len"), pl.col("n")
    rest, minus_suf = pl.col("rest"), pl.col("minus_suf")
    has_pre, has_suf = pre_len > 0, suf_len > 0
    stop_pre = has_pre & (rest != "") & rest.is_in(_KEYS)
    stop_suf = has_suf & (minus_suf != "") & minus_suf.is_in(_KEYS)
    both = has_pre & has_suf & (pre_len + suf_len <= n)
    st = pl.col("state")
    stages = [
        {"pre": _first_group(s, PREFIX_RE, 2), "n": s.str.len_chars()},
        {"pre_len": pl.col("pre").str.len_chars().fill_null(0)},
        {"rest": s.str.slice(pre_len)},
        {"suf": _first_group(rest, SUFFIX_RE, _N_SUFFIX_GROUPS)},
        {"suf_len": pl.col("suf").str.len_chars().fill_null(0)},
        {"minus_suf": s.str.slice(0, n - suf_len)},
        # 0 done (special, or nothing to peel), 1/2 peel once then stop at a special, 3 both, 4 prefix, 5 suffix
        {"state": pl.when(s.is_in(_KEYS)).then(0).when(stop_pre).then(1).when(stop_suf).then(2)
         .when(both).then(3).when(has_pre).then(4).when(has_suf).then(5).otherwise(0)},
        {"s": pl.when(st.is_in([1, 4])).then(rest).when(st.is_in([2, 5])).then(minus_suf)
         .when(st == 3).then(s.str.slice(pre_len, n - pre_len - suf_len)).otherwise(s)},
    ]
    finished = st.is_in([0, 1, 2]) | (s == "")
    out = {
        "pre": (st.is_in([1, 3, 4]), {"part": pl.lit(0, pl.Int8), "k": pl.col("rnd"), "tok": pl.col("pre")}),
        "suf": (st.is_in([2, 3, 5]), {"part": pl.lit(2, pl.Int8), "k": -pl.col("rnd"), "tok": pl.col("suf")}),
        "finished": finished,
    }
    return stages, out


_ROUND_STAGES, _ROUND_OUT = _round_plan()


def _peel_affixes(work: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """spaCy's `_split_affixes` on rows (cid, s): returns (cid, core) and the peeled tokens.

    Token rows carry (cid, part, k): part 0 = prefixes in peel order, part 2 = suffixes in reverse
    peel order, so sorting by (cid, part, k) gives the text order once the core (part 1) is added.
    """
    cores, pieces = [], []
    work = work.with_columns(rnd=pl.lit(0, pl.Int32))
    finished = _ROUND_OUT["finished"]
    for _ in range(MAX_AFFIX_ROUNDS):
        if work.height == 0:
            break
        lf = work.lazy()
        for stage in _ROUND_STAGES:
            lf = lf.with_columns(**stage)
        w = lf.collect()
        for kind in ("pre", "suf"):
            cond, cols = _ROUND_OUT[kind]
            pieces.append(w.lazy().filter(cond).select("cid", **cols))
        cores.append(w.lazy().filter(finished).select("cid", core="s"))
        work = w.filter(~finished).select("cid", "s", rnd=pl.col("rnd") + 1)
    if work.height:  # long runs of punctuation (`=====`): peel the rest in one go
        cores_bulk, bulk = _peel_bulk(work.drop("rnd"))
        cores.append(cores_bulk.lazy())
        pieces.extend(p.lazy() for p in bulk)
    cols = ["cid", "part", "k", "tok"]
    return pl.concat(cores).collect(), [pl.concat([p.select(cols) for p in pieces]).collect()] if pieces else []


def _peel_bulk(work: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    one_pre = rf"[§%=—–+{escape_class(_PUNCT + _QUOTES + _CUR1)}{ICONS}]|\.\.+"
    one_suf = rf"\.\.+|……|[{escape_class(_PUNCT + _QUOTES + '—–.')}{ICONS}]|'s|’s"
    w = work.with_columns(pre=pl.col("s").str.extract(rf"^((?:{one_pre})*)", 1))
    w = w.with_columns(rest=pl.col("s").str.slice(pl.col("pre").str.len_chars()))
    w = w.with_columns(suf=pl.col("rest").str.extract(rf"((?:{one_suf})*)$", 1))
    w = w.with_columns(core=pl.col("rest").str.slice(0, pl.col("rest").str.len_chars()
                                                    - pl.col("suf").str.len_chars()))
    pre = (w.select("cid", tok=pl.col("pre").str.extract_all(one_pre)).explode("tok").drop_nulls()
           .with_columns(part=pl.lit(0, pl.Int8), k=pl.int_range(pl.len(), dtype=pl.Int32).over("cid") + 10_000))
    suf = (w.select("cid", tok=pl.col("suf").str.extract_all(one_suf)).explode("tok").drop_nulls()
           .with_columns(part=pl.lit(2, pl.Int8), k=pl.int_range(pl.len(), dtype=pl.Int32).over("cid") - 10_000))
    cols = ["cid", "part", "k", "tok"]
    return w.select("cid", "core"), [pre.select(cols), suf.select(cols)]


def _split_core(cores: pl.DataFrame) -> pl.DataFrame:
    """spaCy's `_attach_tokens` for the core left after peeling: special, URL, or infix split."""
    core = pl.col("core")
    cores = cores.filter(core != "").join(_SPECIALS.rename({"chunk": "core"}), on="core", how="left")
    url = pl.when(core.str.contains(".", literal=True)).then(core).str.contains(URL_RE).fill_null(False)
    split = (pl.when(pl.col("tokens").is_not_null()).then(pl.col("tokens"))
             .when(url).then(pl.concat_list(core))
             .otherwise(core.str.replace_all(INFIX_RE, INFIX_REPL).str.replace_all(INFIX_RE, INFIX_REPL)
                        .str.split(" ")))
    return (cores.select("cid", tok=split).explode("tok").filter(pl.col("tok") != "")
            .with_row_index("k").select("cid", part=pl.lit(1, pl.Int8), k=pl.col("k").cast(pl.Int32), tok="tok"))


def _tokenize_chunks(chunks: pl.Series) -> pl.Series:
    """Tokens (list[str]) of each whitespace-free chunk, aligned with `chunks`."""
    c, tokens = pl.col("chunk"), pl.col("tokens")
    df = pl.DataFrame({"chunk": chunks}).with_row_index("cid").join(
        _SPECIALS, on="chunk", how="left", maintain_order="left")
    done = df.filter(tokens.is_not_null() | c.str.contains(SIMPLE_RE)).select(
        "cid", tokens=pl.coalesce(tokens, pl.concat_list(c)))
    rest = df.filter(tokens.is_null() & ~c.str.contains(SIMPLE_RE)).select("cid", "chunk")
    # A word with a final "." or wrapped in one-character affixes; its core may be special (`(cannot)`).
    dot = c.str.contains(WORD_DOT_RE)
    rest = rest.with_columns(g=c.str.extract_groups(WRAPPED_RE)).unnest("g").with_columns(
        pre=pl.when(dot).then(pl.lit("")).otherwise("pre"),
        core=pl.when(dot).then(c.str.head(-1)).otherwise("core"),
        suf=pl.when(dot).then(pl.lit(".")).otherwise("suf"),
    )
    easy = rest.filter(pl.col("core").is_not_null()).join(
        _SPECIALS.rename({"chunk": "core", "tokens": "core_tokens"}), on="core", how="left")
    parts = [easy.select("cid", tokens=pl.concat_list(
        pl.col("pre").str.split(""), pl.coalesce("core_tokens", pl.concat_list("core")), pl.col("suf").str.split("")))]
    hard = rest.filter(pl.col("core").is_null()).select("cid", s="chunk")
    if hard.height:
        cores, pieces = _peel_affixes(hard)
        cols = ["cid", "part", "k", "tok"]
        toks = pl.concat([_split_core(cores).select(cols), *[p.select(cols) for p in pieces]])
        toks = toks.sort("cid", "part", "k").group_by("cid").agg(tokens="tok")
        parts.append(hard.select("cid").join(toks, on="cid", how="left").with_columns(
            tokens.fill_null(pl.lit([], dtype=pl.List(pl.String)))))
    # spaCy re-merges token runs that spell a special case containing punctuation (`):`, `(U.S.)`).
    split = pl.concat(parts)
    multi = split.filter(tokens.list.len() > 1)
    merged = pl.lit(" ") + tokens.list.join(" ") + pl.lit(" ")
    for _ in range(2):  # a second pass catches merges that shared a separator with the first
        merged = merged.str.replace_many([a for a, _ in _MERGE], [b for _, b in _MERGE])
    multi = multi.select("cid", tokens=merged.str.strip_chars(" ").str.split(" "))
    return pl.concat([done, split.filter(tokens.list.len() <= 1), multi]).sort("cid")["tokens"]


@dataclass
class Words:
    """The words of a batch, stored once per distinct chunk (CSR) and indexed per occurrence.

    `chunk_doc[i]` is the document of the i-th chunk occurrence (in text order) and `chunk_id[i]`
    its row in `vocab`, a DataFrame of the distinct chunks with their `tokens`.
    """

    n_docs: int
    chunk_doc: np.ndarray
    chunk_id: np.ndarray
    vocab: pl.DataFrame

    def token_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(doc, row into the exploded vocab tokens) for every word of the batch, in text order."""
        lens = self.vocab["tokens"].list.len().to_numpy().astype(np.int64)
        offs = np.concatenate([[0], np.cumsum(lens)])
        n = lens[self.chunk_id]
        starts = np.repeat(offs[self.chunk_id] - np.cumsum(n) + n, n)
        return np.repeat(self.chunk_doc, n), starts + np.arange(n.sum(), dtype=np.int64)

    def frame(self) -> pl.DataFrame:
        """DataFrame(doc: u32, word: str), one row per word in text order."""
        doc, rows = self.token_index()
        words = self.vocab["tokens"].explode()
        return pl.DataFrame({"doc": doc.astype(np.uint32), "word": words.gather(rows)})


def tokenize(texts: pa.Array | pa.ChunkedArray | pl.Series) -> Words:
    """Split every text into DataTrove's English words (see the module docstring)."""
    s = texts if isinstance(texts, pl.Series) else pl.Series("text", texts)
    chunks = pl.DataFrame({"text": s}).select(
        doc=pl.int_range(pl.len(), dtype=pl.UInt32),
        chunk=pl.col("text").fill_null("").str.extract_all(CHUNK_RE),
    ).explode("chunk").drop_nulls("chunk")
    if chunks.height == 0:
        return Words(len(s), np.zeros(0, np.uint32), np.zeros(0, np.int64),
                     pl.DataFrame(schema={"chunk": pl.String, "tokens": pl.List(pl.String)}))
    # Tokenize each distinct chunk once (distinct by 64-bit hash), then index every occurrence.
    keys = chunks.select(k=pl.col("chunk").hash(_CHUNK_SEED))
    first = keys["k"].is_first_distinct()
    ids = keys.filter(first).with_row_index("id")
    inv = keys.join(ids, on="k", how="left", maintain_order="left")["id"].to_numpy().astype(np.int64)
    distinct = chunks["chunk"].filter(first)
    vocab = pl.DataFrame({"chunk": distinct, "tokens": _tokenize_chunks(distinct)})
    return Words(len(s), chunks["doc"].to_numpy(), inv, vocab)


def split_words(texts: pa.Array | pa.ChunkedArray | pl.Series) -> pl.DataFrame:
    """All words of all texts in order: DataFrame(doc: u32 row index, word: str)."""
    return tokenize(texts).frame()
