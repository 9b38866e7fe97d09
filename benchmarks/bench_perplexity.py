"""Perplexity scoring throughput: tamis `Perplexity.score()` vs a bare torch forward loop.

Both sides run in one process on the same model and the same micro-batches (the scorer's own
windows, sorted by length and padded): the bare loop gets them pre-built as tensors and only runs
`model(input_ids, attention_mask)` (full logits), so everything tamis adds (tokenisation, windows,
padding, NLL, aggregation) counts against it. A second bare variant adds the usual hand-written
NLL (log-softmax over all positions + gather). Also: KenLM (`KenLM`) against a bare
`kenlm.Model.score` loop over pre-normalised lines, and CPU bf16 autocast against float32.

Rates are scored tokens per CPU-second of this process (thread pools pinned to `--threads`), the
best of `--rounds` interleaved rounds, so a loaded machine skews both sides alike.

    .venv/bin/python benchmarks/bench_perplexity.py [--model DIR] [--docs 400] [--rounds 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = REPO / ".." / "shared" / "corpus"
SOURCES = ("sotu", "linux-doc-6.1", "fortunes", "reuters-tm", "dict-wn", "bible-web")


def cpu_timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def load_docs(n: int, max_chars: int) -> pa.Table:
    per = max(1, n // len(SOURCES))
    frames = [pl.read_parquet(CORPUS / f"{s}.parquet").sample(min(per, pl.scan_parquet(CORPUS / f"{s}.parquet")
              .select(pl.len()).collect().item()), seed=0).select("id", "text", "domain") for s in SOURCES]
    df = pl.concat(frames).with_columns(pl.col("text").str.slice(0, max_chars))
    return df.to_arrow()


def reference_model(path: Path, steps: int) -> Path:
    """The job's reference LM if `tamis run jobs/perplexity.yaml` made one, else train the same
    architecture (4 layers, d=128, BPE 8192, context 256) briefly: weights do not change tokens/s."""
    from tamis.scorers.perplexity.train_lm import is_model_dir, train_from_files

    if not is_model_dir(path):
        print(f"training the reference LM into {path} ({steps} steps) ...", flush=True)
        train_from_files([str(CORPUS)], path, domains=["literature", "tech-docs"], max_chars=2_000_000,
                         steps=steps, layers=4, d_model=128, heads=4, seq_len=256, vocab_size=8192)
    return path


def bench_lm(model: Path, table: pa.Table, rounds: int) -> None:
    import torch

    from tamis.scorers.perplexity.model import Perplexity

    scorer = Perplexity(model=str(model), precision="float32")
    scorer.setup()
    ids = scorer.tokenize(table.column("text").to_pylist())
    batches = [(torch.from_numpy(i), torch.from_numpy(a), torch.from_numpy(s)) for i, a, s, _ in scorer.batches(ids)]
    n_tokens = int(sum(s.sum() for _, _, s in batches))
    lm = scorer.model_

    def bare():
        with torch.inference_mode():
            for x, m, _ in batches:
                lm(input_ids=x, attention_mask=m).logits

    def bare_nll():
        total = 0.0
        with torch.inference_mode():
            for x, m, s in batches:
                logp = torch.log_softmax(lm(input_ids=x, attention_mask=m).logits.float(), -1)
                nll = -logp[:, :-1].gather(-1, x[:, 1:, None])[..., 0]
                total += float(nll[s[:, :-1]].sum())
        return total

    def tamis():
        return scorer.score(table)

    bare()  # warm-up
    best = {"tamis": np.inf, "bare": np.inf, "bare_nll": np.inf}
    walls = dict(best)
    for _ in range(rounds):
        for name, fn in (("tamis", tamis), ("bare", bare), ("bare_nll", bare_nll)):
            out, cpu, wall = cpu_timed(fn)
            best[name], walls[name] = min(best[name], cpu), min(walls[name], wall)
            if name == "tamis":
                assert int(np.asarray(out["ppl_tokens"]).sum()) == n_tokens
    cfg = lm.config
    print(f"\nLM: GPT-2 {cfg.n_layer} layers, d={cfg.n_embd}, vocab {cfg.vocab_size}, window "
          f"{scorer.window_}/stride {scorer.stride_}, {sum(p.numel() for p in lm.parameters()) / 1e6:.1f}M "
          f"params; {table.num_rows} docs, {n_tokens:,} scored tokens in {len(batches)} micro-batches")
    print("| | tokens/CPU-s | tokens/wall-s | vs bare forward |\n|---|---|---|---|")
    for name, label in (("tamis", "tamis `Perplexity.score()` (tokenise + windows + NLL)"),
                        ("bare", "bare `model(ids, mask).logits` loop, same batches"),
                        ("bare_nll", "bare loop + log-softmax/gather NLL")):
        print(f"| {label} | {n_tokens / best[name]:,.0f} | {n_tokens / walls[name]:,.0f} | "
              f"{best['bare'] / best[name]:.2f}x |")

    # bf16 autocast on this CPU: a 4-window slice of one micro-batch (emulated bf16 can be very slow).
    few = [(x[:4], m[:4], s[:4]) for x, m, s in batches[:1]]
    toks = int(sum(s.sum() for _, _, s in few))
    res = {}
    for dtype in (None, torch.bfloat16):
        def run():
            return sum(float(scorer._nll(x.numpy(), m.numpy(), s.numpy(), dtype).sum()) for x, m, s in few)
        run()
        res[dtype] = cpu_timed(run)
    (n32, t32, _), (n16, t16, _) = res[None], res[torch.bfloat16]
    cap = torch.backends.cpu.get_cpu_capability()
    print(f"\nCPU autocast ({cap}, {toks:,} tokens): float32 {toks / t32:,.0f} tok/CPU-s, bfloat16 "
          f"{toks / t16:,.0f} tok/CPU-s ({t32 / t16:.2f}x); ppl ratio bf16/fp32 = "
          f"{np.exp((n16 - n32) / toks):.4f}")


def ccnet_style_ppl(model, texts: list[str]) -> list[float | None]:
    """The per-document Python loop of CCNet's `DocLM.do` with its line normaliser (re-implemented
    with `unicodedata`/`re`): what a script around the `kenlm` module does."""
    import re
    import unicodedata

    from tamis.scorers.perplexity.kenlm import UNICODE_PUNCT

    digit, control = re.compile(r"\d"), re.compile(r"[\x00-\x1f\x7f-\x9f]")
    punct = re.compile("[" + "".join(UNICODE_PUNCT) + "]")

    def normalize(line: str) -> str:
        line = line.strip()
        if not line:
            return line
        line = line.lower()
        line = "".join(c for c in unicodedata.normalize("NFD", line) if unicodedata.category(c) != "Mn")
        line = digit.sub("0", line)
        line = punct.sub(lambda m: UNICODE_PUNCT[m.group()], line)
        return control.sub("", line)

    out = []
    for text in texts:
        if not text:
            out.append(None)
            continue
        log10p, n = 0.0, 0
        for line in text.split("\n"):
            line = normalize(line)
            log10p += model.score(line)
            n += len(line.split()) + 1
        out.append(10.0 ** (-log10p / n))
    return out


def bench_kenlm(table: pa.Table, tmp: Path, rounds: int) -> None:
    import kenlm

    from tamis.scorers.perplexity.kenlm import KenLM, normalize_expr, write_arpa

    ref = pl.read_parquet(CORPUS / "janeausten.parquet")["text"].str.slice(0, 600_000)
    lines = ref.to_frame("t").select(normalize_expr(pl.col("t").str.split("\n").explode()))["t"].to_list()
    write_arpa([l for l in lines if l], tmp / "bench.arpa")
    scorer = KenLM(model=str(tmp / "bench.arpa"))
    scorer.setup()
    texts = table.column("text").to_pylist()
    norm = scorer.lines(table)["line"].to_list()
    model = kenlm.Model(str(tmp / "bench.arpa"))
    best = {"tamis": np.inf, "ccnet": np.inf, "bare": np.inf}
    for _ in range(rounds):
        out, cpu, _ = cpu_timed(lambda: scorer.score(table))
        best["tamis"] = min(best["tamis"], cpu)
        ref_ppl, cpu, _ = cpu_timed(lambda: ccnet_style_ppl(model, texts))
        best["ccnet"] = min(best["ccnet"], cpu)
        _, cpu, _ = cpu_timed(lambda: [model.score(s) for s in norm])
        best["bare"] = min(best["bare"], cpu)
    got = np.asarray(out["kenlm_ppl"].to_pylist(), dtype=float)
    want = np.asarray([np.nan if v is None else v for v in ref_ppl], dtype=float)
    same = np.allclose(got, want, rtol=1e-9, equal_nan=True)
    n = int(np.asarray(out["kenlm_tokens"]).sum())
    print(f"\nKenLM bigram ARPA (600k chars of Austen), {table.num_rows} docs, {len(norm):,} lines, "
          f"{n:,} tokens (words + </s>); tamis == CCNet-style loop on every document: {same}")
    print("| | tokens/CPU-s | vs CCNet-style loop |\n|---|---|---|")
    print(f"| tamis `KenLM.score()` (polars normalise, kenlm per line, numpy sums) | "
          f"{n / best['tamis']:,.0f} | {best['ccnet'] / best['tamis']:.2f}x |")
    print(f"| CCNet `DocLM.do`-style Python loop (normalise + score per line) | {n / best['ccnet']:,.0f} | 1.00x |")
    print(f"| bare `kenlm.Model.score(line)` over pre-normalised lines (floor) | {n / best['bare']:,.0f} | "
          f"{best['ccnet'] / best['bare']:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    job_lm = REPO / "runs" / "ref-lm"
    ap.add_argument("--model", default=str(job_lm if (job_lm / "config.json").is_file()
                                           else REPO / "benchmarks" / "_out" / "ref-lm"))
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--docs", type=int, default=120)
    ap.add_argument("--max-chars", type=int, default=2000)
    ap.add_argument("--kenlm-docs", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-lm", action="store_true", help="KenLM part only")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    table = load_docs(args.docs, args.max_chars)
    model = reference_model(Path(args.model), args.train_steps)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    if not args.skip_lm:
        bench_lm(model, table, args.rounds)
    out = REPO / "benchmarks" / "_out"
    out.mkdir(parents=True, exist_ok=True)
    bench_kenlm(load_docs(args.kenlm_docs, args.max_chars), out, args.rounds)


if __name__ == "__main__":
    main()
