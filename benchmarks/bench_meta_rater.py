"""Meta-rater learned weights vs random selection vs the best single signal, on the shared corpus.

One run, same pool, same proxy (n-gram LM on UTF-8 bytes), same number of training bytes for every
selection. The pool is every source of the shared corpus cut into pieces of at most 1,500
characters; the target set is held-out pieces of prose (literature, speeches, news, religion), one
validation set per domain, loss = their mean. Signals are the Gopher quality and repetition
columns plus a few cheap polars signals, each with a sign ("higher is better" or not), as a user
would configure them; nothing in them names a domain.

    .venv/bin/python benchmarks/bench_meta_rater.py [--samples 128] [--pool-docs 6000] [--ray]

Prints the proxy loss of the three selections, their ratios, the regression's Spearman on
held-out weight vectors, the learned weights and the wall time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = REPO.parent / "shared" / "corpus"

from tamis.mixers.quality_weights import QualityWeights  # noqa: E402
from tamis.pipeline.data import LocalData  # noqa: E402
from tamis.scorers.gopher.quality import GopherQuality  # noqa: E402
from tamis.scorers.gopher.repetition import GopherRepetition  # noqa: E402

TARGET_DOMAINS = ("literature", "speeches", "news", "religion")
SIGNALS = {
    "gopher_quality_word_count": "+",
    "gopher_quality_mean_word_length": "+",
    "gopher_quality_hash_word_ratio": "-",
    "gopher_quality_bullet_line_frac": "-",
    "gopher_quality_alpha_word_frac": "+",
    "gopher_quality_stop_word_count": "+",
    "gopher_repetition_dup_line_frac": "-",
    "gopher_repetition_top_2gram_char_frac": "-",
    "gopher_repetition_dup_5gram_char_frac": "-",
    "x_punct_end_line_frac": "+",
    "x_digit_frac": "-",
    "x_upper_frac": "-",
    "x_unique_word_frac": "+",
}


def pieces(size: int, per_file: int, seed: int) -> pl.DataFrame:
    """Up to `per_file` random pieces of at most `size` characters from every corpus file."""
    out = []
    for f in sorted(CORPUS.glob("*.parquet")):
        df = pl.read_parquet(f, columns=["id", "text", "domain"])
        n_parts = int(min(40, max(1, df["text"].str.len_chars().max() // size + 1)))
        parts = pl.concat([df.select(pl.col("id") + f"#{i}", pl.col("text").str.slice(i * size, size), "domain")
                           for i in range(n_parts)])
        parts = parts.filter(pl.col("text").str.len_chars() >= 200)
        out.append(parts.sample(min(per_file, parts.height), seed=seed))
    return pl.concat(out)


def simple_signals(df: pl.DataFrame) -> pl.DataFrame:
    t = pl.col("text")
    chars = t.str.len_chars().cast(pl.Float64)
    lines = t.str.count_matches(r"\n") + 1
    words = t.str.to_lowercase().str.extract_all(r"[a-z']+")
    return df.with_columns(
        (t.str.count_matches(r"[.!?\"')]\s*(\n|$)") / lines).alias("x_punct_end_line_frac"),
        (t.str.count_matches(r"[0-9]") / chars).alias("x_digit_frac"),
        (t.str.count_matches(r"[A-Z]") / chars).alias("x_upper_frac"),
        (words.list.unique().list.len() / words.list.len().clip(1)).alias("x_unique_word_frac"),
    )


def build(pool_docs: int, seed: int) -> tuple[pa.Table, dict]:
    files = len(list(CORPUS.glob("*.parquet")))
    df = pieces(1500, max(60, pool_docs // files + 1), seed).sample(fraction=1.0, shuffle=True, seed=seed)
    # A quarter of the prose *documents* (by a hash of the source id) is the target, at most 60
    # pieces per domain; their other pieces are dropped, so no document is in both pool and target.
    base = pl.col("id").str.replace(r"#\d+$", "")
    is_target = pl.col("domain").is_in(list(TARGET_DOMAINS)) & (base.hash(seed) % 4 == 0)
    df = df.with_columns(pl.when(is_target).then(pl.lit("target")).otherwise(pl.lit("pool")).alias("split"))
    rank = pl.int_range(pl.len()).over("domain", "split")
    df = df.filter((pl.col("split") == "pool") | (rank < 60))
    table = df.to_arrow()
    cols = {**GopherQuality().score(table), **GopherRepetition().score(table)}
    for k, v in cols.items():
        table = table.append_column(k, v)
    table = simple_signals(pl.from_arrow(table)).to_arrow()
    stats = pl.from_arrow(table.select(["split", "domain"])).group_by("split", "domain").len().sort("split", "domain")
    return table, {"rows": table.num_rows, "by_split_domain": stats.to_dicts()}


def rater_speed(table: pa.Table, n_docs: int, max_length: int) -> None:
    """`rater` stage docs/s: a tamis fast rater vs a ModernBERT-base-sized classifier (the published
    PRRC raters' architecture, random weights: speed does not depend on them), same documents."""
    import tempfile

    import torch
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertForSequenceClassification
    from tamis.scorers.meta_rater.rater import Rater
    from tamis.scorers.meta_rater.train import FastRater

    torch.set_num_threads(1)
    df = pl.from_arrow(table)
    train = df.head(2000)
    y = (train["gopher_quality_alpha_word_frac"].fill_null(0) * 5).to_list()  # any 0-5 label will do
    docs = df.tail(n_docs).select("text").to_arrow()
    with tempfile.TemporaryDirectory() as tmp:
        FastRater(n_jobs=1, num_rounds=200).fit(train["text"].to_list(), y).save(Path(tmp) / "fast")
        tok_dir = Path(tmp) / "mb"
        from tamis.pipeline.vectors.embeddings import default_model_path
        AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(tok_dir)  # a local BERT tokenizer
        cfg = ModernBertConfig(num_labels=6, pad_token_id=0, cls_token_id=101, sep_token_id=102,
                               bos_token_id=101, eos_token_id=102, vocab_size=30522)
        ModernBertForSequenceClassification(cfg).save_pretrained(tok_dir)
        out = {}
        for name, folder in (("fast rater (hashed n-grams + LightGBM)", Path(tmp) / "fast"),
                             (f"ModernBERT-base classifier, {max_length} tokens", tok_dir)):
            sc = Rater(models={"reasoning": str(folder)}, max_length=max_length, batch_size=8, device="cpu")
            sc.validate()
            sc.setup()
            t0, c0 = time.perf_counter(), time.process_time()
            sc.score(docs)
            out[name] = (n_docs / (time.process_time() - c0), n_docs / (time.perf_counter() - t0))
    print(f"\n=== rater stage throughput, {n_docs} pool pieces (<=1,500 chars), 1 thread ===")
    for name, (cpu, wall) in out.items():
        print(f"  {name:45s} {cpu:9.1f} docs per CPU-second ({wall:.1f} docs/s wall)")
    a, b = list(out.values())
    print(f"  ratio fast / ModernBERT (per CPU-second): {a[0] / b[0]:.0f}x")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=128, help="proxy runs for the regression (paper: 256)")
    ap.add_argument("--pool-docs", type=int, default=6000)
    ap.add_argument("--candidates", type=int, default=1_000_000)
    ap.add_argument("--order", type=int, default=4, help="n-gram proxy order")
    ap.add_argument("--ray", action="store_true", help="proxies as Ray tasks (default: in this process)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rater-speed", type=int, default=0, metavar="N",
                    help="only time the rater stage on N documents (fast rater vs ModernBERT-base)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    table, info = build(args.pool_docs, args.seed)
    t_build = time.perf_counter() - t0
    if args.rater_speed:
        rater_speed(table, args.rater_speed, 512)
        return 0
    stage = QualityWeights(signals=SIGNALS, target_where="split == 'target'", target_group="domain",
                           n_samples=args.samples, n_candidates=args.candidates, proxy="ngram",
                           proxy_params={"order": args.order}, random_repeats=5, seed=args.seed)
    stage.validate()
    runner = None if args.ray else (lambda fn, items, **_: [fn(i) for i in items])
    t1 = time.perf_counter()
    stage.fit(LocalData(table.select(["id", *stage.requires])), runner=runner)
    t_fit = time.perf_counter() - t1
    r = stage.report()
    print(json.dumps({"data": info, "report": r}, indent=1, default=float))
    print("\n=== Meta-rater weights on the shared corpus (proxy: %d-gram byte LM, %d training bytes each) ==="
          % (args.order, r["token_budget"]))
    print(f"pool {r['pool_docs']} pieces / {r['pool_bytes']:,} bytes; targets {r['target_sets']}")
    print("proxy validation loss (nats/byte, mean over target domains; lower is better):")
    print(f"  learned weights             {r['loss_learned']:.4f}")
    print(f"  random selection (5 seeds)  {r['loss_random']:.4f} ± {r['loss_random_std']:.4f}")
    print(f"  best single signal          {r['loss_best_single']:.4f}  ({r['best_single_signal']})")
    print(f"  best of the {r['n_proxies']} sampled vectors {r['best_sampled_loss']:.4f}; median {r['median_sampled_loss']:.4f}")
    print(f"ratios: learned/random {r['loss_learned'] / r['loss_random']:.4f}, "
          f"learned/best-single {r['loss_learned'] / r['loss_best_single']:.4f}")
    print(f"regression Spearman on {r['n_proxies'] - r['n_train_vectors']} held-out weight vectors: "
          f"{r['spearman_heldout']:.3f} (Pearson {r['pearson_heldout']:.3f})")
    print("learned weights: " + ", ".join(f"{k} {v:.3f}" for k, v in r["weights"].items()))
    print(f"time: build+score {t_build:.0f} s, fit {t_fit:.0f} s (proxies {r['proxy_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
