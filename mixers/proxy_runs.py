"""One proxy per mixture, as Ray tasks, written as the two CSVs RegMix released.

Format of sail-sg/regmix `data/train_mixture_1m.csv` and `data/train_pile_loss_1m.csv`: both files
start with an integer `index` column (1..N) naming the run; the mixture file has one weight column
per domain, `train_<domain>`; the loss file one column per target, `metric/<target>_val_loss`
(nats per token). Readers accept any other column names too; the join is on `index`.

Per domain the input is cut into chunks of at most `chunk_chars` characters, a hashed
`valid_fraction` of documents is held out as that domain's validation set, and a pool of at most
`pool_tokens` tokens is kept for training. Each run draws `weight * token_budget` tokens from each
domain's pool (cycling the pool when a weight asks for more than it holds) and trains one proxy.
"""
from __future__ import annotations

import inspect
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import polars as pl

from tamis.mixers import mixture_design as mx
from tamis.mixers.proxy_models import count_tokens, train_proxy

INDEX = "index"
WEIGHT_PREFIX = "train_"
LOSS_PREFIX, LOSS_SUFFIX = "metric/", "_val_loss"
ALL = "all"


@dataclass
class Pools:
    """Training chunks and held-out validation chunks per domain, with the natural token share."""

    domains: list[str]
    texts: dict[str, list[str]]
    tokens: dict[str, np.ndarray]
    valid: dict[str, list[str]]
    natural: dict[str, float]
    tokenizer: str | None = None
    stats: dict = field(default_factory=dict)


