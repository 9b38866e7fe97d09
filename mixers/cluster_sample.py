"""`cluster_sample`: spend a document or token budget across k-means clusters, quality-aware inside each.

Diversify-and-Conquer (Yu et al. 2024, kMQ): every cluster gets a share of the budget and, inside a
cluster, documents are drawn without replacement with p = softmax(quality / temperature). The draw
is Gumbel-top-k: key = q / T + Gumbel(u), u from a hash of (seed, id) (STYLE rule 9), so the set
does not depend on partitioning, worker count or row order. Allocation: `proportional` to cluster
size, `uniform` (equal share, capped by cluster size, the leftover spread over the others) or `sqrt`.

Optional refinement:
- `iterative` (D&C section 3.4): the budget is spent in `rounds`; after each round a proxy LM is
  trained on (a sample of) the selection and scored on the next-in-line documents of every cluster;
  the next round re-weights the allocation by softmax of the standardised proxy loss (clusters the
  selection covers worst get more). The reward is a callable (`reward`) or `tamis.mixers.proxy_models`.
- `ucb` (Quad, Zhang et al. 2025): a UCB1 bandit over clusters; pulling a cluster scores its next
  chunk of documents by mean standardised quality (Quad's influence stand-in), accepts the chunk if
  the reward beats `ucb_margin`, and spreads the reward to neighbour clusters (centroid cosine
  distance < `ucb_radius`). Score: mean reward + alpha * sqrt(2 ln sum(T) / (T_k + 1)).

Budgets are met exactly in documents, and within one document in tokens.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.mixers.proxy_models import train_proxy
from tamis.pipeline.stage import GlobalStage, Resources, check_fitted
from tamis.pipeline.vectors.embeddings import embedding_matrix, hash_strings, l2_normalize


ALLOCATIONS = ("proportional", "uniform", "sqrt")
REFINES = (None, "iterative", "ucb")
_TRAIN_SALT = 0x5EED


# ---- pure helpers ---------------------------------------------------------------------------------

def gumbel(h: np.ndarray) -> np.ndarray:
    """Standard Gumbel noise from uint64 hashes (53 high bits -> u in (0, 1))."""
    u = ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)
    return -np.log(-np.log(u))


def waterfill(total: float, weights: np.ndarray, caps: np.ndarray, integer: bool = False) -> np.ndarray:
    """Split `total` proportionally to `weights`, never above `caps`; what a capped cluster cannot
    take goes to the others. Sums to min(total, caps.sum()) (exactly, as integers, if `integer`)."""
    caps = np.maximum(np.asarray(caps, np.float64), 0.0)
    w = np.where(caps > 0, np.maximum(np.asarray(weights, np.float64), 0.0), 0.0)
    if (w == 0).all():
        w = caps.copy()  # nobody has weight left: fill by capacity
    total = min(float(total), float(caps.sum()))
    out = np.zeros_like(caps)
    free = w > 0
    remaining = total
    while remaining > 1e-9 and free.any():
        share = remaining * w / w[free].sum()
        over = free & (out + share > caps)
        if not over.any():
            out[free] += share[free]
            break
        remaining -= (caps[over] - out[over]).sum()
        out[over] = caps[over]
        free &= ~over
    out = np.minimum(out, caps)
    short = total - out.sum()
    if short > 1e-9 and (caps - out > 1e-12).any():  # weighted clusters are full: fill the rest by room
        out += waterfill(short, caps - out, caps - out)
    if not integer:
        return out
    base = np.minimum(np.floor(out + 1e-9), caps)
    left = int(round(total - base.sum()))
    frac = np.where(base < caps, out - base, -np.inf)
    order = np.lexsort((np.arange(len(out)), -frac))
    order = order[np.isfinite(frac[order])][:max(left, 0)]
    base[order] += 1
    return base.astype(np.int64)


def split_budget(total: float, rounds: int, integer: bool) -> list[float]:
    if integer:
        return [int(total) // rounds + (1 if r < int(total) % rounds else 0) for r in range(rounds)]
    return [total / rounds] * rounds


def entropy(counts: np.ndarray) -> float:
    p = np.asarray(counts, np.float64)
    p = p[p > 0] / p.sum() if p.sum() > 0 else p[:0]
    return float(-(p * np.log(p)).sum())


# ---- per-batch functions (run on workers) ---------------------------------------------------------

def _prepare(stage: "ClusterSample", batch: pa.Table) -> pa.Table:
    """id, cluster_id (null -> -1), raw quality q (NaN when null), tokens, h = hash(seed, id)."""
    n = batch.num_rows
    cid = batch["cluster_id"].to_numpy(zero_copy_only=False) if n else np.zeros(0)
    cid = np.nan_to_num(np.asarray(cid, np.float64), nan=-1).astype(np.int64)
    q = (np.asarray(batch[stage.quality].to_numpy(zero_copy_only=False), np.float64)
         if stage.quality else np.zeros(n))
    if stage.tokens_column:
        tok = np.nan_to_num(np.asarray(batch[stage.tokens_column].to_numpy(zero_copy_only=False), np.float64))
    elif "text" in batch.column_names:
        tok = np.ceil(pl.from_arrow(batch.select(["text"]))["text"].str.len_bytes().to_numpy()
                      / float(stage.chars_per_token))
    else:
        tok = np.zeros(n)
    return pa.table({"id": batch["id"], "cluster_id": cid, "q": q, "tokens": tok.astype(np.int64),
                     "h": hash_strings(batch["id"], stage.seed)})


def _stats(batch: pa.Table) -> pa.Table:
    return (pl.from_arrow(batch).with_columns(pl.col("q").fill_nan(None))
            .group_by("cluster_id").agg(pl.len().cast(pl.Int64).alias("n"), pl.col("tokens").sum(),
                                        pl.col("q").sum().alias("qs"), (pl.col("q") ** 2).sum().alias("qq"),
                                        pl.col("q").count().cast(pl.Int64).alias("qn"))).to_arrow()


def _keys(q: np.ndarray, h: np.ndarray, qmean: float, qstd: float, temperature: float,
          use_quality: bool) -> tuple[np.ndarray, np.ndarray]:
    """(standardised quality, Gumbel-top-k key); rows without quality sort after all others."""
    zq = (q - qmean) / qstd
    if not use_quality:
        return zq, gumbel(h)
    key = zq / temperature + gumbel(h)
    return zq, np.where(np.isnan(key), -np.inf, key)


def _rank_cluster(stage: "ClusterSample", qmean: float, qstd: float, group: pa.Table) -> pa.Table:
    """All rows of one cluster, ranked by (key desc, h asc); cumulative tokens in rank order."""
    q, h = group["q"].to_numpy(), group["h"].to_numpy()
    zq, key = _keys(q, h, qmean, qstd, stage.temperature, stage.quality is not None)
    order = np.lexsort((h, -key))
    tok = group["tokens"].to_numpy()[order]
    return pa.table({"id": group["id"].take(pa.array(order)),
                     "cluster_id": group["cluster_id"].take(pa.array(order)),
                     "rank": np.arange(len(order), dtype=np.int64), "tokens": tok,
                     "cum_tokens": np.cumsum(tok), "zq": zq[order], "key": key[order], "h": h[order]})


def _lookup(batch: pa.Table, table: pl.DataFrame) -> pl.DataFrame:
    return pl.from_arrow(batch).join(table, on="cluster_id", how="left", maintain_order="left")


def _boundary(targets: pl.DataFrame, batch: pa.Table) -> pa.Table:
    """Per cluster: rows with cum_tokens <= target, and the first row beyond it (cum, tokens)."""
    df = _lookup(batch, targets).with_columns(pl.col("a").fill_null(0.0))
    inside = df.filter(pl.col("cum_tokens") <= pl.col("a")).group_by("cluster_id").agg(
        pl.len().cast(pl.Int64).alias("c"))
    nxt = (df.filter(pl.col("cum_tokens") > pl.col("a")).sort("cum_tokens", "rank")
           .group_by("cluster_id").agg(pl.col("cum_tokens").first().alias("next_cum"),
                                      pl.col("rank").first().alias("next_rank"),
                                      pl.col("tokens").first().alias("next_tokens")))
    return inside.join(nxt, on="cluster_id", how="full", coalesce=True).to_arrow()


def _selected_stats(counts: pl.DataFrame, batch: pa.Table) -> pa.Table:
    df = _lookup(batch, counts).filter(pl.col("rank") < pl.col("c").fill_null(0))
    return df.group_by("cluster_id").agg(pl.len().cast(pl.Int64).alias("n"), pl.col("tokens").sum(),
                                         pl.col("zq").fill_nan(None).sum().alias("zs"),
                                         pl.col("zq").fill_nan(None).count().cast(pl.Int64).alias("zn")).to_arrow()


def _decide(counts: pl.DataFrame, batch: pa.Table) -> pa.Table:
    df = _lookup(batch, counts)
    return df.select("id", (pl.col("rank") < pl.col("c").fill_null(0)).alias("sample_selected")).to_arrow()


def _thresholds(bounds: pl.DataFrame, batch: pa.Table) -> pa.Table:
    """(key, h) of the last selected and the last probe row of each cluster."""
    df = _lookup(batch, bounds)
    return df.filter((pl.col("rank") == pl.col("last_sel")) | (pl.col("rank") == pl.col("last_probe"))).select(
        "cluster_id", "rank", "key", "h").to_arrow()


def _ranked_before(key: np.ndarray, h: np.ndarray, tk: np.ndarray, th: np.ndarray) -> np.ndarray:
    """Row ranks at or before the threshold row (key desc, h asc); NaN threshold -> nothing."""
    return (key > tk) | ((key == tk) & (h <= th))


def _texts(stage: "ClusterSample", qmean: float, qstd: float, thr: pl.DataFrame, rate: float,
           batch: pa.Table) -> pa.Table:
    """Texts for the proxy reward: a hashed `rate` sample of the selection, and each cluster's probes."""
    prep = pl.from_arrow(_prepare(stage, batch))
    _, key = _keys(prep["q"].to_numpy(), prep["h"].to_numpy(), qmean, qstd, stage.temperature,
                   stage.quality is not None)
    df = prep.with_columns(pl.Series("key", key), pl.Series("text", batch["text"]).str.slice(0, stage.proxy_chars))
    df = df.join(thr, on="cluster_id", how="left", maintain_order="left")
    key, h = df["key"].to_numpy(), df["h"].to_numpy()
    sel = _ranked_before(key, h, df["sel_key"].fill_null(np.nan).to_numpy(),
                         df["sel_h"].fill_null(0).to_numpy().astype(np.uint64))
    sel &= df["sel_key"].is_not_null().to_numpy()
    probe = ~sel & df["probe_key"].is_not_null().to_numpy() & _ranked_before(
        key, h, df["probe_key"].fill_null(np.nan).to_numpy(), df["probe_h"].fill_null(0).to_numpy().astype(np.uint64))
    u = (hash_strings(batch["id"], stage.seed + _TRAIN_SALT) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    train = sel & (u < rate)
    keep = train | probe
    return pa.table({"cluster_id": df["cluster_id"].to_numpy()[keep],
                     "role": np.where(train[keep], "train", "probe"),
                     "text": df["text"].to_arrow().filter(pa.array(keep))})


def _chunk_sums(size: int, batch: pa.Table) -> pa.Table:
    return (pl.from_arrow(batch).with_columns((pl.col("rank") // size).alias("chunk"), pl.col("zq").fill_nan(None))
            .group_by("cluster_id", "chunk").agg(pl.len().cast(pl.Int64).alias("n"), pl.col("tokens").sum(),
                                                 pl.col("zq").sum().alias("zs"),
                                                 pl.col("zq").count().cast(pl.Int64).alias("zn")).to_arrow())


def _embedding_sums(batch: pa.Table) -> pa.Table:
    emb = l2_normalize(embedding_matrix(batch["embedding"]))
    cid = np.nan_to_num(np.asarray(batch["cluster_id"].to_numpy(zero_copy_only=False), np.float64), nan=-1)
    uniq, inv = np.unique(cid.astype(np.int64), return_inverse=True)
    sums = np.zeros((len(uniq), emb.shape[1]), np.float64)
    np.add.at(sums, inv, emb)
    return pa.table({"cluster_id": uniq, "sum": pa.FixedSizeListArray.from_arrays(
        pa.array(sums.reshape(-1)), emb.shape[1])})


def _collect(table: pa.Table, keys: list[str], sums: list[str]) -> pl.DataFrame:
    """Sum per-batch partial results on the driver."""
    if table.num_rows == 0:
        return pl.DataFrame(schema={k: pl.Int64 for k in keys} | {c: pl.Float64 for c in sums})
    return pl.from_arrow(table).group_by(keys).agg(pl.col(c).sum() for c in sums).sort(keys)


# ---- the stage ------------------------------------------------------------------------------------

class ClusterSample(GlobalStage):
    """Selects a budget of documents across clusters; `sample_selected` marks the chosen ones.

    Needs `cluster_id` (from `kmeans`). `budget` is a count (docs or tokens, per `unit`) or, when
    below 1, a fraction of what is available. Tokens are `tokens_column` or UTF-8 bytes / 4.
    """

    name = "cluster_sample"
    requires = ("cluster_id",)  # the minimum; required_columns() adds what params name
    columns = {"sample_selected": pa.bool_()}
    decision_columns = {"sample_selected": pa.bool_()}
    default_keep = {"not_sampled": "sample_selected"}
    resources = Resources(cpus=1.0)

    def __init__(self, budget: float = 0.1, unit: str = "docs", allocation: str = "uniform",
                 quality: str | None = None, temperature: float = 1.0, standardize: bool = True, seed: int = 0,
                 tokens_column: str | None = None, chars_per_token: float = 4.0, refine: str | None = None,
                 rounds: int = 3, reward=None, proxy: str = "ngram", proxy_tokens: int = 200_000,
                 proxy_docs: int = 2000, proxy_chars: int = 4000, probe_docs: int = 8,
                 reward_temperature: float = 1.0, ucb_alpha: float = 1.0, ucb_arms: int | None = None,
                 ucb_pulls: int = 200, ucb_margin: float = 0.0, ucb_radius: float = 0.2):
        self.budget = budget
        self.unit = unit
        self.allocation = allocation
        self.quality = quality
        self.temperature = temperature
        self.standardize = standardize
        self.seed = seed
        self.tokens_column = tokens_column
        self.chars_per_token = chars_per_token
        self.refine = refine
        self.rounds = rounds
        self.reward = reward
        self.proxy = proxy
        self.proxy_tokens = proxy_tokens
        self.proxy_docs = proxy_docs
        self.proxy_chars = proxy_chars
        self.probe_docs = probe_docs
        self.reward_temperature = reward_temperature
        self.ucb_alpha = ucb_alpha
        self.ucb_arms = ucb_arms
        self.ucb_pulls = ucb_pulls
        self.ucb_margin = ucb_margin
        self.ucb_radius = ucb_radius

    def required_columns(self) -> tuple[str, ...]:
        cols = ["cluster_id"] + [c for c in (self.quality, self.tokens_column) if c]
        if (self.unit == "tokens" and not self.tokens_column) or self.refine == "iterative":
            cols.append("text")
        if self.refine == "ucb" and self.ucb_radius:
            cols.append("embedding")
        return tuple(dict.fromkeys(cols))

    def validate(self) -> None:
        b = self.budget
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not b > 0 or math.isinf(b):
            raise ValueError(f"budget must be a count >= 1 or a fraction in (0, 1), got {b!r}")
        if self.unit not in ("docs", "tokens"):
            raise ValueError(f"unit must be 'docs' or 'tokens', got {self.unit!r}")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {self.allocation!r}")
        if self.refine not in REFINES:
            raise ValueError(f"refine must be one of {REFINES}, got {self.refine!r}")
        for p in ("temperature", "chars_per_token", "reward_temperature"):
            if not getattr(self, p) > 0:
                raise ValueError(f"{p} must be > 0, got {getattr(self, p)!r}")
        for p in ("rounds", "proxy_tokens", "proxy_docs", "proxy_chars", "probe_docs", "ucb_pulls"):
            if not isinstance(getattr(self, p), int) or getattr(self, p) < 1:
                raise ValueError(f"{p} must be an integer >= 1, got {getattr(self, p)!r}")
        if self.ucb_arms is not None and (not isinstance(self.ucb_arms, int) or self.ucb_arms < 1):
            raise ValueError(f"ucb_arms must be an integer >= 1 or null, got {self.ucb_arms!r}")
        if self.ucb_alpha < 0 or self.ucb_radius < 0:
            raise ValueError("ucb_alpha and ucb_radius must be >= 0")
        if self.refine == "ucb" and not self.quality:
            raise ValueError("refine='ucb' needs quality: the column whose mean is the bandit's reward")
        if self.reward is not None and not callable(self.reward):
            raise ValueError("reward must be a callable (train_texts, probes) -> {cluster: loss}")

    # -- fit ------------------------------------------------------------------------------------------
    def fit(self, data) -> "ClusterSample":
        self.validate()
        prep = data.map_batches(partial(_prepare, self))
        st = _collect(prep.map_batches(_stats).to_arrow(), ["cluster_id"], ["n", "tokens", "qs", "qq", "qn"])
        self.clusters_ = st["cluster_id"].to_numpy().astype(np.int64)
        n_k, t_k = st["n"].to_numpy().astype(np.int64), st["tokens"].to_numpy().astype(np.int64)
        qn, qs, qq = st["qn"].sum(), st["qs"].sum(), st["qq"].sum()
        qmean = qs / qn if qn else 0.0
        qstd = math.sqrt(max(qq / qn - qmean ** 2, 0.0)) if qn else 1.0
        if not self.standardize:
            qmean, qstd = 0.0, 1.0
        # Rounded so that float summation order across partitions cannot move a key.
        self.quality_mean_, self.quality_std_ = float(f"{qmean:.10g}"), float(f"{qstd:.10g}") or 1.0
        ranked = prep.groupby_map(["cluster_id"], partial(_rank_cluster, self, self.quality_mean_, self.quality_std_))

        docs = self.unit == "docs"
        size = n_k if docs else t_k
        avail = int(size.sum())
        b = float(self.budget)
        self.budget_ = int(round(b * avail)) if b < 1 else int(round(b))
        self.budget_ = min(self.budget_, avail)
        base = {"proportional": size, "uniform": np.ones(len(size)), "sqrt": np.sqrt(size)}[self.allocation]
        self.rounds_ = []
        if self.refine == "ucb":
            targets = self._ucb(data, ranked, n_k, t_k, docs)
        else:
            rounds = self.rounds if self.refine == "iterative" else 1
            targets = np.zeros(len(size), np.int64 if docs else np.float64)
            factor = np.ones(len(size))
            for r, part in enumerate(split_budget(self.budget_, rounds, docs)):
                targets = targets + waterfill(part, base * factor, size - targets, integer=docs)
                round_info = {"round": r, "allocated": [float(x) for x in targets]}
                if r < rounds - 1:
                    counts = targets if docs else self._token_counts(ranked, targets, None, n_k, t_k)
                    rewards = self._rewards(data, ranked, counts, n_k)
                    ok = np.isfinite(rewards)
                    z = np.zeros(len(size))
                    if ok.sum() > 1 and rewards[ok].std() > 0:
                        z[ok] = (rewards[ok] - rewards[ok].mean()) / rewards[ok].std()
                    factor = np.exp(z / self.reward_temperature)
                    round_info["rewards"] = [None if not np.isfinite(x) else float(x) for x in rewards]
                self.rounds_.append(round_info)
        counts = targets.astype(np.int64) if docs else self._token_counts(ranked, targets, self.budget_, n_k, t_k)
        self.counts_ = counts
        cdf = pl.DataFrame({"cluster_id": self.clusters_, "c": counts})
        # id -> sample_selected; a table, so the fitted stage pickles (the runner saves it for resume)
        self.decisions_ = ranked.map_batches(partial(_decide, cdf)).to_arrow()
        sel = _collect(ranked.map_batches(partial(_selected_stats, cdf)).to_arrow(), ["cluster_id"],
                       ["n", "tokens", "zs", "zn"])
        self.summary_ = self._summary(sel, n_k, t_k)
        return self

    def _reward_fn(self):
        if self.reward is not None:
            return self.reward
        return partial(train_proxy, self.proxy, token_budget=self.proxy_tokens, seed=self.seed)

    def _rewards(self, data, ranked, counts: np.ndarray, n_k: np.ndarray) -> np.ndarray:
        """Proxy loss per cluster on its next-in-line documents, for a proxy trained on the selection."""
        last_probe = np.minimum(counts + self.probe_docs, n_k) - 1
        bounds = pl.DataFrame({"cluster_id": self.clusters_, "last_sel": counts - 1, "last_probe": last_probe})
        rows = ranked.map_batches(partial(_thresholds, bounds)).to_arrow()
        if rows.num_rows == 0:
            return np.full(len(self.clusters_), np.nan)
        rows = pl.from_arrow(rows).join(bounds, on="cluster_id")
        sel = rows.filter(pl.col("rank") == pl.col("last_sel")).select(
            "cluster_id", pl.col("key").alias("sel_key"), pl.col("h").alias("sel_h"))
        probe = rows.filter((pl.col("rank") == pl.col("last_probe")) & (pl.col("rank") > pl.col("last_sel"))).select(
            "cluster_id", pl.col("key").alias("probe_key"), pl.col("h").alias("probe_h"))
        thr = pl.DataFrame({"cluster_id": self.clusters_}).join(sel, on="cluster_id", how="left").join(
            probe, on="cluster_id", how="left")
        rate = min(1.0, self.proxy_docs / max(int(counts.sum()), 1))
        texts = data.map_batches(partial(_texts, self, self.quality_mean_, self.quality_std_, thr, rate)).to_arrow()
        if texts.num_rows == 0:
            return np.full(len(self.clusters_), np.nan)
        texts = pl.from_arrow(texts).sort("cluster_id", "role", "text")  # order-independent input to the proxy
        train = texts.filter(pl.col("role") == "train")["text"].to_list()
        probes = {str(c): g["text"].to_list()
                  for (c,), g in texts.filter(pl.col("role") == "probe").group_by("cluster_id", maintain_order=True)}
        out = np.full(len(self.clusters_), np.nan)
        if not train or not probes:
            return out
        losses = self._reward_fn()(train, probes)
        for i, c in enumerate(self.clusters_):
            v = losses.get(str(int(c)))
            out[i] = np.nan if v is None else float(v)
        return out

    def _token_counts(self, ranked, targets: np.ndarray, budget: int | None, n_k: np.ndarray,
                      t_k: np.ndarray) -> np.ndarray:
        """Docs per cluster whose cumulative tokens fit the targets; with `budget`, one boundary
        document per cluster is then added (largest remainder first) to land within one document."""
        tdf = pl.DataFrame({"cluster_id": self.clusters_, "a": np.asarray(targets, np.float64)})
        b = ranked.map_batches(partial(_boundary, tdf)).to_arrow()
        b = pl.from_arrow(b) if b.num_rows else pl.DataFrame(schema={
            "cluster_id": pl.Int64, "c": pl.Int64, "next_cum": pl.Int64, "next_rank": pl.Int64, "next_tokens": pl.Int64})
        inside = b.group_by("cluster_id").agg(pl.col("c").sum())
        nxt = b.drop_nulls("next_cum").sort("next_cum", "next_rank").group_by("cluster_id").agg(
            pl.col("next_cum").first(), pl.col("next_tokens").first())
        m = (pl.DataFrame({"cluster_id": self.clusters_, "a": tdf["a"]})
             .join(inside, on="cluster_id", how="left").join(nxt, on="cluster_id", how="left"))
        c = m["c"].fill_null(0).to_numpy().astype(np.int64)
        if budget is None:
            return c
        has_next = m["next_cum"].is_not_null().to_numpy()
        nt = m["next_tokens"].fill_null(0).to_numpy().astype(np.float64)
        # tokens taken so far: up to the next document, or the whole cluster when nothing is left
        used = np.where(has_next, m["next_cum"].fill_null(0).to_numpy() - nt, t_k).astype(np.float64)
        deficit = budget - used.sum()
        frac = np.where(has_next, (m["a"].to_numpy() - used) / np.maximum(nt, 1), -np.inf)
        for i in np.lexsort((np.arange(len(c)), -frac)):
            if has_next[i] and nt[i] <= deficit:
                c[i] += 1
                deficit -= nt[i]
                has_next[i] = False
        if deficit > 0 and has_next.any():
            i = int(np.flatnonzero(has_next)[np.argmin(nt[has_next])])
            if nt[i] - deficit < deficit:  # overshoot smaller than the shortfall
                c[i] += 1
        return np.minimum(c, n_k)

    def _neighbours(self, data) -> np.ndarray:
        """(K, K) propagation weights 1 - d / radius for centroid cosine distance d < radius."""
        k = len(self.clusters_)
        if not self.ucb_radius:
            return np.eye(k)
        t = data.map_batches(_embedding_sums).to_arrow()
        if t.num_rows == 0:
            return np.eye(k)
        df = pl.from_arrow(t)
        dim = t.schema.field("sum").type.list_size
        sums = np.zeros((k, dim))
        pos = {int(c): i for i, c in enumerate(self.clusters_)}
        vec = embedding_matrix(df["sum"].to_arrow()).astype(np.float64) if df.height else np.zeros((0, dim))
        for c, v in zip(df["cluster_id"].to_list(), vec):
            sums[pos[int(c)]] += v
        cen = l2_normalize(sums.astype(np.float32)).astype(np.float64)
        dist = 1.0 - cen @ cen.T
        w = np.where(dist < self.ucb_radius, 1.0 - dist / self.ucb_radius, 0.0)
        np.fill_diagonal(w, 1.0)
        return w

    def _ucb(self, data, ranked, n_k: np.ndarray, t_k: np.ndarray, docs: bool) -> np.ndarray:
        """Quad's bandit: accepted chunks per cluster -> targets (docs or tokens) summing to the budget."""
        budget = self.budget_
        budget_docs = budget if docs else budget * n_k.sum() / max(t_k.sum(), 1)
        size = max(1, math.ceil(budget_docs / self.ucb_pulls))
        ch = _collect(ranked.map_batches(partial(_chunk_sums, size)).to_arrow(), ["cluster_id", "chunk"],
                      ["n", "tokens", "zs", "zn"])
        k = len(self.clusters_)
        pos_of = {int(c): i for i, c in enumerate(self.clusters_)}
        chunks = [[] for _ in range(k)]
        for c, n, tok, zs, zn in ch.select("cluster_id", "n", "tokens", "zs", "zn").iter_rows():
            chunks[pos_of[int(c)]].append((n if docs else tok, zs / zn if zn else 0.0))
        w = self._neighbours(data)
        arms = self.ucb_arms or max(1, math.ceil(k / 10))
        pos, s_sum, pulls = np.zeros(k, np.int64), np.zeros(k), np.zeros(k)
        nchunks = np.array([len(c) for c in chunks])
        out, taken, stalled = np.zeros(k), 0.0, False
        n_pull = n_acc = 0
        while taken < budget:
            live = pos < nchunks
            if not live.any():
                break
            bonus = self.ucb_alpha * np.sqrt(2.0 * math.log(max(pulls.sum(), 1.0)) / (pulls + 1.0))
            score = np.where(live, np.divide(s_sum, pulls, out=np.zeros(k), where=pulls > 0) + bonus, -np.inf)
            picked = [i for i in np.lexsort((np.arange(k), -score))[:arms] if live[i]]
            accepted = False
            for i in picked:
                amount, mean_q = chunks[i][pos[i]]
                reward = mean_q - self.ucb_margin
                n_pull += 1
                if reward > 0 or stalled:
                    take = min(float(amount), budget - taken)
                    out[i] += take
                    taken += take
                    pos[i] += 1
                    n_acc += 1
                    accepted = True
                near = w[i] > 0
                s_sum[near] += reward * w[i, near]
                pulls[near] += 1
                if taken >= budget:
                    break
            stalled = not accepted  # nothing beat the margin: take the best arms anyway next time
        self.ucb_ = {"chunk_docs": size, "arms": arms, "pulls": n_pull, "accepted": n_acc,
                     "cluster_pulls": [int(x) for x in pulls]}
        return np.round(out).astype(np.int64) if docs else out

    def _summary(self, sel: pl.DataFrame, n_k: np.ndarray, t_k: np.ndarray) -> dict:
        m = pl.DataFrame({"cluster_id": self.clusters_}).join(sel, on="cluster_id", how="left").fill_null(0)
        chosen, tokens = m["n"].to_numpy(), m["tokens"].to_numpy()
        zn = m["zn"].sum()
        return {
            "budget": self.budget_, "unit": self.unit, "allocation": self.allocation, "refine": self.refine,
            "available_docs": int(n_k.sum()), "available_tokens": int(t_k.sum()),
            "selected_docs": int(chosen.sum()), "selected_tokens": int(tokens.sum()),
            "clusters": int(len(n_k)), "clusters_covered": int((chosen > 0).sum()),
            "cluster_entropy": round(entropy(chosen), 6), "max_entropy": round(math.log(max(len(n_k), 1)), 6),
            "mean_selected_quality_z": round(float(m["zs"].sum() / zn), 6) if zn and self.quality else None,
            "quality_mean": self.quality_mean_, "quality_std": self.quality_std_,
            "per_cluster": {"cluster_id": [int(c) for c in self.clusters_], "size": [int(x) for x in n_k],
                            "tokens": [int(x) for x in t_k], "selected": [int(x) for x in chosen],
                            "selected_tokens": [int(x) for x in tokens]},
        }

    def transform(self, batch: pa.Table) -> dict[str, pa.Array]:
        check_fitted(self, "decisions_")
        if "sample_selected" not in batch.column_names:
            return {"sample_selected": pa.array(np.zeros(batch.num_rows, bool))}
        return {"sample_selected": batch["sample_selected"].fill_null(False).combine_chunks()
                if batch.num_rows else pa.array([], pa.bool_())}

    def report(self) -> dict:
        check_fitted(self, "summary_")
        out = dict(self.summary_)
        if self.rounds_ and self.refine == "iterative":
            out["rounds"] = self.rounds_
        if self.refine == "ucb":
            out["ucb"] = self.ucb_
        return out
