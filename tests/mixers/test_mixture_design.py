"""RegMix mixture sampling: bounds, rounding, sparsity, duplicates, seeds, tempered centre."""
import numpy as np
import pytest

from tamis.mixers import mixture_design as mx

# Token shares of the shared corpus domains (MB of text; news is tiny, as ubuntu_irc is in the Pile).
PRIOR = {"tech-docs": 57.0, "code": 31.5, "dictionary": 22.6, "literature": 16.8, "speeches": 12.2,
         "religion": 9.15, "legal": 5.7, "quotes": 2.5, "news": 0.08}


def test_rows_are_mixtures_on_the_rounding_grid():
    m = mx.sample_mixtures(PRIOR, 256, seed=0)
    assert m.shape == (256, len(PRIOR))
    assert np.all(m >= 0)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=len(PRIOR) * mx.MINIMUM)
    grid = m / mx.MINIMUM
    np.testing.assert_allclose(grid, np.rint(grid), atol=1e-6)
    assert not np.any((m > 0) & (m < mx.MINIMUM - 1e-12))


def test_epoch_bound_is_respected_and_binds():
    p = mx.normalize_prior(PRIOR)
    m = mx.sample_mixtures(PRIOR, 256, seed=1)
    ub = np.minimum(p * 15, 1.0)
    assert np.all(m <= ub + mx.MINIMUM)                 # rounding may add at most one grid step
    raw = mx.draw_candidates(p, 20_000, seed=1)          # without rejection, the bound is broken often
    assert (~mx.within_bounds(raw, p)).mean() > 0.05
    assert m[:, -1].max() <= 15 * p[-1] + mx.MINIMUM    # the 0.05% domain never gets more than 15x


def test_sparse_and_distinct():
    m = mx.sample_mixtures(PRIOR, 300, seed=2)
    assert 0.2 < (m == 0).mean() < 0.8                  # RegMix's released matrix: ~45% zeros
    assert len(np.unique(np.rint(m / mx.MINIMUM), axis=0)) == len(m)


def test_seeded_and_order_preserving():
    a = mx.sample_mixtures(PRIOR, 64, seed=7)
    b = mx.sample_mixtures(PRIOR, 64, seed=7)
    c = mx.sample_mixtures(PRIOR, 64, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # vector prior in the same order gives the same draws
    np.testing.assert_array_equal(a, mx.sample_mixtures(list(PRIOR.values()), 64, seed=7))


def test_draws_centre_on_the_tempered_prior():
    p = np.array([0.7, 0.2, 0.08, 0.02])
    w = mx.draw_candidates(p, 60_000, seed=3)
    np.testing.assert_allclose(w.mean(axis=0), mx.temper(p, 0.5), atol=0.01)
    np.testing.assert_allclose(mx.temper(p, 0.5), np.sqrt(p) / np.sqrt(p).sum())
    w1 = mx.draw_candidates(p, 60_000, seed=3, temperature=1.0)
    np.testing.assert_allclose(w1.mean(axis=0), p, atol=0.01)


def test_tiny_concentrations_do_not_underflow():
    alpha = np.full((1000, 5), 1e-4)
    w = mx.dirichlet(alpha, np.random.default_rng(0))
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert (w.max(axis=1) > 0.99).mean() > 0.9          # tiny alpha -> one domain takes almost all


def test_bad_prior_and_impossible_requests():
    with pytest.raises(ValueError, match="prior"):
        mx.sample_mixtures([0.0, 0.0], 4)
    with pytest.raises(ValueError, match="prior"):
        mx.sample_mixtures([1.0, -1.0], 4)
    with pytest.raises(ValueError, match="distinct mixtures"):
        mx.sample_mixtures([1.0], 2, max_rounds=2)       # one domain: only one mixture exists
