"""`tamis train-rater`: distil 0–5 labels into a fast rater folder that the `rater` stage loads."""
from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train-rater", help="train a fast rater (hashed n-grams or embeddings + LightGBM) on 0-5 labels",
        description="Fit a fast rater on a Parquet file with a text column and a score column (e.g. the "
                    "labels file of `tamis annotate`); rows with a null score are skipped. Prints held-out "
                    "Spearman / accuracy / MAE and saves DIR (rater.json + model.txt) for the `rater` stage: "
                    "params: {models: {professionalism: DIR}}.")
    p.add_argument("--labels", required=True, metavar="P.parquet", help="Parquet file or folder with the labels")
    p.add_argument("--score-column", required=True, metavar="C", help="column with the 0-5 score")
    p.add_argument("--text-column", default="text", help="column holding the text (default text)")
    p.add_argument("--id-column", default="id", help="used for the held-out split (row number when absent)")
    p.add_argument("--output", required=True, metavar="DIR", help="rater folder to write (rater.json + model.txt)")
    p.add_argument("--features", choices=("ngrams", "embed"), default="ngrams",
                   help="hashed n-grams (fast) or text embeddings (default ngrams)")
    p.add_argument("--objective", choices=("regression", "multiclass"), default="regression",
                   help="LightGBM objective (default regression)")
    p.add_argument("--analyzer", choices=("word", "char_wb", "char"), default="word",
                   help="n-gram unit for --features ngrams (char_wb is slower)")
    p.add_argument("--ngram-max", type=int, default=2, help="longest n-gram (default 2 words)")
    p.add_argument("--n-features", type=int, default=2**16, help="hash buckets (default 65536)")
    p.add_argument("--embed-model", metavar="PATH", help="--features embed: local encoder folder "
                   "(default: the embed stage's all-MiniLM-L6-v2)")
    p.add_argument("--embed-backend", choices=("transformer", "hashed"), default="transformer",
                   help="--features embed: a transformer encoder or hashed embeddings (default transformer)")
    p.add_argument("--num-rounds", type=int, default=1000, help="most boosting rounds (early stopping picks)")
    p.add_argument("--learning-rate", type=float, default=0.05, help="LightGBM learning rate (default 0.05)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held out for the reported metrics")
    p.add_argument("--threads", type=int, default=1,
                   help="LightGBM threads; 0 = all cores (default 1: LightGBM's OpenMP threads spin-wait, and "
                        "on cores other work shares, all-core training did not finish in 10 minutes where one "
                        "thread took 78 s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out split and LightGBM (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from tamis.scorers.meta_rater.train import train_rater

    df = pl.read_parquet(args.labels)
    for col in (args.text_column, args.score_column):
        if col not in df.columns:
            raise SystemExit(f"tamis train-rater: {args.labels} has no column {col!r}; columns: {df.columns}")
    rows = df.height
    df = df.filter(pl.col(args.score_column).is_not_null() & pl.col(args.score_column).cast(pl.Float64).is_finite()
                   & pl.col(args.text_column).is_not_null())
    if df.height < 10:
        raise SystemExit(f"tamis train-rater: only {df.height} labelled rows with a score; need at least 10")
    ids = df[args.id_column].cast(pl.Utf8).to_list() if args.id_column in df.columns else None
    embed = None
    if args.features == "embed":
        embed = {"backend": args.embed_backend, **({"model": args.embed_model} if args.embed_model else {})}
    if not 0 <= args.test_fraction < 1:
        raise SystemExit("tamis train-rater: --test-fraction must be in [0, 1)")
    rater, metrics = train_rater(
        df[args.text_column].to_list(), df[args.score_column].cast(pl.Float64).to_list(), ids,
        test_fraction=args.test_fraction, seed=args.seed, features=args.features, objective=args.objective,
        analyzer=args.analyzer, ngram_range=(1, args.ngram_max), n_features=args.n_features, embed=embed,
        num_rounds=args.num_rounds, learning_rate=args.learning_rate, n_jobs=args.threads or None)
    metrics.update(rows_read=rows, rows_skipped_no_score=rows - df.height)
    folder = rater.save(args.output, extra={"score_column": args.score_column, "labels": str(args.labels),
                                            "metrics": metrics})
    print(json.dumps(metrics, indent=2))
    t = metrics.get("test")
    if t:
        print(f"held-out: Spearman {t['spearman']:.3f}, accuracy {t['accuracy']:.3f}, MAE {t['mae']:.3f} "
              f"(predicting the mean: MAE {metrics['baseline_mae']:.3f}) on {t['n']} documents")
    print(f"saved {folder}: use it as `models: {{<dimension>: {folder}}}` in the rater stage")
    return 0
