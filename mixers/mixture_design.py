"""RegMix mixture sampling: Dirichlet draws around the tempered token distribution of the domains.

Follows `mixture_config/synthesize_mixture.py` of sail-sg/regmix (Liu et al., ICLR 2025): prior =
token share per domain; upper bound per domain `min(prior * 15, 1)` from the *un-tempered* prior
(a domain may not be repeated more than 15 epochs); prior tempered as `prior**0.5`; each draw is
`Dirichlet(prior_T * s)` with `s` one of 15 log-spaced strengths in [0.1, 5]; draws that break a
bound are rejected; weights below 2e-4 are zeroed, the rest renormalised and rounded to multiples
of 2e-4; duplicates are removed and `n` mixtures are kept at random. Everything is vectorised and
driven by one `numpy.random.Generator(seed)`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

TEMPERATURE = 0.5
MIN_STRENGTH, MAX_STRENGTH, N_STRENGTHS = 0.1, 5.0, 15
MAX_USAGE = 15.0
MINIMUM = 2e-4
SAMPLE_MULTIPLIER = 100


def normalize_prior(prior: Mapping[str, float] | Sequence[float] | np.ndarray) -> np.ndarray:
    """Token counts or shares -> a probability vector (checks for negatives and an all-zero prior)."""
    p = np.asarray(list(prior.values()) if isinstance(prior, Mapping) else prior, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError("prior must be a non-empty 1-D vector of token counts or shares")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"prior must be finite, non-negative and not all zero, got {p.tolist()}")
    return p / p.sum()


def temper(prior: np.ndarray, temperature: float = TEMPERATURE) -> np.ndarray:
    """`prior**temperature`, renormalised (RegMix applies it only when temperature < 1)."""
    p = np.power(normalize_prior(prior), temperature)
    return p / p.sum()


def dirichlet(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows of Dirichlet(alpha[i]) for a 2-D `alpha`, stable for tiny concentrations.

    Gamma(a) for a < 1 underflows to 0 in float64 when a ~ 1e-3; we sample in log space with
    Gamma(a) = Gamma(a + 1) * U**(1/a) and normalise with a softmax. Zero alphas give zero weights.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    pos = alpha > 0
    safe = np.where(pos, alpha, 1.0)
    log_g = np.log(rng.gamma(safe + 1.0)) + np.log(rng.random(alpha.shape)) / safe
    log_g = np.where(pos, log_g, -np.inf)
    log_g -= log_g.max(axis=1, keepdims=True)
    w = np.exp(log_g)
    return w / w.sum(axis=1, keepdims=True)


def draw_candidates(prior, n: int, *, seed: int | np.random.Generator = 0,
                    temperature: float = TEMPERATURE, min_strength: float = MIN_STRENGTH,
                    max_strength: float = MAX_STRENGTH, n_strengths: int = N_STRENGTHS) -> np.ndarray:
    """`n` raw Dirichlet draws (before rejection), strength picked per draw from the log grid."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    p = normalize_prior(prior)
    pt = temper(p, temperature) if temperature != 1.0 else p
    strengths = np.logspace(np.log10(min_strength), np.log10(max_strength), n_strengths)
    s = rng.choice(strengths, size=n)
    return dirichlet(pt[None, :] * s[:, None], rng)


def within_bounds(w: np.ndarray, prior, max_usage: float | None = MAX_USAGE) -> np.ndarray:
    """Rows whose every weight is <= min(prior * max_usage, 1) (RegMix's epoch bound)."""
    if max_usage is None:
        return np.ones(len(w), dtype=bool)
    ub = np.minimum(normalize_prior(prior) * max_usage, 1.0)
    return np.all(w <= ub[None, :] + 1e-12, axis=1)


def sample_mixtures(prior, n: int, *, seed: int = 42, temperature: float = TEMPERATURE,
                    min_strength: float = MIN_STRENGTH, max_strength: float = MAX_STRENGTH,
                    n_strengths: int = N_STRENGTHS, max_usage: float | None = MAX_USAGE,
                    minimum: float = MINIMUM, sample_multiplier: int = SAMPLE_MULTIPLIER,
                    max_rounds: int = 20) -> np.ndarray:
    """`n` distinct mixtures (rows sum to ~1, multiples of `minimum`) as RegMix samples them.

    `prior` is the natural token share per domain (dict or vector; its order is the column order).
    Draws `n * sample_multiplier` candidates, rejects those above the epoch bound, zeroes weights
    below `minimum`, rounds, removes duplicates, then keeps `n` at random. If too few survive
    (a very skewed prior with a tight bound), it draws again, up to `max_rounds` times.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 < minimum < 1:
        raise ValueError(f"minimum must be in (0, 1), got {minimum}")
    p = normalize_prior(prior)
    rng = np.random.default_rng(seed)
    kept = np.zeros((0, p.size), dtype=np.int64)
    for _ in range(max_rounds):
        w = draw_candidates(p, n * sample_multiplier, seed=rng, temperature=temperature,
                            min_strength=min_strength, max_strength=max_strength,
                            n_strengths=n_strengths)
        w = w[within_bounds(w, p, max_usage)]
        w = np.where(w < minimum, 0.0, w)
        w = w[w.sum(axis=1) > 0]
        w /= w.sum(axis=1, keepdims=True)
        grid = np.rint(w / minimum).astype(np.int64)   # rounded to multiples of `minimum`
        grid = grid[grid.sum(axis=1) > 0]
        kept = np.unique(np.concatenate([kept, grid]), axis=0)
        if len(kept) >= n:
            break
    if len(kept) < n:
        raise ValueError(f"only {len(kept)} distinct mixtures satisfy the bounds; ask for fewer "
                         f"(n={n}) or loosen max_usage/minimum")
    return kept[rng.choice(len(kept), size=n, replace=False)] * minimum


def as_dict(domains: Sequence[str], weights: np.ndarray, digits: int = 6) -> dict[str, float]:
    """One mixture row as `{domain: weight}`, rounded for printing and JSON."""
    return {d: round(float(w), digits) for d, w in zip(domains, weights)}
