"""`tamis train-classifier`: train a fastText quality classifier (DCLM recipe) for the `classifier` stage."""
from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train-classifier", help="train a fastText quality classifier (DCLM recipe) on positive/negative text",
        description="Train a bigram fastText classifier (DCLM: __label__hq vs __label__cc, wordNgrams=2, "
                    "dim=256) on as many negative as positive documents (seeded sample), measure the ROC "
                    "AUC on a held-out split and save DIR (model.bin + classifier.json) for the "
                    "`classifier` stage: params: {model_path: DIR}.")
    p.add_argument("--positive", action="append", metavar="PATH",
                   help="high-quality documents: file, folder or glob (any format `tamis run` reads); repeat")
    p.add_argument("--negative", action="append", metavar="PATH",
                   help="other documents (e.g. raw crawl); repeat")
    p.add_argument("--labels-from", action="append", metavar="RUN",
                   help="instead of --positive/--negative: labelled documents (an annotate/rater run folder, "
                        "or files) split by --label-column C >= --threshold T; repeat")
    p.add_argument("--label-column", metavar="C", help="with --labels-from: the numeric label column")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="with --labels-from: rows with C >= T are positive, the others negative")
    p.add_argument("--positive-domains", default=None, metavar="D1,D2",
                   help="keep only these `domain`s of --positive (needs a domain column)")
    p.add_argument("--negative-domains", default=None, metavar="D1,D2", help="same for --negative")
    p.add_argument("--output", required=True, metavar="DIR", help="model folder: absent or empty, else see --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a classifier an earlier train-classifier wrote in --output (a folder holding "
                        "classifier.json); any other non-empty folder is refused even then")
    p.add_argument("--text-column", default="text", help="column holding the text (default text)")
    p.add_argument("--max-docs", type=int, default=None, metavar="N", help="at most N documents per class")
    p.add_argument("--test-fraction", type=float, default=0.1, help="held out for the AUC (default 0.1)")
    p.add_argument("--epoch", type=int, default=3, help="passes over the data (DCLM: 3; ~25 for a few thousand documents)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (DCLM: 0.1; ~1.0 for a few thousand documents)")
    p.add_argument("--dim", type=int, default=256, help="vector size (DCLM: 256)")
    p.add_argument("--threads", type=int, default=1, help="fastText threads (1: reproducible)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling, the split and fastText")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tamis.scorers.classifier.train import train_from_files

    def split(v):
        return [d.strip() for d in v.split(",") if d.strip()] if v else None

    for name in ("max_docs", "epoch", "dim", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            print(f"tamis train-classifier: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if not args.lr > 0 or not 0 <= args.test_fraction < 1:
        print("tamis train-classifier: error: --lr must be > 0 and --test-fraction in [0, 1)", file=sys.stderr)
        return 2
    try:
        info = train_from_files(
            args.positive, args.negative, args.output, positive_domains=split(args.positive_domains),
            negative_domains=split(args.negative_domains), text_column=args.text_column,
            labels_from=args.labels_from, label_column=args.label_column, threshold=args.threshold,
            overwrite=args.overwrite, max_docs=args.max_docs, test_fraction=args.test_fraction,
            seed=args.seed, threads=args.threads, epoch=args.epoch, lr=args.lr, dim=args.dim)
    except (FileNotFoundError, ValueError) as e:  # readers.InputError is a ValueError
        print(f"tamis train-classifier: error: {e}", file=sys.stderr)
        return 2
    m = info["metrics"]
    held = f"held-out AUC {m['auc']:.3f}, accuracy {m['accuracy']:.3f} on {m['test_docs']} documents" \
        if "auc" in m else "no held-out split"
    print(f"saved {args.output} ({m['train_docs']} training documents, {info['counts']['per_class']} per class; "
          f"{held}; {m['train_s']:.1f} s)")
    if m.get("score_std", 1.0) < 0.05:
        print(f"tamis train-classifier: warning: held-out scores barely move from 0.5 (std {m['score_std']:.4f}): "
              f"too few updates for {m['train_docs']} documents; raise --epoch and --lr (e.g. --epoch 25 --lr 1.0)",
              file=sys.stderr)
    return 0
