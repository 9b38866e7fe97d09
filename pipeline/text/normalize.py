"""Text normalisation shared by the dedup stages: NFKC, case folded, whitespace collapsed."""
from __future__ import annotations

import polars as pl
import pyarrow as pa


def normalize_expr(col: str = "text") -> pl.Expr:
    """NFKC, lower-case, every whitespace run as one space, trimmed.

    NFKC leaves ASCII unchanged, so it runs only on texts with a non-ASCII byte (more bytes than
    characters): on the curated shared corpus (34% of texts non-ASCII) 0.46 s -> 0.15 s for 15 MB.
    """
    text = pl.col(col)
    ascii_only = text.str.len_bytes() == text.str.len_chars()
    nfkc = pl.when(ascii_only).then(text).otherwise(text.str.normalize("NFKC"))
    return nfkc.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars().alias(col)


def normalize_text(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    return pl.DataFrame({"t": texts}).select(normalize_expr("t"))["t"].to_arrow()
