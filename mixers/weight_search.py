"""The Meta-rater learning loop as plain functions: sample weights, select, train proxies, regress, search.

Zhuang et al., "Meta-rater" (ACL 2025, arXiv 2504.14194), `pipeline/step{1..4}_*.py` of
mihara-bot/Meta-rater: weights ~ Dirichlet(alpha=1) over the signals; each signal min-max scaled
to [0, 5]; score = sum_j w_j * scaled_j; the top 15% by score trains a proxy whose validation loss
is recorded; LightGBM (gbdt, lr 0.01, up to 1000 rounds, early stopping 5, seed 42) maps weights to
loss; 1M Dirichlet candidates are predicted and the 128 best averaged.

Changes, each documented in docs/meta_rater.md: a sign per signal (the paper has none, so a
lower-is-better signal could only be down-weighted); the top fraction counts text bytes rather than
documents, so every proxy trains on the same amount of text; early stopping watches a split of the
training vectors (not the test vectors), and the Spearman is measured on the last 20% of vectors,
never seen in fitting.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from tamis.mixers.proxy_models import train_proxy


def dirichlet(n: int, d: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """n weight vectors on the d-simplex from a symmetric Dirichlet(alpha)."""
    return rng.dirichlet(np.full(d, float(alpha)), size=n)


def select_top(scores: np.ndarray, sizes: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the best-scoring rows holding `fraction` of all `sizes` (at least one row).

    Ties keep pool order (stable sort), so a selection depends only on the scores.
    """
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    cum = np.cumsum(np.asarray(sizes, dtype=np.float64)[order])
    k = int(np.searchsorted(cum, fraction * cum[-1], side="left")) + 1 if len(cum) else 0
    return order[:max(1, min(k, len(order)))] if len(order) else order


