"""Issue 20 figures: `tamis export` against DataTrove's tokenizer, same tokenizer, same curated input.

Input: shared-corpus documents (under 50 kB of text) in Parquet shards of 3,000; 1x = `--docs`, 4x
= 4 * `--docs` (documents reused with new ids past the corpus size). Tokenizer: a byte-level BPE
(`--vocab`, trained here on 2,000 of the documents, EOS `<|endoftext|>`), the same file for both.

- tamis: `tamis export IN --format megatron --num-cpus 2` (embedded Ray, 2 workers): tokenize,
  global seeded shuffle, shards of <= `--shard-tokens`, manifest.
- DataTrove 0.10.1: `DocumentTokenizer` (ParquetReader -> tokenize -> per-task shuffled .ds files,
  one task per input shard, 2 workers), then `DocumentTokenizerMerger` (one task) for the shuffled
  merge into files of <= `--shard-tokens`: the same end product. Both steps timed together, and the
  tokenize step alone.

Each is a fresh subprocess; the figure is wall time (start-up included) and the peak of the summed
RSS of the process and everything it starts, sampled every 0.2 s (as bench_scaling.py). The token
counts of both outputs must agree (DataTrove also appends one EOS per document).

    .venv/bin/python benchmarks/bench_export.py [--docs 12000] [--vocab 16000] [--shard-tokens 20000000]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import polars as pl

from _corpus import corpus_table
from _measure import timed

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / ".venv" / "bin"
OUT = REPO / "benchmarks" / "_out"
DOCS_PER_SHARD = 3000

DATATROVE = """
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.tokens.tokenizer import DocumentTokenizer
from datatrove.pipeline.tokens.merger import DocumentTokenizerMerger
inp, out, tok, tasks, shard_tokens, step = sys.argv[1:7]
tokenize = LocalPipelineExecutor([ParquetReader(inp, text_key="text", id_key="id"),
                                  DocumentTokenizer(out + "/tok", tokenizer_name_or_path=tok, eos_token="<|endoftext|>",
                                                    seed=0, shuffle_documents=True)],
                                 tasks=int(tasks), workers=2, logging_dir=out + "/logs-tok")
tokenize.run()
if step == "merge":
    LocalPipelineExecutor([DocumentTokenizerMerger(out + "/tok", out + "/merged", save_filename="shard",
                                                   max_tokens_per_file=int(shard_tokens), seed=0)],
                          tasks=1, workers=1, logging_dir=out + "/logs-merge").run()
