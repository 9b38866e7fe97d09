"""Near-duplicate removal with MinHash LSH: word 5-grams, 14 bands x 8 rows (FineWeb), candidate
pairs verified by true Jaccard (Lee et al. 2022), connected components, one document kept each.

`fit` counts the rows (to size the shuffle), then makes three distributed steps, and holds no text
anywhere but in the slice of a batch being processed:
1. `map_batches`: per document, its `bands` bucket keys (band, 64-bit hash of 8 MinHash values),
   with id and keep priority. Keys, not text, go into the shuffle.
2. `groupby_map` on a bucket partition: documents sharing a bucket become star edges from the
   bucket's first document by the keep rule to each other member (not all pairs).
3. Only documents in a candidate pair are shingled again (`map_batches`); each hub meets its members
   in a `groupby_map` group, which computes the true Jaccard of their shingle sets (`verify`) or the
   MinHash estimate. Pairs that pass are joined into connected components; per component the first
   document by (priority, id) is kept. Up to `components.LOCAL_EDGES` candidate pairs (and always
   for `LocalData`) this tail runs on the driver (memory grows with the pairs); above it the pairs,
   their verification, the components and the keep rule stay in `Data` and the driver holds 8 bytes
   per candidate document plus summary rows (`_fit_distributed`, docs/dedup.md).
"""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from tamis.pipeline.data import LocalData
from tamis.scorers.dedup import components as cc
from tamis.scorers.dedup.components import keep_per_component, keep_per_component_data
from tamis.scorers.dedup.keep import check_keep, keep_requires, priority
from tamis.scorers.dedup.lsh import (band_hashes, collision_probability, doc_shingles, optimal_params,
                              permutations, ranges, signatures, unique_per_doc)
from tamis.pipeline.stage import GlobalStage, check_fitted

GROUP_ROWS = 65536  # target band-key rows per shuffle group (groups = bands * docs / GROUP_ROWS)
SLICE_BYTES = 8 << 20  # text a map function shingles at once, whatever batch size the engine sends
PAIR_BLOCK = 64     # members of one hub scored together in one group
PAIR_GROUP_DOCS = 512  # target plan rows (documents with their shingle sets) per verification group
_ID_SEED = 0x1D5EED

_BAND_SCHEMA = pa.schema([("part", pa.int64()), ("band_idx", pa.int32()), ("band_hash", pa.uint64()),
                          ("id", pa.string()), ("priority", pa.float64())])
_EDGE_SCHEMA = pa.schema([("hub", pa.string()), ("member", pa.string()),
                          ("hub_priority", pa.float64()), ("member_priority", pa.float64())])
_PAYLOAD_SCHEMA = pa.schema([("part", pa.int64()), ("g", pa.int64()), ("role", pa.int8()),
                             ("id", pa.string()), ("payload", pa.large_list(pa.uint64()))])
_SCORE_SCHEMA = pa.schema([("hub", pa.string()), ("member", pa.string()), ("jaccard", pa.float64())])
_PLAN_SCHEMA = pa.schema([("id", pa.string()), ("hub", pa.string()), ("block", pa.int64()), ("role", pa.int8()),
                          ("hub_priority", pa.float64()), ("member_priority", pa.float64()),
                          ("payload", pa.large_list(pa.uint64()))])
_PAIR_SCHEMA = pa.schema([("hub", pa.string()), ("member", pa.string()), ("hub_priority", pa.float64()),
                          ("member_priority", pa.float64()), ("jaccard", pa.float64())])
_DECISION_SCHEMA = pa.schema([("id", pa.string()), ("minhash_kept_id", pa.string()),
                              ("minhash_jaccard", pa.float64()), ("minhash_cluster_size", pa.int64())])


