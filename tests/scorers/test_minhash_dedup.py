"""MinHashDedup through `LocalData` on shared-corpus text with planted, measured near-duplicates."""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tamis.pipeline.data import LocalData
from tamis.scorers.dedup.lsh import optimal_params
from tamis.pipeline.text.normalize import normalize_expr, normalize_text
from tamis.scorers.dedup.minhash import MinHashDedup

SOURCES = ["linux-doc-6.1", "postgresql-doc-15", "git-doc", "licenses-copyright", "dict-foldoc", "debian-manuals"]


def _words(texts: list[str]) -> list[list[str]]:
    return [t.split(" ") if t else [] for t in normalize_text(pa.array(texts)).to_pylist()]


def _grams(words: list[str], n: int = 5) -> set:
    """Word 5-grams as Python string tuples: the reference, independent of the stage's hashing."""
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _edit(text: str, n_edits: int, rng) -> str:
    """Substitute or delete `n_edits` words at random positions."""
    words = text.split()
    for i in sorted(rng.choice(len(words), size=min(n_edits, len(words) - 1), replace=False), reverse=True):
        if rng.random() < 0.5:
            del words[i]
        else:
            words[i] = f"qz{rng.integers(1_000_000)}"
    return " ".join(words)


def _edits_for(text: str, target: float) -> int:
    shingles = max(len(text.split()) - 4, 1)
    return max(1, int(round(shingles * (1 - target) / (5 * (1 + target)))))


@pytest.fixture(scope="module")
def planted(corpus_dir):
    """~1,100 docs: originals, edited copies (J measured), exact / whitespace / case copies, background."""
    rng = np.random.default_rng(42)
    df = pl.concat([pl.read_parquet(corpus_dir / f"{s}.parquet", columns=["id", "text"]) for s in SOURCES])
    df = df.filter(pl.col("text").str.len_bytes().is_between(600, 8000)).sample(n=900, seed=7, shuffle=True)
    df = df.with_columns(normalize_expr("text").alias("norm"))
    df = df.with_columns(pl.col("norm").str.split(" ").list.len().alias("w"))
    df = df.filter((pl.col("w") >= 80) & (pl.col("w") <= 1200)).unique("norm", keep="first", maintain_order=True)
    df = df.head(700)
    ids, texts = df["id"].to_list(), df["text"].to_list()
    rows, truth = [], []   # truth: (copy id, original id, kind, reference Jaccard)
    for i, (oid, text) in enumerate(zip(ids, texts)):
        rows.append((oid, text))
        kind = ["near"] * 5 + ["far"] * 2 + ["exact", "space", "case"] + ["none"] * 3
        kind = kind[i % len(kind)]
        if kind == "none":
            continue
        if kind == "near":
            copy = _edit(text, _edits_for(text, rng.uniform(0.80, 0.97)), rng)
        elif kind == "far":
            copy = _edit(text, _edits_for(text, rng.uniform(0.25, 0.55)), rng)
        elif kind == "exact":
            copy = text
        elif kind == "space":
            copy = "\n\n ".join(text.split(" ")) + "   \t"
        else:
            copy = text.upper()
        cid = f"copy-{i:04d}"
        rows.append((cid, copy))
        truth.append((cid, oid, kind, text, copy))
    words = _words([t[3] for t in truth] + [t[4] for t in truth])
    grams = [_grams(w) for w in words]
    n = len(truth)
    truth = [(c, o, k, len(grams[i] & grams[n + i]) / len(grams[i] | grams[n + i]))
             for i, (c, o, k, _, _) in enumerate(truth)]
    table = pa.table({"id": [r[0] for r in rows], "text": pa.array([r[1] for r in rows], pa.large_string())})
    return table, pl.DataFrame(truth, schema=["copy", "orig", "kind", "jac"], orient="row")


def run(stage: MinHashDedup, table: pa.Table, data=None) -> pa.Table:
    """Fit, join the decisions by id as the runner does, transform; the batch plus output columns."""
    stage.fit(data if data is not None else LocalData(table))
    dec = stage.decisions_
    batch = table
    if dec.num_rows:
        pos = pc.index_in(table["id"], value_set=dec["id"])
        for c in dec.column_names:
            if c != "id":
                batch = batch.append_column(c, dec[c].take(pos))
    out = stage.transform(batch)
    assert set(out) == set(stage.output_columns())
    for c, t in stage.output_columns().items():
        assert out[c].type == t and len(out[c]) == table.num_rows
    return table.select(["id", "text"]).append_column("duplicate_of", out["duplicate_of"]) \
        .append_column("minhash_jaccard", out["minhash_jaccard"]) \
        .append_column("minhash_cluster_size", out["minhash_cluster_size"]) \
        .append_column("minhash_duplicate", out["minhash_duplicate"])


def _kept_of(result: pa.Table) -> dict[str, str]:
    return dict(zip(result["id"].to_pylist(),
                    [d or i for i, d in zip(result["id"].to_pylist(), result["duplicate_of"].to_pylist())]))


