"""`cluster_sample`: budget across clusters, quality inside them, exact budgets, deterministic sets."""
from __future__ import annotations

import math
import pickle

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tamis.mixers.cluster_sample import ClusterSample, entropy, waterfill
from tamis.mixers.embed import Embed
from tamis.mixers.kmeans import KMeans
from tamis.pipeline.data import LocalData
from tamis.pipeline.rules import compile_rules, first_failure

SOURCES = ("dict-wn", "dict-foldoc", "fortunes", "linux-doc-6.1", "python-stdlib", "sotu", "bible-web",
           "licenses-copyright", "postgresql-doc-15", "shakespeare-milton")
K = 12


@pytest.fixture(scope="module")
def table(corpus_dir) -> pa.Table:
    """A multi-domain slice of the shared corpus, embedded (hashed), clustered, with a quality score."""
    frames = [pl.read_parquet(corpus_dir / f"{f}.parquet") for f in SOURCES]
    parts = [d.sample(n=min(120, d.height), seed=1, shuffle=True) for d in frames]
    df = pl.concat(parts).select("id", "text", "domain").with_columns(pl.col("text").str.slice(0, 2000))
    df = df.unique(subset="text", keep="first", maintain_order=True)  # e.g. two editions of one poem
    # A real, domain-correlated quality signal: share of letters x log(word count).
    df = df.with_columns((pl.col("text").str.count_matches(r"[A-Za-z]") / (pl.col("text").str.len_chars() + 1)
                          * (pl.col("text").str.count_matches(r"\S+") + 1).log()).alias("quality"))
    t = df.to_arrow()
    t = t.append_column("embedding", Embed(backend="hashed", dim=512).score(t)["embedding"])
    km = KMeans(n_clusters=K, n_iter=30, n_redo=1, pca_dim=64, n_terms=0).fit(LocalData(t))
    return t.append_column("cluster_id", km.transform(t)["cluster_id"])


def selected(stage: ClusterSample, table: pa.Table) -> list[str]:
    d = stage.fit(LocalData(table)).decisions_
    ids = np.array(d["id"].to_pylist())
    mask = d["sample_selected"].to_numpy(zero_copy_only=False)
    return sorted(ids[mask].tolist())


def rows_of(table: pa.Table, ids: list[str]) -> np.ndarray:
    return np.flatnonzero(np.isin(np.array(table["id"].to_pylist()), ids))


def tokens(table: pa.Table) -> np.ndarray:
    return np.ceil(pl.from_arrow(table.select(["text"]))["text"].str.len_bytes().to_numpy() / 4.0)


def test_more_diverse_than_topk_and_better_than_random(table):
    budget = 150
    q, cid = table["quality"].to_numpy(), table["cluster_id"].to_numpy()
    mine = rows_of(table, selected(ClusterSample(budget=budget, quality="quality"), table))
    topk = np.argsort(-q, kind="stable")[:budget]
    counts = lambda idx: np.bincount(cid[idx], minlength=K)
    assert (counts(mine) > 0).sum() > (counts(topk) > 0).sum()
    assert entropy(counts(mine)) > entropy(counts(topk)) + 0.2
    rng = np.random.default_rng(0)
    random_means = [q[rng.choice(len(q), budget, replace=False)].mean() for _ in range(20)]
    assert q[mine].mean() > max(random_means), (q[mine].mean(), max(random_means))


@pytest.mark.parametrize("allocation", ["uniform", "proportional", "sqrt"])
def test_docs_budget_exact_unique_and_seeded(table, allocation):
    a = selected(ClusterSample(budget=137, allocation=allocation, quality="quality", seed=3), table)
    assert len(a) == 137 == len(set(a))
    assert a == selected(ClusterSample(budget=137, allocation=allocation, quality="quality", seed=3), table)
    assert a != selected(ClusterSample(budget=137, allocation=allocation, quality="quality", seed=4), table)


@pytest.mark.parametrize("refine", [None, "ucb"])
def test_token_budget_within_one_document(table, refine):
    budget = 40_000
    st = ClusterSample(budget=budget, unit="tokens", quality="quality", refine=refine, seed=1)
    ids = selected(st, table)
    assert len(ids) == len(set(ids))
    got = tokens(table)[rows_of(table, ids)].sum()
    assert abs(got - budget) <= tokens(table).max(), got
    assert st.report()["selected_tokens"] == got
    assert ids == selected(ClusterSample(budget=budget, unit="tokens", quality="quality", refine=refine, seed=1),
                           table)


def test_tokens_column_and_fraction_budget(table):
    t = table.append_column("ntok", pa.array(tokens(table).astype(np.int64) * 2))
    ids = selected(ClusterSample(budget=0.25, unit="tokens", tokens_column="ntok"), t)
    got, total = t["ntok"].to_numpy()[rows_of(t, ids)].sum(), t["ntok"].to_numpy().sum()
    assert abs(got - 0.25 * total) <= t["ntok"].to_numpy().max()
    assert len(selected(ClusterSample(budget=0.1), table)) == round(0.1 * table.num_rows)
    assert len(selected(ClusterSample(budget=10**6), table)) == table.num_rows  # budget above supply


def test_row_order_does_not_change_the_set(table):
    st = ClusterSample(budget=120, quality="quality", temperature=0.5, seed=9)
    perm = np.random.default_rng(5).permutation(table.num_rows)
    assert selected(st, table) == selected(st, table.take(pa.array(perm)))


