"""Mixture (`use: mixture`): token budget, repeat cap, hashing, report, keep rule."""
import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tamis.mixers.mixture import Mixture, allocate, load_mixture
from tamis.pipeline.data import LocalData
from tamis.pipeline.rules import compile_rules, first_failure

FILES = ["sotu", "python-stdlib", "licenses-copyright", "reuters-tm", "fortunes", "dict-wn"]


@pytest.fixture(scope="module")
def table(corpus_dir):
    return pl.concat([pl.scan_parquet(corpus_dir / f"{f}.parquet").select("id", "text", "domain").head(150).collect()
                      for f in FILES]).to_arrow()


@pytest.fixture(scope="module")
def fitted(table):
    mix = {"speeches": 0.4, "code": 0.3, "news": 0.2, "quotes": 0.1}
    return Mixture(mixture=mix, tokens=3_000_000, max_epochs=4).fit(LocalData(table))


def used(table, repeats) -> pl.DataFrame:
    df = pl.from_arrow(table.select(["domain", "text"])).with_columns(pl.Series("r", repeats))
    return df.group_by("domain").agg((pl.col("r") * pl.col("text").str.len_bytes()).sum().alias("tokens"),
                                     pl.col("r").sum().alias("docs"), pl.col("r").max().alias("max_r"))


def test_budget_shares_and_cap(table, fitted):
    rep = fitted.report()
    assert rep["tokens"] == pytest.approx(3_000_000, rel=0.02)
    news = rep["domains"]["news"]                 # 80 KB of Reuters: 4 epochs max, then capped
    assert news["capped"] and news["epochs"] == pytest.approx(4.0, abs=0.05) and news["max_repeats"] == 4
    assert news["docs"] == 4 * news["available_docs"]
    # the capped excess went to the others, in proportion to their weights
    s, c = rep["domains"]["speeches"]["tokens"], rep["domains"]["code"]["tokens"]
    assert s / c == pytest.approx(0.4 / 0.3, rel=0.05)
    assert rep["domains"]["legal"]["tokens"] == 0 and rep["domains"]["legal"]["weight"] == 0
    assert all(r["max_repeats"] <= 4 for r in rep["domains"].values())


def test_transform_matches_report_and_ignores_batching(table, fitted):
    r = fitted.transform(table)["mixture_repeats"].to_numpy()
    got = {row["domain"]: row for row in used(table, r).to_dicts()}
    for d, row in fitted.report()["domains"].items():
        assert got[d]["tokens"] == row["tokens"] and got[d]["docs"] == row["docs"], d
    pieces = np.concatenate([fitted.transform(b)["mixture_repeats"].to_numpy()
                             for b in LocalData(table.take(np.arange(table.num_rows)[::-1])).iter_batches(97)])
    np.testing.assert_array_equal(pieces[::-1], r)
    empty = fitted.transform(table.slice(0, 0))["mixture_repeats"]
    assert len(empty) == 0 and empty.type == pa.int64()


def test_keep_rule_rejects_unused_rows(table, fitted):
    r = fitted.transform(table)["mixture_repeats"]
    df = pl.from_arrow(table.select(["id"]).append_column("mixture_repeats", r))
    reasons = first_failure(df, compile_rules(Mixture.default_keep))
    assert (reasons == "not_in_mixture").sum() == int((r.to_numpy() == 0).sum()) > 0
    assert reasons.filter(pl.Series(r.to_numpy() > 0)).is_null().all()


def test_seed_changes_selection_not_budget(table):
    mix = {"speeches": 0.5, "code": 0.5}
    a = Mixture(mixture=mix, tokens=1_000_000, seed=1).fit(LocalData(table))
    b = Mixture(mixture=mix, tokens=1_000_000, seed=2).fit(LocalData(table))
    ra, rb = (s.transform(table)["mixture_repeats"].to_numpy() for s in (a, b))
    assert not np.array_equal(ra, rb)
    for s in (a, b):   # speeches documents are ~60 KB: within about half a document per domain
        assert s.report()["tokens"] == pytest.approx(1_000_000, rel=0.06)


