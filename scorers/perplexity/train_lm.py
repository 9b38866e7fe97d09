"""Train a small reference language model for perplexity scoring (`tamis train-lm`).

CCNet scores documents with a language model trained on a clean reference corpus (Wikipedia in the
paper). No model hub is reachable on many clusters, so tamis trains its own: a byte-level BPE
tokenizer (`tokenizers`) and a small GPT-2 (`transformers`) on reference text, saved as a folder
that `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` load. Documents are
joined with `<|endoftext|>` into one token stream; training draws random windows of `seq_len`
tokens from it (AdamW, linear warm-up then cosine decay).

The output folder is written only when it is absent or empty, or, with `overwrite`, when it holds a
model tamis trained (`tamis_lm.json`); any other folder is refused, never deleted. The model is
saved to a temporary sibling folder and renamed into place at the end, so a crash leaves the old
folder (or none) whole.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import polars as pl

from tamis.pipeline.readers import iter_documents

EOS = "<|endoftext|>"
INFO_FILE = "tamis_lm.json"
# Options `train_reference_lm` takes besides texts/output: the keys a job's `train_if_missing` may set.
TRAIN_OPTIONS = ("steps", "layers", "d_model", "heads", "seq_len", "vocab_size", "batch_size",
                 "lr", "seed", "device")
READ_OPTIONS = ("input", "domains", "text_column", "max_chars")


class OutputExists(ValueError):
    """The output folder holds something that training must not replace."""


def check_output(output: str | os.PathLike, overwrite: bool = False, info_file: str = INFO_FILE) -> Path:
    """`output` if a model may be written there: absent, an empty folder, or (with `overwrite`) a
    folder holding a model tamis trained (its `info_file`). Raises `OutputExists` naming the folder
    otherwise. Shared by every tamis trainer (`train-lm`, `train-classifier`)."""
    out = Path(output)
    if not out.exists() and not out.is_symlink():
        return out
    if out.is_symlink() or not out.is_dir():
        raise OutputExists(f"output {out} exists and is not a folder (or is a symbolic link); refusing to "
                           f"replace it: choose another --output")
    if not any(out.iterdir()):
        return out
    if not (out / info_file).is_file():
        raise OutputExists(f"output folder {out} is not empty and holds no {info_file} (not a model tamis "
                           f"trained); refusing to replace it{' even with --overwrite' if overwrite else ''}: "
                           f"choose another --output")
    if not overwrite:
        raise OutputExists(f"output folder {out} already holds a model; pass --overwrite to replace it")
    return out


def _say(line: str) -> None:
    """What train-lm is doing, before its step bar (reading and the tokenizer take minutes)."""
    print(f"train-lm: {line}", file=sys.stderr, flush=True)


def read_texts(paths: Sequence[str], domains: Sequence[str] | None = None, text_column: str = "text",
               max_chars: int | None = None, seed: int = 0, source: str = "train-lm",
               say=None) -> list[str]:
    """Non-empty texts of the inputs (any format `tamis run` reads), optionally only some `domain`s;
    `say(line)`, when given, hears of each file read.

    With `max_chars`, documents are shuffled (seeded) and taken until the budget is spent, the last
    one cut to fit, so a small budget still samples every source.
    """
    frames = []
    for f, t, _, _ in iter_documents(paths, text_field=text_column, id_field=None, source=source):
        if domains and "domain" not in t.column_names:
            raise ValueError(f"{f} has no 'domain' column but domains={list(domains)} was given")
        df = pl.from_arrow(t.select(["text"] + (["domain"] if domains else [])))
        if domains:
            df = df.filter(pl.col("domain").is_in(list(domains))).select("text")
        frames.append(df)
        if say:
            say(f"read {f} ({df.height:,} documents)")
    if not frames:
        return []
    df = pl.concat(frames).filter(pl.col("text").str.len_bytes() > 0)
    if max_chars is not None:
        df = df.sample(fraction=1.0, shuffle=True, seed=seed)
        lens = df["text"].str.len_chars().cast(pl.Int64)
        before = lens.cum_sum() - lens
        df = df.with_columns(before.alias("_before")).filter(pl.col("_before") < max_chars)
        df = df.select(pl.col("text").str.slice(0, pl.lit(max_chars) - pl.col("_before")))
    return df["text"].to_list()


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8192):
    """A byte-level BPE tokenizer (GPT-2 style) with one special token, `<|endoftext|>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS,
                                   unk_token=EOS, pad_token=EOS, model_max_length=1 << 30)


def token_stream(tokenizer, texts: Sequence[str]) -> np.ndarray:
    """All documents as one int32 stream, each followed by `<|endoftext|>`."""
    eos = tokenizer.eos_token_id
    ids = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)["input_ids"]
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    out = np.full(int(lengths.sum()), eos, dtype=np.int32)
    ends = np.cumsum(lengths) - 1
    starts = ends - lengths + 1
    for s, x in zip(starts.tolist(), ids):
        out[s:s + len(x)] = x
    return out


def _lr_at(step: int, steps: int, lr: float) -> float:
    warm = max(1, steps // 10)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train_reference_lm(texts: Sequence[str], output: str | os.PathLike, *, steps: int = 300,
                       layers: int = 4, d_model: int = 128, heads: int = 4, seq_len: int = 256,
                       vocab_size: int = 8192, batch_size: int = 16, lr: float = 2e-3,
                       seed: int = 0, device: str = "auto", progress: bool = True,
                       sources: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Train tokenizer + GPT-2 on `texts`; save to `output` (atomically) and return its path.

    The model's context (`n_positions`) is `seq_len`, which is also the scorer's default window.
    `tamis_lm.json` in the folder records the options, final loss and timing. `output` must be
    absent or empty, or with `overwrite` hold a model tamis trained (see `check_output`).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GPT2Config, GPT2LMHeadModel

    if not texts:
        raise ValueError("no reference text to train on")
    if d_model % heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
    check_output(output, overwrite)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    say = _say if progress else (lambda line: None)
    say(f"training the tokenizer (byte-level BPE, vocabulary {vocab_size:,}) on {len(texts):,} documents, "
        f"{sum(map(len, texts)):,} characters")
    tokenizer = train_tokenizer(texts, vocab_size)
    say("tokenizing the text")
    stream = token_stream(tokenizer, texts)
    if stream.size < seq_len + 1:
        raise ValueError(f"reference text has {stream.size} tokens, fewer than seq_len={seq_len}")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=seq_len, n_embd=d_model,
                        n_layer=layers, n_head=heads, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
                        activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).to(dev)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(stream.astype(np.int64))
    offsets = np.arange(seq_len)
    losses: list[float] = []
    say(f"training GPT-2 ({sum(p.numel() for p in model.parameters()):,} parameters) on {stream.size:,} tokens "
        f"for {steps} steps on {dev}")
    bar = tqdm(range(steps), desc="train-lm", unit="step", disable=not progress)
    for step in bar:
        starts = rng.integers(0, stream.size - seq_len, size=batch_size)
        x = data[torch.from_numpy(starts[:, None] + offsets)].to(dev)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev.startswith("cuda")):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    bar.close()

    info = {"steps": steps, "layers": layers, "d_model": d_model, "heads": heads, "seq_len": seq_len,
            "vocab_size": len(tokenizer), "batch_size": batch_size, "lr": lr, "seed": seed,
            "params": sum(p.numel() for p in model.parameters()), "train_tokens": int(stream.size),
            "train_docs": len(texts), "final_loss": float(np.mean(losses[-10:])),
            "train_s": round(time.perf_counter() - t0, 2), "sources": [str(s) for s in sources]}
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, "tmp")
    try:
        model.eval().to("cpu").save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
        _put_in_place(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temporary folder, never `out`
        raise
    return out


def _sibling(out: Path, kind: str) -> Path:
    """A new empty hidden folder beside `out` (created with the usual permissions, unlike mkdtemp's)."""
    path = out.with_name(f".{out.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    return path


def _put_in_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished model folder `tmp` to `out`. A previous tamis model at `out` (checked
    again now) is first renamed aside and deleted only once the new one is in place."""
    check_output(out, overwrite)
    if not out.exists() or not any(out.iterdir()):
        os.replace(tmp, out)  # the rename replaces an empty folder
        return
    old = _sibling(out, "old")
    os.replace(out, old)  # the rename replaces the empty `old`
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old)  # holds tamis_lm.json: a model tamis trained


def train_from_files(input: Sequence[str] | str, output: str | os.PathLike, *,
                     domains: Sequence[str] | str | None = None, text_column: str = "text",
                     max_chars: int | None = 20_000_000, progress: bool = True, overwrite: bool = False,
                     **options) -> Path:
    """`read_texts` + `train_reference_lm`: what `tamis train-lm` and `train_if_missing` run.
    The output folder is checked (`check_output`) before any text is read."""
    inputs = [input] if isinstance(input, (str, os.PathLike)) else list(input)
    if isinstance(domains, str):
        domains = [d.strip() for d in domains.split(",") if d.strip()]
    unknown = set(options) - set(TRAIN_OPTIONS)
    if unknown:
        raise ValueError(f"unknown train-lm options {sorted(unknown)}; allowed: {TRAIN_OPTIONS}")
    check_output(output, overwrite)
    if progress:
        _say(f"reading {', '.join(map(str, inputs))}" + (f" (sampling {max_chars:,} characters)" if max_chars else ""))
    texts = read_texts(inputs, domains, text_column, max_chars, seed=options.get("seed", 0),
                       say=_say if progress else None)
    return train_reference_lm(texts, output, progress=progress, sources=inputs, overwrite=overwrite, **options)


def is_model_dir(path: str | os.PathLike) -> bool:
    """True when `path` holds a saved transformers model (has `config.json`)."""
    return (Path(path) / "config.json").is_file()
