"""RegMix regression: mixture weights -> target validation loss, then search for the best mixture.

Liu et al., "RegMix: Data Mixture as Regression for Language Model Pre-training" (ICLR 2025),
`regression_fitting/regression.ipynb` of sail-sg/regmix: LightGBM gbdt, objective regression,
learning rate 0.01, up to 1000 rounds, early stopping after 3 rounds without improvement, seed 42.
Unlike the notebook (which stops on its test set) the stopping set is a split of the *training*
mixtures (12.5%, as the authors' HF Space does); the model is then refit on all training mixtures
for the best number of rounds. `search` simulates 100,000 candidate mixtures, predicts their loss
and averages the 128 best, which smooths the regression's noise (notebook cell "optimal").
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from tamis.mixers import mixture_design as mx

MODELS = ("lightgbm", "linear")


def _as_matrix(X, domains: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(n, k) float64 matrix and column names from a polars/pandas frame, a dict of columns or an array."""
    cols = getattr(X, "columns", None)
    if cols is not None:
        names = [str(c) for c in cols]
        arr = X.to_numpy() if hasattr(X, "to_numpy") else np.asarray(X)
    elif isinstance(X, Mapping):
        names = [str(c) for c in X]
        arr = np.column_stack([np.asarray(v, dtype=np.float64) for v in X.values()])
    else:
        arr = np.asarray(X)
        names = list(domains) if domains is not None else [f"d{i}" for i in range(arr.shape[-1])]
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"mixtures must be a 2-D table, got shape {arr.shape}")
    return arr, names


