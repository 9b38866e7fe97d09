"""`tamis.mixers.quality_weights`: the Meta-rater weight learner on shared-corpus text."""
from __future__ import annotations

import math
import pickle
from collections import Counter

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tamis.mixers import weight_search as ws
from tamis.mixers.quality_weights import QualityWeights, parse_signals, scaled_exprs
from tamis.pipeline.data import LocalData


def unigram_proxy(kind, train_texts, valid, *, token_budget, seed=0, **params):
    """A real (tiny) proxy LM: add-one byte unigram trained on the first `token_budget` bytes."""
    train = np.frombuffer("\n".join(train_texts).encode()[:token_budget], dtype=np.uint8)
    p = (np.bincount(train, minlength=256) + 1.0) / (train.size + 256.0)
    out = {}
    for name, texts in valid.items():
        v = np.frombuffer("\n".join(texts).encode(), dtype=np.uint8)
        out[name] = float(-np.log(p[v]).mean())
    return out


def plain_map(fn, items):
    return list(map(fn, items))


def chunks(corpus_dir, name: str, n: int, size: int = 800) -> pl.DataFrame:
    df = pl.read_parquet(corpus_dir / f"{name}.parquet", columns=["id", "text", "domain"])
    parts = pl.concat([df.select(pl.col("id") + f"#{i}", pl.col("text").str.slice(i * size, size), "domain")
                       for i in range(8)])
    return parts.filter(pl.col("text").str.len_chars() >= size // 2).sort("id").head(n)


@pytest.fixture(scope="module")
def table(corpus_dir):
    """Literature (target-like), tech docs and dictionary chunks; a held-out literature target.

    `lit` marks literature with noise (informative), `n1`/`n2` are noise, and `dict_like` is
    high for dictionary entries (lower is better for this target).
    """
    lit = chunks(corpus_dir, "shakespeare-milton", 200)
    df = pl.concat([lit.head(140), chunks(corpus_dir, "linux-doc-6.1", 140),
                    chunks(corpus_dir, "dict-gcide", 140, 300)])
    rng = np.random.default_rng(0)
    n = df.height
    is_lit = (df["domain"] == "literature").to_numpy()
    df = df.with_columns(
        pl.Series("lit", is_lit * 1.0 + rng.normal(0, 0.3, n)),
        pl.Series("n1", rng.random(n)),
        pl.Series("n2", rng.random(n)),
        pl.Series("dict_like", (df["domain"] == "dictionary").to_numpy() * 1.0 + rng.normal(0, 0.5, n)),
        pl.lit("pool").alias("split"))
    target = lit.tail(60).with_columns(pl.lit(1.0).alias("lit"), pl.lit(0.5).alias("n1"),
                                       pl.lit(0.5).alias("n2"), pl.lit(0.0).alias("dict_like"),
                                       pl.lit("target").alias("split"))
    return pl.concat([df, target]).to_arrow()


def test_parse_signals_forms():
    assert parse_signals(["a", "b:-"]) == {"a": 1, "b": -1}
    assert parse_signals({"a": "higher", "b": "lower", "c": -1, "d": "+"}) == {"a": 1, "b": -1, "c": -1, "d": 1}
    with pytest.raises(ValueError, match="signals"):
        parse_signals({"a": "up"})


def test_scaled_exprs_minmax_sign_null_constant():
    df = pl.DataFrame({"a": [0.0, 5.0, 10.0, None], "b": [1.0, 2.0, 3.0, float("nan")], "c": [2.0] * 4})
    out = df.select(scaled_exprs({"a": 1, "b": -1, "c": 1}, {"a": 0, "b": 1, "c": 2}, {"a": 10, "b": 3, "c": 2}))
    assert out["a"].to_list() == [0.0, 2.5, 5.0, 0.0]
    assert out["b"].to_list() == [5.0, 2.5, 0.0, 0.0]
    assert out["c"].to_list() == [0.0] * 4


def test_select_top_counts_bytes_not_documents():
    sizes = np.array([100, 1, 1, 1, 1, 100, 1, 1])
    scores = np.array([9, 8, 7, 6, 5, 4, 3, 2])
    assert ws.select_top(scores, sizes, 0.15).tolist() == [0]  # 100 of 206 bytes ≥ 15%
    assert ws.select_top(-scores, sizes, 0.5).tolist() == [7, 6, 5, 4]  # smallest prefix with >= 103 bytes
    r = ws.random_top(np.ones(100), 0.15, seed=3)
    assert len(r) == 15 and len(set(r.tolist())) == 15


def test_fit_learns_the_informative_signal(table):
    calls = []

    def runner(fn, items, *, num_cpus=1.0, num_gpus=0.0, desc=None):
        calls.append((len(items), num_cpus, desc))
        return [fn(i) for i in items]

    qw = QualityWeights(signals={"lit": "+", "n1": "+", "n2": "+", "dict_like": "-"},
                        target_where="split == 'target'", n_samples=40, n_candidates=20_000, top_k=16,
                        fraction=0.15, proxy_cpus=0.5)
    pickle.dumps(qw)
    qw.fit(LocalData(table), runner=runner, train_fn=unigram_proxy)
    assert calls[0] == (40 + 4 + 3, 0.5, "ngram proxies") and calls[1][0] == 1
    w = qw.weights_
    assert set(w) == {"lit", "n1", "n2", "dict_like"} and math.isclose(sum(w.values()), 1.0)
    assert all(v >= 0 for v in w.values())
    assert w["lit"] == max(w.values()) and w["lit"] > w["n1"] + w["n2"]
    rep = qw.report()
    assert rep["best_single_signal"] == "lit"
    assert rep["loss_learned"] < rep["loss_random"]
    assert rep["loss_learned"] <= rep["loss_single"]["n1"]
    assert rep["spearman_heldout"] > 0.5
    assert rep["n_proxies"] == 40 and rep["n_train_vectors"] == 32 and rep["target_sets"] == {"target": 60}
    assert rep["signs"] == {"lit": "+", "n1": "+", "n2": "+", "dict_like": "-"}
    # `quality` = the weighted sum of the scaled signals, computed independently here.
    batch = table.take(pa.array(np.arange(0, table.num_rows, 7)))
    q = qw.transform(batch)["quality"].to_numpy()
    df = pl.from_arrow(batch)
    manual = sum(w[c] * 5 * (df[c].to_numpy() - qw.mins_[c]) / (qw.maxs_[c] - qw.mins_[c])
                 for c in ("lit", "n1", "n2"))
    manual += w["dict_like"] * 5 * (qw.maxs_["dict_like"] - df["dict_like"].to_numpy()) / (
        qw.maxs_["dict_like"] - qw.mins_["dict_like"])
    np.testing.assert_allclose(q, manual, rtol=1e-9)
    assert ((q >= 0) & (q <= 5)).all()
    lit_rows = (df["domain"] == "literature").to_numpy()
    assert q[lit_rows].mean() > q[~lit_rows].mean()
    assert qw.transform(table.slice(0, 0))["quality"].type == pa.float64()
    pickle.loads(pickle.dumps(qw))


def test_plain_map_runner_and_target_rows_excluded(table):
    seen = Counter()

    def proxy(kind, train_texts, valid, *, token_budget, seed=0):
        for t in train_texts:
            seen[t] += 1
        return unigram_proxy(kind, train_texts, valid, token_budget=token_budget)

    qw = QualityWeights(signals=["lit", "n1"], target_where="split == 'target'", n_samples=8,
                        n_candidates=1000, top_k=8, baselines=False)
    qw.fit(LocalData(table), runner=map, train_fn=proxy)
    targets = set(pl.from_arrow(table).filter(pl.col("split") == "target")["text"].to_list())
    assert seen and not (set(seen) & targets)
    assert "loss_random" not in qw.report() and qw.report()["n_proxies"] == 8


def test_real_ngram_proxy_and_null_signal(table, tmp_path):
    """The real n-gram proxy; a signal with nulls still scales and scores."""
    t = pl.from_arrow(table).with_columns(pl.when(pl.col("n2") > 0.9).then(None).otherwise(pl.col("lit")).alias("lit_nulls"))
    target_file = tmp_path / "target.parquet"
    t.filter(pl.col("split") == "target").select("id", "text").write_parquet(target_file)
    pool = t.filter(pl.col("split") == "pool").to_arrow()
    qw = QualityWeights(signals=["lit_nulls", "n1"], target_path=str(target_file), n_samples=10,
                        n_candidates=2000, top_k=8, random_repeats=1, proxy_params={"order": 3})
    qw.fit(LocalData(pool), runner=plain_map)
    rep = qw.report()
    assert rep["target_sets"] == {"target": 60} and rep["proxy"] == "ngram"
    assert rep["loss_best_single"] <= rep["loss_random"]
    assert 0 < rep["loss_learned"] < 8
    q = qw.transform(pool)["quality"]
    assert q.null_count == 0


def test_validate_and_unfitted():
    with pytest.raises(ValueError, match="signals"):
        QualityWeights(signals=[], target_where="x == 1").validate()
    with pytest.raises(ValueError, match="target"):
        QualityWeights(signals=["a"]).validate()
    with pytest.raises(ValueError, match="fraction"):
        QualityWeights(signals=["a"], target_where="x == 1", fraction=1.5).validate()
    with pytest.raises(ValueError, match="proxy"):
        QualityWeights(signals=["a"], target_where="x == 1", proxy="bert").validate()
    qw = QualityWeights(signals=["a", "b:-"], target_where="domain == 'x'", target_group="domain")
    assert qw.requires == ("text", "a", "b", "domain")
    assert qw.output_columns() == {"quality": pa.float64()}
    with pytest.raises(RuntimeError, match="not fitted"):
        qw.transform(pa.table({"a": [1.0], "b": [2.0]}))


def test_given_weights_only_scale(table):
    qw = QualityWeights(signals={"lit": "+", "dict_like": "-"}, weights={"lit": 3, "dict_like": 1})
    qw.validate()
    assert qw.requires == ("text", "lit", "dict_like")
    qw.fit(LocalData(table), runner=lambda *a, **k: pytest.fail("no proxies with given weights"))
    assert qw.weights_ == {"lit": 0.75, "dict_like": 0.25} and qw.report()["learned"] is False
    df = pl.from_arrow(table)
    q = qw.transform(table)["quality"].to_numpy()
    lit = 5 * (df["lit"].to_numpy() - df["lit"].min()) / (df["lit"].max() - df["lit"].min())
    dl = 5 * (df["dict_like"].max() - df["dict_like"].to_numpy()) / (df["dict_like"].max() - df["dict_like"].min())
    np.testing.assert_allclose(q, 0.75 * lit + 0.25 * dl)
    with pytest.raises(ValueError, match="weights"):
        QualityWeights(signals=["lit"], weights={"lit": -1}).validate()
    with pytest.raises(ValueError, match="weights"):
        QualityWeights(signals=["lit", "n1"], weights={"lit": 1}).validate()


def test_cli_learn_weights_local(table, tmp_path, capsys):
    import json

    from tamis.pipeline.cli import main

    src = tmp_path / "scored.parquet"
    pl.from_arrow(table).write_parquet(src)
    out = tmp_path / "w.json"
    assert main(["learn-weights", "--input", str(src), "--signals", "lit", "n1", "dict_like:-",
                 "--target-where", "split == 'target'", "--out", str(out), "--n-samples", "12",
                 "--n-candidates", "2000", "--top-k", "8", "--proxy-param", "order=3", "--local"]) == 0
    res = json.loads(out.read_text())
    assert res["signals"] == {"lit": "+", "n1": "+", "dict_like": "-"}
    assert math.isclose(sum(res["weights"].values()), 1.0)
    assert "regression Spearman on held-out vectors" in capsys.readouterr().out
    # the learned weights drop straight into a job's stage
    qw = QualityWeights(signals=res["signals"], weights=res["weights"])
    qw.validate()


def test_job_through_ray_runner(table, tmp_path, ray_session):
    """A job with the stage: fit on Ray Data, proxies as Ray tasks (map_tasks), `quality` on every row."""
    import json

    from tamis.pipeline.runner.job import run_job
    from tamis.pipeline.spec import load_job

    src = tmp_path / "in" / "scored.parquet"
    src.parent.mkdir()
    pl.from_arrow(table).write_parquet(src)
    job = tmp_path / "job.yaml"
    job.write_text(f"""
name: qw
inputs: [{src}]
output: {tmp_path / 'run'}
stages:
  - use: quality_weights
    params:
      signals: {{lit: "+", n1: "+", dict_like: "-"}}
      target_where: "split == 'target'"
      n_samples: 6
      n_candidates: 5000
      top_k: 8
      baselines: false
      proxy_params: {{order: 3}}
""")
    summary = run_job(load_job(job), progress=False)
    assert summary["conservation"]["holds"]
    cur = pl.concat([pl.read_parquet(f) for f in sorted((tmp_path / "run" / "curated").glob("*.parquet"))])
    assert cur.height == table.num_rows and cur["quality"].null_count() == 0
    assert cur["quality"].min() >= 0 and cur["quality"].max() <= 5
    reports = [json.loads(p.read_text()) for p in (tmp_path / "run" / "reports").rglob("*.json")]
    text = json.dumps(reports)
    assert "loss_learned" in text and "spearman_heldout" in text and '"n_proxies": 6' in text