"""


def make_input(folder: Path, n_docs: int) -> tuple[float, int]:
    df = pl.from_arrow(corpus_table(["id", "text", "domain", "source", "license"])).filter(
        pl.col("text").str.len_bytes() < 50_000)
    copies = [df.with_columns(pl.col("id").cast(pl.Utf8) + f"#{k}") for k in range(-(-n_docs // df.height))]
    df = pl.concat(copies).sample(n_docs, seed=3, shuffle=True)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(0, df.height, DOCS_PER_SHARD):
        df[i:i + DOCS_PER_SHARD].write_parquet(folder / f"part-{i // DOCS_PER_SHARD:03d}.parquet")
    return df["text"].str.len_bytes().sum() / 1e6, -(-df.height // DOCS_PER_SHARD)


def train_tokenizer(folder: Path, vocab: int) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    f = folder / "tokenizer.json"
    if f.is_file():
        return folder
    texts = corpus_table(["text"]).slice(0, None)["text"].to_pylist()[::40][:2000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(f))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return folder


def tamis(inp: Path, out: Path, tok: Path, shard_tokens: int) -> tuple[float, float, int]:
    wall, rss = timed([str(BIN / "tamis"), "export", str(inp), "--tokenizer", str(tok), "--output", str(out),
                       "--format", "megatron", "--num-cpus", "2", "--shard-tokens", str(shard_tokens)])
    return wall, rss, json.loads((out / "manifest.json").read_text())["tokens"]


def datatrove(inp: Path, out: Path, tok: Path, tasks: int, shard_tokens: int, step: str) -> tuple[float, float, int]:
    wall, rss = timed([str(BIN / "python"), "-c", DATATROVE, str(inp), str(out), str(tok / "tokenizer.json"),
                       str(tasks), str(shard_tokens), step])
    folder = out / ("merged" if step == "merge" else "tok")
    tokens = sum(f.stat().st_size for f in folder.glob("*.ds")) // 2  # uint16 tokens
    return wall, rss, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=12000)
    ap.add_argument("--vocab", type=int, default=16000)
    ap.add_argument("--shard-tokens", type=int, default=20_000_000)
    args = ap.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # one tokenizer thread per worker, both sides
    tok = train_tokenizer(OUT / "export-tokenizer", args.vocab)
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mb1, files1 = make_input(tmp / "in1", args.docs)
        mb4, files4 = make_input(tmp / "in4", 4 * args.docs)
        print(f"input 1x: {args.docs} docs, {mb1:.1f} MB of text, {files1} files; tokenizer BPE {args.vocab}")
        w, m, n = tamis(tmp / "in1", tmp / "t1", tok, args.shard_tokens)
        res["tamis_1x"] = {"wall_s": w, "peak_rss_mb": m, "tokens": n}
        print(f"  tamis export (tokenize+shuffle+shards)   {w:6.1f} s  {n / w / 1e6:6.2f} Mtok/s  peak RSS {m:6.0f} MB")
        w, m, n2 = datatrove(tmp / "in1", tmp / "d1", tok, files1, args.shard_tokens, "merge")
        res["datatrove_1x"] = {"wall_s": w, "peak_rss_mb": m, "tokens": n2}
        print(f"  DataTrove tokenizer + merger             {w:6.1f} s  {n2 / w / 1e6:6.2f} Mtok/s  peak RSS {m:6.0f} MB")
        w, m, n3 = datatrove(tmp / "in1", tmp / "d1b", tok, files1, args.shard_tokens, "tokenize")
        res["datatrove_tokenize_1x"] = {"wall_s": w, "peak_rss_mb": m, "tokens": n3}
        print(f"  DataTrove tokenizer only                 {w:6.1f} s  {n3 / w / 1e6:6.2f} Mtok/s  peak RSS {m:6.0f} MB")
        print(f"  tokens: tamis {n}, DataTrove {n2}" + ("" if n == n2 else "  (DIFFER)"))
        print(f"  tamis / DataTrove (tokenizer + merger) tokens/s: "
              f"{(n / res['tamis_1x']['wall_s']) / (n2 / res['datatrove_1x']['wall_s']):.2f}")
        w, m, n = tamis(tmp / "in4", tmp / "t4", tok, args.shard_tokens)
        res["tamis_4x"] = {"wall_s": w, "peak_rss_mb": m, "tokens": n}
        print(f"input 4x: {4 * args.docs} docs, {mb4:.1f} MB")
        print(f"  tamis export                             {w:6.1f} s  {n / w / 1e6:6.2f} Mtok/s  peak RSS {m:6.0f} MB")
        print(f"  peak RSS 4x / 1x: {m / res['tamis_1x']['peak_rss_mb']:.2f}")
        w, m, n2 = datatrove(tmp / "in4", tmp / "d4", tok, files4, args.shard_tokens, "merge")
        res["datatrove_4x"] = {"wall_s": w, "peak_rss_mb": m, "tokens": n2}
        print(f"  DataTrove tokenizer + merger             {w:6.1f} s  {n2 / w / 1e6:6.2f} Mtok/s  peak RSS {m:6.0f} MB")
        print(f"  tamis / DataTrove tokens/s at 4x: {(n / res['tamis_4x']['wall_s']) / (n2 / w):.2f}")
    OUT.mkdir(exist_ok=True)
    res.update(docs=args.docs, mb_1x=mb1, mb_4x=mb4, vocab=args.vocab, shard_tokens=args.shard_tokens)
    (OUT / "bench_export.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
