"""`classifier`: a model's quality score per document, `classifier_score` (float64).

`model_path` is a local path, either
- a fastText model (DCLM): a `.bin` file, or a folder holding `model.bin` (what `tamis
  train-classifier` writes, with `classifier.json`); the score is P(`label`), default `__label__hq`;
- a Hugging Face sequence-classification folder (`config.json`; FineWeb-Edu, Nemotron-CC): the raw
  output of a one-output regression head, P(label 1) of a two-label head, sum_k p(k)·k of a k-label
  head (`tamis.scorers.hf_heads`, shared with the `rater` stage); on the GPU when the worker has one.
The model loads once per worker in `setup()`, so the stage runs as an actor pool. No default rule:
thresholds depend on the model (docs/classifiers.md lists the authors' ones).

Ensemble, Nemotron-CC style: `models: [{path: P, bins: [b1, b2, ...], label: L}, ...]` instead of
`model_path` writes each model's score (`classifier_score_<i>`), cuts it into an integer bucket
(the number of `bins` at or below the score) and combines the buckets (`combine: max`, Nemotron-CC's
choice, or `mean`, rounded down) into `classifier_bucket` (int64).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.stage import Resources, Scorer
from tamis.scorers.classifier.train import (POSITIVE, TRAIN_OPTIONS, fasttext_path, one_line,
                                            positive_probability, train_from_files)
from tamis.scorers.hf_heads import check_head_params, head_scores, load_head


def model_kind(path: str | Path) -> str | None:
    """'fasttext', 'hf' or None (neither) for a local model path."""
    p = Path(path).expanduser()
    if fasttext_path(p) is not None:
        return "fasttext"
    return "hf" if (p / "config.json").is_file() else None


def check_model(path: str, key: str, may_be_missing: bool = False) -> None:
    """ValueError naming `key` unless `path` is a model this stage loads (with its packages)."""
    kind = model_kind(path)
    if kind is None and not may_be_missing:
        p = Path(path).expanduser()
        what = "does not exist" if not p.exists() else "is neither a fastText model (.bin, or a folder " \
            "with model.bin) nor a Hugging Face classifier folder (config.json)"
        raise ValueError(f"{key}: {path!r} {what}; train one with `tamis train-classifier --output {path} ...`"
                         + (" or give the stage `train_if_missing:`" if key == "model_path" else ""))
    for pkg in {"fasttext": ("fasttext",), "hf": ("torch", "transformers"), None: ("fasttext",)}[kind]:
        if importlib.util.find_spec(pkg) is None:
            raise ValueError(f"{key}: loading {path!r} needs the Python package {pkg!r}"
                             + (" (pip install 'tamis[fasttext]')" if pkg == "fasttext" else ""))


def buckets(scores: np.ndarray, bins) -> np.ndarray:
    """Integer bucket per score: how many of the increasing `bins` are <= the score."""
    return np.searchsorted(np.asarray(bins, dtype=np.float64), scores, side="right").astype(np.int64)


class Classifier(Scorer):
    """Adds `classifier_score` (float64) from a fastText model or a Hugging Face classifier head."""

    name = "classifier"
    requires = ("text",)
    columns = {"classifier_score": pa.float64()}
    resources = Resources(cpus=1.0, batch_size=1024)

    def __init__(self, model_path: str | None = None, label: str = POSITIVE, max_chars: int = 100_000,
                 max_length: int = 512, batch_size: int = 32, device: str = "auto", dtype: str = "auto",
                 train_if_missing: dict | None = None, models: list | None = None, combine: str = "max"):
        self.model_path = model_path
        self.label = label
        self.max_chars = max_chars
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.train_if_missing = train_if_missing
        self.models = models
        self.combine = combine

    def output_columns(self) -> dict[str, pa.DataType]:
        if not self.models:
            return dict(self.columns)
        return {**{f"classifier_score_{i}": pa.float64() for i in range(len(self.models))},
                "classifier_bucket": pa.int64()}

    def validate(self) -> None:
        if self.models is not None:
            self._validate_ensemble()
        elif not isinstance(self.model_path, str) or not self.model_path:
            raise ValueError("model_path: give a fastText .bin file, a `tamis train-classifier` folder or a "
                             "Hugging Face classifier folder, e.g. {model_path: runs/classifier}")
        t = self.train_if_missing
        if t is not None:
            if not isinstance(t, dict) or not ({"positive", "negative"} <= set(t) or "labels_from" in t):
                raise ValueError("train_if_missing must be a mapping with at least `positive: [paths]` and "
                                 "`negative: [paths]` (or `labels_from`, `label_column`, `threshold`)")
            unknown = set(t) - set(TRAIN_OPTIONS)
            if unknown:
                raise ValueError(f"train_if_missing has unknown keys {sorted(unknown)}; allowed: "
                                 f"{sorted(TRAIN_OPTIONS)}")
        if self.models is None:
            check_model(self.model_path, "model_path", may_be_missing=t is not None)
        if not isinstance(self.max_chars, int) or self.max_chars < 1:
            raise ValueError(f"max_chars must be a positive integer, got {self.max_chars!r}")
        check_head_params(self.max_length, self.batch_size, self.device, self.dtype)

    def _validate_ensemble(self) -> None:
        if self.model_path is not None or self.train_if_missing is not None:
            raise ValueError("models: give either model_path (one model) or models (an ensemble), not both; "
                             "train_if_missing works with model_path only")
        if not isinstance(self.models, list) or not self.models:
            raise ValueError("models must be a list of {path: ..., bins: [...]}, e.g. "
                             "[{path: models/dclm.bin, bins: [0.01, 0.1, 0.5]}]")
        for i, m in enumerate(self.models):
            if not isinstance(m, dict) or "path" not in m or "bins" not in m or set(m) - {"path", "bins", "label"}:
                raise ValueError(f"models[{i}] must be a mapping with `path`, `bins` and optionally `label`")
            check_model(str(m["path"]), f"models[{i}].path")
            b = m["bins"]
            if not isinstance(b, list) or not b or not all(isinstance(x, (int, float)) for x in b) \
                    or any(x >= y for x, y in zip(b, b[1:])):
                raise ValueError(f"models[{i}].bins must be a non-empty list of increasing numbers, got {b!r}")
        if self.combine not in ("max", "mean"):
            raise ValueError(f"combine must be 'max' or 'mean', got {self.combine!r}")

    def prepare(self) -> None:
        """On the driver, once: train a fastText classifier into `model_path` when it holds no model
        and `train_if_missing` is set (only into an absent or empty folder; never deletes one); pin
        the absolute path for the workers (`model_path_`: their working folder may differ)."""
        if self.models is not None:
            self.model_paths_ = [str(Path(str(m["path"])).expanduser().resolve()) for m in self.models]
            return
        if model_kind(self.model_path) is None and self.train_if_missing is not None:
            opts = dict(self.train_if_missing)
            train_from_files(opts.pop("positive", None), opts.pop("negative", None), self.model_path, **opts)
        if model_kind(self.model_path) is not None:
            self.model_path_ = str(Path(self.model_path).expanduser().resolve())

    def setup(self) -> None:
        if self.models is not None:
            paths = getattr(self, "model_paths_", None) or [str(m["path"]) for m in self.models]
            self.loaded_ = [self._load(p, m.get("label", self.label)) for p, m in zip(paths, self.models)]
        else:
            self.loaded_ = [self._load(getattr(self, "model_path_", None) or self.model_path, self.label)]

    def _load(self, path: str, label: str) -> tuple[str, object, str]:
        p = Path(path).expanduser()
        kind = model_kind(p)
        if kind == "fasttext":
            import fasttext
            model = fasttext.load_model(str(fasttext_path(p)))
            if label not in model.get_labels():
                raise ValueError(f"label: {label!r} is not a label of {p}; it has {model.get_labels()}")
            return kind, model, label
        if kind == "hf":
            return kind, load_head(str(p.resolve()), self.device, self.dtype), label
        raise FileNotFoundError(f"classifier: no fastText or Hugging Face model at {p}")

    def _scores(self, loaded: tuple[str, object, str], text: pl.Series) -> np.ndarray:
        kind, model, label = loaded
        if kind == "fasttext":
            return positive_probability(model, one_line(text, self.max_chars), label)
        return head_scores(model, text.fill_null("").to_list(), self.max_length, self.batch_size)

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        if not hasattr(self, "loaded_"):
            self.setup()
        text = pl.from_arrow(batch.select(["text"]))["text"]
        scores = [np.asarray(self._scores(m, text), dtype=np.float64) for m in self.loaded_]
        if self.models is None:
            return {"classifier_score": pa.array(scores[0], pa.float64())}
        out = {f"classifier_score_{i}": pa.array(v, pa.float64()) for i, v in enumerate(scores)}
        b = np.stack([buckets(v, m["bins"]) for v, m in zip(scores, self.models)]) if scores[0].size else \
            np.zeros((len(scores), 0), np.int64)
        combined = b.max(axis=0) if self.combine == "max" else np.floor(b.mean(axis=0)).astype(np.int64)
        out["classifier_bucket"] = pa.array(combined, pa.int64())
        return out
