"""Proxy language models for mixture and weight search: an n-gram LM (seconds on a CPU) and a tiny GPT-2.

`train_proxy(kind, train_texts, valid, token_budget=...)` trains one proxy on at most
`token_budget` tokens of `train_texts` and returns the mean per-token validation loss in nats for
each target set in `valid`. Losses are comparable across runs of a study because every run uses the
same tokenisation: raw UTF-8 bytes by default (vocabulary 256), or one tokenizer given as
`tokenizer=PATH` (a `tokenizer.json` or a folder `transformers.AutoTokenizer` loads offline),
trained once on the pooled corpus. RegMix's proxies are 1M-parameter LLaMA models trained on 1B
tokens; these are smaller stand-ins for a CPU (see docs/regmix.md).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

from tamis.mixers import ngram_lm as _ngram_lm

KINDS = ("ngram", "gpt2")


@lru_cache(maxsize=4)
def load_tokenizer(path: str):
    """A tokenizer from a local path: `tokenizer.json` (tokenizers) or a transformers folder."""
    if path.endswith(".json"):
        from tokenizers import Tokenizer
        return Tokenizer.from_file(path)
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def vocab_size(tokenizer: str | None) -> int:
    if tokenizer in (None, "bytes"):
        return 256
    tok = load_tokenizer(tokenizer)
    return tok.get_vocab_size() if hasattr(tok, "get_vocab_size") else len(tok)


def encode(texts: Sequence[str], tokenizer: str | None = None) -> list[np.ndarray]:
    """Token ids per text: UTF-8 bytes (uint8) when `tokenizer` is None/"bytes", else the tokenizer's."""
    if tokenizer in (None, "bytes"):
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]
    tok = load_tokenizer(tokenizer)
    if hasattr(tok, "encode_batch"):
        ids = [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]
    else:
        ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    return [np.asarray(i, dtype=np.int64) for i in ids]


def count_tokens(texts, tokenizer: str | None = None) -> np.ndarray:
    """Tokens per text (int64): `None`/"bytes" = UTF-8 bytes, "whitespace" = words, else a tokenizer."""
    import polars as pl
    s = pl.Series("t", texts, dtype=pl.Utf8) if not isinstance(texts, pl.Series) else texts
    if tokenizer in (None, "bytes"):
        return s.str.len_bytes().fill_null(0).cast(pl.Int64).to_numpy()
    if tokenizer == "whitespace":
        return s.str.count_matches(r"\S+").fill_null(0).cast(pl.Int64).to_numpy()
    return np.array([len(i) for i in encode(s.fill_null("").to_list(), tokenizer)], dtype=np.int64)


def token_stream(texts: Sequence[str], tokenizer: str | None, budget: int | None = None,
                 sep: str = "\n") -> np.ndarray:
    """Texts joined by `sep` and encoded, cut at `budget` tokens (int64)."""
    if tokenizer in (None, "bytes"):
        raw = sep.join(texts).encode("utf-8")
        if budget is not None:
            raw = raw[:budget]
        return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)
    sep_ids = encode([sep], tokenizer)[0]
    parts, n, i = [], 0, 0
    texts = list(texts)
    while i < len(texts) and (budget is None or n < budget):
        # encode in slices of ~4 bytes per missing token, so a big pool is not encoded in full
        want = float("inf") if budget is None else 4 * (budget - n) + 1
        j, size = i, 0
        while j < len(texts) and size < want:
            size += len(texts[j])
            j += 1
        for ids in encode(texts[i:j], tokenizer):
            parts += [ids, sep_ids]
            n += len(ids) + len(sep_ids)
        i = j
    out = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
    return out[:budget] if budget is not None else out


