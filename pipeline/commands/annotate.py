"""`tamis annotate`: label documents 0–5 on the Meta-rater dimensions with an LLM judge."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "annotate", help="label a sample with an LLM judge (OpenAI-compatible chat completions)",
        description="Ask an LLM judge for additive 0-5 ratings (professionalism, readability, reasoning, "
                    "cleanliness; rubrics in docs/meta_rater_rubrics.md). Answers go to a resumable Parquet "
                    "cache: rerun the same command to finish an interrupted run. Also writes a labels file "
                    "(id, text, one score column per dimension) for `tamis train-rater`.")
    p.add_argument("--input", action="append", required=True, metavar="PATH",
                   help="Parquet/JSONL file, folder or glob (repeatable)")
    p.add_argument("--endpoint", required=True, metavar="URL",
                   help="base URL of the API, e.g. http://localhost:8000/v1 (/chat/completions is appended)")
    p.add_argument("--model", required=True, metavar="NAME", help="judge model name sent to the endpoint")
    p.add_argument("--out", required=True, metavar="CACHE.parquet", help="answer cache (created or resumed)")
    p.add_argument("--labels-out", metavar="PATH", help="labels file (default: CACHE.labels.parquet)")
    p.add_argument("--sample", type=int, metavar="N", help="label N documents chosen by a seeded hash of the id")
    p.add_argument("--seed", type=int, default=0, help="seed of the --sample hash (default 0)")
    p.add_argument("--dimensions", default="professionalism,readability,reasoning,cleanliness",
                   help="comma-separated subset of the four dimensions")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key (Bearer)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--retries", type=int, default=3, help="retries on timeout, 429/5xx, connection errors")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each retry")
    p.add_argument("--max-retry-after", type=float, default=120.0, metavar="SECONDS",
                   help="longest wait a 429/503 Retry-After header may ask for before a retry (default 120)")
    p.add_argument("--max-tokens", type=int, default=512, help="most tokens the judge may answer with (default 512)")
    p.add_argument("--text-chars", type=int, default=8000, help="characters of each document shown to the judge")
    p.add_argument("--max-items", type=int, metavar="N", help="ask at most N (document, dimension) questions now")
    p.add_argument("--text-column", default="text", help="input column holding the text (default text)")
    p.add_argument("--id-column", default="id", help="input column holding the document id (default id)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import polars as pl
    import pyarrow.parquet as pq

    from tamis.pipeline.readers import read_documents
    from tamis.scorers.meta_rater.annotate import Annotator, labels_table

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise SystemExit(f"tamis annotate: environment variable {args.api_key_env} is not set")
    docs = read_documents(args.input, args.text_column, args.id_column).select(["id", "text"])
    if args.sample is not None:
        if args.sample < 1:
            raise SystemExit("tamis annotate: --sample must be >= 1")
        df = pl.from_arrow(docs)
        docs = df.sort(pl.col("id").hash(seed=args.seed)).head(args.sample).to_arrow()
    annotator = Annotator(args.endpoint, args.model, api_key=api_key, concurrency=args.concurrency,
                          timeout=args.timeout, retries=args.retries, backoff=args.backoff,
                          max_retry_after=args.max_retry_after,
                          max_tokens=args.max_tokens, text_chars=args.text_chars,
                          dimensions=tuple(d.strip() for d in args.dimensions.split(",") if d.strip()))
    try:
        annotator.validate()
    except ValueError as e:
        raise SystemExit(f"tamis annotate: {e}") from None
    from tqdm import tqdm
    total = docs.num_rows * len(annotator.dimensions)
    # SIGTERM (e.g. from a scheduler) ends the run like Ctrl-C: the answers so far are saved.
    try:
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        with tqdm(total=total, desc="annotate", disable=None) as bar:
            report = annotator.run(docs, args.out, max_items=args.max_items, progress=bar.update)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    labels_path = Path(args.labels_out or str(Path(args.out).with_suffix("")) + ".labels.parquet")
    from tamis.scorers.meta_rater.label_cache import LabelCache
    pq.write_table(labels_table(LabelCache(args.out).load(), docs, model=args.model), labels_path)
    report["labels"] = str(labels_path)
    Path(str(Path(args.out).with_suffix("")) + ".report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    for kind, message in report.get("first_errors", {}).items():
        print(f"tamis annotate: {report['by_status'][kind]} {kind}, the first: {message}", file=sys.stderr)
    if report["left"]:
        print(f"tamis annotate: {report['left']} questions unanswered (timeouts, errors or --max-items); "
              "rerun the same command to ask them again", file=sys.stderr)
        return 1
    return 0
