"""Text normalisation shared by the dedup stages: NFKC, case folded, whitespace collapsed."""
from __future__ import annotations

import polars as pl
import pyarrow as pa


def normalize_expr(col: str = "text") -> pl.Expr:
    """NFKC, lower-case, every whitespace run as one space, trimmed."""
    return (pl.col(col).str.normalize("NFKC").str.to_lowercase()
            .str.replace_all(r"\s+", " ").str.strip_chars())


def normalize_text(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    return pl.DataFrame({"t": texts}).select(normalize_expr("t"))["t"].to_arrow()
