"""The export folder and the bodies of the three passes (each a task on one unit, bucket or shard).

    OUTDIR/shard-NNNNN.*          the shards (formats.py), committed by their last rename
    OUTDIR/manifest.json          written last: settings, per shard documents, tokens, domains, licences
    OUTDIR/_work/export.json      the settings this export was started with (a resume must match)
    OUTDIR/_work/units/TAG.*      pass 1, per input unit: its tokens (raw), its documents (Parquet),
                                  TAG.json last (the unit is done: counts, per-domain token histograms)
    OUTDIR/_work/buckets/b-N.*    pass 2, per key range: its copies sorted by key, b-N.json last
    OUTDIR/_work/shards/*.json    pass 3, one record per finished shard

Every file is written under a temporary name and renamed, and each step's record is renamed last, so
a killed export resumes at the first unit, bucket or shard without a record and nothing is counted
twice. `_work/` is removed once the manifest is written; rerunning a finished export is a no-op.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tamis.pipeline.export import formats, mixture, shuffle, tokenize
from tamis.pipeline.mixture_weights import MAX_EPOCHS
from tamis.pipeline.readers import (Quarantine, ReadStats, expand_inputs, file_tag, input_fingerprint,
                                    input_units, read_file, run_outputs, split_unit)

SPLIT_BYTES = 256 * 1024**2     # a Parquet input larger than this is read as several units
MAX_BUCKET_TOKENS = 32 * 1024**2  # a pass-2 task holds at most ~this many tokens (12 bytes each)
MISSING = "(none)"              # domain / licence of a document without one


class ExportError(ValueError):
    """A setting or an output folder that cannot be used; the message says which and what to do."""


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class ExportFolder:
    def __init__(self, root: Path | str):
        self.root = Path(root).absolute()
        self.work = self.root / "_work"
        self.settings_file = self.work / "export.json"
        self.manifest_file = self.root / "manifest.json"

    def unit(self, tag: str, ext: str) -> Path:
        return self.work / "units" / f"{tag}.{ext}"

    def bucket(self, b: int, ext: str) -> Path:
        return self.work / "buckets" / f"b-{b:05d}.{ext}"

    def shard_prefix(self, i: int) -> Path:
        return self.root / f"shard-{i:05d}"

    def shard_record(self, i: int) -> Path:
        return self.work / "shards" / f"shard-{i:05d}.json"

    def prepare(self, settings: dict, restart: bool) -> bool:
        """Make the folder ready for `settings`; True when the export there is already complete."""
        if restart:
            self.clear()
        if self.manifest_file.is_file():
            if json.loads(self.manifest_file.read_text()).get("settings") == settings:
                if self.work.is_dir():  # killed between the manifest and the clean-up
                    shutil.rmtree(self.work)
                return True
            raise ExportError(f"--output {self.root}: holds a finished export with other settings; pass "
                              f"--restart to replace it or choose another --output")
        if self.settings_file.is_file():
            if json.loads(self.settings_file.read_text()) != settings:
                raise ExportError(f"--output {self.root}: holds an unfinished export with other settings "
                                  f"(inputs, tokenizer or options changed); rerun it as it was to resume, "
                                  f"or pass --restart")
        elif self.root.is_dir() and any(self.root.iterdir()):
            raise ExportError(f"--output {self.root}: not empty and not an export folder; choose an empty "
                              f"or new folder")
        for d in ("units", "buckets", "shards"):
            (self.work / d).mkdir(parents=True, exist_ok=True)
        _write_json(self.settings_file, settings)
        return False

    def clear(self) -> None:
        """Remove what an export writes here (only its own names)."""
        if self.work.is_dir():
            shutil.rmtree(self.work)
        for f in self.root.glob("shard-*"):
            f.unlink()
        self.manifest_file.unlink(missing_ok=True)


# -- settings ------------------------------------------------------------------------------------
def make_settings(inputs: list[str], tokenizer_dir: str, fmt: str, shard_tokens: int, seed: int,
                  eos: str | None = None, mixture_file: str | None = None, tokens: float | None = None,
                  max_epochs: float = MAX_EPOCHS, domain_column: str = "domain",
                  license_column: str = "license", text_column: str = "text", id_column: str = "id",
                  batch_rows: int = 2000) -> dict:
    """Everything that decides an export's output, checked before any work (ExportError / TokenizerError)."""
    if fmt not in formats.FORMATS:
        raise ExportError(f"--format {fmt}: choose one of {', '.join(formats.FORMATS)}")
    if shard_tokens < 1:
        raise ExportError(f"--shard-tokens {shard_tokens}: must be >= 1")
    if (mixture_file is None) != (tokens is None):
        raise ExportError("--mixture and --tokens go together (a mixture needs a token budget and a budget a mixture)")
    if tokens is not None and tokens <= 0:
        raise ExportError(f"--tokens {tokens}: must be > 0")
    if max_epochs <= 0:
        raise ExportError(f"--max-epochs {max_epochs}: must be > 0")
    tok_file = tokenize.tokenizer_file(tokenizer_dir)
    tok = tokenize.load_tokenizer(tok_file)
    eos_id, eos_token = tokenize.resolve_eos(tok_file, tok, eos)
    vocab = tokenize.vocab_size(tok)
    files = expand_inputs([str(run_outputs(Path(p))) for p in inputs], "tamis export")
    return {
        "inputs": [str(Path(p).absolute()) for p in inputs],
        "files": [input_fingerprint(f) for f in files],
        "tokenizer": str(tok_file.absolute()),
        "tokenizer_sha256": hashlib.sha256(tok_file.read_bytes()).hexdigest(),
        "vocab_size": vocab, "eos_id": eos_id, "eos_token": eos_token,
        "format": fmt, "dtype": formats.token_dtype(fmt, vocab).name,
        "shard_tokens": int(shard_tokens), "seed": int(seed),
        "mixture": mixture.load_weights(mixture_file) if mixture_file else None,
        "mixture_file": str(mixture_file) if mixture_file else None,
        "tokens": float(tokens) if tokens is not None else None, "max_epochs": float(max_epochs),
        "columns": {"text": text_column, "id": id_column, "domain": domain_column, "license": license_column},
        "batch_rows": int(batch_rows),
    }


