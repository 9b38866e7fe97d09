"""k-means and PCA over embedding matrices (faiss, scikit-learn), shared by the `kmeans` stage,
semantic dedup and cluster sampling."""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.vectors.embeddings import l2_normalize, stop_words


def fit_centroids(emb: np.ndarray, n_clusters: int, n_iter: int = 100, n_redo: int = 1, seed: int = 0,
                  spherical: bool = True) -> np.ndarray:
    """faiss k-means on the rows of `emb`; returns (k, d) float32 centroids, k <= rows."""
    import faiss

    emb = np.ascontiguousarray(l2_normalize(emb) if spherical else emb, dtype=np.float32)
    k = int(min(n_clusters, len(emb)))
    if k < 1:
        return np.zeros((0, emb.shape[1]), np.float32)
    if k == 1:
        c = emb.mean(0, keepdims=True)
        return l2_normalize(c) if spherical else c
    km = faiss.Kmeans(emb.shape[1], k, niter=int(n_iter), nredo=int(n_redo), seed=int(seed),
                      spherical=bool(spherical), verbose=False, max_points_per_centroid=10**9)
    threads = faiss.omp_get_max_threads()
    if len(emb) * k * emb.shape[1] < 50_000_000:  # small fits: OpenMP start-up costs more than it saves
        faiss.omp_set_num_threads(1)
    try:
        km.train(emb)
    finally:
        faiss.omp_set_num_threads(threads)
    return np.asarray(km.centroids, np.float32).copy()


def assign(emb: np.ndarray, centroids: np.ndarray, spherical: bool = True,
           block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid per row: (cluster ids int64, distances float32), in row blocks."""
    n = len(emb)
    ids, dist = np.zeros(n, np.int64), np.zeros(n, np.float32)
    if n == 0 or len(centroids) == 0:
        return ids, dist
    emb = l2_normalize(emb) if spherical else emb
    c_sq = (centroids.astype(np.float32) ** 2).sum(1)
    for a in range(0, n, block):
        x = emb[a:a + block].astype(np.float32, copy=False)
        sim = x @ centroids.T
        if spherical:
            best = sim.argmax(1)
            d = 1.0 - sim[np.arange(len(x)), best]
        else:
            sq = c_sq[None, :] - 2.0 * sim
            best = sq.argmin(1)
            d = np.sqrt(np.maximum(sq[np.arange(len(x)), best] + (x ** 2).sum(1), 0.0))
        ids[a:a + block], dist[a:a + block] = best, d
    return ids, dist


def class_tfidf_terms(texts: pa.Array | list[str], labels: np.ndarray, n_terms: int = 10) -> dict[int, list[str]]:
    """Top terms per cluster by c-TF-IDF (BERTopic): tf_{t,c} / |c| * log(1 + A / f_t).

    |c| is the number of words in cluster c, A the mean of |c| over clusters, f_t the frequency of
    term t over all clusters. Words are lower-cased alphabetic runs of >= 3 letters, stop words removed.
    """

    if len(texts) == 0:
        return {}
    tf = (pl.DataFrame({"c": np.asarray(labels, np.int64), "t": texts})
          .select("c", pl.col("t").str.to_lowercase().str.extract_all(r"\b[^\W\d_]{3,}\b").alias("w"))
          .explode("w").drop_nulls("w").filter(~pl.col("w").is_in(stop_words()))
          .group_by("c", "w").len())
    if tf.height == 0:
        return {}
    avg_words = tf.group_by("c").agg(pl.col("len").sum())["len"].mean()
    score = pl.col("len") / pl.col("len").sum().over("c") * (1.0 + avg_words / pl.col("len").sum().over("w")).log()
    top = (tf.with_columns(score.alias("score"))
           .sort(["c", "score", "w"], descending=[False, True, False])
           .group_by("c", maintain_order=True).head(n_terms)
           .group_by("c", maintain_order=True).agg("w"))
    return {int(c): list(w) for c, w in zip(top["c"].to_list(), top["w"].to_list())}


def fit_pca(emb: np.ndarray, n_components: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components) of the top principal directions (randomized SVD, deterministic per seed)."""
    from sklearn.utils.extmath import randomized_svd
    from threadpoolctl import threadpool_limits

    mean = emb.mean(0) if len(emb) else np.zeros(emb.shape[1], np.float32)
    k = int(min(n_components, *emb.shape))
    if k < 1:
        return mean.astype(np.float32), np.zeros((0, emb.shape[1]), np.float32)
    # Small inputs: one BLAS thread (thread start-up and spinning cost more than they save).
    with threadpool_limits(1 if emb.size < 20_000_000 else None):
        _, _, vt = randomized_svd((emb - mean).astype(np.float32), k, n_iter=5, random_state=seed)
    vt *= np.where(vt[np.arange(len(vt)), np.abs(vt).argmax(1)] < 0, -1.0, 1.0)[:, None]  # fixed signs
    return mean.astype(np.float32), vt.astype(np.float32)


def pca_2d(emb: np.ndarray) -> np.ndarray:
    """First two principal components of the rows (zeros when there is nothing to project)."""
    if len(emb) < 2:
        return np.zeros((len(emb), 2), np.float32)
    x = emb - emb.mean(0, keepdims=True)
    _, comps = fit_pca(x, 2)
    if len(comps) < 2:
        comps = np.vstack([comps, np.zeros_like(comps)])
    return (x @ comps.T).astype(np.float32)
