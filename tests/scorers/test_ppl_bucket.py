"""PplBucket: CCNet head / middle / tail buckets from per-group perplexity percentiles."""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tamis.pipeline.data import LocalData
from tamis.pipeline.rules import compile_rules, first_failure
from tamis.scorers.perplexity.bucket import PplBucket


class DriverGuard(LocalData):
    """A `Data` that refuses to hand the whole dataset to the driver."""

    def map_batches(self, fn):
        return DriverGuard(fn(self.table))

    def to_arrow(self):
        raise AssertionError("fit pulled every row to the driver")

    def iter_batches(self, batch_size=65536):
        raise AssertionError("fit iterated every row on the driver")


def two_domains(n=100) -> pa.Table:
    rng = np.random.default_rng(0)
    a = rng.permutation(np.arange(1, n + 1, dtype=float))       # domain a: 1..100
    b = rng.permutation(np.arange(1, n + 1, dtype=float) + 1000)  # domain b: 1001..1100
    return pa.table({"id": [f"d{i}" for i in range(2 * n)], "ppl": np.r_[a, b],
                     "domain": ["a"] * n + ["b"] * n})


def test_per_domain_percentile_buckets():
    t = two_domains()
    stage = PplBucket().fit(DriverGuard(t))
    cut = {r["domain"]: r for r in stage.cutoffs_.to_pylist()}
    for dom, offset in (("a", 0), ("b", 1000)):
        vals = np.arange(1, 101) + offset
        assert cut[dom]["head_cutoff"] == pytest.approx(np.percentile(vals, 30))
        assert cut[dom]["tail_cutoff"] == pytest.approx(np.percentile(vals, 60))
        assert cut[dom]["n"] == 100
    out = stage.transform(t)["ppl_bucket"]
    assert out.type == pa.string() and len(out) == t.num_rows
    df = pl.DataFrame({"domain": t["domain"].to_pylist(), "b": out.to_pylist()})
    counts = df.group_by("domain", "b").len().sort("domain", "b")
    assert counts.filter(pl.col("domain") == "b")["len"].to_list() == [30, 30, 40]  # head, middle, tail
    ppl = np.asarray(t["ppl"])
    buckets = np.asarray(out.to_pylist())
    assert ppl[(buckets == "head") & (ppl < 1000)].max() < ppl[(buckets == "middle") & (ppl < 1000)].min()


def test_global_cutoffs_when_by_is_none():
    t = two_domains()
    stage = PplBucket(by=None).fit(DriverGuard(t))
    out = np.asarray(stage.transform(t.drop_columns(["domain"]))["ppl_bucket"].to_pylist())
    assert (out[:100] != "tail").all() and (out[100:] != "head").all()
    assert list(stage.report()["cutoffs"]) == ["all"]


def test_missing_scores_unseen_groups_and_null_domain():
    t = pa.table({"id": list("abcdefg"), "ppl": [1.0, 2.0, None, float("nan"), 5.0, 6.0, 7.0],
                  "domain": ["x", "x", "x", "x", None, None, None]})
    stage = PplBucket().fit(LocalData(t))
    out = stage.transform(t)["ppl_bucket"].to_pylist()
    assert out[2] is None and out[3] is None  # null / NaN score
    assert out[4] == "head" and out[6] == "tail"  # null domain is a group of its own
    unseen = pa.table({"ppl": [1.0], "domain": ["never-seen"]})
    assert stage.transform(unseen)["ppl_bucket"].to_pylist() == [None]
    assert stage.transform(t.slice(0, 0))["ppl_bucket"].to_pylist() == []


def test_default_rules_drop_tail_and_unscored():
    t = two_domains()
    t = t.set_column(1, "ppl", pa.array([None] + t["ppl"].to_pylist()[1:], pa.float64()))
    stage = PplBucket().fit(LocalData(t))
    df = pl.DataFrame({"ppl_bucket": stage.transform(t)["ppl_bucket"].to_pylist()})
    reasons = first_failure(df, compile_rules(stage.default_rules())).to_list()
    expect = {None: "ppl_missing", "tail": "ppl_tail", "head": None, "middle": None}
    assert reasons == [expect[b] for b in df["ppl_bucket"].to_list()]
    assert reasons[0] == "ppl_missing" and reasons.count("ppl_tail") == 80


def test_real_corpus_kenlm_buckets_per_domain(corpus_dir, tmp_path):
    """KenLM ppl of fortunes and Devil's Dictionary entries, bucketed per domain: 30/30/40."""
    pytest.importorskip("kenlm")
    from tamis.scorers.perplexity.kenlm import KenLM, normalize_expr, write_arpa

    docs = pl.concat([pl.read_parquet(corpus_dir / f"{n}.parquet").head(300).select("id", "text", "domain")
                      for n in ("fortunes", "dict-devil")])
    lines = docs.select(normalize_expr(pl.col("text").str.split("\n").explode()))["text"].to_list()
    write_arpa([l for l in lines[::2] if l], tmp_path / "lm.arpa")
    table = docs.to_arrow()
    scored = KenLM(model=str(tmp_path / "lm.arpa")).score(table)
    table = table.append_column("kenlm_ppl", scored["kenlm_ppl"])
    stage = PplBucket(column="kenlm_ppl").fit(LocalData(table.select(["id", "kenlm_ppl", "domain"])))
    assert stage.required_columns() == ("kenlm_ppl", "domain")
    out = pl.DataFrame({"domain": table["domain"].to_pylist(),
                        "b": stage.transform(table)["ppl_bucket"].to_pylist()})
    for dom in ("quotes", "literature"):
        share = out.filter(pl.col("domain") == dom)["b"].value_counts(normalize=True)
        share = dict(zip(share["b"], share["proportion"]))
        assert share["head"] == pytest.approx(0.3, abs=0.02) and share["tail"] == pytest.approx(0.4, abs=0.02)
    rep = stage.report()["cutoffs"]
    assert set(rep) == {"quotes", "literature"} and all(v["head"] < v["tail"] for v in rep.values())


def test_transform_before_fit_and_validate():
    with pytest.raises(RuntimeError, match="not fitted"):
        PplBucket().transform(two_domains())
    for kw, word in [({"head": 70}, "head"), ({"column": ""}, "column"), ({"by": 3}, "by")]:
        with pytest.raises(ValueError, match=word):
            PplBucket(**kw).validate()
    assert PplBucket(by=None).required_columns() == ("ppl",)
