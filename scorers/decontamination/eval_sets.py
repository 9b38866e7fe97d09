"""Reading the evaluation sets a decontamination job names: JSONL, Parquet or `datasets` on disk.

Each set streams in batches of (item text, item id): the named fields joined by a space, lists
joined by spaces, structs as JSON, numbers as text, nulls as "". The id is `id_field` when the set
names one, else the row number within the set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl

BATCH_ROWS = 20_000
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")


def check_eval_set(spec, i: int) -> None:
    """Raise ValueError naming the eval set and field that is wrong."""
    where = f"eval_sets[{i}]"
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a mapping with name, path and fields, got {spec!r}")
    unknown = set(spec) - {"name", "path", "fields", "id_field", "split"}
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)} (allowed: name, path, fields, id_field, split)")
    if not isinstance(spec.get("name"), str) or not spec["name"]:
        raise ValueError(f"{where}.name must be a non-empty string")
    fields = spec.get("fields")
    if not isinstance(fields, (list, tuple)) or not fields or not all(isinstance(f, str) for f in fields):
        raise ValueError(f"{where}.fields must be a non-empty list of column names, got {fields!r}")
    path = spec.get("path")
    if not isinstance(path, (str, Path)) or not Path(path).exists():
        raise ValueError(f"{where}.path {path!r} does not exist")


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("dataset_info.json", "state.json",
                                                                "dataset_dict.json"))


def _frames(spec: dict) -> Iterator[pl.DataFrame]:
    path = Path(spec["path"])
    cols = list(dict.fromkeys([*spec["fields"], *([spec["id_field"]] if spec.get("id_field") else [])]))
    if _is_saved_dataset(path):
        yield from _dataset_frames(path, spec.get("split"), cols)
        return
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and (
        p.name.endswith(".parquet") or p.name.endswith(_JSON_SUFFIXES)))
    if not files:
        raise ValueError(f"eval set {spec['name']!r}: no .parquet or .jsonl files under {path}")
    for f in files:
        if f.name.endswith(".parquet"):
            lf = pl.scan_parquet(f)
        elif f.name.endswith(_JSON_SUFFIXES):
            lf = pl.scan_ndjson(f, infer_schema_length=10_000)
        else:
            raise ValueError(f"eval set {spec['name']!r}: {f} is not JSONL, Parquet or a saved `datasets` folder")
        _check_columns(spec, lf.collect_schema().names(), cols)
        yield from lf.select(cols).collect_batches(chunk_size=BATCH_ROWS)


def _dataset_frames(path: Path, split: str | None, cols: list[str]) -> Iterator[pl.DataFrame]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a tamis dependency
        raise ImportError("reading a saved dataset folder needs `datasets`: pip install datasets") from e
    ds = datasets.load_from_disk(str(path))
    parts = [ds] if isinstance(ds, datasets.Dataset) else (
        [ds[split]] if split else [ds[k] for k in sorted(ds)])
    for part in parts:
        table = part.with_format("arrow").data.table
        _check_columns({"name": str(path)}, table.column_names, cols)
        if part._indices is not None:  # a filtered/shuffled view: materialise its rows
            table = part.with_format("arrow")[:]
        for b in table.select(cols).to_batches(max_chunksize=BATCH_ROWS):
            yield pl.from_arrow(b)


def _check_columns(spec: dict, have: list[str], need: list[str]) -> None:
    missing = [c for c in need if c not in have]
    if missing:
        raise ValueError(f"eval set {spec['name']!r} has no field(s) {missing}; it has {have}")


def _as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(name)
    if dtype == pl.String:
        return col.fill_null("")
    if isinstance(dtype, (pl.List, pl.Array)):
        return col.cast(pl.List(pl.String)).list.join(" ").fill_null("")
    if isinstance(dtype, pl.Struct):
        return col.struct.json_encode().fill_null("")
    return col.cast(pl.String).fill_null("")


def read_eval_items(spec: dict) -> Iterator[tuple[pl.Series, pl.Series]]:
    """(item text, item id) batches of one eval set."""
    row = 0
    for df in _frames(spec):
        text = df.select(pl.concat_str([_as_text(f, df.schema[f]) for f in spec["fields"]],
                                       separator=" ").alias("t"))["t"]
        if spec.get("id_field"):
            ids = df.select(pl.col(spec["id_field"]).cast(pl.String).fill_null(""))[spec["id_field"]]
        else:
            ids = pl.Series("id", np.arange(row, row + df.height)).cast(pl.String)
        row += df.height
        yield text, ids
