"""`tamis train-lm`: train the reference LM that the `perplexity` stage loads."""
from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train-lm", help="train a small reference GPT-2 (+ byte-level BPE) for perplexity scoring",
        description="Train a byte-level BPE tokenizer and a small GPT-2 on reference text "
                    "(Parquet/JSONL with a text column) and save a folder that "
                    "AutoModelForCausalLM / AutoTokenizer and the perplexity stage load.")
    p.add_argument("--input", action="append", required=True, metavar="PATH",
                   help="Parquet/JSONL file, folder or glob; repeat for several")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="model folder to write: absent or empty, else see --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a model an earlier train-lm wrote in --output (a folder holding "
                        "tamis_lm.json); any other non-empty folder is refused even then")
    p.add_argument("--domains", default=None,
                   help="comma-separated domains to keep, e.g. literature,tech-docs (needs a domain column)")
    p.add_argument("--text-column", default="text", help="input column holding the text (default text)")
    p.add_argument("--max-chars", type=int, default=20_000_000,
                   help="reference text budget in characters, sampled across documents (default 20M)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--layers", type=int, default=4, help="transformer layers (default 4)")
    p.add_argument("--d-model", type=int, default=128, help="hidden size (default 128)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    p.add_argument("--seq-len", type=int, default=256, help="training length = the model's context")
    p.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size (default 8192)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step (default 16)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling and training (default 0)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to train (default auto: cuda if available)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tamis.scorers.perplexity.train_lm import INFO_FILE, train_from_files

    for name in ("steps", "layers", "d_model", "heads", "seq_len", "vocab_size", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"tamis train-lm: --{name.replace('_', '-')} must be >= 1")
    try:
        out = train_from_files(
            args.input, args.output, domains=args.domains, text_column=args.text_column,
            max_chars=args.max_chars, steps=args.steps, layers=args.layers, d_model=args.d_model,
            heads=args.heads, seq_len=args.seq_len, vocab_size=args.vocab_size,
            batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
            overwrite=args.overwrite)
    except (FileNotFoundError, ValueError) as e:
        print(f"tamis train-lm: error: {e}", file=sys.stderr)
        return 2
    info = json.loads((out / INFO_FILE).read_text())
    print(f"saved {out} ({info['params']:,} parameters, {info['train_tokens']:,} training tokens, "
          f"final loss {info['final_loss']:.3f}, {info['train_s']:.0f} s)")
    return 0
