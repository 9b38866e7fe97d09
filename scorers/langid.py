"""Language identification: `lang` (ISO 639-1 code) and `lang_score` (its probability).

Default model: the one bundled with `py3langid` (langid.py, Lui & Baldwin 2012; 97 languages, works
offline), with `norm_probs=True` so the score is a probability calibrated across text lengths.
Its byte-DFA walk runs here vectorised over the whole batch with numpy (same model, same numbers as
`LanguageIdentifier.classify`, about an order of magnitude faster than calling it per document).
With `model_path`, a fastText model (e.g. lid.176.bin, Joulin et al. 2016) is used instead.

Text is normalised before scoring: whitespace runs (newlines included) become one space and only the
first `max_chars` characters are read. Text with no recognisable feature (empty, only spaces) gets
`lang = "und"`, `lang_score = 0.0`. Default rules keep `languages` with score >= `threshold`
(CCNet's `lang_threshold = 0.5`); the reason of a rejected row names the detected language.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.stage import Resources, Scorer

FASTTEXT_HINT = ("the fastText backend needs the `fasttext` package: "
                 "pip install fasttext-numpy2-wheel  (or: pip install fasttext)")


def normalize_for_lid(texts: pa.Array | pa.ChunkedArray, max_chars: int) -> pl.Series:
    """Whitespace runs -> one space, trimmed, first `max_chars` characters.

    Cut to `4 * max_chars` first so a whole novel is never rewritten to read its first page.
    """
    return (pl.DataFrame({"t": texts}).select(
        pl.col("t").fill_null("").str.slice(0, 4 * max_chars).str.replace_all(r"\s+", " ")
        .str.strip_chars().str.slice(0, max_chars))["t"])


class LangId(Scorer):
    """Detected language and its probability for every document."""

    name = "langid"
    requires = ("text",)
    columns = {"lang": pa.string(), "lang_score": pa.float64()}
    resources = Resources(cpus=1)
    default_keep = {"lang_{lang}": "lang in ['en']", "lang_low_score": "lang_score >= 0.5"}

    def __init__(self, languages: list[str] | None = None, threshold: float = 0.5,
                 max_chars: int = 2000, model_path: str | None = None):
        self.languages = languages
        self.threshold = threshold
        self.max_chars = max_chars
        self.model_path = model_path

    def validate(self) -> None:
        langs = self.languages if self.languages is not None else ["en"]
        if not isinstance(langs, (list, tuple)) or not langs or not all(isinstance(x, str) for x in langs):
            raise ValueError(f"languages must be a non-empty list of language codes, got {self.languages!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if int(self.max_chars) < 1:
            raise ValueError(f"max_chars must be >= 1, got {self.max_chars!r}")
        if self.model_path is not None:
            from pathlib import Path
            if not Path(self.model_path).is_file():
                raise ValueError(f"model_path {self.model_path!r} is not a file")
            _import_fasttext()

    def default_rules(self) -> dict[str, str]:
        langs = [str(x) for x in (self.languages if self.languages is not None else ["en"])]
        return {"lang_{lang}": f"lang in {langs!r}",
                "lang_low_score": f"lang_score >= {float(self.threshold)!r}"}

    def setup(self) -> None:
        if self.model_path is not None:
            self.model_ = _import_fasttext().load_model(str(self.model_path))
        else:
            self.model_ = _DfaLangId.load()

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        if not hasattr(self, "model_"):
            self.setup()
        texts = normalize_for_lid(batch["text"], int(self.max_chars))
        if batch.num_rows == 0:
            lang, prob = [], np.zeros(0)
        elif self.model_path is not None:
            lang, prob = _fasttext_predict(self.model_, texts)
        else:
            lang, prob = self.model_.classify(texts)
        return {"lang": pa.array(lang, pa.string()), "lang_score": pa.array(prob, pa.float64())}


def _import_fasttext():
    try:
        import fasttext
    except ImportError as e:
        raise ImportError(FASTTEXT_HINT) from e
    return fasttext


def _fasttext_predict(model, texts: pl.Series) -> tuple[list[str], np.ndarray]:
    """One call into fastText's C++ loop for the whole batch; labels lose `__label__`."""
    items = texts.to_list()
    labels, probs = model.predict(items, k=1)
    lang = [lab[0].removeprefix("__label__") if lab else "und" for lab in labels]
    prob = np.array([p[0] if len(p) else 0.0 for p in probs], dtype=np.float64)
    empty = texts.str.len_bytes().to_numpy() == 0
    lang = ["und" if e else x for x, e in zip(lang, empty)]
    prob[empty] = 0.0
    return lang, np.clip(prob, 0.0, 1.0)


