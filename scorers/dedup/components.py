"""Connected components over an edge list of string ids (duplicate edges -> duplicate clusters),
and the choice of one kept document per component.

In memory (`components`, `keep_per_component`): ids are mapped to integers with one Arrow hash
lookup, then `scipy.sparse.csgraph` labels the components in linear time; memory is O(edges) in one
process. Distributed (`connected_components_data`, `keep_per_component_data`): large-star /
small-star rounds of `partition_map` over a `Data` of edges, the caller holding only summary rows.
Both give the same components (labelled by their smallest id) and the same kept documents.
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


# --- distributed: the same components and keep rule over `Data`, nothing per edge on the driver ---

LOCAL_EDGES = 1_000_000  # accepted pairs up to which `keep_per_component_data` collects and uses scipy
LOCAL_DATA_EDGES = float("inf")  # the same for a `LocalData` input of MinHashDedup (in memory anyway)
MAX_ROUNDS = 200

_EDGES = pa.schema([("a", pa.string()), ("b", pa.string()), ("bad", pa.int64())])
_LABELS = pa.schema([("id", pa.string()), ("component", pa.string())])
_NODE = pa.schema([("id", pa.string()), ("component", pa.string()), ("other", pa.string()),
                   ("jaccard", pa.float64()), ("p", pa.float64()), ("tag", pa.int8())])
_KEEP = pa.schema([("id", pa.string()), ("kept", pa.string()), ("jaccard", pa.float64()), ("size", pa.int64())])


def _edges_only(t: pa.Table) -> pl.DataFrame:
    df = pl.from_arrow(t.select(["a", "b"])) if t.num_rows else pl.DataFrame(schema={"a": pl.String, "b": pl.String})
    return df.filter(pl.col("a").is_not_null())


def _out_edges(df: pl.DataFrame, bad: int) -> pa.Table:
    """Edge rows (bad null) and one summary row (a, b null; bad = violations seen in this call)."""
    edges = df.select(pl.col("a").cast(pl.String), pl.col("b").cast(pl.String), pl.lit(None, pl.Int64).alias("bad"))
    summary = pl.DataFrame({"a": [None], "b": [None], "bad": [bad]},
                           schema={"a": pl.String, "b": pl.String, "bad": pl.Int64})
    return pl.concat([edges, summary]).to_arrow().cast(_EDGES)


def _both_ways(t: pa.Table) -> pa.Table:
    """map_batches: each edge from both ends, keyed by `u` (large-star needs all neighbours)."""
    df = _edges_only(t)
    return pl.concat([df.select(pl.col("a").alias("u"), pl.col("b").alias("v")),
                      df.select(pl.col("b").alias("u"), pl.col("a").alias("v"))]).to_arrow()


def _high_end(t: pa.Table) -> pa.Table:
    """map_batches: each edge keyed by its larger end `u` (small-star looks at smaller neighbours)."""
    df = _edges_only(t)
    return df.select(pl.max_horizontal("a", "b").alias("u"), pl.min_horizontal("a", "b").alias("v")).to_arrow()


def _large_star(t: pa.Table) -> pa.Table:
    """partition_map by u: link every larger neighbour v of u to m(u) = min(u, neighbours of u).
    Also counts the nodes that break the final shape (a star per component around its smallest
    node): a node with a smaller neighbour and more than one neighbour. Zero means converged."""
    if t.num_rows == 0:
        return _out_edges(pl.DataFrame(schema={"a": pl.String, "b": pl.String}), 0)
    df = pl.from_arrow(t.select(["u", "v"])).unique()
    df = df.with_columns(pl.col("v").min().over("u").alias("mn"), pl.len().over("u").alias("deg"))
    bad = df.filter((pl.col("mn") < pl.col("u")) & (pl.col("deg") >= 2))["u"].n_unique()
    m = pl.when(pl.col("mn") < pl.col("u")).then(pl.col("mn")).otherwise(pl.col("u"))
    out = df.filter(pl.col("v") > pl.col("u")).select(pl.col("v").alias("a"), m.alias("b"))
    return _out_edges(out, bad)


def _small_star(t: pa.Table) -> pa.Table:
    """partition_map by u: link u and each smaller neighbour of u to the smallest of them."""
    if t.num_rows == 0:
        return _out_edges(pl.DataFrame(schema={"a": pl.String, "b": pl.String}), 0)
    df = pl.from_arrow(t.select(["u", "v"])).unique().with_columns(pl.col("v").min().over("u").alias("mn"))
    out = pl.concat([df.select(pl.col("v").alias("a"), pl.col("mn").alias("b")),
                     df.select(pl.col("u").alias("a"), pl.col("mn").alias("b")).unique()])
    return _out_edges(out.filter(pl.col("a") != pl.col("b")), 0)


def _violations(t: pa.Table) -> pa.Table:
    """map_batches: the summary rows' counts only (a few rows per batch reach the driver)."""
    if t.num_rows == 0 or "bad" not in t.column_names:
        return pa.table({"bad": pa.array([], pa.int64())})
    return pa.table({"bad": t.filter(pc.is_null(t["a"]))["bad"]})


