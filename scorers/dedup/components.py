"""Connected components over an edge list of string ids (duplicate edges -> duplicate clusters),
and the choice of one kept document per component.

Ids are mapped to integers with one Arrow hash lookup, then `scipy.sparse.csgraph` labels the
components in linear time. Memory is O(edges): this runs on one process, over the duplicate edges
a dedup stage found, never over the whole corpus.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def component_labels(src: np.ndarray, dst: np.ndarray, n_nodes: int) -> np.ndarray:
    """Component label (0..k-1) of each of `n_nodes` nodes, given undirected edges src[i]-dst[i]."""
    if n_nodes == 0:
        return np.zeros(0, np.int64)
    ones = np.ones(len(src), dtype=np.int8)
    graph = coo_matrix((ones, (src, dst)), shape=(n_nodes, n_nodes)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def components(left: pa.Array | pa.ChunkedArray, right: pa.Array | pa.ChunkedArray) -> pa.Table:
    """Table (id, component) with one row per id that appears in an edge left[i]-right[i]."""
    left, right = (pc.cast(a, pa.string()) for a in (left, right))
    left = left.combine_chunks() if isinstance(left, pa.ChunkedArray) else left
    right = right.combine_chunks() if isinstance(right, pa.ChunkedArray) else right
    nodes = pc.unique(pa.concat_arrays([left, right]))
    src = pc.index_in(left, value_set=nodes).to_numpy(zero_copy_only=False)
    dst = pc.index_in(right, value_set=nodes).to_numpy(zero_copy_only=False)
    labels = component_labels(src, dst, len(nodes))
    return pa.table({"id": nodes, "component": pa.array(labels, pa.int64())})


def keep_per_component(pairs: pl.DataFrame) -> pl.DataFrame:
    """Clusters from accepted pairs (hub, member, hub_priority, member_priority, jaccard).

    One row per clustered document: `id`, `kept` (the component's first document by
    (priority, id)), `jaccard` (null for the kept one; else the pair's Jaccard to `kept` when they
    are paired, the highest of its pairs otherwise) and `size` of the component.
    """
    schema = {"id": pl.String, "kept": pl.String, "jaccard": pl.Float64, "size": pl.Int64}
    if pairs.height == 0:
        return pl.DataFrame(schema=schema)
    comp = pl.from_arrow(components(pairs["hub"].to_arrow(), pairs["member"].to_arrow()))
    prio = pl.concat([pairs.select(pl.col("hub").alias("id"), pl.col("hub_priority").alias("p")),
                      pairs.select(pl.col("member").alias("id"), pl.col("member_priority").alias("p"))]).unique("id")
    nodes = comp.join(prio, on="id", how="left").sort(["component", "p", "id"]).with_columns(
        pl.col("id").first().over("component").alias("kept"), pl.len().over("component").alias("size"))
    direct = pl.concat([
        pairs.select(pl.col("hub").alias("kept"), pl.col("member").alias("id"), pl.col("jaccard").alias("jd")),
        pairs.select(pl.col("member").alias("kept"), pl.col("hub").alias("id"), pl.col("jaccard").alias("jd")),
    ]).unique(["kept", "id"])
    best = pl.concat([pairs.select(pl.col("hub").alias("id"), "jaccard"),
                      pairs.select(pl.col("member").alias("id"), "jaccard")]).group_by("id").agg(
        pl.col("jaccard").max().alias("jm"))
    out = nodes.join(direct, on=["kept", "id"], how="left").join(best, on="id", how="left").select(
        "id", "kept", pl.when(pl.col("kept") != pl.col("id")).then(pl.coalesce("jd", "jm")).alias("jaccard"),
        pl.col("size").cast(pl.Int64))
    return out.cast(schema)