def train_proxy(kind: str, train_texts: Sequence[str], valid: dict[str, Sequence[str]], *,
                token_budget: int, seed: int = 0, **params) -> dict[str, float]:
    """Train one proxy on `train_texts` (cut at `token_budget` tokens); mean nats/token per target.

    kind "ngram": params `order` (5), `tokenizer` (None = bytes), `max_valid_tokens` (200_000).
    kind "gpt2": params `tokenizer`, `n_layer` (2), `n_head` (4), `n_embd` (128), `block_size` (128),
    `batch_size` (16), `lr` (1e-3), `warmup_steps` (10), `epochs` (1), `device` ("cuda" when
    available), `max_valid_tokens` (65_536), `num_threads` (1 torch CPU thread during the run).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    if not valid:
        raise ValueError("valid must name at least one target set")
    tokenizer = params.get("tokenizer")
    train = token_stream(train_texts, tokenizer, token_budget)
    if train.size < 2:
        raise ValueError("train_texts hold fewer than 2 tokens")
    if kind == "ngram":
        return _train_ngram(train, valid, tokenizer=tokenizer, **{k: v for k, v in params.items()
                                                                    if k != "tokenizer"})
    return _train_gpt2(train, valid, seed=seed, **params)


def _train_ngram(train: np.ndarray, valid, *, tokenizer=None, order: int = 5,
                 max_valid_tokens: int = 200_000) -> dict[str, float]:
    lm = _ngram_lm.KneserNeyLM(order=order, vocab_size=vocab_size(tokenizer)).fit(train)
    out = {}
    for name, texts in valid.items():
        ids = token_stream(list(texts), tokenizer, max_valid_tokens)
        if ids.size == 0:
            raise ValueError(f"validation set {name!r} is empty")
        out[name] = float(lm.mean_nll(ids))
    return out


def _train_gpt2(train: np.ndarray, valid, *, seed: int = 0, tokenizer=None, n_layer: int = 2,
                n_head: int = 4, n_embd: int = 128, block_size: int = 128, batch_size: int = 16,
                lr: float = 1e-3, warmup_steps: int = 10, epochs: float = 1.0,
                device: str | None = None, max_valid_tokens: int = 65_536,
                num_threads: int = 1) -> dict[str, float]:
    import torch

    old_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)   # tiny models: more threads only spin (10x slower on 2 cores)
    try:
        return _gpt2_run(train, valid, seed, tokenizer, n_layer, n_head, n_embd, block_size,
                         batch_size, lr, warmup_steps, epochs, device, max_valid_tokens)
    finally:
        torch.set_num_threads(old_threads)


def _gpt2_run(train, valid, seed, tokenizer, n_layer, n_head, n_embd, block_size, batch_size, lr,
              warmup_steps, epochs, device, max_valid_tokens) -> dict[str, float]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vocab = vocab_size(tokenizer)
    config = GPT2Config(vocab_size=vocab, n_positions=block_size, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    n_blocks = max(1, (train.size - 1) // block_size)
    steps = max(1, math.ceil(epochs * n_blocks / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup_steps)))
    blocks = _blocks(train, block_size)
    model.train()
    for step in range(steps):
        idx = rng.choice(len(blocks), size=min(batch_size, len(blocks)), replace=False)
        x = torch.from_numpy(blocks[idx]).to(device)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    model.eval()
    out = {}
    with torch.no_grad():
        for name, texts in valid.items():
            ids = token_stream(list(texts), tokenizer, max_valid_tokens)
            if ids.size < 2:
                raise ValueError(f"validation set {name!r} holds fewer than 2 tokens")
            n_full = ids.size // block_size
            vb = ids[None, :] if n_full == 0 else ids[:n_full * block_size].reshape(n_full, block_size)
            total, count = 0.0, 0
            for i in range(0, len(vb), 64):
                x = torch.from_numpy(vb[i:i + 64]).to(device)
                logits = model(input_ids=x).logits[:, :-1].float()
                nll = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, vocab), x[:, 1:].reshape(-1), reduction="sum")
                total += float(nll)
                count += x[:, 1:].numel()
            out[name] = total / count
    return out


def _blocks(ids: np.ndarray, block_size: int) -> np.ndarray:
    """Non-overlapping windows of `block_size` tokens (the tail padded by wrapping to the start)."""
    n = max(1, math.ceil(ids.size / block_size))
    need = n * block_size
    if ids.size < need:
        ids = np.concatenate([ids, np.resize(ids, need - ids.size)])
    return ids[:need].reshape(n, block_size).astype(np.int64)
