"""Hugging Face sequence-classification heads, loaded from a local folder and run in batches.

Shared by the `rater` (Meta-rater PRRC models) and `classifier` (FineWeb-Edu, Nemotron-CC) stages:
one loader (offline, GPU when the worker has one) and one batched scorer whose value per text is
`expected_score(logits)`: sum_k softmax(logits)_k · k, i.e. the probability of label 1 for a
two-label head, the expected label for a k-label head, the raw output of a regression head.
"""
from __future__ import annotations

import os

import numpy as np


def expected_score(logits: np.ndarray) -> np.ndarray:
    """sum_k softmax(logits)_k · k per row; a one-column (regression) head passes through."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[1] == 1:
        return logits[:, 0]
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (z / z.sum(axis=1, keepdims=True)) @ np.arange(logits.shape[1], dtype=np.float64)


def check_head_params(max_length: int, batch_size: int, device: str, dtype: str) -> None:
    """The ValueError a stage's `validate()` raises for bad head parameters, naming the parameter."""
    if not isinstance(max_length, int) or max_length < 2 or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"max_length must be >= 2 and batch_size >= 1, got {max_length!r} and {batch_size!r}")
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")


def load_head(path: str, device: str = "auto", dtype: str = "auto"):
    """(tokenizer, model, torch.device) of the local folder `path`; no network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype if dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, local_files_only=True, dtype=getattr(torch, dtype)).to(device).eval()
    return tok, model, torch.device(device)


def head_scores(loaded, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    """`expected_score` of every text (float64), in batches of similar length."""
    import torch
    tok, model, device = loaded
    out = np.zeros(len(texts), np.float64)
    if not texts:
        return out
    cut = [t[: max_length * 10] for t in texts]  # a token is rarely longer than 10 chars
    order = np.argsort([len(t) for t in cut], kind="stable")  # similar lengths pad less
    with torch.inference_mode():
        for start in range(0, len(cut), batch_size):
            idx = order[start:start + batch_size]
            enc = tok([cut[i] for i in idx], truncation=True, max_length=max_length,
                      padding=True, return_tensors="pt").to(device)
            logits = model(**enc).logits.float().cpu().numpy()
            out[idx] = expected_score(logits)
    return out
