"""`kmeans`: spherical faiss k-means on a sample, per-batch assignment, a report that explains clusters."""
from __future__ import annotations

import collections
import pickle

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tamis.mixers.embed import Embed
from tamis.mixers.kmeans import KMeans
from tamis.pipeline.vectors.kmeans import assign, class_tfidf_terms, fit_centroids
from tamis.pipeline.data import LocalData

SOURCES = ("sotu", "linux-doc-6.1", "licenses-copyright", "bible-web", "python-stdlib", "postgresql-doc-15")


@pytest.fixture(scope="module")
def table(corpus_dir) -> pa.Table:
    parts = [pl.read_parquet(corpus_dir / f"{f}.parquet").head(60).select("id", "text", "source") for f in SOURCES]
    df = pl.concat(parts).with_columns(pl.col("text").str.slice(0, 2500))
    df = df.with_columns(pl.col("text").str.len_chars().cast(pl.Float64).log1p().alias("quality"))
    t = df.to_arrow()
    return t.append_column("embedding", Embed(backend="hashed", dim=512).score(t)["embedding"])


@pytest.fixture(scope="module")
def fitted(table) -> KMeans:
    return KMeans(n_clusters=6, n_iter=30, n_redo=2, pca_dim=64, quality="quality", n_terms=8,
                       map_points=100).fit(LocalData(table))


def test_transform_types_ranges_and_purity(table, fitted):
    out = fitted.transform(table)
    assert out["cluster_id"].type == pa.int64() and out["cluster_dist"].type == pa.float32()
    ids, dist = out["cluster_id"].to_numpy(), out["cluster_dist"].to_numpy()
    assert len(ids) == table.num_rows and ids.min() >= 0 and ids.max() < 6
    assert (dist >= -1e-5).all() and (dist <= 2 + 1e-5).all()
    src = np.array(table["source"].to_pylist())
    purity = sum(collections.Counter(src[ids == c]).most_common(1)[0][1] for c in set(ids)) / len(ids)
    assert purity > 0.7, purity  # 6 sources, 6 clusters: chance would be far lower


def test_transform_is_per_batch(table, fitted):
    whole = fitted.transform(table)["cluster_id"].to_numpy()
    parts = np.concatenate([fitted.transform(table.slice(a, 50))["cluster_id"].to_numpy()
                            for a in range(0, table.num_rows, 50)])
    np.testing.assert_array_equal(whole, parts)
    empty = fitted.transform(table.slice(0, 0))
    assert len(empty["cluster_id"]) == 0


def test_report_sizes_quality_terms_and_map(table, fitted):
    r = fitted.report()
    ids = fitted.transform(table)["cluster_id"].to_numpy()
    assert r["n_clusters"] == 6 and r["pca_dim"] == 64
    assert r["sizes"] == np.bincount(ids, minlength=6).tolist()
    q = table["quality"].to_numpy()
    np.testing.assert_allclose(r["mean_quality"], [q[ids == c].mean() for c in range(6)], rtol=1e-5)
    terms = {w for ws in r["top_terms"].values() for w in ws}
    assert all(len(ws) == 8 for ws in r["top_terms"].values())
    assert {"license", "kernel"} & terms and {"congress", "lord", "god", "people"} & terms, r["top_terms"]
    assert len(r["map_2d"]) == 100 and all(len(p) == 3 and 0 <= p[2] < 6 for p in r["map_2d"])
    pickle.loads(pickle.dumps(fitted))  # the runner saves the fitted stage


def test_seed_reproduces_and_refit_replaces(table):
    a = KMeans(n_clusters=5, n_iter=20, n_redo=1, seed=7, n_terms=0).fit(LocalData(table))
    b = KMeans(n_clusters=5, n_iter=20, n_redo=1, seed=7, n_terms=0).fit(LocalData(table))
    np.testing.assert_allclose(a.centroids_, b.centroids_, atol=1e-5)
    a.fit(LocalData(table.slice(0, 40)))
    assert a.report()["sizes"] and sum(a.report()["sizes"]) == 40


def test_sample_size_bounds_the_fit(table):
    km = KMeans(n_clusters=4, n_iter=10, sample_size=50, n_terms=0).fit(LocalData(table))
    assert km.fit_rows_ == 50 and sum(km.sizes_) == table.num_rows


def test_more_clusters_than_rows_and_empty_input(table):
    km = KMeans(n_clusters=50, n_terms=0).fit(LocalData(table.slice(0, 7)))
    assert len(km.centroids_) == 7
    empty = KMeans(n_clusters=3).fit(LocalData(table.slice(0, 0)))
    assert empty.report()["n_clusters"] == 0
    out = empty.transform(table.slice(0, 2))
    assert out["cluster_id"].null_count == 2


def test_spherical_assignment_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    c = fit_centroids(x, 8, 20, 1, 0)
    ids, dist = assign(x, c, block=64)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ c.T
    np.testing.assert_array_equal(ids, sims.argmax(1))
    np.testing.assert_allclose(dist, 1 - sims.max(1), atol=1e-5)
    ids_l2, d_l2 = assign(x, c, spherical=False)
    brute = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(ids_l2, brute.argmin(1))
    np.testing.assert_allclose(d_l2, np.sqrt(brute.min(1)), atol=1e-3)


def test_class_tfidf_prefers_distinctive_terms():
    texts = ["kernel driver module kernel", "kernel driver interrupt", "psalm lord praise lord", "lord shepherd psalm"]
    terms = class_tfidf_terms(texts, np.array([0, 0, 1, 1]), n_terms=2)
    assert terms[0][0] == "kernel" and terms[1][0] == "lord"


def test_validate_names_the_parameter():
    for kw, name in [({"n_clusters": 0}, "n_clusters"), ({"n_iter": 0}, "n_iter"), ({"pca_dim": 1}, "pca_dim"),
                     ({"sample_size": -1}, "sample_size"), ({"quality": 3}, "quality")]:
        with pytest.raises(ValueError, match=name):
            KMeans(**kw).validate()
    assert KMeans(quality="q").required_columns() == ("embedding", "text", "q")