def units(settings: dict) -> list[str]:
    return input_units([f["path"] for f in settings["files"]], SPLIT_BYTES)


# -- pass 1: tokenize one input unit --------------------------------------------------------------
def _labels(batch: pa.Table, column: str) -> np.ndarray:
    if column not in batch.column_names:
        return np.full(batch.num_rows, MISSING, dtype=object)
    col = batch[column].cast(pa.string()).fill_null(MISSING)
    return np.asarray(col.to_pylist(), dtype=object)


def tokenize_unit(settings: dict, folder: str, unit: str) -> dict:
    """Tokenize one input unit into `_work/units/TAG.*`; returns (and records) its counts."""
    out = ExportFolder(folder)
    tag = file_tag(unit)
    done = out.unit(tag, "json")
    if done.is_file():
        return json.loads(done.read_text())
    cols, mix = settings["columns"], settings["mixture"]
    tok = tokenize.load_tokenizer(settings["tokenizer"])
    dtype = np.dtype(settings["dtype"])
    path, groups = split_unit(unit)
    stats, q = ReadStats(path), Quarantine(path)
    tok_tmp = out.unit(tag, "tokens.tmp")
    parts: list[pa.Table] = []
    domain_tokens: Counter = Counter()
    licenses: Counter = Counter()
    hist: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(mixture.N_BINS, np.int64))
    n_tokens = 0
    with open(tok_tmp, "wb") as fh:
        for batch in read_file(Path(path), stats, q, cols["text"], cols["id"], settings["batch_rows"],
                               row_groups=groups):
            flat, lens = tokenize.encode(tok, batch["text"].to_pylist(), settings["eos_id"], dtype)
            flat.tofile(fh)
            n_tokens += int(flat.size)
            ids = batch["id"].to_pylist()
            doms, lics = _labels(batch, cols["domain"]), _labels(batch, cols["license"])
            keys = shuffle.id_hashes(ids)
            parts.append(pa.table({"id": pa.array(ids, pa.string()), "key": keys, "tokens": lens.astype(np.int32),
                                   "domain": doms.astype(str), "license": lics.astype(str)}))
            u, inv = np.unique(doms.astype(str), return_inverse=True)
            sums = np.bincount(inv, weights=lens, minlength=len(u))
            for d, s in zip(u, sums):
                domain_tokens[str(d)] += int(s)
            lu, lc = np.unique(lics.astype(str), return_counts=True)
            for lname, c in zip(lu, lc):
                licenses[str(lname)] += int(c)
            if mix is not None:
                bins = (shuffle.uniform(keys, settings["seed"], mixture.MIX_SALT) * mixture.N_BINS).astype(np.int64)
                for i, d in enumerate(u):
                    m = inv == i
                    hist[str(d)] += np.bincount(bins[m], weights=lens[m], minlength=mixture.N_BINS).astype(np.int64)
    docs = pa.concat_tables(parts) if parts else pa.table({
        "id": pa.array([], pa.string()), "key": pa.array([], pa.uint64()), "tokens": pa.array([], pa.int32()),
        "domain": pa.array([], pa.string()), "license": pa.array([], pa.string())})
    formats._atomic(out.unit(tag, "docs.parquet"), lambda p: pq.write_table(docs, p))
    os.replace(tok_tmp, out.unit(tag, "tokens"))
    record = {"unit": unit, "tag": tag, "rows_read": stats.rows_read, "docs": docs.num_rows, "tokens": n_tokens,
              "quarantined": stats.rows_quarantined, "corrupt": stats.corrupt, "warnings": stats.warnings,
              "domains": dict(domain_tokens), "licenses": dict(licenses),
              "hist": {d: h.tolist() for d, h in hist.items()} if mix is not None else None}
    _write_json(done, record)
    return record


