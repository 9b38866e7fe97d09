"""`tamis learn-weights`: Meta-rater weights over score columns, learned with proxy models."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "learn-weights", help="learn Meta-rater weights over quality-signal columns with proxy models",
        description="Sample weight vectors from Dirichlet(1), select the top fraction of a sample of the input "
                    "by the weighted sum of min-max scaled signals, train one proxy per vector (Ray tasks, or "
                    "--local), regress target loss on the weights with LightGBM and average the best 128 of "
                    "1M predicted candidates. Writes the weights and the report as JSON; use the weights in a "
                    "job as `use: quality_weights` with `params: {signals: ..., weights: ...}`.")
    p.add_argument("--input", action="append", required=True, metavar="PATH",
                   help="scored documents (Parquet/JSONL with text and the signal columns); repeatable")
    p.add_argument("--signals", nargs="+", required=True, metavar="COL[:+|-]",
                   help="score columns; ':-' marks lower-is-better (e.g. ppl:- rater_reasoning)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-where", metavar="EXPR", help="rule picking target rows of the input "
                        "(held out of selection), e.g. \"domain == 'literature'\"")
    target.add_argument("--target", metavar="PATH", help="separate target documents (Parquet/JSONL)")
    p.add_argument("--target-group", metavar="COL", help="one validation set per value of COL; loss = mean")
    p.add_argument("--out", required=True, metavar="WEIGHTS.json", help="weights and report to write (JSON)")
    p.add_argument("--fraction", type=float, default=0.15,
                   help="share of the sample each weight vector selects (default 0.15)")
    p.add_argument("--n-samples", type=int, default=256, help="proxy runs for the regression (paper: 256)")
    p.add_argument("--n-candidates", type=int, default=1_000_000,
                   help="weight vectors scored by the regression (default 1M)")
    p.add_argument("--top-k", type=int, default=128, help="average of the best k candidates (default 128)")
    p.add_argument("--proxy", choices=("ngram", "gpt2"), default="ngram",
                   help="proxy model: n-gram LM (fast) or small GPT-2 (default ngram)")
    p.add_argument("--proxy-param", action="append", default=[], metavar="KEY=VALUE",
                   help="proxy option, e.g. order=4 or n_layer=2 (repeatable)")
    p.add_argument("--sample-size", type=int, default=50_000, help="documents drawn as the candidate pool")
    p.add_argument("--pool-bytes", type=int, default=16_000_000,
                   help="text bytes of the candidate pool (default 16 MB)")
    p.add_argument("--no-baselines", action="store_true", help="skip the random and single-signal proxies")
    p.add_argument("--local", action="store_true", help="train proxies in this process instead of Ray tasks")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tamis.mixers.quality_weights import QualityWeights
    from tamis.pipeline.data import LocalData
    from tamis.pipeline.runner.session import map_tasks
    from tamis.pipeline.readers import read_documents

    params = {}
    for item in args.proxy_param:
        key, sep, val = item.partition("=")
        if not sep:
            raise SystemExit(f"tamis learn-weights: --proxy-param needs KEY=VALUE, got {item!r}")
        params[key] = _value(val)
    stage = QualityWeights(signals=args.signals, target_where=args.target_where, target_path=args.target,
                           target_group=args.target_group, fraction=args.fraction, n_samples=args.n_samples,
                           n_candidates=args.n_candidates, top_k=args.top_k, proxy=args.proxy,
                           proxy_params=params or None, sample_size=args.sample_size,
                           pool_bytes=args.pool_bytes, baselines=not args.no_baselines, seed=args.seed)
    try:
        stage.validate()
    except ValueError as e:
        raise SystemExit(f"tamis learn-weights: {e}") from None
    table = read_documents(args.input)
    missing = sorted(set(stage.requires) - set(table.column_names))
    if missing:
        raise SystemExit(f"tamis learn-weights: input lacks columns {missing}")
    runner = (lambda fn, items, **_: [fn(i) for i in items]) if args.local else map_tasks
    stage.fit(LocalData(table.select(list(stage.requires))), runner=runner)
    report = stage.report()
    out = {"signals": {c: ("+" if s > 0 else "-") for c, s in stage.signs_.items()},
           "weights": stage.weights_, "report": report}
    Path(args.out).write_text(json.dumps(out, indent=2, default=float))
    print(json.dumps(report, indent=2, default=float))
    line = f"learned-weights proxy loss {report['loss_learned']:.4f}"
    if "loss_random" in report:
        line += (f" | random {report['loss_random']:.4f} | best single ({report['best_single_signal']}) "
                 f"{report['loss_best_single']:.4f}")
    print(line + f" | regression Spearman on held-out vectors {report['spearman_heldout']:.3f}")
    print(f"wrote {args.out}")
    return 0
