"""RegMixRegressor on synthetic loss surfaces whose optimum is known."""
import numpy as np
import polars as pl
import pytest

from tamis.mixers.mixture_design import sample_mixtures
from tamis.mixers.regmix import RegMixRegressor, correlations, cross_validate

PRIOR = np.array([0.35, 0.25, 0.2, 0.12, 0.08])
DOMAINS = ["a", "b", "c", "d", "e"]
OPT = np.array([0.05, 0.15, 0.4, 0.25, 0.15])        # interior optimum, far from the prior
CURV = np.array([2.0, 2.5, 3.0, 2.0, 2.5])


def surface(X):
    return 3.0 + ((np.asarray(X) - OPT) ** 2 * CURV).sum(axis=1)


@pytest.fixture(scope="module")
def fitted():
    X = sample_mixtures(PRIOR, 320, seed=1)
    y = surface(X) + np.random.default_rng(0).normal(0, 0.002, len(X))
    return RegMixRegressor().fit(pl.DataFrame(X, schema=DOMAINS), y), X, y


def test_search_finds_the_known_optimum(fitted):
    reg, _, _ = fitted
    mix = reg.search(n_candidates=20_000, top_k=128, prior=dict(zip(DOMAINS, PRIOR)), seed=0)
    w = np.array([mix[d] for d in DOMAINS])
    assert list(mix) == DOMAINS
    assert abs(w.sum() - 1) < 1e-4
    assert np.abs(w - OPT).sum() < 0.25, mix             # the prior is 0.8 away (L1)
    assert np.abs(w - OPT).max() < 0.1, mix
    assert surface(w[None])[0] < surface(np.full((1, 5), 0.2))[0]
    assert surface(w[None])[0] < surface(PRIOR[None])[0]


def test_heldout_correlation_is_high(fitted):
    reg, _, _ = fitted
    Xe = sample_mixtures(PRIOR, 128, seed=2)
    q = reg.score(pl.DataFrame(Xe, schema=DOMAINS), surface(Xe))
    assert q["spearman"] > 0.9 and q["pearson"] > 0.9


def test_early_stopping_uses_only_training_rows(fitted):
    reg, X, y = fitted
    assert 1 <= reg.best_iteration_ <= 1000
    again = RegMixRegressor().fit(pl.DataFrame(X, schema=DOMAINS), y)
    assert again.best_iteration_ == reg.best_iteration_
    np.testing.assert_allclose(again.predict(X[:20]), reg.predict(X[:20]))
    # no eval data is ever given to fit: a different stopping split changes the rounds
    other = RegMixRegressor(seed=7).fit(X, y, domains=DOMAINS)
    assert other.best_iteration_ != reg.best_iteration_ or not np.allclose(other.predict(X), reg.predict(X))


def test_predict_reorders_named_columns(fitted):
    reg, X, _ = fitted
    df = pl.DataFrame(X[:10], schema=DOMAINS)
    np.testing.assert_allclose(reg.predict(df.select(DOMAINS[::-1])), reg.predict(df))
    with pytest.raises(ValueError, match="lack domains"):
        reg.predict(df.drop("c"))


def test_linear_model_picks_the_cheapest_domain():
    X = sample_mixtures(PRIOR, 200, seed=3)
    cost = np.array([2.0, 1.0, 3.0, 2.5, 1.5])           # domain b lowers loss the most
    reg = RegMixRegressor(model="linear").fit(X, X @ cost, domains=DOMAINS)
    assert reg.best_iteration_ is None
    mix = reg.search(n_candidates=5000, top_k=32, seed=0)
    assert max(mix, key=mix.get) == "b"
    assert reg.score(X, X @ cost)["spearman"] > 0.999


def test_cross_validation_and_errors():
    X = sample_mixtures(PRIOR, 120, seed=4)
    q = cross_validate(pl.DataFrame(X, schema=DOMAINS), surface(X), k=4)
    assert q["spearman"] > 0.7
    with pytest.raises(RuntimeError, match="not fitted"):
        RegMixRegressor().predict(X)
    with pytest.raises(ValueError, match="model"):
        RegMixRegressor(model="xgb").fit(X, surface(X))
    with pytest.raises(ValueError, match="losses"):
        RegMixRegressor().fit(X, surface(X)[:-1])
    assert np.isnan(correlations(np.ones(5), np.arange(5))["spearman"])
