"""Fast raters: distil judge labels (0–5) into hashed n-gram or embedding features + LightGBM.

The Meta-rater PRRC raters are ModernBERT-base classifiers fine-tuned on ~1M LLM labels; on a
CPU cluster that costs more than the rest of a curation job. A `FastRater` learns the same labels
from cheap features: `features="ngrams"` hashes word (or `char_wb`) n-grams with sklearn's
stateless `HashingVectorizer` (nothing to store but its parameters), `features="embed"` uses the
`embed` stage's vectors (`tamis.pipeline.vectors.embeddings.TextEncoder`, params in `embed`). LightGBM then fits a
regressor (`objective="regression"`, prediction clipped to `score_range`) or a classifier over the
integer labels (`objective="multiclass"`, score = sum_k p(k)·k as for the published raters).

A saved rater is a folder: `rater.json` (format, parameters, classes, metrics) and `model.txt`
(the LightGBM booster). `Rater` loads such folders as well as Hugging Face classifiers.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.vectors.embeddings import TextEncoder

FORMAT = "tamis-fast-rater"
CONFIG_FILE = "rater.json"
MODEL_FILE = "model.txt"
FEATURES = ("ngrams", "embed")
OBJECTIVES = ("regression", "multiclass")


class FastRater:
    """Text -> score in `score_range`; `fit(texts, y) -> self`, `predict(texts)`, `save`/`load`."""

    def __init__(self, features: str = "ngrams", objective: str = "regression", analyzer: str = "word",
                 ngram_range: tuple[int, int] = (1, 2), n_features: int = 2**16, max_chars: int = 20_000,
                 embed: dict | None = None, num_rounds: int = 1000, learning_rate: float = 0.05,
                 num_leaves: int = 31, min_child_samples: int = 20, early_stopping: int = 30,
                 stop_fraction: float = 0.1, n_jobs: int | None = None, seed: int = 0,
                 score_range: tuple[float, float] = (0.0, 5.0)):
        self.features = features
        self.objective = objective
        self.analyzer = analyzer
        self.ngram_range = ngram_range
        self.n_features = n_features
        self.max_chars = max_chars
        self.embed = embed
        self.num_rounds = num_rounds
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.early_stopping = early_stopping
        self.stop_fraction = stop_fraction
        self.n_jobs = n_jobs
        self.seed = seed
        self.score_range = score_range

    def get_params(self) -> dict:
        import inspect
        return {k: getattr(self, k) for k in inspect.signature(type(self).__init__).parameters if k != "self"}

    def validate(self) -> None:
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.analyzer not in ("word", "char", "char_wb"):
            raise ValueError(f"analyzer must be 'word', 'char' or 'char_wb', got {self.analyzer!r}")
        lo, hi = self.ngram_range
        if not 1 <= lo <= hi:
            raise ValueError(f"ngram_range must be (lo, hi) with 1 <= lo <= hi, got {self.ngram_range!r}")
        if self.n_features < 2 or self.max_chars < 1 or self.num_rounds < 1:
            raise ValueError("n_features >= 2, max_chars >= 1 and num_rounds >= 1 are required")
        if not 0 <= self.stop_fraction < 1:
            raise ValueError(f"stop_fraction must be in [0, 1), got {self.stop_fraction}")
        if not self.score_range[0] < self.score_range[1]:
            raise ValueError(f"score_range must be (low, high) with low < high, got {self.score_range!r}")

    # -- features ------------------------------------------------------------------------------
    def featurize(self, texts: Sequence[str]):
        """Sparse hashed n-grams (CSR, float32) or a dense embedding matrix, one row per text."""
        cut = pl.Series("t", list(texts), dtype=pl.Utf8).fill_null("").str.slice(0, self.max_chars).to_list()
        if self.features == "ngrams":
            from sklearn.feature_extraction.text import HashingVectorizer
            hv = HashingVectorizer(analyzer=self.analyzer, ngram_range=tuple(self.ngram_range),
                                   n_features=int(self.n_features), alternate_sign=False, norm="l2",
                                   lowercase=True, dtype=np.float32)
            return hv.transform(cut).tocsr()
        if not hasattr(self, "_embedder"):
            self._embedder = TextEncoder(**(self.embed or {}))
            self._embedder.validate()
            self._embedder.setup()
        if not cut:
            return np.zeros((0, self._embedder.embedding_dim()), np.float32)
        return self._embedder.encode(pa.array(cut, pa.large_string()))

    # -- fit / predict -------------------------------------------------------------------------
    def _params(self) -> dict:
        p = {"learning_rate": self.learning_rate, "num_leaves": self.num_leaves, "verbosity": -1,
             "min_child_samples": self.min_child_samples, "seed": self.seed, "deterministic": True}
        if self.n_jobs is not None:
            p["num_threads"] = int(self.n_jobs)
        if self.objective == "multiclass":
            p.update(objective="multiclass", num_class=len(self.classes_))
        else:
            p.update(objective="regression")
        return p

    def fit(self, texts: Sequence[str], y: Sequence[float]) -> "FastRater":
        import lightgbm as lgb
        self.validate()
        y = np.asarray(y, dtype=np.float64)
        if len(y) != len(texts) or len(y) < 4 or not np.all(np.isfinite(y)):
            raise ValueError("need >= 4 texts with a finite score each")
        X = self.featurize(texts)
        if self.objective == "multiclass":
            self.classes_ = np.unique(np.rint(y))
            if len(self.classes_) < 2:
                raise ValueError("multiclass needs at least two distinct labels")
            target = np.searchsorted(self.classes_, np.rint(y))
        else:
            self.classes_ = None
            target = y
        rounds = self.num_rounds
        n_stop = int(round(self.stop_fraction * len(y)))
        if self.early_stopping and n_stop >= 2 and len(y) - n_stop >= 4:
            perm = np.random.default_rng(self.seed).permutation(len(y))
            st, tr = perm[:n_stop], perm[n_stop:]
            dtr = lgb.Dataset(X[tr], target[tr], params={"verbosity": -1})
            dst = lgb.Dataset(X[st], target[st], reference=dtr)
            probe = lgb.train(self._params(), dtr, self.num_rounds, valid_sets=[dst],
                              callbacks=[lgb.early_stopping(self.early_stopping, verbose=False)])
            rounds = max(1, probe.best_iteration or self.num_rounds)
        self.booster_ = lgb.train(self._params(), lgb.Dataset(X, target, params={"verbosity": -1}), rounds)
        self.n_rounds_ = rounds
        return self

    def predict(self, texts: Sequence[str], num_threads: int | None = None) -> np.ndarray:
        """Expected score per text (float64), inside `score_range`."""
        if not hasattr(self, "booster_"):
            raise RuntimeError("FastRater is not fitted: call fit() or load() first")
        if len(texts) == 0:
            return np.zeros(0, np.float64)
        kw = {} if num_threads is None else {"num_threads": num_threads}
        raw = self.booster_.predict(self.featurize(texts), **kw)
        out = raw @ self.classes_ if self.classes_ is not None else raw
        return np.clip(np.asarray(out, dtype=np.float64), *self.score_range)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        if not hasattr(self, "booster_"):
            raise RuntimeError("FastRater is not fitted: nothing to save")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(folder / MODEL_FILE))
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        config = {"format": FORMAT, "version": 1, "params": params, "n_rounds": self.n_rounds_,
                  "classes": None if self.classes_ is None else [float(c) for c in self.classes_],
                  **(extra or {})}
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=float))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "FastRater":
        import lightgbm as lgb
        folder = Path(folder)
        config = json.loads((folder / CONFIG_FILE).read_text())
        if config.get("format") != FORMAT:
            raise ValueError(f"{folder / CONFIG_FILE} is not a tamis fast rater (format {config.get('format')!r})")
        params = dict(config["params"])
        for k in ("ngram_range", "score_range"):
            params[k] = tuple(params[k])
        rater = cls(**params)
        rater.booster_ = lgb.Booster(model_file=str(folder / MODEL_FILE))
        rater.classes_ = None if config["classes"] is None else np.asarray(config["classes"], np.float64)
        rater.n_rounds_ = config["n_rounds"]
        return rater


def is_fast_rater(folder: str | Path) -> bool:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def evaluate(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Spearman, MAE, RMSE and accuracy of the rounded score (labels are integers 0..5)."""
    from scipy.stats import spearmanr
    t, p = np.asarray(y_true, float), np.asarray(y_pred, float)
    rho = float(spearmanr(t, p).statistic) if len(t) >= 3 and np.ptp(t) > 0 and np.ptp(p) > 0 else float("nan")
    return {"n": int(len(t)), "spearman": rho, "mae": float(np.mean(np.abs(t - p))),
            "rmse": float(np.sqrt(np.mean((t - p) ** 2))),
            "accuracy": float(np.mean(np.rint(t) == np.rint(p)))}