@pytest.fixture(scope="module")
def default_run(planted):
    table, _ = planted
    stage = MinHashDedup()
    return stage, run(stage, table)


def test_recall_at_jaccard_0_8_and_precision_with_verification(planted, default_run):
    table, truth = planted
    _, res = default_run
    kept = _kept_of(res)
    near = truth.filter(pl.col("jac") >= 0.8)
    assert near.height >= 250
    found = [kept[c] == kept[o] for c, o in near.select("copy", "orig").iter_rows()]
    recall = float(np.mean(found))
    assert recall >= 0.95, recall
    text = dict(zip(table["id"].to_pylist(), table["text"].to_pylist()))
    removed = res.filter(res["minhash_duplicate"])
    assert removed.num_rows >= near.height
    words = _words([text[i] for i in removed["id"].to_pylist()] + [text[k] for k in removed["duplicate_of"].to_pylist()])
    grams = [_grams(w) for w in words]
    n = removed.num_rows
    true_j = [len(grams[i] & grams[n + i]) / len(grams[i] | grams[n + i]) for i in range(n)]
    precision = float(np.mean(np.array(true_j) >= 0.8))
    assert precision >= 0.99, precision
    # the reported Jaccard of a verified pair is the true one
    direct = [abs(r - t) < 1e-9 for r, t in zip(removed["minhash_jaccard"].to_pylist(), true_j) if t >= 0.8]
    assert np.mean(direct) >= 0.99


def test_exact_whitespace_and_case_copies_always_caught(planted, default_run):
    _, truth = planted
    _, res = default_run
    kept = _kept_of(res)
    same = truth.filter(pl.col("kind").is_in(["exact", "space", "case"]))
    assert same.height >= 150 and (same["jac"] == 1.0).all()
    assert all(kept[c] == kept[o] for c, o in same.select("copy", "orig").iter_rows())
    jac = dict(zip(res["id"].to_pylist(), res["minhash_jaccard"].to_pylist()))
    assert all({jac[c], jac[o]} == {None, 1.0} for c, o in same.select("copy", "orig").iter_rows())


def test_dissimilar_copies_are_kept(planted, default_run):
    _, truth = planted
    _, res = default_run
    kept = _kept_of(res)
    far = truth.filter(pl.col("jac") < 0.6)
    assert far.height >= 80
    assert not any(kept[c] == kept[o] for c, o in far.select("copy", "orig").iter_rows())


def test_report_histogram_removed_rows_and_examples(default_run):
    stage, res = default_run
    rep = stage.report()
    removed = int(pc.sum(res["minhash_duplicate"]).as_py())
    assert rep["rows_removed"] == removed
    hist = rep["component_size_histogram"]
    assert sum((size - 1) * n for size, n in hist.items()) == removed
    assert rep["clusters"] == sum(hist.values())
    assert (rep["bands"], rep["rows"]) == (14, 8) and rep["lsh_threshold_50pct"] == pytest.approx(0.719, abs=1e-3)
    assert 1 <= len(rep["example_pairs"]) <= 10
    ids = set(res["id"].to_pylist())
    for ex in rep["example_pairs"]:
        assert ex["id"] in ids and ex["duplicate_of"] in ids and 0.8 <= ex["jaccard"] <= 1.0
    sizes = dict(zip(res["id"].to_pylist(), res["minhash_cluster_size"].to_pylist()))
    for i, d in zip(res["id"].to_pylist(), res["duplicate_of"].to_pylist()):
        if d is not None:
            assert sizes[i] == sizes[d] >= 2


class BatchedData(LocalData):
    """LocalData that calls map functions on small batches, like a cluster would."""

    def __init__(self, table: pa.Table, batch_rows: int = 97):
        super().__init__(table)
        self.batch_rows = batch_rows
        self.to_arrow_columns: list[list[str]] = []

    def map_batches(self, fn):
        outs = [fn(self.table.slice(i, self.batch_rows)) for i in range(0, max(self.table.num_rows, 1),
                                                                          self.batch_rows)]
        return BatchedData(pa.concat_tables(outs, promote_options="permissive"), self.batch_rows)._spy(self)

    def groupby_map(self, keys, fn):
        assert "text" not in self.table.column_names      # band keys and shingle hashes, never text
        return BatchedData(super().groupby_map(keys, fn).table, self.batch_rows)._spy(self)

    def to_arrow(self):
        self.to_arrow_columns.append(self.table.column_names)
        return self.table

    def _spy(self, parent: "BatchedData") -> "BatchedData":
        self.to_arrow_columns = parent.to_arrow_columns
        return self


def test_batching_does_not_change_decisions_and_text_stays_in_batches(planted, default_run):
    table, _ = planted
    _, res = default_run
    data = BatchedData(table)
    res2 = run(MinHashDedup(), table, data)
    assert res2["duplicate_of"].to_pylist() == res["duplicate_of"].to_pylist()
    assert res2["minhash_jaccard"].to_pylist() == res["minhash_jaccard"].to_pylist()
    assert data.to_arrow_columns and all("text" not in cols for cols in data.to_arrow_columns)