def _star_labels(t: pa.Table) -> pa.Table:
    """map_batches over a converged star forest (leaf a, root b): (id, component) for both ends."""
    df = _edges_only(t)
    return pl.concat([df.select(pl.col("a").alias("id"), pl.col("b").alias("component")),
                      df.select(pl.col("b").alias("id"), pl.col("b").alias("component"))]).to_arrow().cast(_LABELS)


def _unique_labels(t: pa.Table) -> pa.Table:
    if t.num_rows == 0:
        return _LABELS.empty_table()
    return pl.from_arrow(t).unique("id").to_arrow().cast(_LABELS)


def connected_components_data(edges, left: str = "a", right: str = "b", stats: dict | None = None):
    """`Data` of (id, component) for every id in an edge `left`-`right` of `Data` `edges`, where
    `component` is the smallest id of its connected component (string order).

    Alternating large-star / small-star (Kiveris et al. 2014, "Connected components in MapReduce
    and beyond"), each step one `partition_map` keyed by node over the edge table; the graph ends as
    one star per component around its smallest id. Convergence is read from one summary row per
    partition (a count of nodes not yet in star shape), so no edge reaches the caller. Edges with
    `left == right` are ignored. `stats`, if given, receives the number of rounds.
    """
    cur = edges.map_batches(_rename(left, right))
    rounds = 0
    while True:
        rounds += 1
        nxt = cur.map_batches(_both_ways).partition_map(["u"], _large_star).materialize()
        bad = nxt.map_batches(_violations).to_arrow()
        if bad.num_rows == 0 or int(pc.sum(bad["bad"]).as_py() or 0) == 0:
            cur = nxt   # the input was a star forest already; large-star returns it unchanged
            break
        if rounds >= MAX_ROUNDS:
            raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
        cur = nxt.map_batches(_high_end).partition_map(["u"], _small_star).materialize()
    if stats is not None:
        stats["rounds"] = rounds
    return cur.map_batches(_star_labels).partition_map(["id"], _unique_labels)


def _rename(left: str, right: str):
    def fn(t: pa.Table) -> pa.Table:
        if t.num_rows == 0:
            return _EDGES.empty_table()
        a, b = pc.cast(t[left], pa.string()), pc.cast(t[right], pa.string())
        keep = pc.and_(pc.not_equal(a, b), pc.and_(pc.is_valid(a), pc.is_valid(b)))
        return pa.table({"a": a, "b": b, "bad": pa.nulls(t.num_rows, pa.int64())}).filter(keep).cast(_EDGES)
    return fn


def _node_rows(t: pa.Table) -> pa.Table:
    """map_batches over pairs: each pair from both ends (id, other, jaccard, p = id's priority)."""
    n = t.num_rows
    if n == 0:
        return _NODE.empty_table()
    nulls = pa.nulls(n, pa.string())
    tag = pa.array(np.ones(n, np.int8))
    hub, mem = pc.cast(t["hub"], pa.string()), pc.cast(t["member"], pa.string())
    j = pc.cast(t["jaccard"], pa.float64())
    one = pa.table({"id": hub, "component": nulls, "other": mem, "jaccard": j,
                    "p": pc.cast(t["hub_priority"], pa.float64()), "tag": tag}, schema=_NODE)
    two = pa.table({"id": mem, "component": nulls, "other": hub, "jaccard": j,
                    "p": pc.cast(t["member_priority"], pa.float64()), "tag": tag}, schema=_NODE)
    return pa.concat_tables([one, two])


