"""`rater`: Meta-rater PRRC ratings (professionalism, readability, reasoning, cleanliness), 0–5.

Zhuang et al., "Meta-rater" (ACL 2025, arXiv 2504.14194): each dimension is rated by a ModernBERT
classifier over the labels 0..5; tamis writes the expected score sum_k p(k)·k (float64), which
keeps the ranking information that an argmax throws away. `models` maps a dimension to a local
folder, either
- a Hugging Face sequence-classification model (`config.json`; e.g. the published
  `opendatalab/meta-rater-*-rating` models copied to disk): k labels give sum_k p(k)·k in [0, k-1],
  a single-output regression head gives its raw output; or
- a fast rater trained by `tamis train-rater` (`rater.json`, see `scorers.rater_train`).
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

from scorers.base import Resources, Scorer

PRRC = ("professionalism", "readability", "reasoning", "cleanliness")


def expected_score(logits: np.ndarray) -> np.ndarray:
    """sum_k softmax(logits)_k · k per row; a one-column (regression) head passes through."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] == 1:
        return logits[:, 0]
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)) @ np.arange(logits.shape[1], dtype=np.float64)


class RaterScorer(Scorer):
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
        from scorers.rater_train import is_fast_rater
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
        if self.max_length < 2 or self.batch_size < 1:
            raise ValueError("max_length must be >= 2 and batch_size >= 1")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")

    def setup(self) -> None:
        from scorers.rater_train import FastRater, is_fast_rater
        self._raters: dict = {}
        loaded: dict[str, object] = {}  # one copy of a folder used for several dimensions
        for dim in self.dimensions():
            path = str(Path(os.path.expanduser(str(self.models[dim]))).resolve())
            if path not in loaded:
                loaded[path] = ("fast", FastRater.load(path)) if is_fast_rater(path) else self._load_hf(path)
            self._raters[dim] = loaded[path]

    def _load_hf(self, path: str):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device = self.device if self.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = self.dtype if self.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True, dtype=getattr(torch, dtype)).to(device).eval()
        return ("hf", (tok, model, torch.device(device)))

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
        import torch
        tok, model, device = loaded
        out = np.zeros(len(texts), np.float64)
        if not texts:
            return out
        cut = [t[: self.max_length * 10] for t in texts]  # a token is rarely longer than 10 chars
        order = np.argsort([len(t) for t in cut], kind="stable")  # similar lengths pad less
        with torch.inference_mode():
            for start in range(0, len(cut), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = tok([cut[i] for i in idx], truncation=True, max_length=self.max_length,
                          padding=True, return_tensors="pt").to(device)
                logits = model(**enc).logits.float().cpu().numpy()
                out[idx] = expected_score(logits)
        return out
