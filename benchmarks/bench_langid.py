"""Language ID: tamis' `LangId` (py3langid model, batch-vectorised) against py3langid's own
`LanguageIdentifier.classify` called per document, on the same normalised text (first 2,000
characters, whitespace collapsed), one core each. Both must give the same languages (checked).

    .venv/bin/python benchmarks/bench_langid.py [--docs 6000]
"""
from __future__ import annotations

import os

for _v in ("POLARS_MAX_THREADS", "RAYON_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from _corpus import corpus_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "benchmarks" / "_out"


def main() -> None:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    from tamis.scorers.langid import LangId, normalize_for_lid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    t = corpus_table(["id", "text"])
    idx = np.sort(np.random.default_rng(0).choice(t.num_rows, min(args.docs, t.num_rows), replace=False))
    t = t.take(pa.array(idx))
    stage = LangId()
    stage.setup()
    mb = (pc.sum(pc.binary_length(normalize_for_lid(t["text"], stage.max_chars).to_arrow())).as_py()) / 1e6

    c0 = time.process_time()
    langs = []
    for b in t.to_batches(max_chunksize=args.batch):
        langs += stage.score(pa.Table.from_batches([b]))["lang"].to_pylist()
    tamis_s = time.process_time() - c0

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    c0 = time.process_time()
    norm = normalize_for_lid(t["text"], stage.max_chars).to_list()
    ref = [ident.classify(x)[0] for x in norm]
    ref_s = time.process_time() - c0
    differ = sum(a != b and x.strip() != "" for a, b, x in zip(langs, ref, norm))
    n = t.num_rows
    print(f"{n} docs, {mb:.1f} MB read by the model (first {stage.max_chars} chars), one core each")
    print(f"  tamis LangId (vectorised)   {n / tamis_s:8.0f} docs/s  {mb / tamis_s:6.2f} MB/s per CPU-second")
    print(f"  py3langid classify per document   {n / ref_s:8.0f} docs/s  {mb / ref_s:6.2f} MB/s per CPU-second")
    print(f"  speed-up {ref_s / tamis_s:.2f}x; languages differing on non-empty text: {differ}")
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_langid.json").write_text(json.dumps(
        {"docs": n, "mb": mb, "tamis_cpu_s": tamis_s, "py3langid_cpu_s": ref_s, "differ": differ}, indent=1))


if __name__ == "__main__":
    main()