def test_allocations_split_the_budget_as_documented():
    cid = np.repeat([0, 1, 2], [100, 30, 5])
    t = pa.table({"id": [f"d{i:04d}" for i in range(len(cid))], "cluster_id": cid})
    got = {}
    for alloc in ("uniform", "proportional", "sqrt"):
        st = ClusterSample(budget=60, allocation=alloc).fit(LocalData(t))
        got[alloc] = st.report()["per_cluster"]["selected"]
    # uniform: 20 each, the small cluster's leftover 15 split over the others; sqrt: weights 10 : 5.5 : 2.2
    assert got == {"uniform": [28, 27, 5], "proportional": [45, 13, 2], "sqrt": [36, 19, 5]}


def test_waterfill_properties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        caps = rng.integers(0, 40, 9)
        w = rng.random(9) * (rng.random(9) > 0.2)
        total = int(rng.integers(0, caps.sum() + 10))
        a = waterfill(total, w, caps, integer=True)
        assert a.sum() == min(total, caps.sum()) and (a <= caps).all() and (a >= 0).all()
        f = waterfill(float(total), w, caps)
        assert math.isclose(f.sum(), min(total, caps.sum()), abs_tol=1e-6) and (f <= caps + 1e-9).all()


def test_lower_temperature_means_higher_quality(table):
    q = table["quality"].to_numpy()
    hot = q[rows_of(table, selected(ClusterSample(budget=150, quality="quality", temperature=5.0), table))].mean()
    cold = q[rows_of(table, selected(ClusterSample(budget=150, quality="quality", temperature=0.2), table))].mean()
    assert cold > hot


def test_null_quality_is_sampled_last_and_null_cluster_is_a_cluster():
    t = pa.table({"id": [f"d{i}" for i in range(6)], "cluster_id": pa.array([0, 0, 0, 0, None, None], pa.int64()),
                  "q": pa.array([1.0, None, 2.0, None, 0.0, 1.0])})
    ids = selected(ClusterSample(budget=3, allocation="proportional", quality="q", temperature=0.01), t)
    assert set(ids) == {"d0", "d2", "d5"}  # 2 from cluster 0 (never a null score first), 1 from the null cluster


def test_iterative_rewards_move_budget_to_the_hardest_cluster(table):
    calls = []
    target = str(int(np.bincount(table["cluster_id"].to_numpy()).argmax()))

    def reward(train, probes):
        calls.append((train, probes))
        return {k: (5.0 if k == target else 1.0) for k in probes}

    static = ClusterSample(budget=150, quality="quality").fit(LocalData(table)).report()
    it = ClusterSample(budget=150, quality="quality", refine="iterative", rounds=3, reward=reward,
                        proxy_docs=40, probe_docs=4).fit(LocalData(table))
    rep = it.report()
    pos = rep["per_cluster"]["cluster_id"].index(int(target))
    assert rep["selected_docs"] == 150
    assert rep["per_cluster"]["selected"][pos] > static["per_cluster"]["selected"][pos] + 5
    assert len(calls) == 2 and len(rep["rounds"]) == 3
    train, probes = calls[0]
    assert 0 < len(train) <= 60 and all(0 < len(v) <= 4 for v in probes.values())
    # probes are the next-in-line documents: not part of the selection they are compared with
    assert not set(train) & {t for v in probes.values() for t in v}


def test_iterative_with_the_ngram_proxy(table):
    st = ClusterSample(budget=150, quality="quality", refine="iterative", rounds=2, proxy_tokens=50_000,
                        proxy_docs=60, probe_docs=3).fit(LocalData(table))
    rep = st.report()
    assert rep["selected_docs"] == 150
    rewards = [r for r in rep["rounds"][0]["rewards"] if r is not None]
    assert len(rewards) >= K - 1 and all(0 < r < 10 for r in rewards)  # nats per byte


def test_ucb_budget_quality_and_report(table):
    q = table["quality"].to_numpy()
    st = ClusterSample(budget=150, quality="quality", refine="ucb", ucb_pulls=30, seed=2)
    ids = selected(st, table)
    assert len(ids) == 150 == len(set(ids))
    assert q[rows_of(table, ids)].mean() > q.mean()
    rep = st.report()["ucb"]
    assert rep["accepted"] >= 30 // 2 and rep["pulls"] >= rep["accepted"] and rep["chunk_docs"] == 5
    assert ids == selected(ClusterSample(budget=150, quality="quality", refine="ucb", ucb_pulls=30, seed=2), table)
    assert "embedding" in st.required_columns()


def test_transform_and_default_rule_reject_unsampled(table):
    st = ClusterSample(budget=50).fit(LocalData(table))
    dec = st.decisions_
    batch = pa.table({"id": dec["id"], "sample_selected": dec["sample_selected"]})
    out = st.transform(batch)
    reasons = first_failure(pl.DataFrame({"sample_selected": out["sample_selected"]}),
                            compile_rules(st.default_rules()))
    assert (reasons.is_null() == pl.Series(out["sample_selected"])).all()
    assert set(reasons.drop_nulls()) == {"not_sampled"}
    assert pickle.loads(pickle.dumps(st)).decisions_.equals(dec)  # the runner saves the fitted stage
    missing = st.transform(pa.table({"id": ["x"], "sample_selected": pa.nulls(1, pa.bool_())}))
    assert missing["sample_selected"].to_pylist() == [False]


def test_validate_and_required_columns():
    for kw, name in [({"budget": 0}, "budget"), ({"unit": "bytes"}, "unit"), ({"allocation": "zipf"}, "allocation"),
                     ({"refine": "bandit"}, "refine"), ({"temperature": 0}, "temperature"),
                     ({"rounds": 0}, "rounds"), ({"refine": "ucb"}, "quality")]:
        with pytest.raises(ValueError, match=name):
            ClusterSample(**kw).validate()
    assert ClusterSample(quality="q").required_columns() == ("cluster_id", "q")
    assert ClusterSample(unit="tokens").required_columns() == ("cluster_id", "text")
    assert "text" in ClusterSample(refine="iterative").required_columns()
