"""A fitted global stage's state saved as data (JSON, Parquet, .npy), never as a pickle.

Resume must not execute anything found in a run folder. `save` records the attributes that `fit`
set or changed, as JSON with tagged values for tuples, non-string dict keys and small arrays, and as
Parquet / `.npy` files for tables and large arrays; `load` sets them on a freshly built stage
(`np.load(..., allow_pickle=False)`). State that is not data (a model object, a callable) is not
saved: such a stage is fitted again on resume.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

STATE_FILE = "state.json"
INLINE_ARRAY = 4096  # arrays up to this many items stay in the JSON


class NotData(TypeError):
    """A value that cannot be saved as data."""


def _encode(v, files: dict, name: str):
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return {"__tuple__": [_encode(x, files, f"{name}.{i}") for i, x in enumerate(v)]}
    if isinstance(v, list):
        return [_encode(x, files, f"{name}.{i}") for i, x in enumerate(v)]
    if isinstance(v, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in v):
            return {k: _encode(x, files, f"{name}.{k}") for k, x in v.items()}
        return {"__items__": [[_encode(k, files, name), _encode(x, files, f"{name}.{i}")]
                              for i, (k, x) in enumerate(v.items())]}
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            raise NotData(f"{name}: object array")
        if v.size <= INLINE_ARRAY:
            return {"__ndarray__": v.tolist(), "dtype": v.dtype.str, "shape": list(v.shape)}
        files[f"{name}.npy"] = v
        return {"__npy__": f"{name}.npy"}
    if isinstance(v, pa.Table):
        files[f"{name}.parquet"] = v
        return {"__arrow__": f"{name}.parquet"}
    if isinstance(v, pl.DataFrame):
        files[f"{name}.parquet"] = v.to_arrow()
        return {"__polars__": f"{name}.parquet"}
    if hasattr(v, "to_arrow") and hasattr(v, "map_batches"):  # a `Data` view: its rows
        files[f"{name}.parquet"] = v.to_arrow()
        return {"__arrow__": f"{name}.parquet"}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {"__dataclass__": f"{type(v).__module__}:{type(v).__qualname__}",
                "fields": {f.name: _encode(getattr(v, f.name), files, f"{name}.{f.name}")
                           for f in dataclasses.fields(v)}}
    raise NotData(f"{name}: {type(v).__name__}")


def _decode(v, folder: Path, classes: dict):
    if isinstance(v, list):
        return [_decode(x, folder, classes) for x in v]
    if not isinstance(v, dict):
        return v
    if "__tuple__" in v:
        return tuple(_decode(x, folder, classes) for x in v["__tuple__"])
    if "__items__" in v:
        return {_decode(k, folder, classes): _decode(x, folder, classes) for k, x in v["__items__"]}
    if "__ndarray__" in v:
        return np.array(v["__ndarray__"], dtype=np.dtype(v["dtype"])).reshape(v["shape"])
    if "__npy__" in v:
        return np.load(_inside(folder, v["__npy__"]), allow_pickle=False)
    if "__arrow__" in v:
        return pq.read_table(_inside(folder, v["__arrow__"]))
    if "__polars__" in v:
        return pl.read_parquet(_inside(folder, v["__polars__"]))
    if "__dataclass__" in v:
        cls = classes.get(v["__dataclass__"])
        if cls is None:  # only the dataclasses the stage's own fit produced, by name
            raise NotData(f"unexpected dataclass {v['__dataclass__']!r} in saved state")
        return cls(**{k: _decode(x, folder, classes) for k, x in v["fields"].items()})
    return {k: _decode(x, folder, classes) for k, x in v.items()}


def _inside(folder: Path, name: str) -> Path:
    path = (folder / name).resolve()
    if path.parent != folder.resolve():
        raise NotData(f"saved state names {name!r} outside {folder}")
    return path


def changed_attributes(before: dict, stage) -> dict:
    """The attributes `fit` added or rebound (compared by identity)."""
    return {k: v for k, v in vars(stage).items() if k not in before or before[k] is not v}


def save(folder: Path, state: dict, report: dict) -> bool:
    """Write `state` (attribute -> value) and the fit report into `folder`, atomically; False (and
    nothing written) when some value is not data."""
    files: dict = {}
    try:
        encoded = {k: _encode(v, files, k) for k, v in state.items()}
        doc = json.dumps({"state": encoded, "report": _encode(report, files, "report"),
                          "dataclasses": sorted(_dataclass_names(state))}, allow_nan=True)
    except (NotData, TypeError, ValueError):
        return False
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, value in files.items():
        if isinstance(value, np.ndarray):
            np.save(tmp / name, value, allow_pickle=False)
        else:
            pq.write_table(value, tmp / name)
    (tmp / STATE_FILE).write_text(doc)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return True


def _dataclass_names(state: dict) -> set[str]:
    out = set()
    for v in state.values():
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            out.add(f"{type(v).__module__}:{type(v).__qualname__}")
    return out


def load(folder: Path, stage) -> dict | None:
    """Set the saved attributes on `stage` and return the fit report; None if nothing was saved."""
    doc_file = folder / STATE_FILE
    if not doc_file.is_file():
        return None
    doc = json.loads(doc_file.read_text())
    classes = {}
    for ref in doc.get("dataclasses", []):
        module, _, qual = ref.partition(":")
        if not module.startswith("tamis.") and module != type(stage).__module__:
            raise NotData(f"saved state names a class outside tamis and the stage's module: {ref}")
        obj = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
        if not dataclasses.is_dataclass(obj):
            raise NotData(f"{ref} is not a dataclass")
        classes[ref] = obj
    for k, v in doc["state"].items():
        setattr(stage, k, _decode(v, folder, classes))
    return _decode(doc["report"], folder, classes)
