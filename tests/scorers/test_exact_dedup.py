"""exact_dedup and unique_ids decisions: keep rules, group sizes, and the same answer in memory and
through a Ray hash shuffle, on real text with many duplicate groups."""
import polars as pl
import pyarrow as pa
import pytest

from tamis.pipeline.data import LocalData
from tamis.scorers.dedup.exact import ExactDedup
from tamis.scorers.dedup.unique_ids import UniqueIds


@pytest.fixture(scope="module")
def copies(corpus_dir) -> pa.Table:
    """300 fortunes, each also as an upper-case copy with doubled spaces (a normalised duplicate);
    every third one a third time as is."""
    df = pl.read_parquet(corpus_dir / "fortunes.parquet").unique("text").head(300).select("id", "text")
    df = df.with_columns(pl.col("id").cast(pl.Utf8))
    upper = df.with_columns(pl.col("text").str.to_uppercase().str.replace_all(" ", "  "),
                            ("u" + pl.col("id")).alias("id"))
    third = df.gather_every(3).with_columns(("t" + pl.col("id")).alias("id"))
    return pl.concat([df, upper, third]).sample(fraction=1.0, shuffle=True, seed=1).to_arrow()


def decisions(stage, data) -> dict:
    d = stage.fit(data).decisions_
    return {r["id"]: (r["duplicate_of"], r["exact_group_size"]) for r in d.to_pylist()}


def test_one_kept_per_normalised_text(copies):
    got = decisions(ExactDedup(), LocalData(copies))
    assert len(got) == 300 + 100  # every upper copy and every third copy; one original kept per group
    assert all(not k.startswith("u") or v[0] == k[1:] or v[0] == "t" + k[1:] for k, v in got.items())
    sizes = pl.DataFrame([{"kept": v[0], "size": v[1]} for v in got.values()]).group_by("kept").agg(
        pl.len().alias("dups"), pl.col("size").first())
    assert (sizes["dups"] + 1 == sizes["size"]).all() and set(sizes["size"]) == {2, 3}
    longest = decisions(ExactDedup(keep="longest"), LocalData(copies))  # the doubled spaces win
    spaced = {r["id"] for r in copies.to_pylist() if r["id"].startswith("u") and "  " in r["text"]}
    assert len(longest) == len(got) and len(spaced) > 250 and not spaced & set(longest)


def test_same_decisions_in_memory_and_through_a_ray_shuffle(ray_session, copies, monkeypatch):
    import ray

    from tamis.pipeline.runner import ray_data as ray_runner
    monkeypatch.setattr(ray_runner, "LOCAL_GROUPBY_ROWS", 0)
    ds = ray.data.from_arrow(copies).repartition(6)
    on_ray = decisions(ExactDedup(), ray_runner.RayData(ds, rows=copies.num_rows))
    assert on_ray == decisions(ExactDedup(), LocalData(copies))
    ids = pa.table({"id": ["a", "b", "a", "c", "a", "b"], "input_file": ["f2", "f1", "f1", "f1", "f1", "f1"],
                    "input_row": [1, 2, 9, 3, 4, 5]})
    local = UniqueIds().fit(LocalData(ids)).decisions_.to_pylist()
    assert sorted((r["input_file"], r["input_row"], r["id_first_seen"]) for r in local) == [
        ("f1", 5, "f1:2"), ("f1", 9, "f1:4"), ("f2", 1, "f1:4")]
    shuffled = UniqueIds().fit(ray_runner.RayData(ray.data.from_arrow(ids), rows=6)).decisions_.to_pylist()
    assert sorted(map(str, shuffled)) == sorted(map(str, local))


def test_normalisation_skips_nfkc_only_where_it_changes_nothing(corpus_dir):
    """NFKC runs only on non-ASCII texts; the result equals NFKC on every text, on real text and on
    compatibility forms that NFKC must fold (full-width letters, ligatures, no-break spaces)."""
    from tamis.pipeline.text.normalize import normalize_expr

    df = pl.concat([pl.read_parquet(corpus_dir / f"{s}.parquet", columns=["text"]).head(2000)
                    for s in ("dict-gcide", "bible-web", "linux-doc-6.1")])
    df = pl.concat([df, pl.DataFrame({"text": ["Ｆｕｌｌ ｗｉｄｔｈ", "ﬁne ﬂow", "a\u00a0b\u2003c", "Å\u212b", "plain"]})])
    assert 100 < (df["text"].str.len_bytes() != df["text"].str.len_chars()).sum() < df.height
    everywhere = (pl.col("text").str.normalize("NFKC").str.to_lowercase().str.replace_all(r"\s+", " ")
                  .str.strip_chars())
    got = df.select(normalize_expr("text"))["text"]
    assert got.equals(df.select(everywhere)["text"])
    assert got.tail(5).to_list() == ["full width", "fine flow", "a b c", "åå", "plain"]


def test_dedup_on_another_column_names_its_columns_after_it(copies):
    """URL-level dedup (`column: url_normalized`): exact values, nulls never grouped, its own flag and
    group size so that a job can also dedup by text."""
    urls = [None if i % 10 == 0 else f"https://doc.example/{i % 50}" for i in range(copies.num_rows)]
    t = copies.append_column("url_normalized", pa.array(urls, pa.string()))
    stage = ExactDedup(column="url_normalized")
    stage.validate()
    assert stage.required_columns() == ("url_normalized",)
    assert set(stage.output_columns()) == {"duplicate_of", "url_normalized_duplicate", "url_normalized_group_size"}
    assert stage.default_rules() == {"url_normalized_duplicate": "not url_normalized_duplicate"}
    d = pl.from_arrow(stage.fit(LocalData(t)).decisions_)
    expect = pl.from_arrow(t.select(["id", "url_normalized"])).drop_nulls().sort("id").with_columns(
        pl.col("id").first().over("url_normalized").alias("kept")).filter(pl.col("id") != pl.col("kept"))
    assert dict(zip(d["id"], d["duplicate_of"])) == dict(zip(expect["id"], expect["kept"]))
    non_null = [u for u in urls if u is not None]
    assert d.height == len(non_null) - len(set(non_null)) == 585  # every non-null url beyond its first copy
    out = stage.transform(t.append_column("duplicate_of", pa.nulls(t.num_rows, pa.string())))
    assert set(out) == set(stage.output_columns())
    with pytest.raises(ValueError, match="column must be"):
        ExactDedup(column="").validate()
