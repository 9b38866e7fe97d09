"""`tamis.scorers.meta_rater.train`: a fast rater learns a known property of the shared corpus and generalises."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from tamis.scorers.meta_rater.train import FastRater, evaluate, is_fast_rater, split_ids, train_rater

SMALL = dict(n_features=2**12, num_rounds=100, learning_rate=0.2, min_child_samples=5, n_jobs=1,
             max_chars=2000, early_stopping=10)


def docs(corpus_dir, name: str, n: int, size: int = 2000) -> pl.DataFrame:
    """First `n` pieces of up to `size` characters (long books are cut into several pieces)."""
    df = pl.read_parquet(corpus_dir / f"{name}.parquet", columns=["id", "text", "domain"])
    parts = pl.concat([df.select(pl.col("id") + f"#{i}", pl.col("text").str.slice(i * size, size), "domain")
                       for i in range(10)])
    return parts.filter(pl.col("text").str.len_chars() >= 200).sort("id").head(n)


@pytest.fixture(scope="module")
def labelled(corpus_dir):
    """A 0–5 'technicality' label known from the domain: tech docs 5, speeches 3, literature 0."""
    parts = [docs(corpus_dir, "linux-doc-6.1", 70), docs(corpus_dir, "postgresql-doc-15", 70),
             docs(corpus_dir, "sotu", 70), docs(corpus_dir, "shakespeare-milton", 70),
             docs(corpus_dir, "janeausten", 70)]
    df = pl.concat(parts)
    score = {"tech-docs": 5.0, "speeches": 3.0, "literature": 0.0}
    return df.with_columns(pl.col("domain").replace_strict(score).alias("score"))


def test_held_out_documents(labelled):
    rater, m = train_rater(labelled["text"].to_list(), labelled["score"].to_list(), labelled["id"].to_list(),
                           test_fraction=0.25, **SMALL)
    t = m["test"]
    assert 60 <= t["n"] <= 110
    assert t["spearman"] > 0.8 and t["accuracy"] > 0.8
    assert t["mae"] < 0.5 * m["baseline_mae"]  # far better than predicting the mean
    counts = labelled["score"].value_counts()
    assert m["labels"] == labelled.height
    assert m["label_counts"] == {f"{s:.1f}": n for s, n in counts.iter_rows()}
    assert rater.n_rounds_ >= 1


def test_generalises_to_unseen_sources_and_round_trips(labelled, corpus_dir, tmp_path):
    """Trained on linux docs, speeches and Shakespeare only; scored on git docs vs Jane Austen."""
    seen = labelled.filter(pl.col("id").str.contains("^(linux|sotu|shakespeare)"))
    assert set(seen["domain"]) == {"tech-docs", "speeches", "literature"}
    rater = FastRater(objective="multiclass", **SMALL).fit(seen["text"].to_list(), seen["score"].to_list())
    tech = docs(corpus_dir, "git-doc", 50)["text"].to_list()
    lit = labelled.filter(pl.col("id").str.starts_with("janeausten"))["text"].to_list()
    p_tech, p_lit = rater.predict(tech), rater.predict(lit)
    assert p_tech.mean() - p_lit.mean() > 2.0
    auc = (p_tech[:, None] > p_lit[None, :]).mean()
    assert auc > 0.9
    assert ((p_tech >= 0) & (p_tech <= 5)).all()
    # multiclass gives the expected score sum_k p(k)·k
    proba = rater.booster_.predict(rater.featurize(tech[:5]))
    np.testing.assert_allclose(rater.predict(tech[:5]), proba @ np.array([0.0, 3.0, 5.0]))
    folder = rater.save(tmp_path / "r", extra={"metrics": {"x": 1}})
    assert is_fast_rater(folder) and not is_fast_rater(tmp_path)
    assert json.loads((folder / "rater.json").read_text())["classes"] == [0.0, 3.0, 5.0]
    again = FastRater.load(folder)
    np.testing.assert_allclose(again.predict(tech), p_tech)
    assert again.predict([]).shape == (0,)


def test_embed_features(labelled):
    """The `embed` stage's vectors as features (its fast hashed backend here).

    Weaker than n-grams on this task (random projections suit trees less), yet clearly learned:
    a rater that learned nothing would sit near Spearman 0 on held-out documents.
    """
    rater, m = train_rater(labelled["text"].to_list(), labelled["score"].to_list(), labelled["id"].to_list(),
                           features="embed", embed={"backend": "hashed", "dim": 256, "ngram_range": (1, 1)},
                           **SMALL)
    assert m["test"]["spearman"] > 0.6
    assert rater.featurize(["some text", ""]).shape == (2, 256)


def test_split_is_by_id_and_metrics():
    ids = [f"doc{i}" for i in range(1000)]
    a, b = split_ids(ids, 0.2), split_ids(list(reversed(ids)), 0.2)
    assert 150 < a.sum() < 250 and (a == b[::-1]).all()
    m = evaluate(np.array([0, 1, 2, 5.0]), np.array([0.2, 1.4, 2.6, 4.9]))
    assert m["accuracy"] == 0.75 and m["spearman"] == 1.0 and abs(m["mae"] - 0.325) < 1e-12


def test_validation_and_errors():
    with pytest.raises(ValueError, match="features"):
        FastRater(features="bert").validate()
    with pytest.raises(ValueError, match="objective"):
        FastRater(objective="ranking").validate()
    with pytest.raises(ValueError, match="two distinct"):
        FastRater(objective="multiclass", **SMALL).fit(["a b", "c d", "e f", "g h"], [1, 1, 1, 1])
    with pytest.raises(RuntimeError, match="not fitted"):
        FastRater().predict(["x"])


def test_cli_train_rater(labelled, tmp_path, capsys):
    from tamis.pipeline.cli import main

    path = tmp_path / "labels.parquet"
    labelled.with_columns(pl.when(pl.col("id").str.starts_with("sotu")).then(None).otherwise(pl.col("score"))
                          .alias("professionalism")).write_parquet(path)
    out = tmp_path / "rater"
    assert main(["train-rater", "--labels", str(path), "--score-column", "professionalism", "--output", str(out),
                 "--n-features", "4096", "--num-rounds", "60", "--learning-rate", "0.2", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "held-out: Spearman" in printed
    cfg = json.loads((out / "rater.json").read_text())
    assert cfg["score_column"] == "professionalism"
    assert cfg["metrics"]["rows_skipped_no_score"] == 70 and cfg["metrics"]["test"]["spearman"] > 0.8
    rater = FastRater.load(out)
    assert rater.predict(labelled["text"].head(3).to_list()).shape == (3,)
    with pytest.raises(SystemExit, match="no column 'nope'"):
        main(["train-rater", "--labels", str(path), "--score-column", "nope", "--output", str(out)])