def _by_slices(fn):
    """Apply a row-local map function to slices of at most SLICE_BYTES of text (bounded memory)."""
    def wrapped(batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        size = np.cumsum(pc.binary_length(batch["text"]).to_numpy(zero_copy_only=False)) if n else [0]
        if size[-1] <= SLICE_BYTES:
            return fn(batch)
        ends = np.searchsorted(size, np.arange(SLICE_BYTES, size[-1], SLICE_BYTES), side="left") + 1
        bounds = np.unique(np.concatenate([[0], np.minimum(ends, n), [n]]))
        outs = [fn(batch.slice(lo, hi - lo)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        return pa.concat_tables(outs)
    return wrapped


def _band_rows(ngram: int, bands: int, rows: int, seed: int, keep: str, parts: int):
    """map_batches fn: one row per (document, band) with the bucket key, id and keep priority;
    `part` (bucket key mod `parts`) is the shuffle key."""
    a, b = permutations(bands * rows, seed)

    def fn(batch: pa.Table) -> pa.Table:
        sh, counts = doc_shingles(batch["text"], ngram)
        has = np.flatnonzero(counts > 0)
        if has.shape[0] == 0:
            return _BAND_SCHEMA.empty_table()
        keys = band_hashes(signatures(sh, counts, a, b)[has], bands, rows).ravel()
        doc = np.repeat(has, bands)
        prio = priority(batch, keep).to_numpy(zero_copy_only=False)
        return pa.table({"part": (keys % np.uint64(parts)).astype(np.int64),
                         "band_idx": np.tile(np.arange(bands, dtype=np.int32), has.shape[0]),
                         "band_hash": keys, "id": pc.cast(batch["id"], pa.string()).take(pa.array(doc)),
                         "priority": prio[doc]}, schema=_BAND_SCHEMA)
    return _by_slices(fn)


def _bucket_edges(group: pa.Table) -> pa.Table:
    """groupby_map fn: in each bucket, an edge from its first document (priority, id) to each other."""
    if group.num_rows < 2:
        return _EDGE_SCHEMA.empty_table()
    # numpy pre-filter: only rows whose (band, hash) occurs twice go on to polars
    key = (group["band_hash"].to_numpy() ^ (group["band_idx"].to_numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)))
    order = np.argsort(key, kind="stable")
    same = key[order][1:] == key[order][:-1]
    in_pair = np.zeros(len(key), bool)
    in_pair[1:] |= same
    in_pair[:-1] |= same
    if not in_pair.any():
        return _EDGE_SCHEMA.empty_table()
    bucket = ["band_idx", "band_hash"]
    df = pl.from_arrow(group.select(["band_idx", "band_hash", "id", "priority"]).take(pa.array(np.sort(order[in_pair]))))
    df = df.sort([*bucket, "priority", "id"]).with_columns(
        pl.col("id").first().over(bucket).alias("hub"),
        pl.col("priority").first().over(bucket).alias("hub_priority"))
    edges = (df.filter(pl.col("id") != pl.col("hub"))
             .select("hub", pl.col("id").alias("member"), "hub_priority",
                     pl.col("priority").alias("member_priority"))
             .unique(["hub", "member"]))
    return edges.to_arrow().cast(_EDGE_SCHEMA)


def _pair_plan(edges: pl.DataFrame) -> pl.DataFrame:
    """Rows (id, g, role, part): each hub's members in blocks of PAIR_BLOCK; role 0 hub, 1 member."""
    e = edges.sort(["hub", "member"]).with_columns(
        (pl.int_range(pl.len()).over("hub") // PAIR_BLOCK).alias("block"))
    new = (pl.col("hub") != pl.col("hub").shift(1)) | (pl.col("block") != pl.col("block").shift(1))
    e = e.with_columns((new.fill_null(True).cast(pl.Int64).cum_sum() - 1).alias("g"))
    hubs = e.unique("g", keep="first").select(pl.col("hub").alias("id"), "g", pl.lit(0, pl.Int8).alias("role"))
    members = e.select(pl.col("member").alias("id"), "g", pl.lit(1, pl.Int8).alias("role"))
    plan = pl.concat([hubs, members])
    parts = max(1, math.ceil(plan.height / PAIR_GROUP_DOCS))
    plan = plan.with_columns((pl.col("g") % parts).alias("part"),
                             pl.col("id").hash(seed=_ID_SEED).alias("key"))
    return plan.sort("key")


def _payload(texts, ngram: int, verify: bool, num_perm: int, a, b) -> pa.LargeListArray:
    """Per text, its unique shingle hashes (`verify`: for the exact Jaccard) or its MinHash
    signature of `num_perm` values; the one payload both fit paths ship to the pair scorer."""
    sh, counts = doc_shingles(texts, ngram)
    if verify:
        values, counts = unique_per_doc(sh, counts)
    else:
        values = signatures(sh, counts, a, b).ravel()
        counts = np.full(len(texts), num_perm, np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, pa.uint64()))


def _pair_payloads(plan: pl.DataFrame, ngram: int, verify: bool, num_perm: int, seed: int):
    """map_batches fn: for documents in the plan, one row per plan entry with the shingle set
    (verify) or the MinHash signature; other documents produce nothing."""
    keys = plan["key"].to_numpy()
    plan_t = plan.select(pl.col("id").cast(pl.String), "g", "role", "part").to_arrow()
    a, b = permutations(num_perm, seed)

    def fn(batch: pa.Table) -> pa.Table:
        ids = pc.cast(batch["id"], pa.string())
        bk = pl.Series(ids).hash(seed=_ID_SEED).to_numpy()
        lo, hi = np.searchsorted(keys, bk, "left"), np.searchsorted(keys, bk, "right")
        doc = np.repeat(np.arange(batch.num_rows), hi - lo)
        rows = np.repeat(lo, hi - lo) + ranges(hi - lo)
        same = pc.equal(plan_t["id"].take(pa.array(rows, pa.int64())), ids.take(pa.array(doc, pa.int64())))
        ok = np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)
        doc, rows = doc[ok], rows[ok]
        if doc.shape[0] == 0:
            return _PAYLOAD_SCHEMA.empty_table()
        uniq, doc_pos = np.unique(doc, return_inverse=True)
        payload = _payload(batch["text"].take(pa.array(uniq)), ngram, verify, num_perm, a, b)
        sel = plan_t.take(pa.array(rows, pa.int64()))
        return pa.table({"part": sel["part"], "g": sel["g"], "role": sel["role"], "id": sel["id"],
                         "payload": payload.take(pa.array(doc_pos, pa.int64()))}, schema=_PAYLOAD_SCHEMA)
    return _by_slices(fn)


def _score_pairs(verify: bool):
    """groupby_map fn: Jaccard of each member to its hub, per group `g` (sets, or signatures)."""
    def fn(group: pa.Table) -> pa.Table:
        if group.num_rows == 0:
            return _SCORE_SCHEMA.empty_table()
        df = pl.from_arrow(group.select(["g", "role", "id", "payload"]))
        hubs = df.filter(pl.col("role") == 0).select("g", pl.col("id").alias("hub"), pl.col("payload").alias("hp"))
        mem = df.filter(pl.col("role") == 1).select("g", pl.col("id").alias("member"), "payload")
        if mem.height == 0 or hubs.height == 0:
            return _SCORE_SCHEMA.empty_table()
        if verify:
            mem = mem.with_row_index("mi")
            hflat = hubs.select("g", pl.col("hp").alias("h")).explode("h")
            mflat = mem.select("g", "mi", pl.col("payload").alias("h")).explode("h")
            inter = mflat.join(hflat, on=["g", "h"], how="semi").group_by("mi").agg(pl.len().alias("inter"))
            out = (mem.select("mi", "g", "member", pl.col("payload").list.len().alias("nm"))
                   .join(hubs.select("g", "hub", pl.col("hp").list.len().alias("nh")), on="g", how="inner")
                   .join(inter, on="mi", how="left")
                   .with_columns(pl.col("inter").fill_null(0).cast(pl.Float64)))
            out = out.select("hub", "member", (pl.col("inter") / (pl.col("nh") + pl.col("nm") - pl.col("inter")))
                             .alias("jaccard"))
        else:
            pairs = mem.join(hubs, on="g", how="inner")        # signatures: num_perm values each
            k = int(pairs["payload"].list.len()[0])
            ms = pairs["payload"].explode().to_numpy().reshape(-1, k)
            hs = pairs["hp"].explode().to_numpy().reshape(-1, k)
            out = pairs.select("hub", "member").with_columns(pl.Series("jaccard", (ms == hs).mean(axis=1)))
        return out.to_arrow().cast(_SCORE_SCHEMA)
    return fn


# --- distributed verification: candidate pairs never leave `Data` ---

def _unique_edges(t: pa.Table) -> pa.Table:
    """partition_map by (hub, member): one row per candidate pair."""
    if t.num_rows == 0 or "hub" not in t.column_names:
        return _EDGE_SCHEMA.empty_table()
    return pl.from_arrow(t.select(_EDGE_SCHEMA.names)).unique(["hub", "member"]).to_arrow().cast(_EDGE_SCHEMA)


def _plan_rows(t: pa.Table) -> pa.Table:
    """partition_map by hub: `_pair_plan` per hub; a verification group is (hub, block of
    PAIR_BLOCK members), with one hub row (role 0) and its member rows (role 1)."""
    if t.num_rows == 0 or "hub" not in t.column_names:
        return _PLAN_SCHEMA.empty_table()
    e = pl.from_arrow(t.select(_EDGE_SCHEMA.names)).unique(["hub", "member"]).sort(["hub", "member"]).with_columns(
        (pl.int_range(pl.len()).over("hub") // PAIR_BLOCK).cast(pl.Int64).alias("block"))
    members = e.select(pl.col("member").alias("id"), "hub", "block", pl.lit(1, pl.Int8).alias("role"),
                       "hub_priority", "member_priority")
    hubs = e.unique(["hub", "block"]).select(pl.col("hub").alias("id"), "hub", "block", pl.lit(0, pl.Int8).alias("role"),
                                             "hub_priority", pl.lit(None, pl.Float64).alias("member_priority"))
    out = pl.concat([hubs, members]).with_columns(pl.lit(None, pl.List(pl.UInt64)).alias("payload"))
    return out.to_arrow().cast(_PLAN_SCHEMA)


def _id_hashes(t: pa.Table) -> pa.Table:
    """partition_map by h (or map_batches): distinct 64-bit hashes of plan ids."""
    if t.num_rows == 0:
        return pa.table({"h": pa.array([], pa.uint64())})
    col = t["h"] if "h" in t.column_names else None
    if col is None:
        col = pl.Series(pc.cast(t["id"], pa.string())).hash(seed=_ID_SEED).to_arrow()
    return pa.table({"h": pc.unique(pc.cast(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col,
                                            pa.uint64()))})


def _doc_payloads(hashes: np.ndarray, ngram: int, verify: bool, num_perm: int, seed: int):
    """map_batches fn: for documents whose id hash is in `hashes` (the candidate documents; a hash
    collision only adds a row no plan row asks for), one row (id, role -1, payload)."""
    a, b = permutations(num_perm, seed)

    def fn(batch: pa.Table) -> pa.Table:
        ids = pc.cast(batch["id"], pa.string())
        bk = pl.Series(ids).hash(seed=_ID_SEED).to_numpy()
        pos = np.minimum(np.searchsorted(hashes, bk), max(len(hashes) - 1, 0))
        sel = np.flatnonzero(hashes[pos] == bk) if len(hashes) else np.zeros(0, np.int64)
        if sel.shape[0] == 0:
            return _PLAN_SCHEMA.empty_table()
        payload = _payload(batch["text"].take(pa.array(sel)), ngram, verify, num_perm, a, b)
        k = sel.shape[0]
        return pa.table({"id": ids.take(pa.array(sel)), "hub": pa.nulls(k, pa.string()), "block": pa.nulls(k, pa.int64()),
                         "role": pa.array(np.full(k, -1, np.int8)), "hub_priority": pa.nulls(k, pa.float64()),
                         "member_priority": pa.nulls(k, pa.float64()), "payload": payload}, schema=_PLAN_SCHEMA)
    return _by_slices(fn)


def _attach_payload(t: pa.Table) -> pa.Table:
    """partition_map by id: each plan row of a document gets the document's payload."""
    if t.num_rows == 0:
        return _PLAN_SCHEMA.empty_table()
    df = pl.from_arrow(t)
    docs = df.filter(pl.col("role") == -1).select("id", pl.col("payload").alias("pl")).unique("id", keep="first")
    plan = df.filter(pl.col("role") >= 0).join(docs, on="id", how="inner")
    return plan.select(*[c for c in _PLAN_SCHEMA.names if c != "payload"], pl.col("pl").alias("payload")) \
        .to_arrow().cast(_PLAN_SCHEMA)


def _score_plan(verify: bool, cutoff: float | None):
    """partition_map by (hub, block): `_score_pairs` per group, then the pair rows with priorities
    (only pairs with Jaccard >= `cutoff` when verifying)."""
    score = _score_pairs(verify)

    def fn(t: pa.Table) -> pa.Table:
        if t.num_rows == 0:
            return _PAIR_SCHEMA.empty_table()
        df = pl.from_arrow(t).with_columns(
            pl.concat_str([pl.col("hub"), pl.col("block").cast(pl.String)], separator="\x00").alias("g"))
        scored = pl.from_arrow(score(df.select("g", "role", "id", "payload").to_arrow()))
        pri = df.filter(pl.col("role") == 1).select("hub", pl.col("id").alias("member"), "hub_priority", "member_priority")
        out = pri.join(scored, on=["hub", "member"], how="inner")
        if cutoff is not None:
            out = out.filter(pl.col("jaccard") >= cutoff)
        return out.select(_PAIR_SCHEMA.names).to_arrow().cast(_PAIR_SCHEMA)
    return fn


class MinHashDedup(GlobalStage):
    """Finds near-duplicate documents (word n-gram Jaccard) and keeps one per cluster."""

    name = "minhash_dedup"
    requires = ("text",)
    columns = {"duplicate_of": pa.string(), "minhash_duplicate": pa.bool_(),
               "minhash_jaccard": pa.float64(), "minhash_cluster_size": pa.int64()}
    decision_columns = {"minhash_kept_id": pa.string(), "minhash_jaccard": pa.float64(),
                        "minhash_cluster_size": pa.int64()}
    default_keep = {"minhash_duplicate": "not minhash_duplicate"}

    def __init__(self, ngram: int = 5, bands: int = 14, rows: int = 8, threshold: float | None = None,
                 verify: bool = True, min_jaccard: float | None = None, keep: str = "lowest_id",
                 seed: int = 1):
        self.ngram = ngram
        self.bands = bands
        self.rows = rows
        self.threshold = threshold
        self.verify = verify
        self.min_jaccard = min_jaccard
        self.keep = keep
        self.seed = seed

    def validate(self) -> None:
        for p in ("ngram", "bands", "rows"):
            v = getattr(self, p)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{p} must be an integer >= 1, got {v!r}")
        if self.threshold is not None and not (_is_number(self.threshold) and 0.0 < self.threshold < 1.0):
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold!r}")
        if self.min_jaccard is not None and not (_is_number(self.min_jaccard) and 0.0 <= self.min_jaccard <= 1.0):
            raise ValueError(f"min_jaccard must be in [0, 1], got {self.min_jaccard!r}")
        if not isinstance(self.verify, bool):
            raise ValueError(f"verify must be true or false, got {self.verify!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        check_keep(self.keep)

    def required_columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(("text", *keep_requires(self.keep))))

    def lsh_params(self) -> tuple[int, int]:
        """(bands, rows): as given, or chosen for `threshold` within bands * rows permutations."""
        if self.threshold is None:
            return self.bands, self.rows
        return optimal_params(self.threshold, self.bands * self.rows)

    def jaccard_cutoff(self) -> float:
        """Verified pairs need Jaccard >= this: `min_jaccard`, else `threshold`, else 0.8 (Lee et al.)."""
        if self.min_jaccard is not None:
            return float(self.min_jaccard)
        return float(self.threshold) if self.threshold is not None else 0.8

    def fit(self, data) -> "MinHashDedup":
        self.validate()
        bands, rows = self.lsh_params()
        self.bands_, self.rows_ = bands, rows
        parts = max(1, math.ceil(data.count() * bands / GROUP_ROWS))
        keys = data.map_batches(_band_rows(self.ngram, bands, rows, self.seed, self.keep, parts))
        found = keys.groupby_map(["part"], _bucket_edges).materialize()
        limit = cc.LOCAL_DATA_EDGES if isinstance(data, LocalData) else cc.LOCAL_EDGES
        if found.count() > limit:
            return self._fit_distributed(data, found, bands * rows)
        edges = _table(found.to_arrow(), _EDGE_SCHEMA)
        edges = pl.from_arrow(edges).unique(["hub", "member"])
        self.candidate_pairs_ = edges.height
        if edges.height == 0:
            self.pairs_ = pl.from_arrow(_SCORE_SCHEMA.empty_table())
            self.pairs_kept_ = 0
            self.decisions_ = _DECISION_SCHEMA.empty_table()
            return self
        plan = _pair_plan(edges)
        payload = data.map_batches(_pair_payloads(plan, self.ngram, self.verify, bands * rows, self.seed))
        scored = _table(payload.groupby_map(["part"], _score_pairs(self.verify)).to_arrow(), _SCORE_SCHEMA)
        pairs = edges.join(pl.from_arrow(scored), on=["hub", "member"], how="inner")
        if self.verify:
            pairs = pairs.filter(pl.col("jaccard") >= self.jaccard_cutoff())
        self.pairs_ = pairs.select("hub", "member", "jaccard")
        self.pairs_kept_ = pairs.height
        self.decisions_ = keep_per_component(pairs).to_arrow().rename_columns(
            ["id", "minhash_kept_id", "minhash_jaccard", "minhash_cluster_size"]).cast(_DECISION_SCHEMA)
        return self

    def _fit_distributed(self, data, found, num_perm: int) -> "MinHashDedup":
        """Above `components.LOCAL_EDGES` candidate rows: pairs, their verification, components and
        the keep rule stay in `Data`. The driver holds the distinct candidate documents' 64-bit id
        hashes (8 bytes per candidate document, sent to the map tasks that pick their payloads) and
        a few summary rows per round; `pairs_` is then None and `decisions_` a `Data` on Ray, which the
        runner collects (one row per clustered document: `fits.decisions_ref`, `fit_state.save`)."""
        edges = found.partition_map(["hub", "member"], _unique_edges).materialize()
        self.candidate_pairs_ = edges.count()
        plan = edges.partition_map(["hub"], _plan_rows).materialize()
        hashes = plan.map_batches(_id_hashes).partition_map(["h"], _id_hashes).to_arrow()
        hashes = np.sort(hashes["h"].to_numpy()) if hashes.num_rows else np.zeros(0, np.uint64)
        docs = data.map_batches(_doc_payloads(hashes, self.ngram, self.verify, num_perm, self.seed))
        rows = plan.union(docs).partition_map(["id"], _attach_payload)
        cutoff = self.jaccard_cutoff() if self.verify else None
        pairs = rows.partition_map(["hub", "block"], _score_plan(self.verify, cutoff)).materialize()
        self.pairs_ = None  # not kept: the runner saves fitted `Data` attributes by collecting them
        self.pairs_kept_ = pairs.count()
        dec = keep_per_component_data(pairs).map_batches(_decision_rows).materialize()
        self.decisions_ = dec.to_arrow() if isinstance(dec, LocalData) else dec
        return self

    def transform(self, batch: pa.Table) -> dict[str, pa.Array]:
        check_fitted(self, "decisions_")
        n = batch.num_rows
        names = batch.column_names

        def col(name: str, typ: pa.DataType):
            return batch[name] if name in names else pa.nulls(n, typ)
        df = pl.DataFrame({"id": pc.cast(batch["id"], pa.string()), "kept": col("minhash_kept_id", pa.string()),
                           "j": col("minhash_jaccard", pa.float64()), "size": col("minhash_cluster_size", pa.int64())})
        dup = pl.col("kept").is_not_null() & (pl.col("kept") != pl.col("id"))
        out = df.select(pl.when(dup).then(pl.col("kept")).alias("duplicate_of"),
                        dup.fill_null(False).alias("minhash_duplicate"),
                        pl.when(dup).then(pl.col("j")).alias("minhash_jaccard"),
                        pl.col("size").fill_null(1).alias("minhash_cluster_size"))
        return {c: out[c].to_arrow().cast(t) for c, t in self.columns.items()}

    def report(self) -> dict:
        check_fitted(self, "decisions_")
        d = pl.from_arrow(self.decisions_ if isinstance(self.decisions_, pa.Table) else
                          _table(self.decisions_.to_arrow(), _DECISION_SCHEMA))
        removed = d.filter(pl.col("minhash_kept_id") != pl.col("id"))
        sizes = (d.filter(pl.col("minhash_kept_id") == pl.col("id"))
                 .group_by("minhash_cluster_size").agg(pl.len().alias("n")).sort("minhash_cluster_size"))
        ex = removed.sort("minhash_jaccard")
        pick = np.unique(np.linspace(0, max(ex.height - 1, 0), num=min(10, ex.height)).astype(int))
        b, r = self.bands_, self.rows_
        return {
            "bands": b, "rows": r, "ngram": self.ngram, "verify": self.verify,
            "jaccard_cutoff": self.jaccard_cutoff() if self.verify else None,
            "lsh_threshold_50pct": round((1.0 / b) ** (1.0 / r), 4),
            "p_candidate_at": {s: round(float(collision_probability(s, b, r)), 4) for s in (0.5, 0.7, 0.8, 0.9)},
            "candidate_pairs": self.candidate_pairs_, "pairs_kept": self.pairs_kept_,
            "clusters": int(sizes["n"].sum()) if sizes.height else 0, "rows_removed": removed.height,
            "component_size_histogram": {int(s): int(n) for s, n in sizes.iter_rows()},
            "example_pairs": [{"id": i, "duplicate_of": k, "jaccard": round(j, 4) if j is not None else None}
                              for i, k, j in ex[pick].select("id", "minhash_kept_id", "minhash_jaccard").iter_rows()]
            if ex.height else [],
        }


def _decision_rows(t: pa.Table) -> pa.Table:
    if t.num_rows == 0 or "kept" not in t.column_names:
        return _DECISION_SCHEMA.empty_table()
    return t.select(["id", "kept", "jaccard", "size"]).rename_columns(_DECISION_SCHEMA.names).cast(_DECISION_SCHEMA)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _table(t: pa.Table, schema: pa.Schema) -> pa.Table:
    """A `to_arrow()` result with the expected schema (an empty Ray result has no columns)."""
    if t.num_rows == 0 or not set(schema.names) <= set(t.column_names):
        return schema.empty_table()
    return t.select(schema.names).cast(schema)
