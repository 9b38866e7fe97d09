"""Domain mixture weights: read from a file, and a token budget allocated to them under an epoch cap.

Shared by the `mixture` stage (`tamis.mixers.mixture`, RegMix's last step inside a job) and
`tamis export --mixture` (`tamis.pipeline.export.mixture`). Weights come from a `{domain: weight}`
JSON object or from `tamis mix fit` output, whose `mixture` key holds one. Each domain's target is
`weight * budget`, capped at `max_epochs` passes over its tokens (RegMix bounds a domain at 15
epochs); the capped excess goes to the other domains in proportion to their weights
(`redistribute`), or the whole budget shrinks so the proportions stay (`shrink`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np

MAX_EPOCHS = 15.0  # RegMix's bound on passes over a domain's tokens
ON_CAP = ("redistribute", "shrink")


def load_mixture(mixture, what: str = "mixture") -> dict[str, float]:
    """`{domain: weight}` (as given, not normalised) from a mapping or a JSON file; `what` names the
    setting in error messages (`mixture`, `--mixture`)."""
    where = what
    if isinstance(mixture, (str, Path)):
        path = Path(mixture)
        where = f"{what} {path}"
        try:
            mixture = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{where}: no such file") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e})") from None
    if isinstance(mixture, Mapping) and isinstance(mixture.get("mixture"), Mapping):
        mixture = mixture["mixture"]
    if not isinstance(mixture, Mapping) or not mixture:
        raise ValueError(f"{where}: expected a non-empty {{domain: weight}} mapping (or one under 'mixture')")
    out = {}
    for d, w in mixture.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{where}: weight of {d!r} must be a finite number >= 0, got {w!r}")
        out[str(d)] = float(w)
    if sum(out.values()) <= 0:
        raise ValueError(f"{where}: the weights sum to 0")
    return out


def allocate(weights: Mapping[str, float], available: Mapping[str, float], budget: float,
             max_epochs: float = MAX_EPOCHS, on_cap: str = "redistribute") -> dict[str, float]:
    """Target tokens per domain with tokens available: `weight * budget`, each capped at
    `max_epochs * available`; the excess redistributed by weight (until every domain is capped), or
    the budget shrunk (`on_cap`)."""
    domains = [d for d in weights if available.get(d, 0) > 0 and weights[d] > 0]
    if not domains:
        return {}
    w = np.array([weights[d] for d in domains], float)
    w /= w.sum()
    cap = np.array([available[d] for d in domains], float) * max_epochs
    if on_cap == "shrink":
        scale = min(budget, float(np.min(cap / w)))
        return dict(zip(domains, (w * scale).tolist()))
    target = w * budget
    free = np.ones(len(domains), bool)
    for _ in range(len(domains)):
        over = target > cap
        if not over.any():
            break
        excess = float((target[over] - cap[over]).sum())
        target[over] = cap[over]
        free &= ~over
        if not free.any():
            break
        target[free] += excess * w[free] / w[free].sum()
    return dict(zip(domains, np.minimum(target, cap).tolist()))