def test_shrink_keeps_proportions(table):
    mix = {"speeches": 0.5, "news": 0.5}
    s = Mixture(mixture=mix, tokens=5_000_000, max_epochs=2, on_cap="shrink").fit(LocalData(table))
    rep = s.report()["domains"]
    assert rep["news"]["capped"]
    assert rep["speeches"]["tokens"] == pytest.approx(rep["news"]["tokens"], rel=0.1)


def test_unknown_and_missing_domains(table):
    t = table.append_column("other", pa.array(["x"] * table.num_rows))
    s = Mixture(mixture={"speeches": 1.0, "poetry": 1.0}, tokens=500_000).fit(LocalData(t))
    rep = s.report()
    assert rep["domains"]["poetry"]["missing"] and rep["domains"]["poetry"]["tokens"] == 0
    assert rep["tokens"] == pytest.approx(500_000, rel=0.05)       # poetry's share went to speeches
    nulls = pa.table({"id": ["z1", "z2"], "text": ["a b", "c"], "domain": pa.array([None, "nope"], pa.string())})
    assert s.transform(nulls)["mixture_repeats"].to_pylist() == [0, 0]
    by_other = Mixture(mixture={"x": 1}, tokens=10, domain_column="other")
    assert by_other.required_columns() == ("text", "other")


def test_mixture_files_and_validation(tmp_path):
    fit_json = tmp_path / "fit.json"
    fit_json.write_text(json.dumps({"spearman": 0.9, "mixture": {"a": 0.25, "b": 0.75}}))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"a": 1, "b": 3}))
    assert load_mixture(str(fit_json)) == {"a": 0.25, "b": 0.75}
    assert load_mixture(plain) == {"a": 1.0, "b": 3.0}
    for bad, msg in (({"a": -1}, "weight of 'a'"), ({}, "non-empty"), (str(tmp_path / "no.json"), "no such file")):
        with pytest.raises(ValueError, match=msg):
            load_mixture(bad)
    for kw, name in (({"tokens": 0}, "tokens"), ({"max_epochs": 0}, "max_epochs"), ({"on_cap": "x"}, "on_cap")):
        with pytest.raises(ValueError, match=name):
            Mixture(**{"mixture": {"a": 1}, "tokens": 10, **kw}).validate()
    with pytest.raises(RuntimeError, match="not fitted"):
        Mixture(mixture={"a": 1}, tokens=10).transform(pa.table({"id": ["1"], "text": ["x"], "domain": ["a"]}))


def test_allocate_water_fills():
    t = allocate({"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 10, "b": 1000, "c": 1000}, 1000, max_epochs=4)
    assert t["a"] == pytest.approx(40)
    assert t["b"] / t["c"] == pytest.approx(1.5) and sum(t.values()) == pytest.approx(1000)
    full = allocate({"a": 1, "b": 1}, {"a": 1, "b": 1}, 1000, max_epochs=4)
    assert full == {"a": 4.0, "b": 4.0}                    # not enough data anywhere: every domain capped


def test_shipped_job_loads():
    from pathlib import Path

    from tamis.pipeline.spec import load_job

    job = load_job(Path(__file__).resolve().parents[2] / "jobs" / "regmix.yaml")
    stage = job.stages[-1]
    assert stage.name == "mixture" and stage.rules == {"not_in_mixture": "mixture_repeats > 0"}
    assert stage.stage.tokens == 6_000_000 and stage.stage.max_epochs == 4


def test_fit_through_ray_data_matches_local(table, fitted, ray_session):
    """The stage's fit only uses `Data` operations: on Ray Data it learns exactly what it learns locally."""
    import ray

    from tamis.pipeline.runner.ray_data import RayData

    data = RayData(ray.data.from_arrow(table))
    on_ray = Mixture(**fitted.get_params()).fit(data)
    assert on_ray.report() == fitted.report()
    np.testing.assert_array_equal(on_ray.transform(table)["mixture_repeats"].to_numpy(),
                                  fitted.transform(table)["mixture_repeats"].to_numpy())