def correlations(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Spearman and Pearson correlation of predicted and measured loss."""
    from scipy.stats import pearsonr, spearmanr
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        return {"spearman": float("nan"), "pearson": float("nan")}
    return {"spearman": float(spearmanr(pred, true).statistic),
            "pearson": float(pearsonr(pred, true).statistic)}


class RegMixRegressor:
    """Regression from mixture weights to one target loss, sklearn-shaped (`fit -> self`, `predict`).

    `model`: "lightgbm" (RegMix's choice) or "linear" (least squares with an intercept, the paper's
    baseline). `lgb_params` override LightGBM parameters (RegMix leaves the rest at defaults).
    """

    def __init__(self, model: str = "lightgbm", learning_rate: float = 0.01,
                 n_estimators: int = 1000, early_stopping_rounds: int = 3,
                 valid_fraction: float = 0.125, seed: int = 42, lgb_params: dict | None = None):
        self.model = model
        self.learning_rate = learning_rate
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.valid_fraction = valid_fraction
        self.seed = seed
        self.lgb_params = lgb_params

    def validate(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if not 0 <= self.valid_fraction < 1:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction}")
        if self.n_estimators < 1:
            raise ValueError(f"n_estimators must be >= 1, got {self.n_estimators}")

    def _lgb(self, n_estimators: int, n_rows: int):
        import lightgbm as lgb
        # LightGBM's default min_child_samples=20 (RegMix, 512 rows) cannot split ~40 rows at all;
        # scale it down for small studies, unchanged from ~200 rows up.
        params = dict(boosting_type="gbdt", objective="regression", learning_rate=self.learning_rate,
                      n_estimators=n_estimators, random_state=self.seed, verbosity=-1,
                      deterministic=True, force_row_wise=True, n_jobs=1,
                      min_child_samples=int(min(20, max(2, n_rows // 10))))
        params.update(self.lgb_params or {})
        return lgb.LGBMRegressor(**params)

    def fit(self, X_mixtures, y_loss, domains: Sequence[str] | None = None) -> "RegMixRegressor":
        """Fit on training mixtures only; early stopping watches a split of these rows."""
        self.validate()
        X, names = _as_matrix(X_mixtures, domains)
        y = np.asarray(y_loss, dtype=np.float64).ravel()
        if len(y) != len(X):
            raise ValueError(f"{len(X)} mixtures but {len(y)} losses")
        if len(y) < 2 or not np.all(np.isfinite(X)) or not np.all(np.isfinite(y)):
            raise ValueError("need >= 2 rows of finite mixtures and losses")
        self.domains_ = names
        self.prior_ = mx.normalize_prior(X.mean(axis=0) + 1e-12)
        if self.model == "linear":
            from sklearn.linear_model import LinearRegression
            self.model_ = LinearRegression().fit(X, y)
            self.best_iteration_ = None
            return self
        import lightgbm as lgb
        n_valid = int(round(self.valid_fraction * len(y)))
        best = self.n_estimators
        if self.early_stopping_rounds and n_valid >= 2 and len(y) - n_valid >= 2:
            perm = np.random.default_rng(self.seed).permutation(len(y))
            va, tr = perm[:n_valid], perm[n_valid:]
            probe = self._lgb(self.n_estimators, len(tr)).fit(
                X[tr], y[tr], eval_X=(X[va],), eval_y=(y[va],), eval_metric="l2",
                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
            best = max(1, int(probe.best_iteration_ or self.n_estimators))
        self.best_iteration_ = best
        self.model_ = self._lgb(best, len(y)).fit(X, y)
        return self

    def _check(self):
        if not hasattr(self, "model_"):
            raise RuntimeError("RegMixRegressor is not fitted: call fit() first")

    def predict(self, X) -> np.ndarray:
        self._check()
        arr, names = _as_matrix(X, self.domains_)
        if getattr(X, "columns", None) is not None and names != self.domains_:
            missing = sorted(set(self.domains_) - set(names))
            if missing:
                raise ValueError(f"mixtures lack domains {missing}")
            arr = np.column_stack([arr[:, names.index(d)] for d in self.domains_])
        if arr.shape[1] != len(self.domains_):
            raise ValueError(f"expected {len(self.domains_)} domain columns, got {arr.shape[1]}")
        return np.asarray(self.model_.predict(arr), dtype=np.float64)

    def score(self, X, y) -> dict[str, float]:
        """Spearman and Pearson of predictions on held-out mixtures."""
        return correlations(self.predict(X), np.asarray(y, float).ravel())

    def search(self, n_candidates: int = 100_000, top_k: int = 128, prior=None, seed: int = 42,
               temperature: float | None = None, max_usage: float | None = None,
               strengths: tuple[float, float] = (mx.MIN_STRENGTH, mx.MAX_STRENGTH)) -> dict[str, float]:
        """Simulate candidates, predict, average the `top_k` lowest -> `mixture_` (also returned).

        Candidates are drawn like the training mixtures: Dirichlet around `prior` (the natural token
        share, dict or vector in `domains_` order) tempered by `temperature` (0.5 when a prior is
        given), strengths log-uniform in `strengths`, rejected above `max_usage` x prior (15 when a
        prior is given). Without a prior the mean training mixture stands in for the tempered prior
        (temperature 1, no bound). RegMix's notebook is `temperature=1, strengths=(1, 1)`.
        """
        self._check()
        if n_candidates < 1 or not 1 <= top_k <= n_candidates:
            raise ValueError(f"need n_candidates >= top_k >= 1, got {n_candidates}, {top_k}")
        if prior is None:
            p, temperature = self.prior_, 1.0 if temperature is None else temperature
        else:
            if isinstance(prior, Mapping):
                missing = sorted(set(self.domains_) - set(prior))
                if missing:
                    raise ValueError(f"prior lacks domains {missing}")
                prior = [prior[d] for d in self.domains_]
            p = mx.normalize_prior(prior)
            temperature = mx.TEMPERATURE if temperature is None else temperature
            max_usage = mx.MAX_USAGE if max_usage is None else max_usage
        rng = np.random.default_rng(seed)
        cand = np.zeros((0, len(p)))
        for _ in range(50):
            w = mx.draw_candidates(p, n_candidates, seed=rng, temperature=temperature,
                                   min_strength=strengths[0], max_strength=strengths[1])
            cand = np.concatenate([cand, w[mx.within_bounds(w, p, max_usage)]])[:n_candidates]
            if len(cand) >= n_candidates:
                break
        if len(cand) < top_k:
            raise ValueError(f"only {len(cand)} candidates satisfy max_usage={max_usage}")
        pred = self.predict(cand)
        best = np.argsort(pred, kind="stable")[:top_k]
        w = cand[best].mean(axis=0)
        w /= w.sum()
        self.candidates_ = len(cand)
        self.mixture_ = mx.as_dict(self.domains_, w)
        self.predicted_loss_ = float(self.predict(w[None, :])[0])
        self.top_k_predicted_loss_ = float(pred[best].mean())
        return self.mixture_


def cross_validate(X, y, k: int = 5, seed: int = 42, **params) -> dict[str, float]:
    """k-fold out-of-fold predictions -> Spearman and Pearson (used when no eval files are given)."""
    arr, names = _as_matrix(X)
    y = np.asarray(y, float).ravel()
    k = max(2, min(k, len(y)))
    folds = np.array_split(np.random.default_rng(seed).permutation(len(y)), k)
    pred = np.empty(len(y))
    for f in folds:
        tr = np.setdiff1d(np.arange(len(y)), f)
        pred[f] = RegMixRegressor(seed=seed, **params).fit(arr[tr], y[tr], domains=names).predict(arr[f])
    return correlations(pred, y)
