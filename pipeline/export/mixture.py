"""Domain weights to a token budget: how many copies of each document an export writes.

The weights are RegMix's (`tamis mix fit` output, whose `mixture` key holds them) or a hand-written
`{domain: weight}`. Each domain's target is `weight * budget`, capped at `max_epochs` passes over its
tokens (RegMix bounds a domain at 15 epochs; `algorithms.md`), the capped excess going to the other
domains in proportion to their weights. A domain at `e = target / available` epochs gives every
document `floor(e)` copies, plus one more to the documents whose id draw falls below a threshold;
the threshold is a bin edge of a 4096-bin token histogram of the draws, picked so the domain's
tokens come closest to its target (so the achieved weights match to about 1/4096 of a domain).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from tamis.pipeline.mixture_weights import allocate, load_mixture

N_BINS = 4096
MIX_SALT = 0x6D6978  # "mix": the draw deciding the extra copy, independent of the order keys


def load_weights(path: str | Path) -> dict[str, float]:
    """`{domain: weight}`, normalised to sum 1, from a `--mixture` JSON file."""
    raw = load_mixture(path, "--mixture")
    total = sum(raw.values())
    return {d: w / total for d, w in raw.items()}


def plan(weights: Mapping[str, float], available: Mapping[str, int], hist: Mapping[str, np.ndarray],
         budget: float, max_epochs: float) -> dict[str, dict]:
    """Per domain of the data: `base` copies, `threshold` bin (one more copy below it), the tokens
    asked and achieved. `hist[d]`: tokens of domain d per bin of the documents' draws."""
    targets = allocate(weights, available, budget, max_epochs)
    out = {}
    for d, avail in available.items():
        want = targets.get(d, 0.0)
        base = int(want // avail) if avail else 0
        rest = want - base * avail
        cum = np.concatenate([[0], np.cumsum(hist[d])])
        k = int(np.argmin(np.abs(cum - rest)))  # bins [0, k) get the extra copy
        out[d] = {"base": base, "threshold": k, "asked_tokens": want,
                  "tokens": int(base * avail + cum[k]), "available": int(avail),
                  "capped": bool(want >= max_epochs * avail * (1 - 1e-9)) and want > 0}
    return out


def copies(domains: np.ndarray, draw_bins: np.ndarray, plans: Mapping[str, dict]) -> np.ndarray:
    """Copies of each document (domains as strings, `draw_bins` its draw's histogram bin)."""
    out = np.zeros(len(domains), np.int64)
    for d, p in plans.items():
        m = domains == d
        out[m] = p["base"] + (draw_bins[m] < p["threshold"])
    return out
