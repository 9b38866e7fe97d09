"""`classifier` stage and `tamis train-classifier`: fastText (DCLM recipe) and Hugging Face heads."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tamis.pipeline.cli import main
from tamis.scorers.classifier.stage import Classifier, buckets
from tamis.scorers.classifier.train import auc, train_from_files

pytest.importorskip("fasttext")

POSITIVE = ("git-doc", "perl-doc", "debian-manuals")                   # tech-docs
NEGATIVE = ("sotu", "fortunes", "dict-jargon", "bible-web", "licenses-copyright")  # everything else


def read(corpus_dir, names, per_file=150) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(corpus_dir / f"{n}.parquet", columns=["id", "text", "domain"]).head(per_file)
                      for n in names])


@pytest.fixture(scope="module")
def split(corpus_dir, tmp_path_factory):
    """Tech-docs vs other domains, each split 80/20 by a seeded shuffle: train files + held-out rows."""
    root = tmp_path_factory.mktemp("clf")
    out = {}
    for side, names in (("pos", POSITIVE), ("neg", NEGATIVE)):
        df = read(corpus_dir, names).sample(fraction=1.0, shuffle=True, seed=7)
        n_test = df.height // 5
        df.slice(n_test).write_parquet(root / f"{side}.parquet")
        out[side] = df.head(n_test)
    held = pl.concat([out["pos"].with_columns(y=pl.lit(True)), out["neg"].with_columns(y=pl.lit(False))])
    # DCLM's recipe, but more and larger steps: 300 documents a class are ~1000x fewer than DCLM's
    info = train_from_files([str(root / "pos.parquet")], [str(root / "neg.parquet")], root / "model",
                            max_docs=300, epoch=25, lr=1.0, dim=64, max_chars=5000)
    return root, held, info


def test_trained_classifier_separates_held_out_text(split):
    from sklearn.metrics import roc_auc_score

    root, held, info = split
    # balanced, measured on its own held-out 10%, saved with the recipe
    assert info["counts"]["per_class"] == 300 and info["labels"] == ["__label__hq", "__label__cc"]
    assert info["recipe"]["wordNgrams"] == 2 and info["metrics"]["test_docs"] == 60
    assert info["metrics"]["auc"] >= 0.9 and info["metrics"]["accuracy"] >= 0.8
    assert json.loads((root / "model" / "classifier.json").read_text()) == info
    # documents the training never saw, scored by the stage (folder and bare .bin load alike)
    for path in (root / "model", root / "model" / "model.bin"):
        stage = Classifier(model_path=str(path))
        stage.validate()
        s = stage.score(held.select("id", "text").to_arrow())["classifier_score"]
        assert s.type == pa.float64() and len(s) == held.height
        p = s.to_numpy()
        assert ((0 <= p) & (p <= 1)).all()
        assert roc_auc_score(held["y"].to_numpy(), p) >= 0.9
        assert abs(auc(held["y"].to_numpy(), p) - roc_auc_score(held["y"].to_numpy(), p)) < 1e-12
    empty = stage.score(held.head(0).select("text").to_arrow())["classifier_score"]
    assert len(empty) == 0


def test_stage_in_a_job_conserves_rows(split, tmp_path, ray_session):
    from tamis.pipeline.runner.job import run_job
    from tamis.pipeline.spec import load_job

    root, held, _ = split
    src = tmp_path / "in.parquet"
    held.drop("y").write_parquet(src)
    job = tmp_path / "job.yaml"
    job.write_text(f"""
name: clf
inputs: [{src}]
output: {tmp_path / 'run'}
stages:
  - use: classifier
    params: {{model_path: {root / 'model'}}}
    keep: {{low_quality: "classifier_score >= 0.5"}}
    resources: {{batch_size: 64, actors: 1}}
