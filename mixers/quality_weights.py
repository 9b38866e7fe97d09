"""`quality_weights`: Meta-rater's learned weights over quality signals, and the `quality` column.

Zhuang et al., "Meta-rater: A Multi-dimensional Data Selection Method for Pre-training Language
Models" (ACL 2025, arXiv 2504.14194). `fit` learns one weight per signal column by regression on
proxy-model results (see `tamis.mixers.weight_search` for the loop and its changes to the paper);
`transform` writes `quality` = sum_j w_j * scaled_j in [0, 5], where scaled_j is signal j min-max
scaled to [0, 5] over the whole dataset, flipped for "lower is better" signals; a null or NaN
signal contributes 0. `report()` shows the weights, the regression's held-out Spearman, and the
proxy loss of the learned weights next to a random selection of the same size and the best single
signal.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.mixers import weight_search as ws
from tamis.mixers.proxy_models import KINDS
from tamis.pipeline.readers import read_documents
from tamis.pipeline.rules import compile_rule
from tamis.pipeline.stage import GlobalStage, Resources, check_fitted


_SIGNS = {"+": 1, "higher": 1, "max": 1, "-": -1, "lower": -1, "min": -1}
TARGET = "target"


def parse_signals(signals) -> dict[str, int]:
    """`[col, ...]` (all higher-is-better), `{col: "+"|"-"|"higher"|"lower"|1|-1}` or `["col:-"]`."""
    if isinstance(signals, dict):
        items = list(signals.items())
    else:
        items = [tuple(s.rsplit(":", 1)) if ":" in s else (s, "+") for s in signals]
    out = {}
    for col, sign in items:
        s = _SIGNS.get(sign) if isinstance(sign, str) else (int(sign) if sign in (1, -1) else None)
        if s is None:
            raise ValueError(f"signals: sign of {col!r} must be '+'/'higher' or '-'/'lower', got {sign!r}")
        out[str(col)] = s
    return out


def scaled_exprs(signs: dict[str, int], mins: dict[str, float], maxs: dict[str, float]) -> list[pl.Expr]:
    """Each signal min-max scaled to [0, 5], 5 = best; null/NaN and constant signals give 0."""
    out = []
    for col, s in signs.items():
        lo, hi = mins[col], maxs[col]
        x = pl.col(col).cast(pl.Float64)
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            e = pl.lit(0.0)
        else:
            e = (((x - lo) if s > 0 else (hi - x)) / (hi - lo)).clip(0.0, 1.0) * 5.0
        out.append(e.fill_nan(None).fill_null(0.0).alias(col))
    return out


def _minmax_batch(cols: list[str]):
    def fn(t: pa.Table) -> pa.Table:
        x = pl.from_arrow(t.select(cols)).select([pl.col(c).cast(pl.Float64).fill_nan(None) for c in cols])
        return x.select([pl.col(c).min().alias(f"min:{c}") for c in cols]
                        + [pl.col(c).max().alias(f"max:{c}") for c in cols]).to_arrow()
    return fn


def _rows(where: str | None, keep_target: bool, cols: list[str], max_chars: int | None):
    """A batch function keeping target (or non-target) rows, selected columns, text cut to `max_chars`."""
    def fn(t: pa.Table) -> pa.Table:
        df = pl.from_arrow(t)
        if where is not None:
            hit = compile_rule(TARGET, where).expr.fill_null(False)
            df = df.filter(hit if keep_target else ~hit)
        if max_chars:
            df = df.with_columns(pl.col("text").str.slice(0, max_chars))
        return df.select(cols).to_arrow()
    return fn


class QualityWeights(GlobalStage):
    """Learns weights over `signals` by proxy regression; adds `quality` (float64, 0–5)."""

    name = "quality_weights"
    columns = {"quality": pa.float64()}
    resources = Resources(cpus=1.0)
    packages = ("lightgbm",)

    def __init__(self, signals=(), target_where: str | None = None, target_path: str | None = None,
                 target_group: str | None = None, target_size: int = 1000, fraction: float = 0.15,
                 n_samples: int = 256, alpha: float = 1.0, proxy: str = "ngram", proxy_params: dict | None = None,
                 token_budget: int | None = None, sample_size: int = 50_000, max_doc_chars: int = 8000,
                 pool_bytes: int = 16_000_000, n_candidates: int = 1_000_000, top_k: int = 128,
                 baselines: bool = True, random_repeats: int = 3, proxy_cpus: float = 1.0,
                 proxy_gpus: float = 0.0, seed: int = 0, column: str = "quality", weights: dict | None = None):
        self.signals = signals
        self.target_where = target_where
        self.target_path = target_path
        self.target_group = target_group
        self.target_size = target_size
        self.fraction = fraction
        self.n_samples = n_samples
        self.alpha = alpha
        self.proxy = proxy
        self.proxy_params = proxy_params
        self.token_budget = token_budget
        self.sample_size = sample_size
        self.max_doc_chars = max_doc_chars
        self.pool_bytes = pool_bytes
        self.n_candidates = n_candidates
        self.top_k = top_k
        self.baselines = baselines
        self.random_repeats = random_repeats
        self.proxy_cpus = proxy_cpus
        self.proxy_gpus = proxy_gpus
        self.seed = seed
        self.column = column
        self.weights = weights

    # -- spec ----------------------------------------------------------------------------------
    @property
    def requires(self) -> tuple[str, ...]:
        cols = ["text", *parse_signals(self.signals)]
        if self.target_where and not self.weights:
            cols += sorted(compile_rule(TARGET, self.target_where).columns)
            if self.target_group:
                cols.append(self.target_group)
        return tuple(dict.fromkeys(cols))

    def output_columns(self) -> dict[str, pa.DataType]:
        return {self.column: pa.float64()}

    def validate(self) -> None:
        signs = parse_signals(self.signals)
        if not signs:
            raise ValueError("signals: name at least one score column")
        if self.weights is not None:
            w = self.weights
            vals = np.array([float(v) for v in w.values()]) if isinstance(w, dict) else np.zeros(0)
            if not isinstance(w, dict) or set(w) != set(signs) or not np.all(np.isfinite(vals)) \
                    or (vals < 0).any() or vals.sum() <= 0:
                raise ValueError(f"weights: give a non-negative weight for exactly the signals {sorted(signs)}")
            return
        if (self.target_where is None) == (self.target_path is None):
            raise ValueError("target_where / target_path: give exactly one target set")
        if self.target_where is not None:
            compile_rule(TARGET, self.target_where)
        if not 0 < self.fraction < 1:
            raise ValueError(f"fraction must be in (0, 1), got {self.fraction}")
        if self.n_samples < 5:
            raise ValueError(f"n_samples must be >= 5 (train and held-out vectors), got {self.n_samples}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if not 1 <= self.top_k <= self.n_candidates:
            raise ValueError(f"top_k must be in [1, n_candidates], got {self.top_k}")
        if self.proxy not in KINDS:
            raise ValueError(f"proxy must be one of {KINDS}, got {self.proxy!r}")
        for name in ("target_size", "sample_size", "max_doc_chars", "pool_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    # -- fit -----------------------------------------------------------------------------------
    def _target(self, data) -> dict[str, list[str]]:
        if self.target_path is not None:
            df = pl.from_arrow(read_documents(self.target_path))
            df = df.sample(fraction=1.0, shuffle=True, seed=self.seed + 1) if df.height > self.target_size else df
        else:
            cols = ["text"] + ([self.target_group] if self.target_group else [])
            df = pl.from_arrow(data.map_batches(_rows(self.target_where, True, cols, None))
                               .sample(self.target_size, seed=self.seed + 1))
        df = df.head(self.target_size)
        if df.height == 0:
            raise ValueError("the target set is empty: check target_where / target_path")
        if not self.target_group:
            return {TARGET: df["text"].to_list()}
        return {str(k[0]): g["text"].to_list() for k, g in df.group_by(self.target_group, maintain_order=True)}

    def fit(self, data, runner: Callable | None = None, train_fn: Callable | None = None) -> "QualityWeights":
        """Learn `weights_` (signal -> weight); `runner`/`train_fn` default to `data.map_tasks` (Ray
        tasks in a job) / `train_proxy`."""
        runner = runner or data.map_tasks
        self.validate()
        signs = parse_signals(self.signals)
        names = list(signs)
        stats = pl.from_arrow(data.map_batches(_minmax_batch(names)).to_arrow())
        self.mins_ = {c: _finite(stats[f"min:{c}"].min()) for c in names}
        self.maxs_ = {c: _finite(stats[f"max:{c}"].max()) for c in names}
        self.signs_ = signs
        if self.weights is not None:  # given weights (e.g. from `tamis learn-weights`): only scale
            total = sum(float(v) for v in self.weights.values())
            self.weights_ = {c: float(self.weights[c]) / total for c in names}
            self.report_ = {"weights": dict(self.weights_), "learned": False,
                            "signs": {c: "+" if s > 0 else "-" for c, s in signs.items()}}
            return self
        valid = self._target(data)
        pool = pl.from_arrow(data.map_batches(_rows(self.target_where, False, ["text", *names], self.max_doc_chars))
                             .sample(self.sample_size, seed=self.seed))
        sizes = pool["text"].str.len_bytes().fill_null(0).cast(pl.Int64)
        pool = pool.filter(sizes.cum_sum() <= self.pool_bytes) if sizes.sum() > self.pool_bytes else pool
        if pool.height < 2:
            raise ValueError("the candidate pool holds fewer than 2 documents")
        scaled = pool.select(scaled_exprs(signs, self.mins_, self.maxs_)).to_numpy()
        sizes = pool["text"].str.len_bytes().cast(pl.Int64).to_numpy()
        budget = int(self.token_budget or max(2, self.fraction * sizes.sum()))
        rng = np.random.default_rng(self.seed + 1048)  # Meta-rater's step-1 seed, offset by ours
        samples = ws.dirichlet(self.n_samples, len(names), self.alpha, rng)
        sel = {f"sample_{i}": ws.select_top(scaled @ w, sizes, self.fraction) for i, w in enumerate(samples)}
        if self.baselines:
            sel.update({f"single:{c}": ws.select_top(scaled[:, j], sizes, self.fraction) for j, c in enumerate(names)})
            sel.update({f"random_{r}": ws.random_top(sizes, self.fraction, self.seed + 7 + r)
                        for r in range(self.random_repeats)})
        kw = dict(proxy=self.proxy, token_budget=budget, params=self.proxy_params, seed=self.seed,
                  runner=runner, train_fn=train_fn, num_cpus=self.proxy_cpus, num_gpus=self.proxy_gpus)
        runs = ws.train_selections(sel, pool["text"].to_list(), valid, **kw)
        losses = np.array([runs[f"sample_{i}"]["loss"] for i in range(self.n_samples)])
        res = ws.fit_and_search(samples, losses, names, alpha=self.alpha, n_candidates=self.n_candidates,
                                top_k=self.top_k, seed=42 + self.seed)
        learned = ws.train_selections({"learned": ws.select_top(scaled @ res.weights, sizes, self.fraction)},
                                      pool["text"].to_list(), valid, **kw)["learned"]
        self.weights_ = {c: float(w) for c, w in zip(names, res.weights)}
        self.search_ = res
        self.report_ = self._summary(res, runs, learned, pool.height, int(sizes.sum()), budget, valid)
        return self

    def _summary(self, res, runs, learned, pool_docs, pool_bytes, budget, valid) -> dict:
        single = {k.split(":", 1)[1]: v["loss"] for k, v in runs.items() if k.startswith("single:")}
        rand = [v["loss"] for k, v in runs.items() if k.startswith("random_")]
        out = {"weights": dict(sorted(self.weights_.items(), key=lambda kv: -kv[1])), "learned": True,
               "signs": {c: ("+" if s > 0 else "-") for c, s in self.signs_.items()},
               "loss_learned": learned["loss"], "predicted_loss_learned": res.predicted_loss,
               "spearman_heldout": res.spearman, "pearson_heldout": res.pearson,
               "n_proxies": len(res.losses), "n_train_vectors": res.n_train,
               "best_iteration": res.best_iteration, "best_sampled_loss": float(res.losses.min()),
               "median_sampled_loss": float(np.median(res.losses)),
               "pool_docs": pool_docs, "pool_bytes": pool_bytes, "token_budget": budget,
               "target_sets": {k: len(v) for k, v in valid.items()}, "proxy": self.proxy,
               "proxy_seconds": float(sum(v["seconds"] for v in runs.values()) + learned["seconds"])}
        if rand:
            out["loss_random"] = float(np.mean(rand))
            out["loss_random_std"] = float(np.std(rand))
        if single:
            best = min(single, key=single.get)
            out.update(loss_single=single, best_single_signal=best, loss_best_single=single[best])
        return out

    # -- apply ---------------------------------------------------------------------------------
    def transform(self, batch: pa.Table) -> dict[str, pa.Array]:
        check_fitted(self, "weights_", "mins_", "maxs_")
        df = pl.from_arrow(batch.select(list(self.weights_)))
        exprs = scaled_exprs(self.signs_, self.mins_, self.maxs_)
        total = pl.sum_horizontal([e * self.weights_[c] for e, c in zip(exprs, self.signs_)])
        out = df.select(total.cast(pl.Float64).alias(self.column))[self.column]
        return {self.column: out.to_arrow()}

    def report(self) -> dict:
        return dict(getattr(self, "report_", {}))


def _finite(v) -> float:
    return float(v) if v is not None and np.isfinite(v) else float("nan")
