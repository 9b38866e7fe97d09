"""`tamis export RUN --tokenizer DIR --format megatron|npy --output DIR`: training-ready token shards.

  tamis export RUN_OR_INPUT... --tokenizer DIR --output DIR [--format megatron|npy]
               [--shard-tokens N] [--seed S] [--eos TOKEN] [--mixture MIX.json --tokens N
               [--max-epochs 15]] [--restart] [--local]
See docs/export.md.
"""
from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="tokenize a run's curated rows into shuffled Megatron or npy token shards")
    p.add_argument("input", nargs="+", help="run folder (its curated/) or any tamis input: files, folders, globs")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="Hugging Face fast tokenizer folder "
                   "(tokenizer.json) or the tokenizer.json file")
    p.add_argument("--output", required=True, metavar="DIR", help="export folder (new or empty, or an "
                   "unfinished export to resume)")
    p.add_argument("--format", choices=("megatron", "npy"), default="megatron",
                   help="megatron: .bin/.idx indexed datasets; npy: raw token arrays + .csv.gz (Dolma/OLMo)")
    p.add_argument("--shard-tokens", type=_count, default=1_000_000_000, metavar="N",
                   help="at most N tokens per shard (default 1e9; a longer document gets a shard alone)")
    p.add_argument("--seed", type=int, default=0, help="seed of the document shuffle and mixture sampling")
    p.add_argument("--eos", metavar="TOKEN", help="end-of-document token or id (default: the tokenizer's eos_token)")
    p.add_argument("--mixture", metavar="FILE", help="domain weights JSON ({domain: weight}, or `tamis mix fit "
                   "--out` output); needs --tokens")
    p.add_argument("--tokens", type=_count, metavar="N", help="token budget of the mixture")
    p.add_argument("--max-epochs", type=float, default=15.0, help="repeat cap per domain with --mixture "
                   "(default 15, RegMix's bound)")
    p.add_argument("--domain-column", default="domain", help="column naming the domain (default domain)")
    p.add_argument("--license-column", default="license", help="column naming the licence (default license)")
    p.add_argument("--text-column", default="text", help="input column holding the text (default text)")
    p.add_argument("--id-column", default="id", help="input column holding the id (default id)")
    p.add_argument("--restart", action="store_true", help="discard an earlier export in --output")
    p.add_argument("--address", help="Ray address to join instead of starting an embedded Ray")
    p.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    p.add_argument("--local", action="store_true", help="run in this process, without Ray")
    p.set_defaults(func=run)


def _count(v: str) -> int:
    import argparse
    try:
        n = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a number (e.g. 1e9)") from None
    if n != int(n):
        raise argparse.ArgumentTypeError(f"{v!r} is not a whole number")
    return int(n)


def _err(msg: str) -> int:
    print(f"tamis: error: {msg}", file=sys.stderr)
    return 2


def run(args) -> int:
    from tamis.pipeline.export.tokenize import TokenizerError
    from tamis.pipeline.export.work import ExportError, make_settings
    from tamis.pipeline.readers import InputError
    from tamis.pipeline.runner.export import run_export

    out = Path(args.output).resolve()
    for i in args.input:
        src = Path(i).resolve()
        if out == src or src in out.parents:
            return _err(f"--output {args.output}: lies inside the input {i}; choose a folder outside it")
    try:
        settings = make_settings(args.input, args.tokenizer, args.format, args.shard_tokens, args.seed,
                                 eos=args.eos, mixture_file=args.mixture,
                                 tokens=args.tokens, max_epochs=args.max_epochs,
                                 domain_column=args.domain_column, license_column=args.license_column,
                                 text_column=args.text_column, id_column=args.id_column)
        manifest, was_done = run_export(settings, args.output, restart=args.restart, local=args.local,
                                        address=args.address, num_cpus=args.num_cpus)
    except (ExportError, TokenizerError, InputError) as e:
        return _err(str(e))
    if was_done:
        print(f"{args.output}: already complete ({manifest['documents']} documents, {manifest['tokens']} tokens); "
              f"nothing to do (--restart to redo)")
        return 0
    print(report(manifest, args.output))
    return 0


def report(manifest: dict, output) -> str:
    s = manifest["settings"]
    inp = manifest["input"]
    lines = [f"{manifest['documents']} documents, {manifest['tokens']} tokens ({s['format']}, {s['dtype']}, "
             f"EOS {s['eos_token']!r}={s['eos_id']}) in {len(manifest['shards'])} shard(s) of <= "
             f"{s['shard_tokens']} tokens -> {output}",
             f"input: {inp['documents']} documents, {inp['tokens']} tokens"
             + (f"; {inp['quarantined']} unreadable rows skipped" if inp["quarantined"] else "")]
    if "mixture" in manifest:
        lines.append(f"{'domain':<24}{'asked':>8}{'achieved':>10}{'tokens':>12}{'epochs':>8}")
        for d, r in manifest["mixture"].items():
            flag = " capped" if r["capped"] else (" missing" if r["missing"] else "")
            lines.append(f"{d:<24}{r['asked']:>8.4f}{r['achieved']:>10.4f}{r['tokens']:>12}{r['epochs']:>8.2f}{flag}")
    else:
        lines.append(f"{'domain':<24}{'tokens':>12}{'share':>8}")
        for d, r in manifest["domains"].items():
            lines.append(f"{d:<24}{r['tokens']:>12}{r['share']:>8.4f}")
    lic = ", ".join(f"{k}: {v}" for k, v in manifest["licenses"].items())
    lines.append(f"licences (documents): {lic}")
    lines.append(f"manifest: {Path(output) / 'manifest.json'}")
    return "\n".join(lines)