""")
    summary = run_job(load_job(job), progress=False)
    assert summary["conservation"]["holds"] and summary["quarantined"] == 0
    cur = pl.read_parquet(tmp_path / "run" / "curated")
    rej = pl.read_parquet(tmp_path / "run" / "rejected")
    assert cur.height + rej.height == held.height == summary["rows_read"]
    assert (cur["classifier_score"] >= 0.5).all() and set(rej["reject_reason"]) == {"low_quality"}
    kept = cur.join(held.select("id", "y"), on="id")["y"]
    assert kept.mean() > 0.85  # what survives is mostly tech-docs


def test_hf_head_matches_the_rater_code(corpus_dir, tmp_path):
    """A tiny BERT regression head and a two-label head: the raw output / P(label 1)."""
    torch = pytest.importorskip("torch")
    from test_rater import corpus_texts, manual, tiny_model, tiny_tokenizer

    texts = corpus_texts(corpus_dir, n=12)
    for labels in (1, 2):
        folder = tmp_path / f"bert{labels}"
        tok = tiny_tokenizer(texts, folder)
        model = tiny_model("bert", len(tok), labels, folder, seed=labels)
        stage = Classifier(model_path=str(folder), max_length=48, batch_size=5)
        stage.validate()
        got = stage.score(pa.table({"text": texts}))["classifier_score"].to_numpy()
        want = np.asarray(manual(model, tok, texts, 48))
        np.testing.assert_allclose(got, want, atol=1e-5)
        if labels == 2:
            with torch.no_grad():
                enc = tok(texts[0], truncation=True, max_length=48, return_tensors="pt")
                p1 = torch.softmax(model(**enc).logits, -1)[0, 1].item()
            assert abs(got[0] - p1) < 1e-5


def test_validate_and_cli_errors(split, tmp_path, capsys):
    root, _, _ = split
    for params, msg in (({}, "model_path"), ({"model_path": str(tmp_path / "nope")}, "does not exist"),
                        ({"model_path": str(root)}, "neither a fastText model"),
                        ({"model_path": str(root / "model"), "max_chars": 0}, "max_chars"),
                        ({"model_path": "x", "train_if_missing": {"positive": ["a"]}}, "negative"),
                        ({"model_path": "x", "train_if_missing": {"positive": ["a"], "negative": ["b"],
                                                                  "bogus": 1}}, "bogus")):
        with pytest.raises(ValueError, match=msg):
            Classifier(**params).validate()
    with pytest.raises(ValueError, match="not a label"):
        Classifier(model_path=str(root / "model"), label="__label__nope").setup()

    args = ["train-classifier", "--positive", str(root / "pos.parquet"), "--negative", str(root / "neg.parquet"),
            "--max-docs", "20", "--epoch", "1", "--dim", "16", "--output"]
    out = tmp_path / "m"
    assert main(args + [str(out)]) == 0 and (out / "model.bin").is_file()
    assert "held-out AUC" in capsys.readouterr().out
    assert main(args + [str(out)]) == 2                      # holds a classifier: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + [str(out), "--overwrite"]) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    assert main(args + [str(other), "--overwrite"]) == 2     # never replaces a folder it did not write
    assert "holds no classifier.json" in capsys.readouterr().err and (other / "keep.txt").exists()
    assert main(["train-classifier", "--positive", str(tmp_path / "missing"), "--negative",
                 str(root / "neg.parquet"), "--output", str(tmp_path / "m2")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_train_if_missing_trains_once(split, tmp_path):
    root, _, _ = split
    target = tmp_path / "auto"
    stage = Classifier(model_path=str(target), train_if_missing={
        "positive": [str(root / "pos.parquet")], "negative": [str(root / "neg.parquet")],
        "max_docs": 30, "epoch": 1, "dim": 16})
    stage.validate()
    stage.prepare()
    assert (target / "classifier.json").is_file()
    before = (target / "model.bin").stat().st_mtime_ns
    stage.prepare()                                          # a model is there: nothing retrained
    assert (target / "model.bin").stat().st_mtime_ns == before


def test_ensemble_buckets_and_combines(split):
    """Nemotron-CC style: per-model score -> integer bucket -> max (or mean, rounded down)."""
    root, held, _ = split
    model = str(root / "model")
    models = [{"path": model, "bins": [0.1, 0.5, 0.9]},
              {"path": model + "/model.bin", "bins": [0.5], "label": "__label__cc"}]
    batch = held.select("text").to_arrow()
    hq = Classifier(model_path=model).score(batch)["classifier_score"].to_numpy()
    for combine in ("max", "mean"):
        stage = Classifier(models=models, combine=combine)
        stage.validate()
        stage.prepare()
        out = stage.score(batch)
        assert set(out) == set(stage.output_columns()) == {"classifier_score_0", "classifier_score_1",
                                                           "classifier_bucket"}
        np.testing.assert_allclose(out["classifier_score_0"].to_numpy(), hq)
        np.testing.assert_allclose(out["classifier_score_1"].to_numpy(), 1 - hq, atol=1e-4)  # fastText adds 1e-5
        b = np.stack([buckets(hq, [0.1, 0.5, 0.9]), buckets(out["classifier_score_1"].to_numpy(), [0.5])])
        want = b.max(0) if combine == "max" else np.floor(b.mean(0))
        assert out["classifier_bucket"].type == pa.int64()
        np.testing.assert_array_equal(out["classifier_bucket"].to_numpy(), want)
        assert len(stage.score(batch.slice(0, 0))["classifier_bucket"]) == 0
    assert buckets(np.array([0.05, 0.1, 0.95]), [0.1, 0.5, 0.9]).tolist() == [0, 1, 3]
    for params, msg in (({"models": []}, "list"), ({"models": [{"path": model}]}, "bins"),
                        ({"models": [{"path": model, "bins": [0.5, 0.1]}]}, "increasing"),
                        ({"models": [{"path": "nope", "bins": [0.5]}]}, r"models\[0\]\.path"),
                        ({"models": models, "combine": "min"}, "combine"),
                        ({"models": models, "model_path": model}, "not both")):
        with pytest.raises(ValueError, match=msg):
            Classifier(**params).validate()


def test_labels_from_a_scored_run(split, tmp_path, capsys):
    """--labels-from: rows with the label column >= threshold are positives, the others negatives."""
    root, _, _ = split
    pos, neg = pl.read_parquet(root / "pos.parquet"), pl.read_parquet(root / "neg.parquet")
    labelled = pl.concat([pos.with_columns(edu=pl.lit(4.0)), neg.with_columns(edu=pl.lit(1.0)),
                          neg.head(5).with_columns(edu=pl.lit(None, pl.Float64))])
    labelled.write_parquet(tmp_path / "labels.parquet")
    args = ["train-classifier", "--labels-from", str(tmp_path / "labels.parquet"), "--label-column", "edu",
            "--threshold", "3", "--max-docs", "60", "--epoch", "25", "--lr", "1.0", "--dim", "16",
            "--output", str(tmp_path / "m")]
    assert main(args) == 0
    info = json.loads((tmp_path / "m" / "classifier.json").read_text())
    assert info["counts"]["positive_available"] == pos.height
    assert info["counts"]["negative_available"] == neg.height  # the 5 rows without a label are skipped
    assert info["metrics"]["auc"] >= 0.9
    capsys.readouterr()
    assert main(args[:3] + ["--threshold", "3", "--output", str(tmp_path / "m2")]) == 2  # no --label-column
    assert "label_column" in capsys.readouterr().err
    assert main([a if a != "edu" else "nope" for a in args[:-1]] + [str(tmp_path / "m3")]) == 2
    assert "nope" in capsys.readouterr().err
