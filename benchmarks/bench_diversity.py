"""Diversity-aware cluster sampling vs top-k-by-quality vs random, at one token budget, plus embedding speed.

Run:  .venv/bin/python benchmarks/bench_diversity.py [--per-source 300] [--budget 0.1]

One run, same data for every method: a multi-domain pool from ../shared/corpus (first 3,000
characters per document), a held-out validation set per domain, a real quality signal (share of
letters x log words: long prose scores high, dictionary entries and code low). Each selection is
scored by the proxy validation loss (`tamis.mixers.proxy_models.train_proxy('ngram', ...)`, byte-level 5-gram
LM, nats per byte) on every domain's validation set; lower is better. Also prints clusters covered,
cluster entropy and mean quality, and docs/s of both embedding backends.
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.mixers.cluster_sample import ClusterSample, entropy
from tamis.mixers.embed import Embed
from tamis.pipeline.vectors.embeddings import embedding_matrix
from tamis.mixers.kmeans import KMeans
from tamis.mixers.proxy_models import train_proxy
from tamis.pipeline.data import LocalData
from tamis.scorers.dedup.semantic import SemanticDedup

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus"
SOURCES = ("dict-wn", "dict-gcide", "dict-foldoc", "fortunes", "linux-doc-6.1", "python-stdlib",
           "postgresql-doc-15", "python3.11-doc", "sotu", "bible-web", "licenses-copyright", "shakespeare-milton",
           "mhcc-commentary", "dict-devil", "git-doc")


def load(per_source: int, valid_per_source: int, chars: int, seed: int) -> tuple[pa.Table, dict[str, list[str]]]:
    pool, valid = [], {}
    for f in SOURCES:
        d = pl.read_parquet(CORPUS / f"{f}.parquet").sample(fraction=1.0, shuffle=True, seed=seed)
        d = d.with_columns(pl.col("text").str.slice(0, chars)).filter(pl.col("text").str.len_chars() > 0)
        v = d.head(valid_per_source)
        valid.setdefault(v["domain"][0], []).extend(v["text"].to_list())
        pool.append(d.slice(valid_per_source, per_source).select("id", "text", "domain"))
    df = pl.concat(pool).unique(subset="text", keep="first", maintain_order=True)
    df = df.with_columns((pl.col("text").str.count_matches(r"[A-Za-z]") / (pl.col("text").str.len_chars() + 1)
                          * (pl.col("text").str.count_matches(r"\S+") + 1).log()).alias("quality"),
                         (pl.col("text").str.len_bytes() / 4.0).ceil().cast(pl.Int64).alias("tokens"))
    return df.to_arrow(), valid


def prefix_by_tokens(order: np.ndarray, tokens: np.ndarray, budget: int) -> np.ndarray:
    """The first documents of `order` whose tokens fit the budget (plus the one that crosses it if
    that lands closer), so baselines get the same budget as the sampler."""
    cum = np.cumsum(tokens[order])
    k = int(np.searchsorted(cum, budget, side="right"))
    if k < len(order) and cum[k] - budget < budget - (cum[k - 1] if k else 0):
        k += 1
    return order[:k]


def evaluate(name, idx, table, valid, cid, k, proxy_tokens, rows):
    texts = table["text"].take(pa.array(idx)).to_pylist()
    t0 = time.perf_counter()
    losses = train_proxy("ngram", texts, valid, token_budget=proxy_tokens, seed=0)
    counts = np.bincount(cid[idx], minlength=k)
    q = table["quality"].to_numpy()[idx].mean()
    tok = table["tokens"].to_numpy()[idx]
    q_tok = float((table["quality"].to_numpy()[idx] * tok).sum() / max(tok.sum(), 1))
    toks = int(tok.sum())
    rows.append({"method": name, "docs": len(idx), "tokens": toks, "clusters": int((counts > 0).sum()),
                 "entropy": entropy(counts), "quality": float(q), "quality_per_token": q_tok, "valid_loss": float(np.mean(list(losses.values()))),
                 "worst_domain_loss": float(max(losses.values())), "proxy_s": time.perf_counter() - t0})


def selected_rows(stage: ClusterSample, data: LocalData, ids: np.ndarray) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    d = stage.fit(data).decisions_
    chosen = set(np.array(d["id"].to_pylist())[d["sample_selected"].to_numpy(zero_copy_only=False)])
    return np.flatnonzero(np.isin(ids, list(chosen))), time.perf_counter() - t0


def embed_rate(scorer: Embed, texts: pa.Table) -> tuple[float, float]:
    """(docs per wall second, docs per CPU second of this process)."""
    scorer.setup()
    scorer.score(texts.slice(0, 8))  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    scorer.score(texts)
    return texts.num_rows / (time.perf_counter() - t0), texts.num_rows / (time.process_time() - c0)


def semdedup_check(table: pa.Table, n: int, seed: int) -> list[dict]:
    """MiniLM vs hashed: planted near-copies caught and distinct documents pruned, per eps."""
    rnd = random.Random(seed)
    base = table.take(pa.array(np.sort(np.random.default_rng(seed).choice(table.num_rows, n, replace=False))))
    src = [t for t in base["text"].to_pylist() if len(t.split()) > 60][: n // 10]
    copies = [" ".join(w for w in t.split() if rnd.random() > 0.03) for t in src]  # 3% of words dropped
    ids = base["id"].to_pylist() + [f"copy{i}" for i in range(len(copies))]
    t = pa.table({"id": ids, "text": base["text"].to_pylist() + copies})
    orig = {f"copy{i}": base["id"].to_pylist()[base["text"].to_pylist().index(s)] for i, s in enumerate(src)}
    out = []
    for backend in ("transformer", "hashed"):
        e = t.append_column("embedding", Embed(backend=backend).score(t)["embedding"])
        m = embedding_matrix(e["embedding"])
        pos = {i: k for k, i in enumerate(ids)}
        pair_cos = np.array([m[pos[c]] @ m[pos[o]] for c, o in orig.items()])
        sim = m[:n] @ m[:n].T
        np.fill_diagonal(sim, -1)
        for eps in (0.02, 0.05, 0.1, 0.15):
            d = SemanticDedup(eps=eps, clusters="own", n_clusters=1).fit(LocalData(e)).decisions_
            dup = dict(zip(d["id"].to_pylist(), d["duplicate_of"].to_pylist()))
            caught = sum(dup[c] == o or dup[o] == c for c, o in orig.items())
            planted = set(orig) | set(orig.values())
            other = [i for i in dup if i not in planted]
            out.append({"backend": backend, "eps": eps, "caught": f"{caught}/{len(orig)}",
                        "distinct_pruned": sum(dup[i] is not None for i in other) / len(other),
                        "copy_cos_min": float(pair_cos.min()), "copy_cos_median": float(np.median(pair_cos)),
                        "distinct_nn_cos_p99": float(np.quantile(sim.max(1), 0.99))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-source", type=int, default=300)
    ap.add_argument("--valid-per-source", type=int, default=20)
    ap.add_argument("--budget", type=float, default=0.1, help="fraction of the pool's tokens")
    ap.add_argument("--clusters", type=int, default=32)
    ap.add_argument("--transformer-docs", type=int, default=200)
    ap.add_argument("--semdedup-docs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    table, valid = load(args.per_source, args.valid_per_source, 3000, args.seed)
    mb = sum(len(t.encode()) for t in table["text"].to_pylist()) / 1e6
    print(f"pool: {table.num_rows} docs, {mb:.1f} MB, {len(set(table['domain'].to_pylist()))} domains; "
          f"validation: {sum(map(len, valid.values()))} docs in {len(valid)} domain sets")

    hashed = Embed(backend="hashed")
    wall_h, cpu_h = embed_rate(hashed, table)
    rng = np.random.default_rng(args.seed)
    some = table.take(pa.array(np.sort(rng.choice(table.num_rows, args.transformer_docs, replace=False))))
    wall_t, cpu_t = embed_rate(Embed(backend="transformer"), some)
    wall_hs, cpu_hs = embed_rate(hashed, some)
    print(f"embedding (first 3,000 chars per doc), docs per CPU-second (per wall second):\n"
          f"  hashed, whole pool: {cpu_h:,.0f} ({wall_h:,.0f})\n"
          f"  same {some.num_rows} random pool docs: hashed {cpu_hs:,.0f} ({wall_hs:,.0f}), "
          f"transformer MiniLM 256 tokens {cpu_t:,.1f} ({wall_t:,.1f}) -> hashed {cpu_hs / cpu_t:,.0f}x per CPU-second")

    t0 = time.perf_counter()
    table = table.append_column("embedding", hashed.score(table)["embedding"])
    km = KMeans(n_clusters=args.clusters, n_iter=50, n_redo=2, pca_dim=64, n_terms=5).fit(LocalData(table))
    table = table.append_column("cluster_id", km.transform(table)["cluster_id"])
    print(f"embed + kmeans (k={args.clusters}, PCA 64): {time.perf_counter() - t0:.1f}s")

    cid, q, tokens = table["cluster_id"].to_numpy(), table["quality"].to_numpy(), table["tokens"].to_numpy()
    ids = np.array(table["id"].to_pylist())
    budget = int(args.budget * tokens.sum())
    proxy_tokens = 4 * budget * 2  # bytes; larger than any selection, so every selected byte trains
    data = LocalData(table)
    rows: list[dict] = []
    fit_s = {}
    common = dict(budget=budget, unit="tokens", tokens_column="tokens", quality="quality", seed=args.seed)
    for name, st in [("sampler uniform (kMQ)", ClusterSample(**common)),
                     ("sampler proportional", ClusterSample(**common, allocation="proportional")),
                     ("sampler sqrt", ClusterSample(**common, allocation="sqrt")),
                     ("sampler iterative (ngram proxy)", ClusterSample(**common, refine="iterative", rounds=3,
                                                                        proxy_tokens=200_000)),
                     ("sampler ucb (Quad)", ClusterSample(**common, refine="ucb"))]:
        idx, fit_s[name] = selected_rows(st, data, ids)
        evaluate(name, idx, table, valid, cid, args.clusters, proxy_tokens, rows)
    evaluate("top-k by quality", prefix_by_tokens(np.argsort(-q, kind="stable"), tokens, budget), table, valid, cid,
             args.clusters, proxy_tokens, rows)
    for s in range(3):
        perm = np.random.default_rng(100 + s).permutation(len(q))
        evaluate(f"random (seed {s})", prefix_by_tokens(perm, tokens, budget), table, valid, cid, args.clusters,
                 proxy_tokens, rows)

    df = pl.DataFrame(rows)
    rnd = df.filter(pl.col("method").str.starts_with("random"))
    summary = pl.concat([df.filter(~pl.col("method").str.starts_with("random")),
                         rnd.select(pl.lit("random (mean of 3)").alias("method"),
                                    *[pl.col(c).mean().cast(df.schema[c]) for c in df.columns if c != "method"])])
    top = summary.filter(pl.col("method") == "top-k by quality")["valid_loss"][0]
    ran = summary.filter(pl.col("method") == "random (mean of 3)")["valid_loss"][0]
    summary = summary.with_columns((pl.col("valid_loss") / top).alias("loss_vs_topk"),
                                   (pl.col("valid_loss") / ran).alias("loss_vs_random"))
    print(f"\nbudget {budget:,} tokens (~{args.budget:.0%} of the pool), k={args.clusters} clusters, "
          f"max entropy {np.log(args.clusters):.2f}; proxy: byte 5-gram LM, validation loss in nats/byte "
          f"(mean over {len(valid)} domains)")
    with pl.Config(tbl_rows=20, tbl_cols=20, tbl_width_chars=200, float_precision=3):
        print(summary.drop("proxy_s"))
    print("sampler fit seconds:", {k: round(v, 2) for k, v in fit_s.items()})

    print(f"\nSemDeDup check on {args.semdedup_docs} random pool docs + 3%-word-drop copies of up to 10% of them "
          "(one cluster): copies caught, distinct docs pruned, cosine of copy pairs, p99 nearest-neighbour "
          "cosine among the distinct docs")
    with pl.Config(tbl_rows=20, tbl_cols=10, tbl_width_chars=200, float_precision=4):
        print(pl.DataFrame(semdedup_check(table.drop_columns(["embedding", "cluster_id"]), args.semdedup_docs,
                                    args.seed)))


if __name__ == "__main__":
    main()