def stable_hash(values: Sequence[str] | pl.Series, seed: int = 0) -> np.ndarray:
    """64-bit hash per string, stable across runs, machines and versions (FNV-1a, splitmix64 finish).

    Vectorised over rows: one numpy pass per byte position of the longest string.
    """
    s = values if isinstance(values, pl.Series) else pl.Series("v", values, dtype=pl.Utf8)
    arrow = s.cast(pl.Utf8).fill_null("").to_arrow()
    if hasattr(arrow, "combine_chunks"):
        arrow = arrow.combine_chunks()
    import pyarrow as pa
    arrow = arrow.cast(pa.large_string())
    n = len(arrow)
    bufs = arrow.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[arrow.offset:arrow.offset + n + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for j in range(int(lengths.max()) if n else 0):
            live = lengths > j
            idx = np.flatnonzero(live)
            h[idx] = (h[idx] ^ data[starts[idx] + j].astype(np.uint64)) * prime
        z = h + np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def unit_hash(values, seed: int = 0) -> np.ndarray:
    """`stable_hash` mapped to [0, 1)."""
    return (stable_hash(values, seed) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def chunk_texts(df: pl.DataFrame, chunk_chars: int) -> pl.DataFrame:
    """Split every `text` into pieces of at most `chunk_chars` characters (`chunk` = piece number)."""
    n = (pl.col("text").str.len_chars() / chunk_chars).ceil().cast(pl.Int64).clip(lower_bound=1)
    return (df.with_columns(pl.int_ranges(0, n).alias("chunk")).explode("chunk")
              .with_columns(pl.col("text").str.slice(pl.col("chunk") * chunk_chars, chunk_chars)))


def build_pools(df: pl.DataFrame, *, domain_column: str = "domain", tokenizer: str | None = None,
                valid_fraction: float = 0.05, pool_tokens: int | None = None,
                valid_tokens: int = 100_000, chunk_chars: int = 4096, seed: int = 0) -> Pools:
    """Per-domain training pools and validation sets from a frame with `id`, `text`, `domain_column`."""
    for c in ("id", "text", domain_column):
        if c not in df.columns:
            raise ValueError(f"input lacks column {c!r} (columns: {df.columns})")
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    df = df.select(pl.col("id").cast(pl.Utf8), pl.col("text").fill_null(""),
                   pl.col(domain_column).cast(pl.Utf8).alias("domain")).filter(pl.col("domain").is_not_null())
    df = df.with_columns(pl.Series("is_valid", unit_hash(df["id"], seed) < valid_fraction))
    df = chunk_texts(df, chunk_chars).filter(pl.col("text").str.len_bytes() > 0)
    df = df.with_columns(pl.Series("tokens", count_tokens(df["text"], tokenizer)),
                         pl.Series("order", unit_hash(df["id"] + ":" + df["chunk"].cast(pl.Utf8), seed + 1)))
    df = df.sort(["domain", "order"])
    train, valid = df.filter(~pl.col("is_valid")), df.filter(pl.col("is_valid"))
    totals = train.group_by("domain").agg(pl.col("tokens").sum()).sort("domain")
    totals = totals.filter(pl.col("tokens") > 0)
    domains = totals["domain"].to_list()
    if not domains:
        raise ValueError("no training text left after the validation split")
    natural = dict(zip(domains, (totals["tokens"] / totals["tokens"].sum()).to_list()))
    cum = pl.col("tokens").cum_sum().over("domain")
    if pool_tokens is not None:   # keep chunks until the pool holds pool_tokens tokens
        train = train.filter((cum - pl.col("tokens")) < pool_tokens)
    valid = valid.filter((cum - pl.col("tokens")) < valid_tokens)
    texts, tokens, held = {}, {}, {}
    for d in domains:
        part = train.filter(pl.col("domain") == d)
        texts[d], tokens[d] = part["text"].to_list(), part["tokens"].to_numpy()
        held[d] = valid.filter(pl.col("domain") == d)["text"].to_list()
    stats = {"train_tokens": dict(zip(domains, totals["tokens"].to_list())),
             "pool_tokens": {d: int(tokens[d].sum()) for d in domains},
             "valid_tokens": {d: int(valid.filter(pl.col("domain") == d)["tokens"].sum()) for d in domains}}
    return Pools(domains, texts, tokens, held, natural, tokenizer, stats)


def targets(pools: Pools, names: Sequence[str] | None = None, all_tokens: int = 100_000) -> dict[str, list[str]]:
    """Validation sets by name: a domain's held-out chunks, or "all" (held-out text in natural shares).

    A name may join domains with "+" (e.g. "literature+religion") for an equal-parts mix of them.
    """
    names = list(names) if names else [ALL, *pools.domains]
    out = {}
    for name in names:
        if name == ALL:
            out[name] = _blend(pools, {d: pools.natural[d] for d in pools.domains}, all_tokens)
            continue
        parts = name.split("+")
        unknown = [p for p in parts if p not in pools.valid]
        if unknown:
            raise ValueError(f"unknown target domain(s) {unknown}; domains: {pools.domains}")
        out[name] = pools.valid[parts[0]] if len(parts) == 1 else _blend(
            pools, {p: 1.0 for p in parts}, all_tokens)
        if not out[name]:
            raise ValueError(f"target {name!r} has no held-out text; raise valid_fraction")
    return out


def _blend(pools: Pools, shares: Mapping[str, float], total: int) -> list[str]:
    z = sum(shares.values())
    out = []
    for d, s in shares.items():
        texts = pools.valid[d]
        if not texts:
            continue
        toks = count_tokens(texts, pools.tokenizer)
        k = int(np.searchsorted(np.cumsum(toks), total * s / z)) + 1
        out += texts[:k]
    return out


def sample_texts(pools: Pools, weights: Mapping[str, float], token_budget: int, seed: int) -> list[str]:
    """Texts for one run: `weight * token_budget` tokens from each domain pool, shuffled together.

    A pool is taken in a seeded order and cycled when a weight needs more than it holds; the last
    chunk of a domain is cut (by characters, proportionally) so each domain gets close to its share.
    """
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for d in pools.domains:
        want = float(weights.get(d, 0.0)) * token_budget
        toks = pools.tokens[d]
        if want <= 0 or toks.size == 0 or toks.sum() == 0:
            continue
        epochs = math.ceil(want / toks.sum())
        order = np.concatenate([rng.permutation(toks.size) for _ in range(epochs)])
        cum = np.cumsum(toks[order])
        k = int(np.searchsorted(cum, want))          # chunk order[k] crosses the target
        take = order[:k + 1]
        texts = [pools.texts[d][i] for i in take]
        over = cum[k] - want
        if over > 0:
            last = texts[-1]
            keep = max(1, int(round(len(last) * (1 - over / toks[take[-1]]))))
            texts[-1] = last[:keep]
        out += texts
    return [out[i] for i in rng.permutation(len(out))]


def run_mixture(index: int, weights: Mapping[str, float], pools: Pools, valid: Mapping[str, Sequence[str]],
                *, kind: str = "ngram", token_budget: int = 1_000_000, seed: int = 0,
                params: Mapping | None = None) -> dict:
    """The pure per-run function: sample, train one proxy, return `{index, losses, seconds}`."""
    t0 = time.perf_counter()
    texts = sample_texts(pools, weights, token_budget, seed=seed * 1_000_003 + int(index))
    params = dict(params or {})
    params.setdefault("tokenizer", pools.tokenizer)
    losses = train_proxy(kind, texts, dict(valid), token_budget=token_budget, seed=seed + int(index),
                         **params)
    return {"index": int(index), "losses": losses, "seconds": time.perf_counter() - t0}


def local_runner(fn: Callable, items: list, **_) -> list:
    """Runs in this process, one after another (tests, or when Ray is not wanted)."""
    return [fn(i) for i in items]


def run_proxies(mixtures: np.ndarray, pools: Pools, valid: Mapping[str, Sequence[str]], *,
                kind: str = "ngram", token_budget: int = 1_000_000, seed: int = 0,
                params: Mapping | None = None, runner: Callable | None = None,
                num_cpus: float = 1.0, num_gpus: float = 0.0, start_index: int = 1
                ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train one proxy per row of `mixtures` (columns in `pools.domains` order) through `runner`.

    Returns the mixture and loss frames in RegMix's CSV layout (see `write_csvs`); a `seconds`
    column on the loss frame records each run's wall time and is not written to the CSV.
    """
    mixtures = np.asarray(mixtures, dtype=np.float64)
    if mixtures.ndim != 2 or mixtures.shape[1] != len(pools.domains):
        raise ValueError(f"mixtures must have {len(pools.domains)} columns ({pools.domains})")
    runner = runner or local_runner
    domains, valid = list(pools.domains), {k: list(v) for k, v in valid.items()}
    params = dict(params or {})

    def task(item: tuple[int, dict]) -> dict:   # a closure: Ray ships pools once with the function
        return run_mixture(item[0], item[1], pools, valid, kind=kind, token_budget=token_budget,
                           seed=seed, params=params)

    items = [(start_index + i, mx.as_dict(domains, row, digits=10)) for i, row in enumerate(mixtures)]
    kw = dict(num_cpus=num_cpus, num_gpus=num_gpus, desc=f"{kind} proxies")
    results = runner(task, items, **kw) if _takes_kwargs(runner, kw) else runner(task, items)
    results = sorted(results, key=lambda r: r["index"])
    mix = pl.DataFrame({INDEX: [i for i, _ in items],
                        **{weight_column(d): mixtures[:, j] for j, d in enumerate(domains)}})
    names = list(valid)
    loss = pl.DataFrame({INDEX: [r["index"] for r in results],
                         **{loss_column(t): [r["losses"][t] for r in results] for t in names},
                         "seconds": [r["seconds"] for r in results]})
    return mix, loss


def _takes_kwargs(fn: Callable, kw: Mapping) -> bool:
    """False for a plain `map`-like callable (builtins have no signature)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind == p.VAR_KEYWORD for p in params) or all(
        k in {p.name for p in params} for k in kw)


def weight_column(domain: str) -> str:
    return f"{WEIGHT_PREFIX}{domain}"


def loss_column(target: str) -> str:
    return f"{LOSS_PREFIX}{target}{LOSS_SUFFIX}"


def write_csvs(mix: pl.DataFrame, loss: pl.DataFrame, mixtures_path, losses_path) -> None:
    """Write both files; `index` first, weights rounded to 6 digits as in RegMix's released files."""
    for p in (mixtures_path, losses_path):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    mix.with_columns(pl.exclude(INDEX).round(6)).write_csv(mixtures_path)
    loss.select([c for c in loss.columns if c != "seconds"]).write_csv(losses_path)


class CsvError(ValueError):
    """A mixture or loss CSV that cannot be used; the message names the file and column."""


def read_table(path, what: str) -> pl.DataFrame:
    """A RegMix-format CSV: an integer `index` column and numeric columns; errors name file and column."""
    path = Path(path)
    try:
        df = pl.read_csv(path, infer_schema_length=None)
    except FileNotFoundError:
        raise CsvError(f"{path}: {what} file not found") from None
    except Exception as e:  # polars raises ComputeError / NoDataError on broken files
        raise CsvError(f"{path}: cannot parse {what} CSV ({e})") from None
    if INDEX not in df.columns:
        raise CsvError(f"{path}: {what} CSV has no {INDEX!r} column (columns: {df.columns})")
    if not df[INDEX].dtype.is_integer():
        bad = _first_bad(df[INDEX], integer=True)
        raise CsvError(f"{path}: column {INDEX!r} must hold integers, found {bad!r}")
    if df[INDEX].null_count():
        raise CsvError(f"{path}: column {INDEX!r} has empty cells")
    dup = df.filter(pl.col(INDEX).is_duplicated())[INDEX].unique().sort().to_list()
    if dup:
        raise CsvError(f"{path}: column {INDEX!r} repeats values {dup[:5]}")
    if len(df.columns) < 2:
        raise CsvError(f"{path}: {what} CSV has no columns besides {INDEX!r}")
    for c in df.columns:
        if c != INDEX and not df[c].dtype.is_numeric():
            raise CsvError(f"{path}: column {c!r} is not numeric (found {_first_bad(df[c])!r})")
    return df.with_columns(pl.exclude(INDEX).cast(pl.Float64))


def _first_bad(s: pl.Series, integer: bool = False) -> str:
    vals = s.cast(pl.Utf8, strict=False).drop_nulls()
    num = vals.cast(pl.Int64 if integer else pl.Float64, strict=False)
    bad = vals.filter(num.is_null())
    return bad[0] if len(bad) else (vals[0] if len(vals) else "")


def domain_names(columns: Sequence[str]) -> list[str]:
    """Weight columns -> domain names (`train_` stripped when every column carries it)."""
    cols = [c for c in columns if c != INDEX]
    if cols and all(c.startswith(WEIGHT_PREFIX) for c in cols):
        return [c[len(WEIGHT_PREFIX):] for c in cols]
    return cols


def resolve_target(columns: Sequence[str], target: str, path="losses") -> str:
    """`target` as a loss column: the exact name, or `metric/<target>_val_loss`."""
    if target in columns and target != INDEX:
        return target
    if loss_column(target) in columns:
        return loss_column(target)
    raise CsvError(f"{path}: no target column {target!r} (columns: {[c for c in columns if c != INDEX]})")


@dataclass
class Joined:
    X: pl.DataFrame          # weight columns, renamed to domain names
    y: np.ndarray
    index: list[int]
    only_mixtures: list[int]
    only_losses: list[int]
    missing_target: list[int]


def join(mix: pl.DataFrame, loss: pl.DataFrame, target_column: str,
         domains: Sequence[str] | None = None, names=("mixtures", "losses")) -> Joined:
    """Inner join on `index`; reports rows present in one file only and rows with an empty target."""
    weight_cols = [c for c in mix.columns if c != INDEX]
    dnames = domain_names(mix.columns)
    if domains is not None and list(dnames) != list(domains):
        missing = sorted(set(domains) - set(dnames))
        if missing:
            raise CsvError(f"{names[0]}: lacks domains {missing}")
        order = [weight_cols[dnames.index(d)] for d in domains]
        weight_cols, dnames = order, list(domains)
    only_m = sorted(set(mix[INDEX]) - set(loss[INDEX]))
    only_l = sorted(set(loss[INDEX]) - set(mix[INDEX]))
    j = mix.select(INDEX, *weight_cols).join(loss.select(INDEX, target_column), on=INDEX, how="inner").sort(INDEX)
    bad_w = j.filter(pl.any_horizontal(pl.col(weight_cols).is_null() | pl.col(weight_cols).is_nan()))
    if bad_w.height:
        raise CsvError(f"{names[0]}: empty or NaN weights at index {bad_w[INDEX].to_list()[:5]}")
    empty = j.filter(pl.col(target_column).is_null() | pl.col(target_column).is_nan())[INDEX].to_list()
    j = j.filter(~pl.col(INDEX).is_in(empty))
    X = j.select(weight_cols).rename(dict(zip(weight_cols, dnames)))
    return Joined(X, j[target_column].to_numpy(), j[INDEX].to_list(), only_m, only_l, empty)


def save_prior(pools: Pools, path) -> None:
    """Natural token share per domain and the pool statistics, for `mix fit --prior`."""
    Path(path).write_text(json.dumps({"prior": pools.natural, "tokenizer": pools.tokenizer or "bytes",
                                      **pools.stats}, indent=2))
