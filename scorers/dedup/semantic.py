"""`semantic_dedup`: SemDeDup (Abbas et al. 2023) over the `embedding` column.

Documents are grouped by spherical k-means (the `cluster_id` of an earlier `kmeans` stage, or a
k-means this stage fits on a sample), ordered inside each cluster by the keep rule (SemDeDup's
default `hard`: farthest from the cluster centroid first), and a document is dropped when its cosine
to a document kept before it exceeds 1 - eps. Clusters run in parallel (`groupby_map`); a cluster
above `max_cluster_size` is split by a small k-means first (SemDeDup splits its largest clusters too).

Columns: `duplicate_of` (id of the kept document it duplicates; null when kept; shared with the other
dedup stages) and `semdedup_cosine` (float64: highest cosine to any document ordered before it in
its cluster, SemDeDup's M_j; -1 for the first). `semdedup_cosine <= 1 - eps` is the paper's exact
rule; `duplicate_of is None` (the default) only drops documents whose match was itself kept.
"""
from __future__ import annotations

import json
import math
from functools import partial

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.stage import GlobalStage, Resources, check_fitted
from tamis.pipeline.vectors.embeddings import embedding_matrix, l2_normalize
from tamis.pipeline.vectors.kmeans import assign, fit_centroids
from tamis.scorers.dedup.keep import check_keep, keep_requires, priority


_EPS_GRID = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
_HIST_BINS = np.linspace(-1.0, 1.0, 201)