def test_large_batches_are_shingled_in_slices_with_the_same_result(planted, default_run, monkeypatch):
    import tamis.scorers.dedup.minhash as mod
    table, _ = planted
    _, res = default_run
    monkeypatch.setattr(mod, "SLICE_BYTES", 50_000)
    res2 = run(MinHashDedup(), table)
    assert res2["duplicate_of"].to_pylist() == res["duplicate_of"].to_pylist()
    assert res2["minhash_jaccard"].to_pylist() == res["minhash_jaccard"].to_pylist()


def _cluster_table():
    base = ("the committee shall publish its findings in a report that is made available to every member "
            "of the public together with the minutes of each meeting and the full list of witnesses heard")
    texts = {"d3": base, "d1": base.upper(), "d2": base + " and annexes", "d9": "an unrelated short text"}
    return pa.table({"id": list(texts), "text": pa.array(list(texts.values()), pa.large_string()),
                     "score": [0.5, 0.1, 0.9, 1.0]})


@pytest.mark.parametrize("keep,expected", [("lowest_id", "d1"), ("longest", "d2"), ("max:score", "d2")])
def test_keep_rules_choose_the_kept_document(keep, expected):
    res = run(MinHashDedup(keep=keep), _cluster_table())
    kept = _kept_of(res)
    assert {kept["d1"], kept["d2"], kept["d3"]} == {expected}
    assert kept["d9"] == "d9"
    dup = dict(zip(res["id"].to_pylist(), res["duplicate_of"].to_pylist()))
    assert dup[expected] is None and sorted(i for i, d in dup.items() if d) == sorted({"d1", "d2", "d3"} - {expected})


def test_required_columns_follow_keep_rule():
    assert MinHashDedup().required_columns() == ("text",)
    assert MinHashDedup(keep="max:quality").required_columns() == ("text", "quality")


def test_without_verification_reports_minhash_estimates(planted):
    table, truth = planted
    sub = truth.filter(pl.col("kind") == "near").head(60)
    keep_ids = pa.array(sub["copy"].to_list() + sub["orig"].to_list())
    small = table.filter(pc.is_in(table["id"], value_set=keep_ids))
    stage = MinHashDedup(verify=False)
    res = run(stage, small)
    kept = _kept_of(res)
    jac = dict(zip(res["id"].to_pylist(), res["minhash_jaccard"].to_pylist()))
    errs = [(jac[c] if jac[c] is not None else jac[o]) - j
            for c, o, j in sub.select("copy", "orig", "jac").iter_rows() if kept[c] == kept[o]]
    assert len(errs) >= 50
    assert abs(np.mean(errs)) < 0.02 and np.std(errs) < 0.08     # estimate of 112 permutations
    assert stage.report()["jaccard_cutoff"] is None


def test_threshold_picks_bands_and_rows():
    stage = MinHashDedup(threshold=0.7)
    assert stage.lsh_params() == optimal_params(0.7, 112) == (12, 9)
    assert stage.jaccard_cutoff() == 0.7
    assert MinHashDedup(threshold=0.7, min_jaccard=0.9).jaccard_cutoff() == 0.9
    res = run(stage, _cluster_table())
    assert (stage.report()["bands"], stage.report()["rows"]) == (12, 9)
    assert int(pc.sum(res["minhash_duplicate"]).as_py()) == 2


@pytest.mark.parametrize("params,name", [({"ngram": 0}, "ngram"), ({"bands": 2.5}, "bands"),
                                         ({"rows": -1}, "rows"), ({"threshold": 1.0}, "threshold"), ({"threshold": "high"}, "threshold"),
                                         ({"min_jaccard": 1.5}, "min_jaccard"), ({"keep": "newest"}, "keep"),
                                         ({"verify": "yes"}, "verify")])
def test_validate_names_the_bad_parameter(params, name):
    with pytest.raises(ValueError, match=name):
        MinHashDedup(**params).validate()


def test_params_round_trip():
    stage = MinHashDedup(bands=20, rows=5, keep="longest")
    assert MinHashDedup(**stage.get_params()).get_params() == stage.get_params()


def test_no_duplicates_empty_texts_and_empty_data():
    t = pa.table({"id": ["a", "b", "c", "d"],
                  "text": pa.array(["", "", "one two three four five six", "seven eight nine ten"],
                                   pa.large_string())})
    stage = MinHashDedup()
    res = run(stage, t)
    assert stage.decisions_.num_rows == 0
    assert res["duplicate_of"].null_count == 4 and res["minhash_cluster_size"].to_pylist() == [1, 1, 1, 1]
    assert stage.report()["rows_removed"] == 0
    empty = t.slice(0, 0)
    res = run(MinHashDedup(), empty)
    assert res.num_rows == 0


def test_transform_before_fit_raises():
    with pytest.raises(RuntimeError, match="fit"):
        MinHashDedup().transform(pa.table({"id": ["a"], "text": ["x"]}))
