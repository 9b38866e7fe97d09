"""`use: mixture`: follow a domain mixture to a token budget, with a cap on repeats per domain.

The last step of RegMix (Liu et al., ICLR 2025): train on the chosen mixture. `fit` counts the tokens
each domain holds, turns the weights into a per-domain target (`weight * tokens`), caps every domain
at `max_epochs` passes over its tokens (RegMix's proxies bound usage at 15 epochs, its discussion
suggests 4 for the large run) and hands the capped excess to the other domains in proportion to
their weights (`on_cap: redistribute`) or shrinks the whole budget so the proportions stay
(`on_cap: shrink`). A domain with `epochs = target / available` then gives each document
`floor(epochs)` copies plus one more with probability `frac(epochs)`, decided by a hash of
`(seed, id)`, so the result does not depend on partitioning. The decision is the int column
`mixture_repeats` (0 = not used, rejected by `not_in_mixture`); writers repeat rows by it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.mixers.proxy_models import count_tokens
from tamis.mixers.proxy_runs import unit_hash
from tamis.pipeline.mixture_weights import ON_CAP, allocate, load_mixture
from tamis.pipeline.stage import GlobalStage, Resources


N_BINS = 4096   # hash bins per domain for the threshold search (a power of 2: bin edges are exact)


def repeats_for(ids, domains, base: Mapping[str, int], threshold: Mapping[str, float],
                seed: int) -> np.ndarray:
    """Copies per document: `base[domain]` plus one when its (seed, id) hash is below `threshold`."""
    dom = pl.Series("d", domains, dtype=pl.Utf8)
    b = dom.replace_strict(dict(base), default=0, return_dtype=pl.Int64).fill_null(0).to_numpy()
    t = dom.replace_strict(dict(threshold), default=0.0, return_dtype=pl.Float64).fill_null(0.0).to_numpy()
    return b + (unit_hash(ids, seed) < t).astype(np.int64)


def pick_threshold(bin_tokens: np.ndarray, want: float) -> tuple[float, int]:
    """Hash threshold (a bin edge) whose cumulative tokens come closest to `want`; and its bin count."""
    if want <= 0:
        return 0.0, 0
    cum = np.cumsum(bin_tokens)
    b = int(np.searchsorted(cum, want))
    if b >= len(cum):
        return 1.0, len(cum)
    below = cum[b - 1] if b > 0 else 0.0
    k = b + 1 if cum[b] - want <= want - below else b
    return k / len(bin_tokens), k


class Mixture(GlobalStage):
    """Decides how many times each document is used so the output follows `mixture` to `tokens`."""

    name = "mixture"
    requires = ("text", "domain")
    columns = {"mixture_repeats": pa.int64()}
    default_keep = {"not_in_mixture": "mixture_repeats > 0"}
    resources = Resources(cpus=1.0)

    def __init__(self, mixture=None, tokens: int | None = None, tokenizer: str | None = None,
                 max_epochs: float = 4.0, on_cap: str = "redistribute", seed: int = 0,
                 domain_column: str = "domain"):
        self.mixture = mixture
        self.tokens = tokens
        self.tokenizer = tokenizer
        self.max_epochs = max_epochs
        self.on_cap = on_cap
        self.seed = seed
        self.domain_column = domain_column

    def required_columns(self) -> tuple[str, ...]:
        return ("text", self.domain_column)

    def validate(self) -> None:
        load_mixture(self.mixture)
        if not isinstance(self.tokens, (int, float)) or self.tokens <= 0:
            raise ValueError(f"tokens must be a positive token budget, got {self.tokens!r}")
        if not self.max_epochs > 0:
            raise ValueError(f"max_epochs must be > 0, got {self.max_epochs!r}")
        if self.on_cap not in ON_CAP:
            raise ValueError(f"on_cap must be one of {ON_CAP}, got {self.on_cap!r}")

    def _domains(self, batch: pa.Table) -> pa.Array:
        if self.domain_column not in batch.column_names:
            raise ValueError(f"mixture: column {self.domain_column!r} not in batch {batch.column_names}")
        return batch[self.domain_column]

    def _histogram(self, batch: pa.Table) -> pa.Table:
        """Per (domain, hash bin): documents and tokens of one batch."""
        text = pl.from_arrow(batch["text"]).cast(pl.Utf8)
        u = unit_hash(pl.from_arrow(batch["id"]).cast(pl.Utf8), self.seed)
        df = pl.DataFrame({"domain": pl.from_arrow(self._domains(batch)).cast(pl.Utf8),
                           "bin": (u * N_BINS).astype(np.int64),
                           "tokens": count_tokens(text, self.tokenizer)})
        return (df.filter(pl.col("domain").is_not_null()).group_by("domain", "bin")
                  .agg(pl.len().cast(pl.Int64).alias("docs"), pl.col("tokens").sum()).to_arrow())

    @staticmethod
    def _merge(t: pa.Table) -> pa.Table:
        df = pl.from_arrow(t)
        return df.group_by("domain", "bin").agg(pl.col("docs", "tokens").sum()).to_arrow() if df.height else t

    def fit(self, data) -> "Mixture":
        """One pass: tokens per domain and hash bin -> per-domain base repeats and hash threshold."""
        self.validate()
        weights = load_mixture(self.mixture)
        hist = pl.from_arrow(data.map_batches(self._histogram).groupby_map(["domain"], self._merge).to_arrow())
        self.weights_ = weights
        self.available_, self.docs_, self.base_, self.threshold_, self.used_ = {}, {}, {}, {}, {}
        grids = {}
        for d in (sorted(hist["domain"].unique().to_list()) if hist.height else []):
            part = hist.filter(pl.col("domain") == d)
            tok, docs = np.zeros(N_BINS), np.zeros(N_BINS, np.int64)
            tok[part["bin"].to_numpy()] = part["tokens"].to_numpy()
            docs[part["bin"].to_numpy()] = part["docs"].to_numpy()
            grids[d] = (tok, docs)
            self.available_[d], self.docs_[d] = int(tok.sum()), int(docs.sum())
        self.targets_ = allocate(weights, self.available_, float(self.tokens),
                                 float(self.max_epochs), self.on_cap)
        for d, (tok, docs) in grids.items():
            target = self.targets_.get(d, 0.0)
            base = int(np.floor(target / self.available_[d] + 1e-9)) if self.available_[d] else 0
            thr, k = pick_threshold(tok, target - base * self.available_[d])
            self.base_[d], self.threshold_[d] = base, thr
            extra_tok, extra_docs = float(tok[:k].sum()), int(docs[:k].sum())
            self.used_[d] = {"tokens": int(base * tok.sum() + extra_tok),
                             "docs": int(base * docs.sum() + extra_docs),
                             "unique_docs": int(docs.sum()) if base else extra_docs,
                             "max_repeats": base + (1 if extra_docs else 0)}
        return self

    def transform(self, batch: pa.Table) -> dict[str, pa.Array]:
        if not hasattr(self, "threshold_"):
            raise RuntimeError("Mixture is not fitted: call fit() first")
        if batch.num_rows == 0:
            return {"mixture_repeats": pa.array([], pa.int64())}
        dom = pl.from_arrow(self._domains(batch)).cast(pl.Utf8)
        r = repeats_for(pl.from_arrow(batch["id"]).cast(pl.Utf8), dom, self.base_, self.threshold_, self.seed)
        return {"mixture_repeats": pa.array(r, pa.int64())}

    def report(self) -> dict:
        """Per domain: weight, tokens available, target, tokens and documents used, epochs, repeats."""
        if not hasattr(self, "used_"):
            return {}
        z = sum(self.weights_.values())
        total = sum(u["tokens"] for u in self.used_.values())
        rows = {}
        for d in sorted(set(self.weights_) | set(self.available_)):
            avail, u = self.available_.get(d, 0), self.used_.get(d, {})
            rows[d] = {"weight": self.weights_.get(d, 0.0) / z, "available_tokens": avail,
                       "available_docs": self.docs_.get(d, 0),
                       "target_tokens": round(self.targets_.get(d, 0.0)),
                       "tokens": u.get("tokens", 0), "share": u.get("tokens", 0) / total if total else 0.0,
                       "docs": u.get("docs", 0), "unique_docs": u.get("unique_docs", 0),
                       "epochs": u.get("tokens", 0) / avail if avail else 0.0,
                       "max_repeats": u.get("max_repeats", 0),
                       "capped": bool(avail) and self.targets_.get(d, 0) >= self.max_epochs * avail - 0.5,
                       "missing": self.weights_.get(d, 0) > 0 and not avail}
        return {"budget_tokens": int(self.tokens), "tokens": int(total),
                "tokenizer": self.tokenizer or "bytes", "max_epochs": self.max_epochs,
                "on_cap": self.on_cap, "seed": self.seed, "domains": rows}