def near_pairs(emb: np.ndarray, threshold: float, block_cells: int = 1 << 22):
    """For rows in order: pairs (i < j) with cosine > threshold, and M_j = max_{i<j} cos (-1 if j = 0)."""
    n = len(emb)
    best = np.full(n, -1.0, np.float32)
    pi, pj, ps = [], [], []
    step = max(1, block_cells // max(n, 1))
    cols = np.arange(n)
    for a in range(0, n, step):
        sim = emb[a:a + step] @ emb.T  # rows i in [a, a+step), all j
        later = cols[None, :] > np.arange(a, min(a + step, n))[:, None]
        sim = np.where(later, sim, -np.inf)
        best = np.maximum(best, sim.max(0))
        i, j = np.nonzero(sim > threshold)
        pi.append(i + a), pj.append(j), ps.append(sim[i, j])
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    return cat(pi, np.int64), cat(pj, np.int64), cat(ps, np.float32), np.clip(best, -1.0, 1.0)


def greedy_keep(n: int, pi: np.ndarray, pj: np.ndarray, ps: np.ndarray) -> np.ndarray:
    """Index of the kept item each item duplicates (-1 when kept), walking items in order: an item
    goes when an earlier *kept* item is above the threshold. Vectorised rounds, no per-item loop."""
    state = np.zeros(n, np.int8)  # 0 undecided, 1 kept, 2 removed
    while (state == 0).any():
        by_kept = np.zeros(n, bool)
        by_kept[pj[state[pi] == 1]] = True
        blocked = np.zeros(n, bool)
        blocked[pj[state[pi] != 2]] = True
        removed = (state == 0) & by_kept
        kept = (state == 0) & ~blocked
        state[removed], state[kept] = 2, 1
    dup = np.full(n, -1, np.int64)
    m = (state[pi] == 1) & (state[pj] == 2)
    if m.any():
        order = np.lexsort((-ps[m], pj[m]))
        j, i = pj[m][order], pi[m][order]
        first = np.r_[True, j[1:] != j[:-1]]
        dup[j[first]] = i[first]
    return dup


def _order(group: pa.Table, emb: np.ndarray, keep: str) -> np.ndarray:
    """Processing order: best copy first. hard/easy = far from / near to the cluster centroid."""
    ids = np.asarray(group["id"].to_numpy(zero_copy_only=False)).astype(str)
    if keep in ("hard", "easy"):
        centroid = l2_normalize(emb.mean(0, keepdims=True))[0]
        dist = 1.0 - emb @ centroid
        prio = -dist if keep == "hard" else dist
    else:
        prio = priority(group, keep).to_numpy()
    return np.lexsort((ids, np.round(prio.astype(np.float64), 6)))


def _dedup_group(stage: "SemanticDedup", group: pa.Table) -> pa.Table:
    n = group.num_rows
    if n == 0:
        return pa.table({"id": pa.array([], pa.string()), "duplicate_of": pa.array([], pa.string()),
                         "semdedup_cosine": pa.array([], pa.float64())})
    emb = l2_normalize(embedding_matrix(group["embedding"]))
    if n > stage.max_cluster_size:  # split, as SemDeDup does for its largest clusters

        cen = fit_centroids(emb, math.ceil(n / stage.max_cluster_size), 20, 1, stage.seed)
        sub, _ = assign(emb, cen)
        parts = [_dedup_rows(stage, group.take(pa.array(np.flatnonzero(sub == s))), emb[sub == s])
                 for s in np.unique(sub)]
        return pa.concat_tables(parts)
    return _dedup_rows(stage, group, emb)


def _dedup_rows(stage: "SemanticDedup", group: pa.Table, emb: np.ndarray) -> pa.Table:
    order = _order(group, emb, stage.keep)
    e = np.ascontiguousarray(emb[order])
    pi, pj, ps, best = near_pairs(e, 1.0 - stage.eps)
    dup = greedy_keep(len(e), pi, pj, ps)
    ids = group["id"].take(pa.array(order)).cast(pa.string())
    dup_ids = ids.take(pa.array(np.where(dup >= 0, dup, 0))).to_numpy(zero_copy_only=False)
    dup_ids = pa.array(np.where(dup >= 0, dup_ids, None), pa.string())
    return pa.table({"id": ids, "duplicate_of": dup_ids, "semdedup_cosine": best.astype(np.float64)})


def _with_cluster(stage: "SemanticDedup", centroids: np.ndarray, column: str | None, batch: pa.Table) -> pa.Table:

    cols = ["id", "embedding"] + list(keep_requires(stage.keep))
    out = batch.select([c for c in dict.fromkeys(cols)])
    if column:
        cid = np.nan_to_num(np.asarray(batch[column].to_numpy(zero_copy_only=False), np.float64), nan=-1)
    else:
        cid, _ = assign(embedding_matrix(batch["embedding"]), centroids)
    return out.append_column("_sd_cluster", pa.array(np.asarray(cid, np.int64)))


def _tally(batch: pa.Table) -> pa.Table:
    cos = batch["semdedup_cosine"].to_numpy()
    hist, _ = np.histogram(cos, _HIST_BINS)
    removed = batch.filter(batch["duplicate_of"].is_valid())
    above = [int((cos > 1.0 - e).sum()) for e in _EPS_GRID]
    return pa.table({"rows": [batch.num_rows], "removed": [removed.num_rows], "hist": [hist.tolist()],
                     "above": [above],
                     "examples": [json.dumps(removed.slice(0, 5).to_pylist())]})


class SemanticDedup(GlobalStage):
    """Marks semantic near-duplicates: `duplicate_of` = kept id when cosine > 1 - eps within a cluster."""

    name = "semantic_dedup"
    requires = ("embedding",)  # the minimum; required_columns() adds what params name
    columns = {"duplicate_of": pa.string(), "semdedup_cosine": pa.float64()}
    decision_columns = {"duplicate_of": pa.string(), "semdedup_cosine": pa.float64()}
    default_keep = {"semantic_duplicate": "duplicate_of is None"}
    resources = Resources(cpus=1.0)
    packages = ("faiss",)

    def __init__(self, eps: float = 0.05, keep: str = "hard", clusters: str = "auto", n_clusters: int | None = None,
                 docs_per_cluster: int = 2000, n_iter: int = 100, sample_size: int = 100_000,
                 max_cluster_size: int = 20_000, seed: int = 1234):
        self.eps = eps
        self.keep = keep
        self.clusters = clusters
        self.n_clusters = n_clusters
        self.docs_per_cluster = docs_per_cluster
        self.n_iter = n_iter
        self.sample_size = sample_size
        self.max_cluster_size = max_cluster_size
        self.seed = seed

    def required_columns(self) -> tuple[str, ...]:
        cols = ["embedding"]
        if self.clusters not in ("auto", "own"):
            cols.append(self.clusters)
        if self.keep not in ("hard", "easy"):
            cols += list(keep_requires(self.keep))
        return tuple(dict.fromkeys(cols))

    def validate(self) -> None:
        if not isinstance(self.eps, (int, float)) or not 0 < self.eps < 2:
            raise ValueError(f"eps must be in (0, 2) (cosine distance), got {self.eps!r}")
        if self.keep not in ("hard", "easy"):
            check_keep(self.keep)
        if not isinstance(self.clusters, str) or not self.clusters:
            raise ValueError(f"clusters must be 'auto', 'own' or a cluster column name, got {self.clusters!r}")
        if self.n_clusters is not None and (not isinstance(self.n_clusters, int) or self.n_clusters < 1):
            raise ValueError(f"n_clusters must be an integer >= 1 or null, got {self.n_clusters!r}")
        for p in ("docs_per_cluster", "n_iter", "sample_size", "max_cluster_size"):
            if not isinstance(getattr(self, p), int) or getattr(self, p) < 1:
                raise ValueError(f"{p} must be an integer >= 1, got {getattr(self, p)!r}")

    def fit(self, data) -> "SemanticDedup":

        self.validate()
        column = None if self.clusters == "own" else self.clusters
        if column == "auto":
            # Only when the column reaches fit: the Ray runner passes required_columns() alone,
            # so jobs name it (`clusters: cluster_id`) to reuse an earlier kmeans stage.
            column = "cluster_id" if "cluster_id" in data.sample(1, seed=self.seed).column_names else None
        self.cluster_column_ = column
        self.centroids_ = None
        if column is None:
            n = data.count()
            k = self.n_clusters or max(1, math.ceil(n / self.docs_per_cluster))
            sample = data.sample(max(self.sample_size, 40 * k), seed=self.seed)
            emb = embedding_matrix(sample["embedding"]) if sample.num_rows else np.zeros((0, 1), np.float32)
            self.centroids_ = fit_centroids(emb, k, self.n_iter, 1, self.seed)
        keyed = data.map_batches(partial(_with_cluster, self, self.centroids_, column))
        # id -> duplicate_of, cosine; a table, so the fitted stage pickles (the runner saves it for resume)
        self.decisions_ = keyed.groupby_map(["_sd_cluster"], partial(_dedup_group, self)).to_arrow()
        t = pl.from_arrow(_tally(self.decisions_)) if self.decisions_.num_rows else pl.DataFrame()
        hist = np.sum(np.array(t["hist"].to_list(), np.int64), axis=0) if t.height else np.zeros(200, np.int64)
        rows = int(t["rows"].sum()) if t.height else 0
        above = np.sum(np.array(t["above"].to_list(), np.int64), axis=0) if t.height else np.zeros(len(_EPS_GRID))
        self.summary_ = {
            "eps": self.eps, "keep": self.keep, "cluster_column": column,
            "n_clusters_fitted": None if self.centroids_ is None else int(len(self.centroids_)),
            "rows": rows, "removed": int(t["removed"].sum()) if t.height else 0,
            "removed_fraction": round(int(t["removed"].sum()) / rows, 6) if rows else 0.0,
            # SemDeDup's table: fraction with M_j > 1 - eps for other eps (paper rule, upper bound of ours)
            "paper_rule_pruned_by_eps": {str(e): round(float(a) / rows, 6) if rows else 0.0
                                         for e, a in zip(_EPS_GRID, above)},
            "cosine_hist": {"edges": [round(float(x), 2) for x in _HIST_BINS], "counts": hist.tolist()},
            "examples": [r for ex in t["examples"].to_list() for r in json.loads(ex)][:10] if t.height else [],
        }
        return self

    def transform(self, batch: pa.Table) -> dict[str, pa.Array]:
        check_fitted(self, "decisions_")
        out = {}
        for c, typ in self.columns.items():
            out[c] = (batch[c].combine_chunks().cast(typ) if c in batch.column_names and batch.num_rows
                      else pa.nulls(batch.num_rows, typ))
        return out

    def report(self) -> dict:
        check_fitted(self, "summary_")
        return dict(self.summary_)