def split_ids(ids: Sequence[str], test_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean test mask from a seeded hash of each id: a document's side never depends on order."""
    h = pl.Series("id", list(ids), dtype=pl.Utf8).hash(seed=seed).to_numpy()
    return (h % np.uint64(1_000_003)).astype(np.float64) / 1_000_003 < test_fraction


def train_rater(texts: Sequence[str], scores: Sequence[float], ids: Sequence[str] | None = None, *,
                test_fraction: float = 0.2, seed: int = 0, **params) -> tuple[FastRater, dict]:
    """Fit on (1 - test_fraction) of the labelled docs, report held-out metrics, refit on all.

    Returns the rater fitted on every labelled document and the metrics of the held-out fit
    (`test`), plus the training-set metrics of that fit (`train`) for comparison.
    """
    texts, y = list(texts), np.asarray(scores, dtype=np.float64)
    ids = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
    test = split_ids(ids, test_fraction, seed) if test_fraction > 0 else np.zeros(len(texts), bool)
    metrics: dict = {"labels": int(len(y)), "label_counts": {
        str(k): int(v) for k, v in zip(*np.unique(np.rint(y), return_counts=True))}}
    t0 = time.perf_counter()
    if test.any() and (~test).sum() >= 4:
        tr, te = np.flatnonzero(~test), np.flatnonzero(test)
        held = FastRater(seed=seed, **params).fit([texts[i] for i in tr], y[tr])
        metrics["test"] = evaluate(y[te], held.predict([texts[i] for i in te]))
        metrics["train"] = evaluate(y[tr], held.predict([texts[i] for i in tr]))
        metrics["baseline_mae"] = float(np.mean(np.abs(y[te] - np.mean(y[tr]))))  # predict the mean
    rater = FastRater(seed=seed, **params).fit(texts, y)
    metrics["train_s"] = round(time.perf_counter() - t0, 3)
    return rater, metrics
