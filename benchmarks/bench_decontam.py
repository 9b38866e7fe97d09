"""Decontamination: tamis' `Decontaminate` stage against a plain Python set-of-13-grams loop.

Same documents (a fixed sample of the shared corpus), same eval set, same rule (any shared 13-gram of
NFKC, lower-cased `\\w+` words), one core each (thread pools pinned to 1). The eval set is 2,000 items
of 80 words cut from corpus documents: a tenth from documents in the sample (planted contamination),
the rest from documents outside it. tamis runs `fit` (eval passes + the one corpus pass, batches of
2,000 docs) and `transform`; the baseline builds a Python `set` of word-tuple 13-grams and counts
each document's hits in a loop. Both must flag the same documents (checked). Memory is the eval
index: tamis' Bloom filter plus confirmed entries vs the Python set (tracemalloc).

    .venv/bin/python benchmarks/bench_decontam.py [--mb 30] [--items 2000]
"""
from __future__ import annotations

import os

for _v in ("POLARS_MAX_THREADS", "RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import unicodedata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from _corpus import corpus_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "benchmarks" / "_out"
N = 13
WORD = re.compile(r"\w+")


def load(mb: float, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """A sample of about `mb` MB of corpus text, and the rest of the corpus (for clean eval items)."""
    t = corpus_table(["id", "text"]).cast(pa.schema([("id", pa.string()), ("text", pa.large_string())]))
    ids = pc.binary_join_element_wise(t["id"], pa.array(np.arange(t.num_rows).astype(str)), "#")
    t = t.set_column(0, "id", ids)
    order = np.random.default_rng(seed).permutation(t.num_rows)
    size = pc.binary_length(t["text"]).to_numpy()[order]
    k = int(np.searchsorted(np.cumsum(size), mb * 1e6)) + 1
    return t.take(pa.array(np.sort(order[:k]))), t.take(pa.array(np.sort(order[k:])))


def eval_items(sample: pa.Table, rest: pa.Table, n_items: int, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n_items):
        src = sample if i % 10 == 0 else rest
        while True:
            words = src["text"][int(rng.integers(src.num_rows))].as_py().split()
            if len(words) >= 200:
                break
        a = int(rng.integers(len(words) - 80))
        items.append({"question": " ".join(words[a:a + 60]), "answer": " ".join(words[a + 60:a + 80])})
    return items


def python_tokens(text: str) -> list[str]:
    return WORD.findall(unicodedata.normalize("NFKC", text).lower())


def python_baseline(texts: list[str], items: list[dict]) -> tuple[dict, set]:
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    grams = set()
    for it in items:
        toks = python_tokens(f"{it['question']} {it['answer']}")
        grams.update(tuple(toks[i:i + N]) for i in range(len(toks) - N + 1))
    index_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    t1, c1 = time.perf_counter(), time.process_time()
    flagged = set()
    for d, text in enumerate(texts):
        toks = python_tokens(text)
        hits = sum(tuple(toks[i:i + N]) in grams for i in range(len(toks) - N + 1))
        if hits:
            flagged.add(d)
    t2, c2 = time.perf_counter(), time.process_time()
    return {"index_s": c1 - c0, "scan_cpu_s": c2 - c1, "scan_wall_s": t2 - t1, "cpu_s": c2 - c0,
            "wall_s": t2 - t0, "index_bytes": index_bytes, "ngrams": len(grams)}, flagged


class Batched:
    """`LocalData` that maps over batches of 2,000 documents, as the runner's workers would."""

    def __init__(self, table: pa.Table, rows: int = 2000):
        self.table, self.rows = table, rows

    def map_batches(self, fn):
        from tamis.pipeline.data import LocalData
        outs = [fn(pa.Table.from_batches([b])) for b in self.table.to_batches(max_chunksize=self.rows)]
        return LocalData(pa.concat_tables(outs))


def tamis_run(table: pa.Table, eval_path: str) -> tuple[dict, set]:
    from tamis.scorers.decontamination.decontaminate import Decontaminate

    stage = Decontaminate(eval_sets=[{"name": "bench", "path": eval_path, "fields": ["question", "answer"]}])
    t0, c0 = time.perf_counter(), time.process_time()
    stage.fit(Batched(table))
    dec = stage.decisions_
    pos = pc.index_in(table["id"], value_set=dec["id"])
    batch = table
    for c in dec.column_names[1:]:
        batch = batch.append_column(c, dec[c].take(pos))
    out = stage.transform(batch)
    t1, c1 = time.perf_counter(), time.process_time()
    flagged = set(np.flatnonzero(out["decontam_hits"].to_numpy() > 0).tolist())
    idx = stage.report()["index"]
    return {"cpu_s": c1 - c0, "wall_s": t1 - t0, "index_bytes": idx["bloom_bytes"] + 24 * idx["confirmed_keys"],
            "bloom_bytes": idx["bloom_bytes"], "bloom_positives": idx["bloom_positives"],
            "confirmed_keys": idx["confirmed_keys"]}, flagged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=30.0, help="MB of corpus text to scan")
    ap.add_argument("--items", type=int, default=2000, help="eval items of 80 words")
    args = ap.parse_args()
    sample, rest = load(args.mb)
    mb = (pc.sum(pc.binary_length(sample["text"])).as_py() or 0) / 1e6
    items = eval_items(sample, rest, args.items)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench_eval.jsonl")
        Path(path).write_text("\n".join(json.dumps(it) for it in items) + "\n")
        tamis_t, tamis_flag = tamis_run(sample, path)
    py_t, py_flag = python_baseline(sample["text"].to_pylist(), items)
    docs = sample.num_rows
    res = {"docs": docs, "mb": round(mb, 2), "eval_items": len(items), "eval_ngrams": py_t["ngrams"],
           "tamis": tamis_t, "python": py_t, "flagged_tamis": len(tamis_flag), "flagged_python": len(py_flag),
           "flagged_differ": len(tamis_flag ^ py_flag)}
    print(f"{docs} docs, {mb:.1f} MB, {len(items)} eval items ({py_t['ngrams']} distinct 13-grams); one core each")
    for name, t in (("tamis Decontaminate", tamis_t), ("python set loop", py_t)):
        print(f"  {name:20s} {docs / t['cpu_s']:8.0f} docs/s  {mb / t['cpu_s']:6.2f} MB/s per CPU-second "
              f"(wall {t['wall_s']:.1f} s)  eval index {t['index_bytes'] / 1e6:.2f} MB")
    print(f"  speed-up tamis / python: {py_t['cpu_s'] / tamis_t['cpu_s']:.2f}x;  index memory python / tamis: "
          f"{py_t['index_bytes'] / max(tamis_t['index_bytes'], 1):.1f}x")
    print(f"  flagged documents: tamis {len(tamis_flag)}, python {len(py_flag)}, differing {len(tamis_flag ^ py_flag)}")
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_decontam.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
