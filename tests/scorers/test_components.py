"""Distributed connected components (large-star / small-star over `Data`) against scipy, and
MinHashDedup's distributed path against its in-memory one."""
from __future__ import annotations


import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import ray

from tamis.pipeline.data import LocalData
from tamis.pipeline.runner import ray_data
from tamis.scorers.dedup import components as cc
from tamis.scorers.dedup.components import (components, connected_components_data, keep_per_component,
                                            keep_per_component_data)
from tamis.scorers.dedup.minhash import MinHashDedup
from tests.scorers import test_minhash_dedup

planted = test_minhash_dedup.planted  # the planted near-duplicate corpus fixture


def _graphs():
    rng = np.random.default_rng(3)
    n = 600
    perm = rng.permutation(n)
    cliques = [(i, j) for c in range(0, 60, 6) for i in range(c, c + 6) for j in range(i + 1, c + 6)]
    return {
        "chain_sorted": (np.arange(n - 1), np.arange(1, n)),
        "chain_random": (perm[:-1], perm[1:]),
        "star": (np.full(n - 1, 17), np.delete(np.arange(n), 17)),
        "cliques": tuple(np.array(x) for x in zip(*cliques)),
        "many_small": (rng.integers(0, 5 * n, n), rng.integers(0, 5 * n, n)),
        "giant": (rng.integers(0, n, 3 * n), rng.integers(0, n, 3 * n)),
        "two_chains_reversed": (np.r_[np.arange(300, 1, -1), np.arange(1000, 1300)],
                                np.r_[np.arange(299, 0, -1), np.arange(1001, 1301)]),
    }


def _edges(a, b) -> pa.Table:
    return pa.table({"a": [f"d{x}" for x in a], "b": [f"d{x}" for x in b]})


def _reference(t: pa.Table) -> pl.DataFrame:
    """scipy components, labelled by their smallest id."""
    comp = pl.from_arrow(components(t["a"], t["b"]))
    return comp.select("id", pl.col("id").min().over("component").alias("component")).sort("id")


def _check(data, t: pa.Table):
    stats = {}
    got = pl.from_arrow(connected_components_data(data, stats=stats).to_arrow()).select("id", "component").sort("id")
    assert got.equals(_reference(t))
    return stats["rounds"]


@pytest.mark.parametrize("name", list(_graphs()))
def test_components_match_scipy_local(name):
    t = _edges(*_graphs()[name])
    rounds = _check(LocalData(t), t)
    assert rounds < 30


def _pairs(t: pa.Table, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = t.num_rows
    return pa.table({"hub": t["a"], "member": t["b"], "hub_priority": rng.integers(0, 3, n).astype(float),
                     "member_priority": rng.integers(0, 3, n).astype(float), "jaccard": rng.random(n)})


def _fix_priorities(p: pa.Table) -> pa.Table:
    """One priority per id (the keep rule's input is per document)."""
    df = pl.from_arrow(p)
    ids = pl.concat([df["hub"], df["member"]]).unique()
    prio = dict(zip(ids.to_list(), (np.abs(np.array([hash(i) for i in ids.to_list()])) % 3).astype(float)))
    return df.with_columns(pl.col("hub").replace_strict(prio).alias("hub_priority"),
                           pl.col("member").replace_strict(prio).alias("member_priority")).to_arrow()


@pytest.mark.parametrize("name", ["cliques", "many_small", "giant", "chain_random"])
def test_keep_rule_matches_in_memory(name):
    p = _fix_priorities(_pairs(_edges(*_graphs()[name]), 1))
    ref = keep_per_component(pl.from_arrow(p)).sort("id")
    got = pl.from_arrow(keep_per_component_data(LocalData(p), local_edges=0).to_arrow()).sort("id")
    assert got.equals(ref)


def _ray_edges(n: int):
    """`n` edges generated in Ray tasks (the driver never holds them): clusters of 3 documents with
    scrambled ids, 2 edges each from the smallest id (one round: Ray Data runs each shuffle as a job
    with seconds of overhead on 2 cores; multi-round graphs on Ray: benchmarks/bench_components.py)."""
    def gen(batch: pa.Table) -> pa.Table:
        i = batch["id"].to_numpy()
        x = (((i // 2)[:, None] * 3 + np.arange(3)) * 2654435761) % (1 << 40)
        x.sort(axis=1)
        a, b = x[:, 0], x[np.arange(len(i)), 1 + i % 2]
        return pa.table({"a": [f"d{v:012d}" for v in a], "b": [f"d{v:012d}" for v in b]})
    return ray_data.RayData(ray.data.range(n, override_num_blocks=4).map_batches(gen, batch_format="pyarrow"))


def test_components_on_ray_match_scipy_and_driver_memory_stays_flat(ray_session, monkeypatch):
    """Edges x4: the rows pulled to the driver stay flat (one summary row per partition and round,
    no edge), labels equal scipy's. Counted, not traced: tracemalloc beside Ray's native threads
    can crash the interpreter."""
    monkeypatch.setattr(ray_data, "LOCAL_GROUPBY_ROWS", 0)
    pulled = []
    to_arrow = ray_data.RayData.to_arrow

    def counting(self):
        t = to_arrow(self)
        pulled.append(t.num_rows)
        return t

    per_size = []
    for n in (4_000, 16_000):
        edges = _ray_edges(n).materialize()
        pulled.clear()
        stats = {}
        monkeypatch.setattr(ray_data.RayData, "to_arrow", counting)
        labels = connected_components_data(edges, stats=stats).materialize()
        monkeypatch.setattr(ray_data.RayData, "to_arrow", to_arrow)
        per_size.append(sum(pulled))
        assert sum(pulled) <= stats["rounds"] * max(1, edges._partitions()), (pulled, stats)
        t = edges.to_arrow()
        assert pl.from_arrow(labels.to_arrow()).sort("id").equals(_reference(t))
    assert per_size[1] < n // 100, per_size


def _decisions(stage) -> pl.DataFrame:
    d = stage.decisions_
    d = d if isinstance(d, pa.Table) else d.to_arrow()
    return pl.from_arrow(d).sort("id")


def test_minhash_distributed_path_matches_in_memory(planted, monkeypatch):
    table, _ = planted
    ref = MinHashDedup().fit(LocalData(table))
    monkeypatch.setattr(cc, "LOCAL_EDGES", 0)
    monkeypatch.setattr(cc, "LOCAL_DATA_EDGES", 0)
    got = MinHashDedup().fit(LocalData(table))
    assert ref.candidate_pairs_ == got.candidate_pairs_ and ref.pairs_kept_ == got.pairs_kept_
    assert _decisions(ref).height > 200 and _decisions(got).equals(_decisions(ref))
    assert got.report()["clusters"] == ref.report()["clusters"]
    for keep, verify in (("longest", False),):
        monkeypatch.setattr(cc, "LOCAL_DATA_EDGES", 10**9)
        ref = MinHashDedup(keep=keep, verify=verify).fit(LocalData(table))
        monkeypatch.setattr(cc, "LOCAL_DATA_EDGES", 0)
        got = MinHashDedup(keep=keep, verify=verify).fit(LocalData(table))
        assert _decisions(got).equals(_decisions(ref))