class _DfaLangId:
    """py3langid's naive Bayes model, scored for many texts at once.

    The per-byte DFA walk of `py3langid.langid.visit_counts` runs as one numpy step per byte
    position over all texts still that long; feature counts become a sparse matrix multiplied by
    the model's feature-class table (only the rows the batch uses).
    """

    def __init__(self, ident):
        self.ptc = np.asarray(ident.nb_ptc)  # features x classes log-probabilities (float16)
        self.pc = np.asarray(ident.nb_pc, dtype=np.float32)
        # One table entry per (state, byte): the next state's row offset (high 32 bits) and the
        # feature it emits + 1 (low 32 bits; 0 = none), so each step is a single gather.
        nextmove = np.asarray(ident.tk_nextmove, dtype=np.int64)
        output = np.asarray(ident.tk_output, dtype=np.int64)
        rows = getattr(ident, "tk_row", None)  # py3langid >= 0.4 compresses the DFA rows
        rowbase = (np.asarray(rows, dtype=np.int64) if rows is not None else np.arange(len(output))) << 8
        self.start = int(rowbase[0])
        self.step = (rowbase[nextmove] << 32) | (output[nextmove] + 1)
        self.classes = np.asarray(ident.nb_classes, dtype=object)
        self.alias = list(getattr(ident, "_alias_pairs", []))

    @classmethod
    def load(cls) -> "_DfaLangId":
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
        return cls(LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True))

    @staticmethod
    def encode(texts: pl.Series) -> pa.Array:
        """py3langid's `_encode`: all-caps text lower-cased, then NFC, as UTF-8."""
        t = pl.col("t")
        upper = (t == t.str.to_uppercase()) & (t != t.str.to_lowercase())
        out = pl.DataFrame({"t": texts}).select(
            pl.when(upper).then(t.str.to_lowercase()).otherwise(t).str.normalize("NFC"))["t"]
        return out.to_arrow().cast(pa.large_string())

    def feature_counts(self, enc: pa.Array):
        """CSR matrix (texts x distinct features) of feature counts, and the feature ids."""
        from scipy import sparse
        enc = enc.combine_chunks() if isinstance(enc, pa.ChunkedArray) else enc
        n = len(enc)
        offsets = np.frombuffer(enc.buffers()[1], dtype=np.int64)[enc.offset:enc.offset + n + 1]
        data = np.frombuffer(enc.buffers()[2], dtype=np.uint8) if enc.buffers()[2] else np.zeros(0, np.uint8)
        lens = np.diff(offsets)
        order = np.argsort(-lens, kind="stable")
        lens_sorted = lens[order]
        width = int(lens_sorted[0]) if n else 0
        # Byte matrix laid out position-major: row t holds byte t of every text (longest first).
        mat = np.zeros((width, n), dtype=np.uint8)
        doc = np.repeat(np.arange(n), lens_sorted)
        starts = offsets[:-1][order]
        pos = np.arange(len(doc)) - np.repeat(np.cumsum(lens_sorted) - lens_sorted, lens_sorted)
        mat[pos, doc] = data[np.repeat(starts, lens_sorted) + pos]
        active = n - np.searchsorted(lens_sorted[::-1], np.arange(width), side="right")  # len > t
        row = np.full(n, self.start, dtype=np.int64)
        docs, feats = [], []
        for t in range(width):
            k = active[t]
            e = self.step[row[:k] + mat[t, :k]]
            row[:k] = e >> 32
            hit = np.flatnonzero(e & 0xFFFFFFFF)
            if hit.size:
                docs.append(hit)
                feats.append((e[hit] & 0xFFFFFFFF) - 1)
        docs = np.concatenate(docs) if docs else np.zeros(0, np.int64)
        feats = np.concatenate(feats) if feats else np.zeros(0, np.int64)
        used = np.bincount(feats, minlength=self.ptc.shape[0]) > 0  # no sort: features are dense ids
        uniq = np.flatnonzero(used)
        col = (np.cumsum(used) - 1)[feats]
        counts = sparse.csr_matrix((np.ones(len(docs), np.float32), (order[docs], col)),
                                   shape=(n, len(uniq)))
        counts.sum_duplicates()
        return counts, uniq, lens

    def classify(self, texts: pl.Series) -> tuple[list[str], np.ndarray]:
        """Best language and its probability per text ("und", 0.0 when no feature fires)."""
        enc = self.encode(texts)
        counts, feats, nbytes = self.feature_counts(enc)
        counts.data = np.log1p(counts.data)
        table = self.ptc[feats].astype(np.float32)
        scores = np.asarray(counts @ table, dtype=np.float32) + self.pc
        # py3langid's calibration: temperature sqrt(bytes), softmax, aliases folded.
        scores *= (1.0 / np.sqrt(np.maximum(nbytes, 1)))[:, None].astype(np.float32)
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        for i, j in self.alias:
            scores[:, i] += scores[:, j]
            scores[:, j] = 0.0
        best = scores.argmax(axis=1)
        prob = scores[np.arange(len(best)), best].astype(np.float64)
        lang = self.classes[best]
        none = np.diff(counts.indptr) == 0
        lang[none] = "und"
        prob[none] = 0.0
        return lang.tolist(), prob
