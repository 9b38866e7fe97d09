"""`semantic_dedup`: SemDeDup removes planted near-copies of shared-corpus documents and keeps the rest."""
from __future__ import annotations

import pickle
import random

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tamis.mixers.embed import Embed

from tamis.pipeline.vectors.embeddings import l2_normalize
from tamis.pipeline.data import LocalData
from tamis.pipeline.rules import compile_rules, first_failure
from tamis.scorers.dedup.semantic import SemanticDedup, greedy_keep, near_pairs

SOURCES = ("dict-wn", "fortunes", "linux-doc-6.1", "sotu", "python-stdlib", "bible-web", "dict-foldoc")


def _variants(texts: list[str], seed: int = 0) -> list[tuple[str, str]]:
    """(kind, text) near-copies: exact, case/whitespace, sentence order, 3% words dropped, 2% replaced."""
    rnd = random.Random(seed)
    vocab = " ".join(texts).split()

    def shuffle(t):
        s = t.split(". ")
        rnd.shuffle(s)
        return ". ".join(s)

    kinds = [("exact", lambda t: t), ("case_space", lambda t: "  ".join(t.upper().split())),
             ("sentence_order", shuffle),
             ("drop_3pct", lambda t: " ".join(w for w in t.split() if rnd.random() > 0.03)),
             ("replace_2pct", lambda t: " ".join(w if rnd.random() > 0.02 else rnd.choice(vocab) for w in t.split()))]
    return [(kinds[i % len(kinds)][0], kinds[i % len(kinds)][1](t)) for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def corpus(corpus_dir):
    frames = [pl.read_parquet(corpus_dir / f"{f}.parquet") for f in SOURCES]
    df = pl.concat([d.sample(n=min(100, d.height), seed=0, shuffle=True) for d in frames]).select("id", "text")
    df = df.with_columns(pl.col("text").str.slice(0, 2000)).unique(subset="text", keep="first", maintain_order=True)
    src = df.filter(pl.col("text").str.count_matches(r"\S+") > 60).sample(n=50, seed=2)
    planted = pl.DataFrame({"id": [f"{i}#copy" for i in src["id"]],
                            "text": [t for _, t in _variants(src["text"].to_list())]})
    full = pl.concat([df, planted]).to_arrow()
    full = full.append_column("embedding", Embed(backend="hashed", dim=512).score(full)["embedding"])
    return full, dict(zip(planted["id"], src["id"]))


def decisions(stage, table) -> dict[str, str | None]:
    d = stage.fit(LocalData(table)).decisions_
    return dict(zip(d["id"].to_pylist(), d["duplicate_of"].to_pylist()))


def test_planted_copies_removed_and_distinct_kept(corpus):
    table, pairs = corpus
    dup = decisions(SemanticDedup(eps=0.1), table)
    assert len(dup) == table.num_rows
    for copy, orig in pairs.items():
        # exactly one of the pair goes, pointing at the one that stays
        assert (dup[copy] == orig and dup[orig] is None) or (dup[orig] == copy and dup[copy] is None), (copy, orig)
    planted = set(pairs) | set(pairs.values())
    others = [i for i in dup if i not in planted]
    removed = [i for i in others if dup[i] is not None]
    assert len(removed) <= 0.01 * len(others), removed  # a few real near-copies exist (e.g. cp860/cp863 codecs)


def test_eps_prunes_monotonically(corpus):
    table, _ = corpus
    fracs = [SemanticDedup(eps=e).fit(LocalData(table)).report()["removed_fraction"]
             for e in (0.005, 0.02, 0.05, 0.1, 0.2, 0.3)]
    assert all(a <= b for a, b in zip(fracs, fracs[1:])), fracs
    assert fracs[-1] > fracs[0] + 0.02, fracs
    paper = SemanticDedup(eps=0.1).fit(LocalData(table)).report()["paper_rule_pruned_by_eps"]
    vals = list(paper.values())
    assert all(a <= b for a, b in zip(vals, vals[1:]))


def test_keep_rules_pick_the_copy_that_stays():
    base = [[1.0, 0.0, 0.0], [0.999, 0.04, 0.0], [0.0, 1.0, 0.0]]
    t = pa.table({"id": ["b", "a", "c"], "text": ["short", "a much longer text", "other"],
                  "score": [5.0, 1.0, 0.0],
                  "embedding": pa.array(l2_normalize(np.array(base, np.float32)).tolist(), pa.list_(pa.float32(), 3))})
    assert decisions(SemanticDedup(keep="lowest_id", clusters="own", n_clusters=1), t) == {"a": None, "b": "a", "c": None}
    assert decisions(SemanticDedup(keep="longest", clusters="own", n_clusters=1), t)["b"] == "a"
    assert decisions(SemanticDedup(keep="max:score", clusters="own", n_clusters=1), t)["a"] == "b"
    assert SemanticDedup(keep="max:score").required_columns() == ("embedding", "score")


def test_hard_keeps_the_copy_farthest_from_the_centroid():
    rng = np.random.default_rng(0)
    centre = np.array([1.0, 0, 0, 0])
    pts = l2_normalize((centre + 0.3 * rng.standard_normal((20, 4))).astype(np.float32))
    far = l2_normalize((centre + np.array([0, 2.0, 0, 0]))[None].astype(np.float32))[0]
    near_far = l2_normalize((far + np.array([0, 0, 0.02, 0]))[None].astype(np.float32))[0]
    emb = np.vstack([pts, far, near_far])
    ids = [f"p{i:02d}" for i in range(20)] + ["z_far", "a_near_far"]
    t = pa.table({"id": ids, "embedding": pa.array(emb.tolist(), pa.list_(pa.float32(), 4))})
    hard = decisions(SemanticDedup(keep="hard", clusters="own", n_clusters=1, eps=0.01), t)
    easy = decisions(SemanticDedup(keep="easy", clusters="own", n_clusters=1, eps=0.01), t)
    far_first = 1 - emb[20] @ l2_normalize(emb.mean(0, keepdims=True))[0] > 1 - emb[21] @ l2_normalize(
        emb.mean(0, keepdims=True))[0]
    keeper, other = ("z_far", "a_near_far") if far_first else ("a_near_far", "z_far")
    assert hard[other] == keeper and hard[keeper] is None
    assert easy[keeper] == other and easy[other] is None


def test_greedy_compares_with_kept_items_only():
    # a ~ b and b ~ c but a !~ c: b goes (a kept), c stays since its only match b was removed
    dup = greedy_keep(3, np.array([0, 1]), np.array([1, 2]), np.array([0.99, 0.99], np.float32))
    assert dup.tolist() == [-1, 0, -1]
    e = l2_normalize(np.array([[1, 0], [1, 0.1], [1, 0.2], [0, 1]], np.float32))
    pi, pj, ps, best = near_pairs(e, 0.99, block_cells=3)
    assert set(zip(pi.tolist(), pj.tolist())) == {(0, 1), (1, 2)}  # cos(0, 2) = 0.981
    assert best[0] == -1 and np.isclose(best[3], (e[:3] @ e[3]).max()) and np.isclose(best[2], e[1] @ e[2])
    assert greedy_keep(len(e), pi, pj, ps).tolist() == [-1, 0, -1, -1]


def test_reuses_cluster_column_and_splits_large_clusters(corpus):
    table, pairs = corpus
    t = table.append_column("cluster_id", pa.array(np.zeros(table.num_rows, np.int64)))
    st = SemanticDedup(eps=0.1)
    dup = decisions(st, t)
    assert st.cluster_column_ == "cluster_id" and st.centroids_ is None
    split = decisions(SemanticDedup(eps=0.1, clusters="own", n_clusters=1, max_cluster_size=150), table)
    caught = sum((split[c] == o) or (split[o] == c) for c, o in pairs.items())
    assert caught >= 0.9 * len(pairs)  # sub-clusters keep near-copies together almost always
    assert sum(v is not None for v in dup.values()) >= len(pairs)


def test_row_order_does_not_change_decisions(corpus):
    table, _ = corpus
    perm = np.random.default_rng(1).permutation(table.num_rows)
    assert decisions(SemanticDedup(eps=0.1), table) == decisions(SemanticDedup(eps=0.1), table.take(pa.array(perm)))


def test_transform_columns_rule_and_report(corpus):
    table, pairs = corpus
    st = SemanticDedup(eps=0.1).fit(LocalData(table))
    dec = st.decisions_
    out = st.transform(dec)
    assert out["duplicate_of"].type == pa.string() and out["semdedup_cosine"].type == pa.float64()
    cos = out["semdedup_cosine"].to_numpy()
    assert ((cos >= -1) & (cos <= 1)).all()
    removed = out["duplicate_of"].is_valid().to_numpy(zero_copy_only=False)
    assert (cos[removed] > 0.9).all()
    reasons = first_failure(pl.DataFrame({"duplicate_of": out["duplicate_of"]}), compile_rules(st.default_rules()))
    assert (reasons.is_not_null().to_numpy() == removed).all() and set(reasons.drop_nulls()) == {"semantic_duplicate"}
    rep = st.report()
    assert rep["removed"] == removed.sum() and rep["rows"] == table.num_rows and rep["examples"]
    assert sum(rep["cosine_hist"]["counts"]) == table.num_rows
    assert pickle.loads(pickle.dumps(st)).report() == rep  # the runner saves the fitted stage
    nulls = st.transform(pa.table({"id": ["x"]}))
    assert nulls["duplicate_of"].null_count == 1


def test_validate_names_the_parameter():
    for kw, name in [({"eps": 0}, "eps"), ({"keep": "newest"}, "keep"), ({"n_clusters": 0}, "n_clusters"),
                     ({"max_cluster_size": 0}, "max_cluster_size"), ({"clusters": ""}, "clusters")]:
        with pytest.raises(ValueError, match=name):
            SemanticDedup(**kw).validate()
    assert SemanticDedup(clusters="cluster_id").required_columns() == ("embedding", "cluster_id")
