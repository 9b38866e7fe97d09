"""`rater`: Meta-rater PRRC ratings (professionalism, readability, reasoning, cleanliness), 0–5.

Zhuang et al., "Meta-rater" (ACL 2025, arXiv 2504.14194): each dimension is rated by a ModernBERT
classifier over the labels 0..5; tamis writes the expected score sum_k p(k)·k (float64), which
keeps the ranking information that an argmax throws away. `models` maps a dimension to a local
folder, either
- a Hugging Face sequence-classification model (`config.json`; e.g. the published
  `opendatalab/meta-rater-*-rating` models copied to disk): k labels give sum_k p(k)·k in [0, k-1],
  a single-output regression head gives its raw output; or
- a fast rater trained by `tamis train-rater` (`rater.json`, see `tamis.scorers.meta_rater.train`).
Columns are `rater_<dimension>`; other dimension names than PRRC work too (`rater_<name>`).
Transformers run on the GPU when the worker has one (give the stage `resources: {gpus: 1}`).
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.stage import Resources, Scorer
from tamis.scorers.hf_heads import check_head_params, expected_score, head_scores, load_head
from tamis.scorers.meta_rater.train import FastRater, is_fast_rater

__all__ = ["PRRC", "Rater", "expected_score"]

PRRC = ("professionalism", "readability", "reasoning", "cleanliness")


class Rater(Scorer):
    """Adds `rater_<dimension>` (float64) for every dimension named in `models`."""

    name = "rater"
    requires = ("text",)
    columns = {f"rater_{d}": pa.float64() for d in PRRC}
    resources = Resources(cpus=1.0, batch_size=256)

    def __init__(self, models: dict | None = None, max_length: int = 2048, batch_size: int = 16,
                 device: str = "auto", dtype: str = "auto"):
        self.models = models
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype

    def dimensions(self) -> list[str]:
        """Dimensions in `models`: PRRC order first, then the others sorted."""
        given = list(self.models or {})
        return [d for d in PRRC if d in given] + sorted(d for d in given if d not in PRRC)

    def output_columns(self) -> dict[str, pa.DataType]:
        return {f"rater_{d}": pa.float64() for d in self.dimensions()}

    def validate(self) -> None:
        if not isinstance(self.models, dict) or not self.models:
            raise ValueError("models: map at least one dimension to a model folder, "
                             "e.g. {professionalism: /models/professionalism}")
        for dim, path in self.models.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", str(dim)):
                raise ValueError(f"models: dimension {dim!r} must be snake_case (it names the column)")
            p = Path(os.path.expanduser(str(path)))
            if not (is_fast_rater(p) or (p / "config.json").is_file()):
                raise ValueError(f"models.{dim}: {path!r} is neither a Hugging Face model folder "
                                 "(config.json) nor a tamis fast rater (rater.json)")
            for pkg in (("lightgbm", "sklearn") if is_fast_rater(p) else ("torch", "transformers")):
                if importlib.util.find_spec(pkg) is None:
                    raise ValueError(f"models.{dim}: loading {path!r} needs the Python package {pkg!r}")
        check_head_params(self.max_length, self.batch_size, self.device, self.dtype)

    def setup(self) -> None:
        self._raters: dict = {}
        loaded: dict[str, object] = {}  # one copy of a folder used for several dimensions
        for dim in self.dimensions():
            path = str(Path(os.path.expanduser(str(self.models[dim]))).resolve())
            if path not in loaded:
                loaded[path] = ("fast", FastRater.load(path)) if is_fast_rater(path) else self._load_hf(path)
            self._raters[dim] = loaded[path]

    def _load_hf(self, path: str):
        return ("hf", load_head(path, self.device, self.dtype))

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        if not hasattr(self, "_raters"):
            self.setup()
        texts = pl.from_arrow(batch.select(["text"]))["text"].fill_null("").to_list()
        out = {}
        for dim, (kind, obj) in self._raters.items():
            vals = obj.predict(texts, num_threads=1) if kind == "fast" else self._hf_scores(obj, texts)
            out[f"rater_{dim}"] = pa.array(np.asarray(vals, dtype=np.float64), pa.float64())
        return out

    def _hf_scores(self, loaded, texts: list[str]) -> np.ndarray:
        return head_scores(loaded, texts, self.max_length, self.batch_size)
