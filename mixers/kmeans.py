"""`kmeans`: spherical faiss k-means fitted on a sample of `embedding`, assigned per batch.

Adds `cluster_id` (int64, 0..k-1) and `cluster_dist` (float32: cosine distance 1 - cos to the
centroid when `spherical`, else Euclidean distance). Defaults follow SemDeDup's clustering
(`faiss.Kmeans(..., niter=100, spherical=True)`) with Diversify-and-Conquer's restarts (`nredo`).
The report says what each cluster is: its size over the whole input, mean quality (when a quality
column is named), top terms by class-based TF-IDF (BERTopic's c-TF-IDF over a bounded text sample)
and a 2-D PCA map of at most `map_points` sampled documents.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.vectors.embeddings import embedding_matrix, l2_normalize
from tamis.pipeline.vectors.kmeans import assign, class_tfidf_terms, fit_centroids, fit_pca, pca_2d
from tamis.pipeline.stage import GlobalStage, Resources, check_fitted


def _project(cols: list[str], max_chars: int | None, batch: pa.Table) -> pa.Table:
    out = batch.select(cols)
    if max_chars is not None and "text" in cols:
        short = pl.from_arrow(out.select(["text"]))["text"].str.slice(0, max_chars).to_arrow()
        out = out.set_column(out.schema.get_field_index("text"), "text", short)
    return out


def _cluster_sums(stage: "KMeans", batch: pa.Table) -> pa.Table:
    """Per-batch partial sums: rows, quality sum and count per cluster (summed on the driver)."""
    quality = stage.quality
    ids, _ = stage.assign_embeddings(embedding_matrix(batch["embedding"]))
    cols = {"cluster_id": ids}
    if quality:
        q = batch[quality].to_numpy(zero_copy_only=False).astype(np.float64)
        cols |= {"q": np.nan_to_num(q, nan=0.0), "qn": (~np.isnan(q)).astype(np.int64)}
    df = pl.DataFrame(cols).group_by("cluster_id").agg(
        pl.len().cast(pl.Int64).alias("n"), *([pl.col("q").sum(), pl.col("qn").sum()] if quality else []))
    return df.to_arrow()


class KMeans(GlobalStage):
    """Clusters documents by `embedding`; `transform` adds `cluster_id` and `cluster_dist`."""

    name = "kmeans"
    requires = ("embedding", "text")  # the minimum; required_columns() adds what params name
    columns = {"cluster_id": pa.int64(), "cluster_dist": pa.float32()}
    resources = Resources(cpus=1.0)
    packages = ("faiss",)

    def __init__(self, n_clusters: int = 100, n_iter: int = 100, n_redo: int = 3, seed: int = 0,
                 sample_size: int = 100_000, spherical: bool = True, pca_dim: int | None = None,
                 quality: str | None = None,
                 n_terms: int = 10, text_sample: int = 20_000, text_chars: int = 2000, map_points: int = 2000):
        self.n_clusters = n_clusters
        self.n_iter = n_iter
        self.n_redo = n_redo
        self.seed = seed
        self.sample_size = sample_size
        self.spherical = spherical
        self.pca_dim = pca_dim
        self.quality = quality
        self.n_terms = n_terms
        self.text_sample = text_sample
        self.text_chars = text_chars
        self.map_points = map_points

    def required_columns(self) -> tuple[str, ...]:
        return ("embedding", "text") + ((self.quality,) if self.quality else ())

    def validate(self) -> None:
        for p, lo in (("n_clusters", 1), ("n_iter", 1), ("n_redo", 1), ("sample_size", 1),
                      ("n_terms", 0), ("text_sample", 0), ("text_chars", 1), ("map_points", 0)):
            v = getattr(self, p)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{p} must be an integer >= {lo}, got {v!r}")
        if self.pca_dim is not None and (not isinstance(self.pca_dim, int) or self.pca_dim < 2):
            raise ValueError(f"pca_dim must be an integer >= 2 or null, got {self.pca_dim!r}")
        if self.quality is not None and not isinstance(self.quality, str):
            raise ValueError(f"quality must be a column name or null, got {self.quality!r}")

    def fit(self, data) -> "KMeans":
        emb_cols = ["embedding"] + ([self.quality] if self.quality else [])
        sample = data.map_batches(partial(_project, ["embedding"], None)).sample(self.sample_size, seed=self.seed)
        emb = embedding_matrix(sample["embedding"]) if sample.num_rows else np.zeros((0, 1), np.float32)
        self.pca_ = None
        if self.pca_dim and len(emb) > 1:
            self.pca_ = fit_pca(l2_normalize(emb) if self.spherical else emb, self.pca_dim, self.seed)
        feats = self._features(emb)
        self.centroids_ = fit_centroids(feats, self.n_clusters, self.n_iter, self.n_redo, self.seed, self.spherical)
        self.fit_rows_ = int(len(emb))
        k = len(self.centroids_)
        # Sizes and mean quality over the whole input: one pass, per-batch partial sums.
        sums = data.map_batches(partial(_project, emb_cols, None)).map_batches(
            partial(_cluster_sums, self)).to_arrow() if k else pa.table({})
        agg = pl.from_arrow(sums) if sums.num_rows else pl.DataFrame({"cluster_id": [], "n": []},
                                                                       schema={"cluster_id": pl.Int64, "n": pl.Int64})
        agg = agg.group_by("cluster_id").agg(pl.all().sum())
        sizes = np.zeros(k, np.int64)
        sizes[agg["cluster_id"].to_numpy()] = agg["n"].to_numpy()
        self.sizes_ = sizes
        self.mean_quality_ = None
        if self.quality and k:
            qs, qn = np.zeros(k), np.zeros(k)
            qs[agg["cluster_id"].to_numpy()] = agg["q"].to_numpy()
            qn[agg["cluster_id"].to_numpy()] = agg["qn"].to_numpy()
            self.mean_quality_ = np.where(qn > 0, qs / np.maximum(qn, 1), np.nan)
        # What the clusters are: c-TF-IDF terms over a bounded sample of (cut) texts; 2-D map.
        self.top_terms_ = {}
        if self.n_terms and self.text_sample and k:
            texts = data.map_batches(partial(_project, ["embedding", "text"], self.text_chars)).sample(
                self.text_sample, seed=self.seed + 1)
            if texts.num_rows:
                labels, _ = self.assign_embeddings(embedding_matrix(texts["embedding"]))
                self.top_terms_ = class_tfidf_terms(texts["text"], labels, self.n_terms)
        pts = feats[np.random.default_rng(self.seed).permutation(len(feats))[:self.map_points]]
        labels, _ = assign(pts, self.centroids_, self.spherical)
        xy = pca_2d(l2_normalize(pts) if self.spherical else pts)
        self.map_2d_ = [[round(float(x), 4), round(float(y), 4), int(c)] for (x, y), c in zip(xy, labels)]
        _, sdist = assign(feats, self.centroids_, self.spherical)
        self.mean_dist_ = float(sdist.mean()) if len(sdist) else float("nan")
        return self

    def _features(self, emb: np.ndarray) -> np.ndarray:
        """The space the clusters live in: the embedding, or its top `pca_dim` principal directions."""
        if getattr(self, "pca_", None) is None:
            return emb
        mean, comps = self.pca_
        return ((l2_normalize(emb) if self.spherical else emb) - mean) @ comps.T

    def assign_embeddings(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cluster ids, distances) for raw `embedding` rows."""
        check_fitted(self, "centroids_")
        return assign(self._features(emb), self.centroids_, self.spherical)

    def transform(self, batch: pa.Table) -> dict[str, pa.Array]:
        ids, dist = self.assign_embeddings(embedding_matrix(batch["embedding"]))
        if len(self.centroids_) == 0:
            return {"cluster_id": pa.nulls(batch.num_rows, pa.int64()),
                    "cluster_dist": pa.nulls(batch.num_rows, pa.float32())}
        return {"cluster_id": pa.array(ids, pa.int64()), "cluster_dist": pa.array(dist, pa.float32())}

    def report(self) -> dict:
        check_fitted(self, "centroids_")
        k = len(self.centroids_)
        mq = None if self.mean_quality_ is None else [None if np.isnan(v) else round(float(v), 6)
                                                       for v in self.mean_quality_]
        return {
            "n_clusters": k,
            "pca_dim": None if self.pca_ is None else int(self.pca_[1].shape[0]),
            "fit_rows": self.fit_rows_,
            "sizes": [int(s) for s in self.sizes_],
            "quality_column": self.quality,
            "mean_quality": mq,
            "top_terms": {str(c): self.top_terms_.get(c, []) for c in range(k)},
            "mean_dist_to_centroid": round(self.mean_dist_, 6),
            "map_2d": self.map_2d_,
        }
