"""Train a fastText quality classifier the DCLM way (`tamis train-classifier`).

DCLM (Li et al. 2024, `mlfoundations/dclm`) keeps the documents a bigram fastText model rates as
"high quality": positives (`__label__hq`, OpenHermes 2.5 + ELI5 in the paper) against negatives
(`__label__cc`, RefinedWeb), one document per line (newlines to spaces), `wordNgrams=2`.
tamis samples as many negatives as positives (seeded), holds out `test_fraction` of both, trains on
the rest and measures the held-out ROC AUC of P(hq); the saved model is the measured one.

A saved classifier is a folder: `model.bin` (fastText) and `classifier.json` (format, labels,
recipe, counts, metrics). The `classifier` stage loads the folder or any fastText `.bin` file.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from tamis.pipeline.readers import read_documents
from tamis.scorers.perplexity.train_lm import check_output, read_texts

FORMAT = "tamis-classifier"
INFO_FILE = "classifier.json"
MODEL_FILE = "model.bin"
POSITIVE, NEGATIVE = "__label__hq", "__label__cc"
# DCLM's recipe (bigram fastText); `epoch`/`lr` are fastText's supervised defaults for this size.
RECIPE = {"wordNgrams": 2, "dim": 256, "epoch": 3, "lr": 0.1, "minCount": 1, "loss": "softmax"}
FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin (FASTTEXT_FILEFORMAT_MAGIC_INT32)
# Options `train_from_files` takes besides the output: the keys a job's `train_if_missing` may set.
TRAIN_OPTIONS = ("positive", "negative", "positive_domains", "negative_domains", "text_column",
                 "labels_from", "label_column", "threshold",
                 "max_docs", "test_fraction", "max_chars", "seed", "epoch", "lr", "dim", "wordNgrams")


def one_line(texts: Sequence[str] | pl.Series, max_chars: int | None = None) -> list[str]:
    """Each text on one line (newlines to spaces, as DCLM and DataTrove feed fastText, which splits
    words on any ASCII whitespace and reads a newline as end of line), cut to `max_chars`."""
    s = texts if isinstance(texts, pl.Series) else pl.Series("t", list(texts), dtype=pl.Utf8)
    s = s.fill_null("").str.replace_all("\n", " ", literal=True)
    return (s.str.slice(0, max_chars) if max_chars else s).to_list()


def is_fasttext_file(path: str | os.PathLike) -> bool:
    """True if `path` is a file starting with fastText's magic number."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and int.from_bytes(head, "little", signed=True) == FASTTEXT_MAGIC


def fasttext_path(path: str | os.PathLike) -> Path | None:
    """The fastText `.bin` of `path` (the file itself, or `model.bin` in a folder), else None."""
    p = Path(path).expanduser()
    p = p / MODEL_FILE if p.is_dir() else p
    return p if is_fasttext_file(p) else None


def positive_probability(model, texts: Sequence[str], label: str = POSITIVE) -> np.ndarray:
    """P(`label`) per text (float64) from one `predict` call over the whole list."""
    if len(texts) == 0:
        return np.zeros(0, np.float64)
    k = len(model.get_labels())
    labels, probs = model.predict(list(texts), k=k)
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    return np.clip(np.where(labels == label, probs, 0.0).sum(axis=1), 0.0, 1.0)


def auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney U with ties averaged); NaN without both classes."""
    from scipy.stats import rankdata
    y = np.asarray(y_true, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    r = rankdata(score)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_classifier(positive: Sequence[str], negative: Sequence[str], output: str | os.PathLike, *,
                     max_docs: int | None = None, test_fraction: float = 0.1, max_chars: int | None = 100_000,
                     seed: int = 0, overwrite: bool = False, threads: int = 1, **recipe) -> dict:
    """Balance, split, train, measure, save. Returns the `classifier.json` content."""
    import fasttext

    out = check_output(output, overwrite, INFO_FILE)
    unknown = set(recipe) - set(RECIPE)
    if unknown:
        raise ValueError(f"unknown fastText options {sorted(unknown)}; allowed: {sorted(RECIPE)}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    n = min(len(positive), len(negative), max_docs or len(positive))
    if n < 5:
        raise ValueError(f"need at least 5 positive and 5 negative documents, got {len(positive)} "
                         f"positive and {len(negative)} negative")
    pos = [positive[i] for i in rng.permutation(len(positive))[:n]]
    neg = [negative[i] for i in rng.permutation(len(negative))[:n]]
    n_test = int(round(test_fraction * n))
    texts = one_line(pos[n_test:] + neg[n_test:], max_chars)
    labels = [POSITIVE] * (n - n_test) + [NEGATIVE] * (n - n_test)
    order = rng.permutation(len(texts))
    params = {**RECIPE, **recipe}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_file = Path(tmp) / "train.txt"
        train_file.write_text("".join(f"{labels[i]} {texts[i]}\n" for i in order), encoding="utf-8")
        model = fasttext.train_supervised(input=str(train_file), seed=seed, thread=threads, verbose=0, **params)
    train_s = time.perf_counter() - t0
    metrics = {"train_docs": 2 * (n - n_test), "test_docs": 2 * n_test, "train_s": round(train_s, 3)}
    if n_test:
        test = one_line(pos[:n_test] + neg[:n_test], max_chars)
        p = positive_probability(model, test)
        y = np.r_[np.ones(n_test, bool), np.zeros(n_test, bool)]
        metrics.update(auc=auc(y, p), accuracy=float(np.mean((p >= 0.5) == y)), score_std=float(np.std(p)))
    out.mkdir(parents=True, exist_ok=True)
    model.save_model(str(out / MODEL_FILE))
    info = {"format": FORMAT, "version": 1, "kind": "fasttext", "model": MODEL_FILE,
            "labels": [POSITIVE, NEGATIVE], "positive_label": POSITIVE, "recipe": params,
            "counts": {"positive_available": len(positive), "negative_available": len(negative),
                       "per_class": n, "max_chars": max_chars},
            "seed": seed, "test_fraction": test_fraction, "metrics": metrics}
    (out / INFO_FILE).write_text(json.dumps(info, indent=2))
    return info


def texts_by_threshold(paths: Sequence[str], column: str, threshold: float, text_column: str = "text"
                       ) -> tuple[list[str], list[str]]:
    """(positives, negatives) of labelled documents (e.g. an annotate or rater run): non-empty texts
    whose `column` is >= `threshold`, and the others; rows without a value are skipped."""
    t = read_documents(list(paths), text_field=text_column, id_field=None, columns=["text", column],
                       source="labels-from")
    df = pl.from_arrow(t).filter((pl.col("text").str.len_bytes() > 0) & pl.col(column).is_not_null())
    if not (df.schema[column].is_numeric() or df.schema[column] == pl.Boolean):
        raise ValueError(f"label column {column!r} is {df.schema[column]}, not numeric")
    high = pl.col(column).cast(pl.Float64) >= threshold
    return df.filter(high)["text"].to_list(), df.filter(~high)["text"].to_list()


def train_from_files(positive: Sequence[str] | None, negative: Sequence[str] | None, output: str | os.PathLike, *,
                     positive_domains: Sequence[str] | None = None, negative_domains: Sequence[str] | None = None,
                     labels_from: Sequence[str] | None = None, label_column: str | None = None,
                     threshold: float | None = None, text_column: str = "text", overwrite: bool = False,
                     **options) -> dict:
    """`train_classifier` on the documents of files / folders / globs (any format `tamis run` reads):
    `positive` vs `negative` (optionally only some `domain`s of each), or the rows of `labels_from`
    split at `label_column >= threshold`."""
    check_output(output, overwrite, INFO_FILE)  # refuse before reading anything
    if labels_from:
        if positive or negative or label_column is None or threshold is None:
            raise ValueError("labels_from needs label_column and threshold, and no positive/negative inputs")
        pos, neg = texts_by_threshold(labels_from, label_column, threshold, text_column)
    else:
        if not positive or not negative:
            raise ValueError("give positive and negative inputs, or labels_from with label_column and threshold")
        pos = read_texts(list(positive), positive_domains, text_column, source="positive")
        neg = read_texts(list(negative), negative_domains, text_column, source="negative")
    return train_classifier(pos, neg, output, overwrite=overwrite, **options)