def _label_rows(t: pa.Table) -> pa.Table:
    n = t.num_rows
    if n == 0:
        return _NODE.empty_table()
    return pa.table({"id": t["id"], "component": t["component"], "other": pa.nulls(n, pa.string()),
                     "jaccard": pa.nulls(n, pa.float64()), "p": pa.nulls(n, pa.float64()),
                     "tag": pa.array(np.zeros(n, np.int8))}, schema=_NODE)


def _attach_component(t: pa.Table) -> pa.Table:
    """partition_map by id: give each node's pair rows its component; add one node row (tag 0)
    with its priority and its best Jaccard."""
    if t.num_rows == 0:
        return _NODE.empty_table()
    df = pl.from_arrow(t)
    comp = df.filter(pl.col("tag") == 0).select("id", "component").unique("id")
    pairs = df.filter(pl.col("tag") == 1).drop("component").join(comp, on="id", how="inner")
    nodes = pairs.group_by("id", "component").agg(pl.col("p").first(), pl.col("jaccard").max(),
                                                  pl.lit(None, pl.String).alias("other"))
    nodes = nodes.with_columns(pl.lit(0, pl.Int8).alias("tag"))
    return pl.concat([nodes.select(_NODE.names), pairs.select(_NODE.names)], how="vertical_relaxed").to_arrow().cast(_NODE)


def _keep_component(t: pa.Table) -> pa.Table:
    """partition_map by component: kept = first node by (priority, id), size, Jaccard to kept
    (the pair's when paired, else the node's best), as `keep_per_component`."""
    if t.num_rows == 0:
        return _KEEP.empty_table()
    df = pl.from_arrow(t)
    nodes = df.filter(pl.col("tag") == 0).sort(["component", "p", "id"]).with_columns(
        pl.col("id").first().over("component").alias("kept"), pl.len().over("component").alias("size"))
    direct = df.filter(pl.col("tag") == 1).group_by("id", "other").agg(pl.col("jaccard").max().alias("jd"))
    out = nodes.join(direct, left_on=["id", "kept"], right_on=["id", "other"], how="left").select(
        "id", "kept", pl.when(pl.col("kept") != pl.col("id")).then(pl.coalesce("jd", "jaccard")).alias("jaccard"),
        pl.col("size").cast(pl.Int64))
    return out.to_arrow().cast(_KEEP)


def keep_per_component_data(pairs, local_edges: int | None = None, stats: dict | None = None):
    """`keep_per_component` over a `Data` of pairs (hub, member, hub_priority, member_priority,
    jaccard); returns a `Data` of (id, kept, jaccard, size), the same rows.

    Up to `local_edges` (default `LOCAL_EDGES`) pairs it collects them and runs the in-memory
    scipy path; above, components (`connected_components_data`) and the keep rule run as
    `partition_map`s: the caller holds a few summary rows per round, nothing per pair."""
    limit = LOCAL_EDGES if local_edges is None else local_edges
    n = pairs.count()
    if n <= limit:
        t = pairs.to_arrow()
        df = pl.from_arrow(t) if t.num_rows else pl.DataFrame(
            schema={"hub": pl.String, "member": pl.String, "hub_priority": pl.Float64,
                    "member_priority": pl.Float64, "jaccard": pl.Float64})
        return pairs.from_arrow(keep_per_component(df).to_arrow().cast(_KEEP))
    labels = connected_components_data(pairs, "hub", "member", stats=stats)
    rows = labels.map_batches(_label_rows).union(pairs.map_batches(_node_rows))
    nodes = rows.partition_map(["id"], _attach_component)
    return nodes.partition_map(["component"], _keep_component)
