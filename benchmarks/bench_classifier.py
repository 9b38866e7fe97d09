"""Quality classifiers, one core each, same documents.

1. fastText: tamis' `Classifier.score` (one `predict` call per Arrow batch, text normalised with
   polars) against DataTrove's `FastTextClassifierFilter.filter` (one `predict` per `Document`),
   same model (DCLM recipe trained here on the shared corpus). Scores must agree (DataTrove set to
   replace newlines with spaces, as tamis does).
2. Whole jobs, 2 workers each, same input (Parquet shards of the same documents) and model: `tamis run`
   (embedded Ray: read -> classifier stage -> keep `classifier_score >= 0.5` -> curated/rejected
   Parquet) against DataTrove's `LocalPipelineExecutor` (ParquetReader -> FastTextClassifierFilter
   (`keep_labels=("hq", 0.5)`) -> ParquetWriter); wall time and peak RSS of the process tree
   (start-up included), and the kept counts must agree.
3. Hugging Face head: `Classifier.score` on a BERT-style regression head (built here, 4 layers,
   hidden 256, random weights: speed does not depend on them) against a bare batched forward pass
   (tokenizer + model, same batch size and max_length, no stage around it). Goal: within 10%.

    .venv/bin/python benchmarks/bench_classifier.py [--docs 20000] [--max-chars 100000] [--head-docs 1000]
        [--job-docs 40000]
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
from _corpus import CORPUS, corpus_table  # noqa: E402
from _measure import timed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "benchmarks" / "_out"


def main() -> None:
    from datatrove.data import Document
    from datatrove.pipeline.filters import FastTextClassifierFilter

    from tamis.scorers.classifier.stage import Classifier
    from tamis.scorers.classifier.train import INFO_FILE, MODEL_FILE, train_from_files

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--max-chars", type=int, default=100_000, help="characters scored per document (both)")
    ap.add_argument("--head-docs", type=int, default=1000, help="documents for the Hugging Face head part")
    ap.add_argument("--job-docs", type=int, default=40000, help="documents for the whole-job part")
    args = ap.parse_args()
    model_dir = OUT / "classifier-model"
    if not (model_dir / INFO_FILE).is_file():  # DCLM recipe (dim 256, bigrams): docs vs fragments
        train_from_files([str(CORPUS / f) for f in ("sotu.parquet", "git-doc.parquet", "licenses-copyright.parquet")],
                         [str(CORPUS / f) for f in ("fortunes.parquet", "dict-jargon.parquet")], model_dir,
                         max_docs=400, epoch=25, lr=1.0)
    t = corpus_table(["id", "text"])
    idx = np.sort(np.random.default_rng(0).choice(t.num_rows, min(args.docs, t.num_rows), replace=False))
    t = t.take(pa.array(idx))
    t = t.set_column(1, "text", pc.utf8_slice_codeunits(t["text"], 0, args.max_chars))  # same text for both
    mb = pc.sum(pc.binary_length(t["text"])).as_py() / 1e6

    stage = Classifier(model_path=str(model_dir), max_chars=args.max_chars)
    stage.validate()
    stage.setup()
    c0 = time.process_time()
    ours = np.concatenate([stage.score(pa.Table.from_batches([b]))["classifier_score"].to_numpy()
                           for b in t.to_batches(max_chunksize=args.batch)])
    tamis_s = time.process_time() - c0

    # keep_labels is needed: with neither keep_labels nor remove_labels DataTrove 0.10.1 fails to load
    dt = FastTextClassifierFilter(model_url=str(model_dir / MODEL_FILE), keep_labels=("hq", 0.5),
                                  newline_replacement=" ")
    dt.model  # load outside the timing, as tamis' setup()
    docs = [Document(text=x, id=i) for x, i in zip(t["text"].to_pylist(), t["id"].to_pylist())]
    c0 = time.process_time()
    for d in docs:
        dt.filter(d)
    dt_s = time.process_time() - c0
    theirs = np.array([d.metadata.get("__label__hq", np.nan) for d in docs])
    diff = float(np.nanmax(np.abs(ours - np.clip(theirs, 0, 1))))
    n = t.num_rows
    print(f"{n} docs, {mb:.1f} MB (first {args.max_chars} chars), one core each, model {model_dir}")
    print(f"  tamis Classifier.score (per batch)      {n / tamis_s:8.0f} docs/s  {mb / tamis_s:6.2f} MB/s")
    print(f"  DataTrove FastTextClassifierFilter      {n / dt_s:8.0f} docs/s  {mb / dt_s:6.2f} MB/s")
    print(f"  speed-up {dt_s / tamis_s:.2f}x; largest score difference {diff:.2e}")
    jobs = bench_jobs(model_dir, args.job_docs, args.max_chars)
    head = bench_head(t.slice(0, args.head_docs), args.batch)
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_classifier.json").write_text(json.dumps(
        {"docs": n, "mb": mb, "tamis_cpu_s": tamis_s, "datatrove_cpu_s": dt_s, "max_abs_diff": diff,
         "whole_jobs": jobs, "hf_head": head}, indent=1))


DATATROVE_JOB = """
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters import FastTextClassifierFilter
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter
inp, out, model, tasks = sys.argv[1:5]
LocalPipelineExecutor([ParquetReader(inp, text_key="text", id_key="id"),
                       FastTextClassifierFilter(model_url=model, keep_labels=("hq", 0.5), newline_replacement=" "),
                       ParquetWriter(out + "/kept")], tasks=int(tasks), workers=2, logging_dir=out + "/logs").run()
