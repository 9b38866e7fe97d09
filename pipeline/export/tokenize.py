"""A Hugging Face fast tokenizer (`tokenizer.json`) loaded with `tokenizers`, its EOS, token arrays."""
from __future__ import annotations

import json
import os
from itertools import chain
from pathlib import Path

import numpy as np

# EOS names tried, in order, when the folder's configs name none
EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>")


class TokenizerError(ValueError):
    """A tokenizer folder that cannot be used; the message names it and what to do."""


def tokenizer_file(path: str | Path) -> Path:
    """`tokenizer.json` of a folder (or the file itself)."""
    p = Path(path)
    f = p / "tokenizer.json" if p.is_dir() else p
    if not f.is_file():
        raise TokenizerError(f"--tokenizer {path}: no tokenizer.json there (a Hugging Face fast tokenizer "
                             f"folder, e.g. from AutoTokenizer.save_pretrained)")
    return f


def load_tokenizer(path: str | Path):
    """The `tokenizers.Tokenizer` of a folder; rayon threads limited to one per task (Ray runs one task
    per CPU) unless RAYON_NUM_THREADS is set before the first encode of the process."""
    from tokenizers import Tokenizer
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    try:
        return Tokenizer.from_file(str(tokenizer_file(path)))
    except Exception as e:  # tokenizers raises a bare Exception on a bad file
        if isinstance(e, TokenizerError):
            raise
        raise TokenizerError(f"--tokenizer {path}: cannot load tokenizer.json ({e})") from None


def _token_name(v) -> str | None:
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) and v else None


def resolve_eos(path: str | Path, tok, override: str | None = None) -> tuple[int, str]:
    """(id, token) of the end-of-document token: `override` (a token or an id), else `eos_token` of
    tokenizer_config.json / special_tokens_map.json beside tokenizer.json, else a special token named
    like an EOS (`<|endoftext|>`, `</s>`, ...). Raises `TokenizerError` when there is none."""
    folder = tokenizer_file(path).parent
    if override is not None:
        if override.isdigit():
            i = int(override)
            if i >= tok.get_vocab_size(with_added_tokens=True):
                raise TokenizerError(f"--eos {override}: id beyond the vocabulary of {folder}")
            return i, tok.id_to_token(i) or override
        i = tok.token_to_id(override)
        if i is None:
            raise TokenizerError(f"--eos {override!r}: not a token of {folder}; pass a token of its vocabulary or an id")
        return i, override
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        f = folder / name
        if f.is_file():
            try:
                eos = _token_name(json.loads(f.read_text()).get("eos_token"))
            except (json.JSONDecodeError, AttributeError):
                eos = None
            if eos and tok.token_to_id(eos) is not None:
                return tok.token_to_id(eos), eos
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    for name in EOS_NAMES:
        if name in special or (not special and tok.token_to_id(name) is not None):
            return tok.token_to_id(name), name
    raise TokenizerError(f"--tokenizer {folder}: no EOS token (no eos_token in tokenizer_config.json or "
                         f"special_tokens_map.json, no special token among {', '.join(EOS_NAMES)}); "
                         f"pass --eos TOKEN_OR_ID")


def vocab_size(tok) -> int:
    return tok.get_vocab_size(with_added_tokens=True)


def encode_ids(tok, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
    """The token ids of each text, in one batch call; without character offsets where the tokenizers
    version can (`encode_batch_fast`, >= 0.21): 1.5x less CPU on sotu + fortunes with a 16k BPE."""
    fast = getattr(tok, "encode_batch_fast", tok.encode_batch)
    return [e.ids for e in fast(texts, add_special_tokens=add_special_tokens)]


def encode(tok, texts: list[str], eos: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(flat tokens, tokens per document) of `texts`, each encoded as `tok.encode(text).ids` (the
    tokenizer's own special tokens, e.g. a BOS, included) followed by `eos` unless it already ends so.
    One `encode_ids` call; the per-document work left in Python is reading each encoding's ids."""
    ids = encode_ids(tok, texts)
    lens = np.fromiter(map(len, ids), np.int64, count=len(ids))
    flat = np.fromiter(chain.from_iterable(ids), np.int64, count=int(lens.sum()))
    ends = np.cumsum(lens)
    last = np.where(lens > 0, flat[np.maximum(ends - 1, 0)] if flat.size else -1, -1)
    add = last != eos
    flat = np.insert(flat, ends[add], eos)
    return flat.astype(dtype, copy=False), (lens + add).astype(np.int64)