# -- the plan: copies per domain, bucket count ----------------------------------------------------
def make_plan(settings: dict, records: list[dict]) -> dict:
    available: Counter = Counter()
    for r in records:
        available.update(r["domains"])
    mix = settings["mixture"]
    plans = None
    if mix is not None:
        hist: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(mixture.N_BINS, np.int64))
        for r in records:
            for d, h in (r["hist"] or {}).items():
                hist[d] += np.asarray(h, np.int64)
        plans = mixture.plan(mix, available, hist, settings["tokens"], settings["max_epochs"])
        total = sum(p["tokens"] for p in plans.values())
        if total == 0:
            col = settings["columns"]["domain"]
            raise ExportError(f"--mixture {settings['mixture_file']}: none of its domains "
                              f"({', '.join(sorted(mix))}) is in column {col!r} of the input (it has "
                              f"{', '.join(sorted(available)) or 'no documents'}); fix the weights or "
                              f"pass --domain-column")
    else:
        total = sum(available.values())
    per_bucket = min(settings["shard_tokens"], MAX_BUCKET_TOKENS)
    return {"units": [r["tag"] for r in records], "plans": plans, "total_tokens": int(total),
            "available": dict(available), "n_buckets": max(1, math.ceil(total / per_bucket))}


def _gather(tokens: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The token ranges [starts, starts + lens) of `tokens`, concatenated in the given order."""
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, tokens.dtype)
    out_starts = np.cumsum(lens) - lens
    idx = np.repeat(starts - out_starts, lens) + np.arange(total, dtype=np.int64)
    return np.asarray(tokens[idx])


def _memmap(path: Path, dtype) -> np.ndarray:
    return np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)


# -- pass 2: one bucket of the global order -------------------------------------------------------
def bucket_task(settings: dict, folder: str, plan: dict, b: int) -> dict:
    out = ExportFolder(folder)
    done = out.bucket(b, "json")
    if done.is_file():
        return json.loads(done.read_text())
    dtype = np.dtype(settings["dtype"])
    tok_parts, doc_parts, key_parts = [], [], []
    for tag in plan["units"]:
        docs = pq.read_table(out.unit(tag, "docs.parquet"))
        keys = docs["key"].to_numpy()
        lens = docs["tokens"].to_numpy().astype(np.int64)
        starts = np.cumsum(lens) - lens
        if plan["plans"] is not None:
            bins = (shuffle.uniform(keys, settings["seed"], mixture.MIX_SALT) * mixture.N_BINS).astype(np.int64)
            n_copies = mixture.copies(np.asarray(docs["domain"].to_pylist(), dtype=object), bins, plan["plans"])
        else:
            n_copies = np.ones(len(keys), np.int64)
        row = np.repeat(np.arange(len(keys)), n_copies)
        copy = np.arange(row.size) - np.repeat(np.cumsum(n_copies) - n_copies, n_copies)
        okeys = shuffle.order_keys(keys[row], copy, settings["seed"])
        mine = shuffle.bucket_of(okeys, plan["n_buckets"]) == b
        row, copy, okeys = row[mine], copy[mine], okeys[mine]
        tok_parts.append(_gather(_memmap(out.unit(tag, "tokens"), dtype), starts[row], lens[row]))
        doc_parts.append(docs.select(["id", "domain", "license", "tokens"]).take(pa.array(row))
                         .append_column("copy", pa.array(copy, pa.int32())))
        key_parts.append(okeys)
    keys = np.concatenate(key_parts) if key_parts else np.zeros(0, np.uint64)
    docs = pa.concat_tables(doc_parts) if doc_parts else None
    flat = np.concatenate(tok_parts) if tok_parts else np.zeros(0, dtype)
    order = np.argsort(keys, kind="stable")
    lens = docs["tokens"].to_numpy().astype(np.int64) if docs is not None else np.zeros(0, np.int64)
    flat = _gather(flat, (np.cumsum(lens) - lens)[order], lens[order])
    if docs is not None:
        docs = docs.take(pa.array(order)).select(["id", "copy", "domain", "license", "tokens"])
        formats._atomic(out.bucket(b, "docs.parquet"), lambda p: pq.write_table(docs, p))
    formats._atomic(out.bucket(b, "tokens"), lambda p: flat.tofile(p))
    record = {"bucket": b, "docs": 0 if docs is None else docs.num_rows, "tokens": int(flat.size)}
    _write_json(done, record)
    return record


def bucket_lengths(folder: str, n_buckets: int):
    out = ExportFolder(folder)
    for b in range(n_buckets):
        f = out.bucket(b, "docs.parquet")
        yield pq.read_table(f, columns=["tokens"])["tokens"].to_numpy() if f.is_file() else np.zeros(0, np.int32)


# -- pass 3: one shard ----------------------------------------------------------------------------
def shard_task(settings: dict, folder: str, job: tuple[int, list]) -> dict:
    i, pieces = job
    out = ExportFolder(folder)
    done = out.shard_record(i)
    if done.is_file():
        return json.loads(done.read_text())
    dtype = np.dtype(settings["dtype"])
    toks, docs = [], []
    for b, a, e in pieces:
        d = pq.read_table(out.bucket(b, "docs.parquet"))
        cum = np.concatenate([[0], np.cumsum(d["tokens"].to_numpy().astype(np.int64))])
        toks.append(np.asarray(_memmap(out.bucket(b, "tokens"), dtype)[cum[a]:cum[e]]))
        docs.append(d.slice(a, e - a))
    flat, table = np.concatenate(toks), pa.concat_tables(docs)
    prefix = out.shard_prefix(i)
    formats.write_shard(settings["format"], prefix, flat, table)
    dom_tok = Counter()
    for d, t in zip(table["domain"].to_pylist(), table["tokens"].to_pylist()):
        dom_tok[d] += t
    record = {"shard": prefix.name, "files": [p.name for p in formats.data_files(settings["format"], prefix)],
              "documents": table.num_rows, "tokens": int(flat.size), "domains": dict(sorted(dom_tok.items())),
              "licenses": dict(sorted(Counter(table["license"].to_pylist()).items()))}
    _write_json(done, record)
    return record


# -- the manifest ---------------------------------------------------------------------------------
def write_manifest(settings: dict, folder: str, records: list[dict], plan: dict, shards: list[dict]) -> dict:
    out = ExportFolder(folder)
    total = sum(s["tokens"] for s in shards)
    domains: Counter = Counter()
    licenses: Counter = Counter()
    for s in shards:
        domains.update(s["domains"])
        licenses.update(s["licenses"])
    manifest = {
        "settings": settings, "documents": sum(s["documents"] for s in shards), "tokens": total,
        "input": {"documents": sum(r["docs"] for r in records), "tokens": sum(r["tokens"] for r in records),
                  "rows_read": sum(r["rows_read"] for r in records),
                  "quarantined": sum(r["quarantined"] for r in records),
                  "warnings": [w for r in records for w in r["warnings"]]},
        "domains": {d: {"tokens": t, "share": t / total if total else 0.0} for d, t in sorted(domains.items())},
        "licenses": dict(sorted(licenses.items())),
        "shards": shards,
    }
    if plan["plans"] is not None:
        asked = settings["mixture"]
        manifest["mixture"] = {
            d: {"asked": asked.get(d, 0.0), "achieved": domains.get(d, 0) / total if total else 0.0,
                "tokens": domains.get(d, 0), "available": plan["available"].get(d, 0),
                "epochs": domains.get(d, 0) / plan["available"][d] if plan["available"].get(d) else 0.0,
                "capped": bool((plan["plans"].get(d) or {}).get("capped")),
                "missing": d not in plan["available"]}
            for d in sorted(set(asked) | set(plan["available"]))}
    _write_json(out.manifest_file, manifest)
    shutil.rmtree(out.work)
    return manifest
