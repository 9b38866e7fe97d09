"""Shard writers and readers: Megatron-Core indexed datasets and Dolma/OLMo-style token arrays.

megatron  `NAME.bin`: the tokens of every document, back to back, in `dtype`; `NAME.idx`:
          b"MMIDIDX\\x00\\x00", version (<Q 1), dtype code (<B: 8 uint16, 4 int32), sequence count (<Q),
          document count (<Q, sequences + 1), then the sequence lengths (int32), their byte offsets in
          the .bin (int64) and the document indices (int64: 0, 1, ..., n; one sequence per document).
          The layout of `megatron.core.datasets.indexed_dataset` (`_IndexWriter`), which reads it.
          dtype: uint16 when the vocabulary has fewer than 65,500 tokens, else int32 (`DType.optimal_dtype`).
npy       `NAME.npy`: the tokens back to back, a raw little-endian array without a header (what
          Dolma's `dolma tokens` writes and OLMo memory-maps: `np.memmap(path, dtype, mode="r")`);
          dtype uint16 when the vocabulary fits (<= 65,536 tokens), else uint32. `NAME.csv.gz`: one
          line per document, `start,end,id,domain` (token offsets, end exclusive), Dolma's metadata file.
Both      `NAME.docs.parquet`: per document in order: id, copy (0 unless a mixture repeats it), domain,
          license, tokens; the lineage from tokens back to curated rows.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

FORMATS = ("megatron", "npy")
IDX_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}
MEGATRON_DTYPES = {8: np.uint16, 4: np.int32, 1: np.uint8, 2: np.int8, 3: np.int16, 5: np.int64,
                   6: np.float64, 7: np.float32}


def token_dtype(fmt: str, vocab: int) -> np.dtype:
    if fmt == "megatron":
        return np.dtype(np.uint16 if vocab < 65500 else np.int32)
    return np.dtype(np.uint16 if vocab <= 65536 else np.uint32)


def data_files(fmt: str, prefix: Path) -> list[Path]:
    """The files of one shard, the one written last (the shard's commit) last."""
    ext = (".bin", ".idx") if fmt == "megatron" else (".csv.gz", ".npy")
    return [prefix.with_name(prefix.name + ".docs.parquet")] + [prefix.with_name(prefix.name + e) for e in ext]


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_idx(path: Path, lengths: np.ndarray, dtype: np.dtype) -> None:
    lengths = np.asarray(lengths, np.int64)
    pointers = np.zeros(len(lengths), np.int64)
    if len(lengths):
        pointers[1:] = np.cumsum(lengths[:-1]) * dtype.itemsize
    n = len(lengths)
    with open(path, "wb") as f:
        f.write(IDX_HEADER)
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", MEGATRON_CODES[dtype]))
        f.write(struct.pack("<Q", n))
        f.write(struct.pack("<Q", n + 1))
        f.write(lengths.astype(np.int32).tobytes())
        f.write(pointers.tobytes())
        f.write(np.arange(n + 1, dtype=np.int64).tobytes())


def write_shard(fmt: str, prefix: Path, tokens: np.ndarray, docs: pa.Table) -> None:
    """Write one shard: `tokens` (flat, in order) and `docs` (id, copy, domain, license, tokens).
    Every file is written under a temporary name and renamed; the last rename commits the shard."""
    lengths = docs["tokens"].to_numpy()
    meta, *rest = data_files(fmt, prefix)
    _atomic(meta, lambda p: pq.write_table(docs, p, compression="zstd"))
    if fmt == "megatron":
        binf, idx = rest
        _atomic(binf, lambda p: tokens.tofile(p))
        _atomic(idx, lambda p: write_idx(p, lengths, tokens.dtype))
    else:
        csv, npy = rest
        ends = np.cumsum(lengths)
        index = pa.table({"start": ends - lengths, "end": ends, "id": docs["id"], "domain": docs["domain"]})

        def write_csv(p):
            with gzip.open(p, "wb") as fh:
                pacsv.write_csv(index, fh, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        _atomic(csv, write_csv)
        _atomic(npy, lambda p: tokens.tofile(p))


def read_megatron(prefix: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens memmap, sequence lengths, byte pointers) of `prefix.bin` / `prefix.idx`, read from
    the published layout (checks the header, version and document indices)."""
    prefix = Path(prefix)
    raw = Path(str(prefix) + ".idx").read_bytes()
    if raw[:9] != IDX_HEADER:
        raise ValueError(f"{prefix}.idx: bad header {raw[:9]!r}")
    version, code, n, ndocs = struct.unpack_from("<QBQQ", raw, 9)
    if version != 1:
        raise ValueError(f"{prefix}.idx: version {version}, expected 1")
    off = 34
    lengths = np.frombuffer(raw, np.int32, n, off)
    pointers = np.frombuffer(raw, np.int64, n, off + 4 * n)
    doc_idx = np.frombuffer(raw, np.int64, ndocs, off + 12 * n)
    if ndocs != n + 1 or doc_idx[-1] != n:
        raise ValueError(f"{prefix}.idx: document indices do not cover the {n} sequences")
    dtype = np.dtype(MEGATRON_DTYPES[code])
    size = os.path.getsize(str(prefix) + ".bin")
    tokens = np.memmap(str(prefix) + ".bin", dtype=dtype, mode="r") if size else np.zeros(0, dtype)
    return tokens, lengths, pointers


def read_npy(prefix: str | Path, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(tokens memmap, (start, end) per document) of `prefix.npy` / `prefix.csv.gz`."""
    prefix = Path(prefix)
    npy = Path(str(prefix) + ".npy")
    tokens = np.memmap(npy, dtype=dtype, mode="r") if npy.stat().st_size else np.zeros(0, dtype)
    with gzip.open(str(prefix) + ".csv.gz", "rb") as fh:
        idx = pacsv.read_csv(fh, read_options=pacsv.ReadOptions(column_names=["start", "end", "id", "domain"]),
                             convert_options=pacsv.ConvertOptions(column_types={"id": pa.string(), "domain": pa.string()}))
    return tokens, np.stack([idx["start"].to_numpy(), idx["end"].to_numpy()], axis=1)


def documents(fmt: str, prefix: str | Path, dtype) -> list[np.ndarray]:
    """Every document's tokens of one shard, in order."""
    if fmt == "megatron":
        tokens, lengths, pointers = read_megatron(prefix)
        starts = pointers // np.dtype(tokens.dtype).itemsize
        return [np.asarray(tokens[s:s + n]) for s, n in zip(starts, lengths)]
    tokens, spans = read_npy(prefix, dtype)
    return [np.asarray(tokens[a:b]) for a, b in spans]