"""


def bench_jobs(model_dir: Path, n_docs: int, max_chars: int) -> dict:
    """Whole commands, 2 workers each, on the same Parquet shards of `n_docs` documents."""
    import tempfile

    import polars as pl

    from tamis.scorers.classifier.train import MODEL_FILE

    df = pl.from_arrow(corpus_table(["id", "text"])).with_columns(pl.col("text").str.slice(0, max_chars))
    copies = [df.with_columns(pl.col("id").cast(pl.Utf8) + f"#{k}") for k in range(-(-n_docs // df.height))]
    df = pl.concat(copies).sample(n_docs, seed=5, shuffle=True)
    out: dict = {"docs": n_docs}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        shards = 8
        for i in range(shards):
            df[i::shards].write_parquet(tmp / "in" / f"part-{i}.parquet")
        job = tmp / "job.yaml"
        job.write_text(f"inputs: [{tmp / 'in'}]\nray: {{num_cpus: 2}}\nstages:\n  - use: classifier\n"
                       f"    params: {{model_path: {model_dir}, max_chars: {max_chars}}}\n"
                       "    keep: {low_quality: 'classifier_score >= 0.5'}\n")
        wall, rss = timed([str(REPO / ".venv" / "bin" / "tamis"), "run", str(job), "--output", str(tmp / "t"),
                           "--no-progress"])
        kept = json.loads((tmp / "t" / "reports" / "summary.json").read_text())["curated"]
        out["tamis"] = {"wall_s": wall, "peak_rss_mb": rss, "kept": kept}
        wall, rss = timed([sys.executable, "-c", DATATROVE_JOB, str(tmp / "in"), str(tmp / "d"),
                           str(model_dir / MODEL_FILE), str(shards)])
        dt_kept = pl.scan_parquet(str(tmp / "d" / "kept" / "*.parquet")).select(pl.len()).collect().item()
        out["datatrove"] = {"wall_s": wall, "peak_rss_mb": rss, "kept": dt_kept}
    t, d = out["tamis"], out["datatrove"]
    print(f"whole jobs, {n_docs} docs in 8 Parquet shards, 2 workers each (start-up included)")
    print(f"  tamis run                 {t['wall_s']:6.1f} s  {n_docs / t['wall_s']:7.0f} docs/s  peak RSS "
          f"{t['peak_rss_mb']:5.0f} MB  kept {t['kept']}")
    print(f"  DataTrove executor        {d['wall_s']:6.1f} s  {n_docs / d['wall_s']:7.0f} docs/s  peak RSS "
          f"{d['peak_rss_mb']:5.0f} MB  kept {d['kept']}")
    print(f"  speed-up {d['wall_s'] / t['wall_s']:.2f}x" + ("" if t["kept"] == d["kept"] else "  (KEPT COUNTS DIFFER)"))
    return out


def build_head(texts: list[str], folder: Path) -> None:
    """A BERT-style regression head (4 layers, hidden 256) and a WordPiece tokenizer trained on `texts`."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=8000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                     intermediate_size=1024, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(folder)


def bench_head(t: pa.Table, batch: int) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tamis.scorers.classifier.stage import Classifier

    torch.set_num_threads(1)
    folder = OUT / "hf-head"
    texts = t["text"].to_pylist()
    if not (folder / "config.json").is_file():
        build_head(texts, folder)
    stage = Classifier(model_path=str(folder), max_length=512, batch_size=32)
    stage.validate()
    stage.setup()
    w0 = time.perf_counter()
    ours = np.concatenate([stage.score(pa.Table.from_batches([b]))["classifier_score"].to_numpy()
                           for b in t.to_batches(max_chunksize=batch)])
    tamis_s = time.perf_counter() - w0
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    w0 = time.perf_counter()
    bare = []
    with torch.inference_mode():  # the plain loop a user would write: batches in input order
        for i in range(0, len(texts), 32):
            enc = tok(texts[i:i + 32], truncation=True, max_length=512, padding=True, return_tensors="pt")
            bare.append(model(**enc).logits[:, 0].numpy())
    bare_s = time.perf_counter() - w0
    diff = float(np.max(np.abs(ours - np.concatenate(bare))))
    n = t.num_rows
    print(f"HF head (BERT 4x256, 512 tokens, batch 32), {n} docs, one thread each")
    print(f"  tamis Classifier.score                  {n / tamis_s:8.1f} docs/s")
    print(f"  bare batched forward pass               {n / bare_s:8.1f} docs/s")
    print(f"  tamis / bare time {tamis_s / bare_s:.2f}; largest score difference {diff:.2e}")
    return {"docs": n, "tamis_s": tamis_s, "bare_s": bare_s, "max_abs_diff": diff}


if __name__ == "__main__":
    main()
