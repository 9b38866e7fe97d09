"""MinHash dedup: signatures per core against datasketch and DataTrove, then the whole stage at 100k docs.

Part 1 (one core each, same documents): tamis' band-key map function (normalise, word 5-grams, 112
64-bit permutations, 14 band keys, Arrow output) on batches of 2,000 docs; datasketch `MinHash(112)`
with `update_batch` + `MinHashLSH(params=(14, 8)).insert` per doc; DataTrove's `MinhashDedupSignature`
`get_shingles` + `get_signature` per doc (its FineWeb 14 x 8 config, default xxhash; writing its
bucket files is not timed). Rates are docs per CPU-second of this process (the machine is shared, so
wall time is shown too).

Part 2 (a fresh subprocess, so peak RSS is the stage's): `MinHashDedup().fit` + `transform` through
`LocalData` on >= 100,000 docs: shared-corpus docs plus planted edited and exact copies.

    .venv/bin/python benchmarks/bench_minhash.py [--docs 20000] [--stage-docs 100000]
"""
from __future__ import annotations

import os

for _v in ("POLARS_MAX_THREADS", "RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPUS = (REPO / ".." / "shared" / "corpus").resolve()


def load_corpus() -> pa.Table:
    tabs = [pq.read_table(f, columns=["id", "text"]) for f in sorted(CORPUS.glob("*.parquet"))]
    t = pa.concat_tables(tabs).cast(pa.schema([("id", pa.string()), ("text", pa.large_string())]))
    # a few source ids repeat across files: make them unique (the runner's unique_ids stage would)
    ids = pc.binary_join_element_wise(t["id"], pa.array(np.arange(t.num_rows).astype(str)), "#")
    return t.set_column(0, "id", ids)


def text_mb(t: pa.Table) -> float:
    return (pc.sum(pc.binary_length(t["text"])).as_py() or 0) / 1e6


class Clock:
    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def bench_tamis(docs: pa.Table) -> Clock:
    from tamis.scorers.dedup.minhash import _band_rows
    fn = _band_rows(5, 14, 8, 1, "lowest_id", 1024)
    fn(docs.slice(0, 50))
    with Clock() as c:
        rows = sum(fn(docs.slice(i, 2000)).num_rows for i in range(0, docs.num_rows, 2000))
    c.rows = rows
    return c


def bench_datasketch(docs: pa.Table) -> Clock:
    from datasketch import MinHash, MinHashLSH
    lsh = MinHashLSH(num_perm=112, params=(14, 8))
    ids, texts = docs["id"].to_pylist(), docs["text"].to_pylist()
    with Clock() as c:
        for i, text in zip(ids, texts):
            w = text.lower().split()
            m = MinHash(num_perm=112, seed=1)
            m.update_batch([" ".join(w[j:j + 5]).encode() for j in range(max(1, len(w) - 4))])
            lsh.insert(i, m)
    return c


def bench_datatrove(docs: pa.Table) -> Clock:
    import xxhash
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    step = MinhashDedupSignature(str(REPO / "benchmarks" / "_out" / "dt_sigs"), MinhashConfig())
    # DataTrove 0.10's default xxhash64 passes `str`, which xxhash >= 4 rejects: encode first.
    step._hash_func = lambda s: xxhash.xxh64_intdigest(s.encode())
    texts = docs["text"].to_pylist()
    step.get_shingles(texts[0])
    with Clock() as c:
        for text in texts:
            sh = step.get_shingles(text)
            if sh.size:
                step.get_signature(sh)
    return c


def signature_part(n_docs: int, seed: int = 0) -> dict:
    corpus = load_corpus()
    docs = corpus.take(np.sort(np.random.default_rng(seed).choice(corpus.num_rows, n_docs, replace=False)))
    mb = text_mb(docs)
    print(f"part 1: {docs.num_rows} shared-corpus docs, {mb:.1f} MB, one core each")
    out = {"docs": docs.num_rows, "mb": round(mb, 2)}
    for name, fn in (("tamis", bench_tamis), ("datasketch", bench_datasketch), ("datatrove", bench_datatrove)):
        c = fn(docs)
        out[name] = {"cpu_s": round(c.cpu, 2), "wall_s": round(c.wall, 2),
                     "docs_per_cpu_s": round(docs.num_rows / c.cpu, 1), "mb_per_cpu_s": round(mb / c.cpu, 3)}
        print(f"  {name:10s} cpu {c.cpu:8.2f} s  wall {c.wall:8.2f} s  {docs.num_rows / c.cpu:9.1f} docs/cpu-s"
              f"  {mb / c.cpu:7.3f} MB/cpu-s", flush=True)
    for other in ("datasketch", "datatrove"):
        out[f"x_{other}"] = round(out[other]["cpu_s"] / out["tamis"]["cpu_s"], 2)
        print(f"  tamis / {other}: {out[f'x_{other}']:.2f}x signatures per core")
    return out


def planted_corpus(n_docs: int, seed: int = 1) -> tuple[pa.Table, list[tuple[str, str]]]:
    """Corpus docs plus 5% edited copies (1 word in 60..200 changed: 5-gram Jaccard ~0.85..0.95)
    and 1% exact copies."""
    rng = np.random.default_rng(seed)
    corpus = load_corpus()
    n_near, n_exact = n_docs // 20, n_docs // 100
    base = corpus.take(np.sort(rng.choice(corpus.num_rows, min(corpus.num_rows, n_docs - n_near - n_exact),
                                          replace=False)))
    texts, ids = base["text"].to_pylist(), base["id"].to_pylist()
    long = [i for i, t in enumerate(texts) if len(t) > 400]
    pairs, new_ids, new_texts = [], [], []
    for k, i in enumerate(rng.choice(long, n_near + n_exact, replace=False)):
        words = texts[i].split()
        if k < n_near:
            for j in rng.choice(len(words), max(1, len(words) // int(rng.integers(60, 200))), replace=False):
                words[j] = f"qz{rng.integers(10**6)}"
        cid = f"~copy-{k}"
        new_ids.append(cid)
        new_texts.append(" ".join(words) if k < n_near else texts[i])
        pairs.append((cid, ids[i]))
    table = pa.table({"id": pa.array(ids + new_ids, pa.string()),
                      "text": pa.array(texts + new_texts, pa.large_string())})
    return table, pairs


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """Samples this process's resident memory every 20 ms in a thread; `peak` in MiB."""

    def __enter__(self):
        import threading
        self.peak, self._stop = rss_mib(), threading.Event()

        def loop():
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, rss_mib())
        self._t = threading.Thread(target=loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mib())


def planted_jaccard(table: pa.Table, pairs: list) -> np.ndarray:
    """True word 5-gram Jaccard of each planted (copy, original) pair, from their shingle-hash sets."""
    from tamis.scorers.dedup.lsh import doc_shingles, unique_per_doc
    pos = pc.index_in(pa.array([p for pair in pairs for p in pair], pa.string()), value_set=table["id"])
    sh, counts = unique_per_doc(*doc_shingles(table["text"].take(pos), 5))
    sets = np.split(sh, np.cumsum(counts)[:-1])
    out = []
    for a, b in zip(sets[0::2], sets[1::2]):
        inter = np.intersect1d(a, b, assume_unique=True).shape[0]
        out.append(inter / (a.shape[0] + b.shape[0] - inter))
    return np.array(out)


def stage_part(path: Path, pairs_path: Path) -> dict:
    from tamis.pipeline.data import LocalData
    from tamis.scorers.dedup.minhash import MinHashDedup
    table = pq.read_table(path)
    pairs = json.loads(pairs_path.read_text())
    mb = text_mb(table)
    rss0 = rss_mib()
    stage = MinHashDedup()
    with Clock() as fit, PeakRss() as mem:
        stage.fit(LocalData(table))
    dec = stage.decisions_
    with Clock() as tr:
        batch = table.select(["id"])
        pos = pc.index_in(batch["id"], value_set=dec["id"])
        for c in dec.column_names[1:]:
            batch = batch.append_column(c, dec[c].take(pos))
        out = stage.transform(batch)
    rss1 = max(mem.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    dup = dict(zip(table["id"].to_pylist(), out["duplicate_of"].to_pylist()))
    kept = {i: d or i for i, d in dup.items()}
    found = np.array([kept[c] == kept[o] for c, o in pairs])
    true_j = planted_jaccard(table, pairs)
    rep = stage.report()
    return {"docs": table.num_rows, "mb": round(mb, 1), "fit_wall_s": round(fit.wall, 2),
            "fit_cpu_s": round(fit.cpu, 2), "transform_wall_s": round(tr.wall, 3),
            "mb_per_s": round(mb / fit.wall, 2), "mb_per_cpu_s": round(mb / fit.cpu, 2),
            "docs_per_s": round(table.num_rows / fit.wall, 1),
            "rss_with_input_mib": round(rss0), "rss_peak_mib": round(rss1), "rss_stage_mib": round(rss1 - rss0),
            "planted_copies": len(pairs),
            "planted_found": round(float(found.mean()), 4),
            "planted_j_ge_0.8": int((true_j >= 0.8).sum()),
            "recall_j_ge_0.8": round(float(found[true_j >= 0.8].mean()), 4),
            "found_j_lt_0.8": int(found[true_j < 0.8].sum()), "rows_removed": rep["rows_removed"],
            "candidate_pairs": rep["candidate_pairs"], "pairs_kept": rep["pairs_kept"],
            "largest_cluster": max(rep["component_size_histogram"] or {1: 0})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--stage-docs", type=int, default=100000)
    ap.add_argument("--part", choices=["all", "signatures", "stage"], default="all",
                    help="'stage' is the child process of 'all' (reads the documents 'all' wrote)")
    args = ap.parse_args()
    out = REPO / "benchmarks" / "_out"
    out.mkdir(parents=True, exist_ok=True)
    data, pairs_path = out / "minhash_stage_docs.parquet", out / "minhash_stage_pairs.json"
    if args.part == "stage":  # the child process: reads the documents the parent wrote
        print(json.dumps(stage_part(data, pairs_path)))
        return
    res = {}
    if args.part in ("all", "signatures"):
        res["signatures"] = signature_part(args.docs)
    if args.part == "all":
        table, pairs = planted_corpus(args.stage_docs)
        pq.write_table(table, data)
        pairs_path.write_text(json.dumps(pairs))
        del table
        print(f"part 2: MinHashDedup fit + transform on {args.stage_docs} docs via LocalData (subprocess)")
        run = subprocess.run([sys.executable, __file__, "--part", "stage"], capture_output=True, text=True, check=True)
        data.unlink()
        pairs_path.unlink()
        res["stage"] = json.loads(run.stdout.strip().splitlines()[-1])
        for k, v in res["stage"].items():
            print(f"  {k}: {v}")
    (out / "bench_minhash.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