def random_top(sizes: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A random selection of the same size in bytes: `select_top` on random scores."""
    return select_top(np.random.default_rng(seed).random(len(sizes)), sizes, fraction)


def _call(runner: Callable, fn: Callable, items: list, **kw) -> list:
    """Call `map_tasks`-like runners with their keyword options and plain `map` without them."""
    try:
        params = inspect.signature(runner).parameters.values()
        takes = any(p.kind == p.VAR_KEYWORD for p in params) or all(k in {p.name for p in params} for k in kw)
    except (TypeError, ValueError):
        takes = False
    return list(runner(fn, items, **kw) if takes else runner(fn, items))


def _in_process(fn: Callable, items: list, **_) -> list:
    return [fn(i) for i in items]


def train_selections(selections: Mapping[str, np.ndarray], texts: Sequence[str],
                     valid: Mapping[str, Sequence[str]], *, proxy: str, token_budget: int,
                     params: Mapping | None = None, seed: int = 0, runner: Callable | None = None,
                     train_fn: Callable | None = None, num_cpus: float = 1.0, num_gpus: float = 0.0
                     ) -> dict[str, dict]:
    """One proxy per named selection (row indices into `texts`); {name: {"loss", "losses", "seconds"}}.

    `loss` is the mean over the validation sets. The selected texts are shuffled (seeded) before
    the proxy cuts them at `token_budget`, so a cut never favours the top-scored documents. Runs
    through `runner` (a `Data.map_tasks`-like callable; default: in this process); the pool
    travels once, inside the task function.
    """
    train_fn = train_fn or train_proxy
    texts, valid = list(texts), {k: list(v) for k, v in valid.items()}
    params = dict(params or {})

    def task(item: tuple[str, np.ndarray]) -> dict:
        name, idx = item
        t0 = time.perf_counter()
        idx = np.random.default_rng(seed).permutation(np.asarray(idx))
        losses = train_fn(proxy, [texts[i] for i in idx], valid, token_budget=token_budget, seed=seed, **params)
        return {"name": name, "losses": {k: float(v) for k, v in losses.items()},
                "loss": float(np.mean(list(losses.values()))), "seconds": time.perf_counter() - t0}

    items = [(k, np.asarray(v, dtype=np.int64)) for k, v in selections.items()]
    out = _call(runner or _in_process, task, items, num_cpus=num_cpus, num_gpus=num_gpus,
                desc=f"{proxy} proxies")
    return {r["name"]: r for r in out}


@dataclass
class SearchResult:
    names: list[str]
    weights: np.ndarray                  # the learned vector (sums to 1)
    samples: np.ndarray                  # (n_samples, d) sampled vectors
    losses: np.ndarray                   # measured proxy loss per sample
    n_train: int
    spearman: float                      # predicted vs measured loss on held-out vectors
    pearson: float
    predicted_loss: float                # the regression's prediction for `weights`
    best_iteration: int | None
    regressor: object = field(repr=False, default=None)


def fit_regressor(X: np.ndarray, y: np.ndarray, *, seed: int = 42, n_rounds: int | None = None,
                  stop_fraction: float = 0.125):
    """Meta-rater's LightGBM (gbdt, lr 0.01, <= 1000 rounds, early stopping 5, metrics l1/l2).

    Without `n_rounds`, early stopping watches a seeded `stop_fraction` of the given rows and the
    model is refit on all of them for the best number of rounds. LightGBM's default 20 rows per
    leaf cannot split a few dozen vectors, so it shrinks for small studies (20 from 160 rows up).
    One thread: the data is tiny, and threads only contend.
    """
    import lightgbm as lgb

    def model(rounds: int, rows: int):
        return lgb.LGBMRegressor(boosting_type="gbdt", objective="regression", learning_rate=0.01,
                                 n_estimators=rounds, random_state=seed, min_child_samples=max(2, min(20, rows // 8)),
                                 n_jobs=1, deterministic=True, force_row_wise=True, verbosity=-1)

    if n_rounds is None:
        n_stop = int(round(stop_fraction * len(y)))
        n_rounds = 1000
        if n_stop >= 2 and len(y) - n_stop >= 2:
            perm = np.random.default_rng(seed).permutation(len(y))
            st, tr = perm[:n_stop], perm[n_stop:]
            probe = model(1000, len(tr)).fit(X[tr], y[tr], eval_X=(X[st],), eval_y=(y[st],), eval_metric=["l1", "l2"],
                                             callbacks=[lgb.early_stopping(5, verbose=False)])
            n_rounds = max(1, int(probe.best_iteration_ or 1000))
    return model(n_rounds, len(y)).fit(X, y), n_rounds


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def fit_and_search(samples: np.ndarray, losses: np.ndarray, names: Sequence[str], *, alpha: float = 1.0,
                   n_candidates: int = 1_000_000, top_k: int = 128, train_ratio: float = 0.8,
                   seed: int = 42, chunk: int = 200_000) -> SearchResult:
    """Regress loss on weights: fit on the first `train_ratio` of vectors, Spearman on the rest.

    The search model is refit on all vectors before predicting `n_candidates` Dirichlet(alpha)
    vectors; the `top_k` lowest predictions are averaged and renormalised.
    """
    X, y = np.asarray(samples, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    n = len(y)
    if n < 3:
        raise ValueError(f"need at least 3 proxy runs to fit and test the regression, got {n}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("proxy losses must be finite")
    n_train = max(2, min(n - 1, int(round(train_ratio * n))))
    held, _ = fit_regressor(X[:n_train], y[:n_train], seed=seed)
    pred_test = held.predict(X[n_train:])
    from scipy.stats import pearsonr
    pear = float(pearsonr(pred_test, y[n_train:]).statistic) if n - n_train >= 3 and np.ptp(pred_test) > 0 else float("nan")
    model, rounds = fit_regressor(X, y, seed=seed)
    rng = np.random.default_rng(seed)
    best_w = np.zeros((0, X.shape[1]))
    best_p = np.zeros(0)
    left = n_candidates
    while left > 0:  # chunks keep memory flat at 1M candidates
        cand = dirichlet(min(chunk, left), X.shape[1], alpha, rng)
        left -= len(cand)
        w = np.concatenate([best_w, cand])
        p = np.concatenate([best_p, model.predict(cand)])
        keep = np.argsort(p, kind="stable")[:top_k]
        best_w, best_p = w[keep], p[keep]
    weights = best_w.mean(axis=0)
    weights /= weights.sum()
    return SearchResult(list(names), weights, X, y, n_train, spearman(pred_test, y[n_train:]), pear,
                        float(model.predict(weights[None, :])[0]), rounds, model)
