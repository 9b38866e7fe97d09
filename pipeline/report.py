"""Per-stage reports: JSON files under `RUN_DIR/reports/`, built from the run's own outputs.

Row, byte and token counts, rejections and example ids come from the summaries the write tasks
recorded (so they are exact and conservation is checked against what is on disk); times come from
the workers' counters; score statistics from streaming, column-projected polars scans of the outputs
(text is never loaded, and the driver's memory does not grow with the corpus: see `score_stats`);
examples with text snippets from one hash-thinned streaming scan (`stage_samples`).

`what_if` re-decides the stored rows under changed keep rules without re-running (`tamis report
--what-if`), and `what_if_data` is what the HTML report embeds for its sliders (docs/reports.md).
"""
from __future__ import annotations

import ast
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.counts import token_unit, tokens_expr
from tamis.pipeline.export.tokenize import TokenizerError, tokenizer_file
from tamis.pipeline.rules import RuleError, compile_rule, compile_rules
from tamis.pipeline.run_folder import RunFolder
from tamis.pipeline.stage import GlobalStage

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
N_BINS = 30
N_EXAMPLES = 5
SAMPLE_ROWS = 1_000_000
SNIPPET_CHARS = 200
N_SAMPLES = 3       # rejected examples (with snippets) per reason
N_KEPT_SAMPLES = 5  # kept examples (with snippets) per stage
SAMPLE_POOL = 500   # rows per reason drawn (by hash) before the examples are picked: bounds the driver's memory
LOG_RATIO = 1000    # positive values spanning more than this ratio get log-scaled histogram bins
WHATIF_ROWS = 20_000  # rows embedded in the HTML report for its what-if sliders (a hash sample beyond)
IN_MEMORY_VALUES = 20_000_000  # score values (160 MB) up to which reports read the outputs once, into memory
N_CLUSTERS = 20     # largest duplicate clusters listed per dedup stage (docs/reports.md, "Duplicate clusters")
N_MEMBERS = 10      # members (removed rows) shown per listed cluster; the rest are counted
CLUSTER_SNIPPET = 160  # characters of text shown per kept document and member
SIMILARITY = {"minhash_jaccard": "jaccard", "semdedup_cosine": "cosine"}  # column -> measure; else exact (1.0)


def _num(x):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return float(x) if isinstance(x, float) else x


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _output_files(folder: RunFolder) -> list[str]:
    return [str(p) for p in folder.output_files("curated", "rejected")]


def _disk_names(folder: RunFolder) -> dict[str, str]:
    """`text` and `id` as the run's outputs name them: the job's `fields` (the input's own names)."""
    try:
        fields = json.loads(folder.record_file.read_text())["fingerprint"]["fields"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: v for k, v in (("text", fields.get("text")), ("id", fields.get("id"))) if isinstance(v, str)}


def _outputs(folder: RunFolder, columns: list[str]) -> pl.LazyFrame:
    """A lazy scan of `columns` over curated/ and rejected/ (a column a file lacks reads as null);
    `text` and `id` are read under the names the job's `fields` gave them."""
    files = _output_files(folder)
    if not files:
        return pl.LazyFrame(schema={c: pl.Utf8 for c in columns})
    disk = _disk_names(folder)
    frames = []
    for f in files:
        lf = pl.scan_parquet(f)
        have = lf.collect_schema().names()
        frames.append(lf.select([pl.col(disk.get(c, c)).alias(c) if disk.get(c, c) in have else pl.lit(None).alias(c)
                                 for c in columns]))
    return pl.concat(frames, how="diagonal_relaxed")


def _collect(lf: pl.LazyFrame) -> pl.DataFrame:
    return lf.collect(engine="streaming")


def score_stats(lf: pl.LazyFrame, cols: list[str], kept: pl.Expr | None = None, bools: tuple | list = (),
                marks: dict | None = None) -> dict[str, dict]:
    """Per numeric column: count, nulls, mean and histogram counts, exact; quantiles and the
    histogram's range (0.5th to 99.5th percentile, widened to take in the keep thresholds of `marks`
    that lie within the data) from every value up to SAMPLE_ROWS rows, and from every k-th row beyond
    (`sample_every`: k). Positive values spanning more than LOG_RATIO get log-spaced bins
    (`scale: log`). With `kept` (a boolean expression: the row leaves the stage alive) every bin also
    counts its kept rows (`counts_kept`, `below_kept`, `above_kept`). Boolean columns (`bools`) get
    `values`: rows and kept rows per true/false instead of a histogram. Streaming scans: the driver holds
    at most SAMPLE_ROWS values per column, however large the run."""
    if not cols:
        return {}
    marks = marks or {}
    kept = pl.lit(True) if kept is None else kept.fill_null(False)
    nums = [c for c in cols if c not in bools]
    schema = lf.collect_schema()
    ints = {c for c in nums if schema[c].is_integer()}
    x = {c: pl.col(c).cast(pl.Float64) for c in nums}
    v = {c: x[c].fill_nan(None) for c in nums}
    agg = _collect(lf.select(pl.len().alias("_n"), *[e for c in nums for e in (
        v[c].count().alias(f"count:{c}"), x[c].null_count().alias(f"nulls:{c}"), v[c].mean().alias(f"mean:{c}"),
        v[c].min().alias(f"min:{c}"), v[c].max().alias(f"max:{c}"),
        (v[c].is_not_null() & kept).cast(pl.Int64).sum().alias(f"kept:{c}"))], *[e for c in bools if c in cols for e in (
        pl.col(c).count().alias(f"count:{c}"), pl.col(c).null_count().alias(f"nulls:{c}"),
        pl.col(c).fill_null(False).cast(pl.Int64).sum().alias(f"true:{c}"),
        (pl.col(c).fill_null(False) & kept).cast(pl.Int64).sum().alias(f"true_kept:{c}"),
        (pl.col(c).eq(False).fill_null(False) & kept).cast(pl.Int64).sum().alias(f"false_kept:{c}"))])).row(0, named=True)
    step = max(1, -(-agg["_n"] // SAMPLE_ROWS))
    sample = lf.select(nums)
    if step > 1:
        sample = sample.with_row_index("_i").filter(pl.col("_i") % step == 0).drop("_i")
    sample = _collect(sample) if nums else None
    out, bins = {}, {}
    for c in cols:
        st: dict = {"count": int(agg[f"count:{c}"]), "nulls": int(agg[f"nulls:{c}"])}
        out[c] = st
        if c in bools:
            t = int(agg[f"true:{c}"])
            st["values"] = {"true": {"rows": t, "kept": int(agg[f"true_kept:{c}"])},
                            "false": {"rows": st["count"] - t, "kept": int(agg[f"false_kept:{c}"])}}
            continue
        vals = sample[c].cast(pl.Float64).fill_nan(None).drop_nulls()
        if st["count"] == 0 or vals.len() == 0:
            continue
        st["mean"] = _num(agg[f"mean:{c}"])
        *qs, lo, hi = np.quantile(vals.to_numpy(), [*QUANTILES, 0.005, 0.995]).tolist()  # one selection pass
        st["quantiles"] = {str(q): _num(v) for q, v in zip(QUANTILES, qs)}
        if step > 1:
            st["sample_every"] = step
        vmin, vmax = float(agg[f"min:{c}"]), float(agg[f"max:{c}"])
        log = vmin > 0 and vmax / vmin > LOG_RATIO
        for m in marks.get(c, []):  # a threshold inside the data is drawn inside the plot
            t = m["value"]
            if vmin <= t <= vmax and (t > 0 or not log):
                lo, hi = min(lo, t), max(hi, t)
        if lo == hi:
            lo, hi = vmin, vmax
        if lo == hi:
            st["histogram"] = {"edges": [lo, hi], "counts": [st["count"]], "below": 0, "above": 0, "scale": "linear",
                               "counts_kept": [int(agg[f"kept:{c}"])], "below_kept": 0, "above_kept": 0}
        elif c in ints and not log and math.floor(hi) - math.ceil(lo) < N_BINS:  # one bin per integer
            lo, hi = math.ceil(lo) - 0.5, math.floor(hi) + 0.5
            bins[c] = (lo, hi, False, int(hi - lo))
        else:
            bins[c] = (lo, hi, log, N_BINS)
    # every histogram in one streaming pass: bin numbers (-1 below, N_BINS above), unpivoted, counted
    counts: dict = {}
    if bins:
        b = []
        for c, (lo, hi, log, nb) in bins.items():
            pos = ((v[c].log10() - math.log10(lo)) / ((math.log10(hi) - math.log10(lo)) / nb)) if log else \
                ((v[c] - lo) / ((hi - lo) / nb))
            b.append(pl.when(v[c] < lo).then(-1).when(v[c] > hi).then(nb).otherwise(
                pos.floor().clip(0, nb - 1)).cast(pl.Int64).alias(c))
        grouped = lf.select(kept.alias("_kept"), *b).unpivot(index="_kept").drop_nulls("value")
        for c, k, kp, n in _collect(grouped.group_by("variable", "value", "_kept").len()).iter_rows():
            counts[(c, k, bool(kp))] = int(n)
    for c, (lo, hi, log, nb) in bins.items():
        def n(i, kept_only=False, c=c):
            return counts.get((c, i, True), 0) + (0 if kept_only else counts.get((c, i, False), 0))
        edges = ([10 ** (math.log10(lo) + i * (math.log10(hi) - math.log10(lo)) / nb) for i in range(nb + 1)]
                 if log else [lo + i * (hi - lo) / nb for i in range(nb + 1)])
        edges[0], edges[-1] = lo, hi
        out[c]["histogram"] = {"edges": edges, "scale": "log" if log else "linear",
                               "counts": [n(i) for i in range(nb)], "below": n(-1), "above": n(nb),
                               "counts_kept": [n(i, True) for i in range(nb)],
                               "below_kept": n(-1, True), "above_kept": n(nb, True)}
    for c in cols:
        if marks.get(c):
            out[c]["thresholds"] = marks[c]
    return out


_FLIP = {">=": "<=", "<=": ">=", ">": "<", "<": ">"}
_OPS = {ast.GtE: ">=", ast.LtE: "<=", ast.Gt: ">", ast.Lt: "<"}


def _number(node: ast.AST):
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _number(node.operand)
        return None if v is None else -v
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    return None


def rule_thresholds(text: str) -> dict:
    """The simple comparisons of a keep rule: `{"comparisons": [{"column", "op", "value"}], "simple": bool}`
    for every `column OP number` (or `number OP column`, OP one of < <= > >=) in its top-level `and`
    chain, column always on the left; `simple` when the rule is nothing but such comparisons (the HTML
    report's what-if sliders then evaluate it in the page)."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, RecursionError, MemoryError):
        return {"comparisons": [], "simple": False}
    parts = tree.values if isinstance(tree, ast.BoolOp) and isinstance(tree.op, ast.And) else [tree]
    comps, simple = [], True
    for node in parts:
        if not isinstance(node, ast.Compare):
            simple = False
            continue
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            sym = _OPS.get(type(op))
            if sym and isinstance(left, ast.Name) and _number(right) is not None:
                comps.append({"column": left.id, "op": sym, "value": _number(right)})
            elif sym and isinstance(right, ast.Name) and _number(left) is not None:
                comps.append({"column": right.id, "op": _FLIP[sym], "value": _number(left)})
            else:
                simple = False
            left = right
    return {"comparisons": comps, "simple": simple and bool(comps)}


def stage_thresholds(rules: dict) -> dict:
    """Per rule (reject reason) of a stage: `rule_thresholds`."""
    return {reason: rule_thresholds(text) for reason, text in (rules or {}).items()}


def _marks(thresholds: dict) -> dict[str, list[dict]]:
    """Per column, the keep thresholds the stage's rules put on it (for the histograms)."""
    out: dict[str, list] = {}
    for reason, t in thresholds.items():
        for c in t["comparisons"]:
            out.setdefault(c["column"], []).append({"rule": reason, "op": c["op"], "value": c["value"]})
    return out


def _rule_of_reason(reason: str, rules: dict) -> str | None:
    """The rule key behind a reject reason (a key with `{column}` placeholders matches its values)."""
    if reason in rules:
        return reason
    for key in rules:
        if "{" in key:
            pattern = "^" + "".join(".*" if part.startswith("{") else re.escape(part)
                                    for part in re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", key)) + "$"
            if re.match(pattern, reason):
                return key
    return None


def _rule_columns(key: str, text: str) -> list[str]:
    try:
        return sorted(compile_rule(key, text).columns)
    except RuleError:
        return []


def _jsonable(v):
    if isinstance(v, float):
        return _num(v)
    if isinstance(v, (list, dict)):
        return json.loads(json.dumps(v, default=str))
    return v


def _row_hash(stage: str) -> pl.Expr:
    return (pl.col("id").cast(pl.Utf8).fill_null("") + pl.lit("\x1f" + stage)).hash(17)


def _snippet(chars: int) -> pl.Expr:
    """The first `chars` characters of `text`, whitespace collapsed (only 4x that much is scanned)."""
    return (pl.col("text").str.slice(0, chars * 4).str.replace_all(r"\s+", " ").str.strip_chars()
            .str.slice(0, chars))


def stage_samples(texts: pl.LazyFrame, stages: list[dict]) -> list[dict]:
    """Examples with text snippets, per stage (`stages`: dicts of `stage`, `live_after` (an expression:
    the row left the stage alive), `rules`, `rejections`, `rows_out`): up to N_KEPT_SAMPLES rows that
    left the stage alive and N_SAMPLES rows per reject reason (the 20 commonest), picked by a hash of id
    and stage name (so every stage shows different rows, and a re-built report the same ones), each with
    the first SNIPPET_CHARS characters of its text (whitespace collapsed) and the values of the columns
    its rules read. One streaming scan for all stages; rows are first thinned by hash to about
    SAMPLE_POOL per stage and reason, so the driver's memory does not grow with the corpus."""
    have = set(texts.collect_schema().names())
    picks, flags, plan = [], [], []
    for k, st in enumerate(stages):
        stage, rules, rejections = st["stage"], st["rules"] or {}, st["rejections"]
        reasons = list(rejections)[:20]
        cols_of = {key: _rule_columns(key, t) for key, t in rules.items()}
        h = _row_hash(stage)
        every = {r: max(1, rejections[r] // SAMPLE_POOL) for r in reasons}
        rej_pick = (pl.col("reject_stage") == stage) & (h % pl.col("reject_reason").replace_strict(
            list(every), list(every.values()), default=None, return_dtype=pl.UInt64) == 0)
        pick = ((st["live_after"] & (h % max(1, st["rows_out"] // SAMPLE_POOL) == 0)) | rej_pick).fill_null(False)
        picks.append(pick)
        flags += [pick.alias(f"_p{k}"), h.alias(f"_h{k}"), st["live_after"].fill_null(False).alias(f"_k{k}")]
        plan.append((stage, rules, reasons, cols_of))
    if not stages:
        return []
    all_cols = sorted({c for *_, cols_of in plan for cs in cols_of.values() for c in cs} & have)
    sel = [pl.col("id").cast(pl.Utf8), pl.col("reject_stage"), pl.col("reject_reason"), *flags,
           _snippet(SNIPPET_CHARS).alias("snippet"), *[pl.col(c) for c in all_cols]]
    pool = _collect(texts.filter(pl.any_horizontal(picks)).select(sel))

    def rows(df: pl.DataFrame, k: int, cols: list[str], n: int) -> list[dict]:
        return [{"id": r["id"], "snippet": r["snippet"], "values": {c: _jsonable(r[c]) for c in cols if c in df.columns}}
                for r in df.sort(f"_h{k}").head(n).iter_rows(named=True)]

    out = []
    for k, (stage, rules, reasons, cols_of) in enumerate(plan):
        mine = pool.filter(pl.col(f"_p{k}"))
        kept = rows(mine.filter(pl.col(f"_k{k}")), k, sorted({c for cs in cols_of.values() for c in cs}), N_KEPT_SAMPLES)
        rejected = {}
        for r in reasons:
            key = _rule_of_reason(r, rules)
            df = mine.filter((pl.col("reject_stage") == stage) & (pl.col("reject_reason") == r))
            rejected[r] = {"rule": key, "keep_if": rules.get(key) if key else None,
                           "rows": rows(df, k, cols_of.get(key, []), N_SAMPLES)}
        out.append({"kept": kept, "rejected": rejected})
    return out


def _status(stage, reason) -> str:
    return "curated" if stage is None else f"rejected at {stage}: {reason}"


def dedup_clusters(folder: RunFolder, stage: str, columns, n: int = N_CLUSTERS, members: int = N_MEMBERS) -> dict:
    """The duplicate clusters of a dedup stage (one whose outputs include `duplicate_of`), from the
    run's outputs. A cluster is a kept document and the rows this stage removed as its duplicates
    (`reject_stage` = the stage, `duplicate_of` = the kept id: the id as the input spelled it); its
    size counts both. Returns the cluster-size histogram (size -> clusters, every cluster) and the `n`
    largest clusters (size descending, then kept id), each with the kept document (id, snippet, status:
    `curated` or the stage that rejected it later) and up to `members` removed rows, least similar
    first (id, similarity to the kept document, snippet), `more` counting the rest. Similarity is the
    stage's own measure (`SIMILARITY`: MinHash Jaccard, SemDeDup cosine) or 1.0 for exact duplicates.

    Three lazy scans of the outputs, streaming: sizes per kept id (no text; the group-by holds one row
    per cluster), then the shown members of the `n` largest clusters (no text), then the snippets of
    only those rows. The driver's memory grows with the number of clusters, never with the text."""
    sim_col = next((c for c in SIMILARITY if c in columns), None)
    base = _outputs(folder, sorted({"id", "duplicate_of", "reject_stage", "reject_reason", "text",
                                    *([sim_col] if sim_col else [])}))
    base = base.with_columns(pl.col("id").cast(pl.Utf8), pl.col("duplicate_of").cast(pl.Utf8))
    removed = base.filter((pl.col("reject_stage") == stage) & pl.col("duplicate_of").is_not_null())
    groups = removed.group_by("duplicate_of").agg(pl.len().alias("removed"))
    hist, top = pl.collect_all([
        groups.group_by("removed").agg(pl.len().alias("clusters")).sort("removed"),
        groups.sort(["removed", "duplicate_of"], descending=[True, False]).head(n)], engine="streaming")
    kept_ids = top["duplicate_of"].to_list()
    sim = pl.col(sim_col).cast(pl.Float64) if sim_col else pl.lit(1.0)
    picked = _collect(removed.filter(pl.col("duplicate_of").is_in(kept_ids))
                      .select("duplicate_of", "id", sim.alias("similarity"))
                      .sort(["duplicate_of", "similarity", "id"], nulls_last=True)
                      .group_by("duplicate_of", maintain_order=True).head(members)) if kept_ids else None
    want = sorted(set(kept_ids) | (set(picked["id"].to_list()) if picked is not None else set()))
    rows = {r["id"]: r for r in _collect(base.filter(pl.col("id").is_in(want)).select(
        "id", "reject_stage", "reject_reason", _snippet(CLUSTER_SNIPPET).alias("snippet"))).iter_rows(named=True)
        } if want else {}
    largest = []
    for kid, k in top.iter_rows():
        kr = rows.get(kid)
        mine = picked.filter(pl.col("duplicate_of") == kid)
        largest.append({
            "kept": {"id": kid, "snippet": kr["snippet"] if kr else None,
                     "status": _status(kr["reject_stage"], kr["reject_reason"]) if kr else "not in the outputs",
                     "reject_stage": kr["reject_stage"] if kr else None},
            "size": int(k) + 1, "removed": int(k),
            "members": [{"id": i, "similarity": _num(v), "snippet": rows[i]["snippet"] if i in rows else None}
                        for _, i, v in mine.iter_rows()],
            "more": int(k) - mine.height})
    return {"similarity": "exact" if sim_col is None else SIMILARITY[sim_col], "similarity_column": sim_col,
            "clusters": int(hist["clusters"].sum()), "rows_removed": int((hist["removed"] * hist["clusters"]).sum()),
            "size_histogram": {str(int(r) + 1): int(c) for r, c in hist.iter_rows()},
            "largest": largest, "members_shown": members}


def _examples(summary: pl.DataFrame) -> list[str]:
    """The smallest example ids over some groups of the merged write summary."""
    if summary.height == 0:
        return []
    return summary["examples"].explode().drop_nulls().unique().sort().head(N_EXAMPLES).to_list()


def _group(summary: pl.DataFrame, keys: list[str]) -> dict:
    if summary.height == 0:
        return {}
    g = summary.group_by(keys).agg(pl.col("rows").sum(), pl.col("tokens").sum(), pl.col("bytes").sum())
    out = {}
    for row in g.sort(keys).iter_rows(named=True):
        key = "/".join(str(row[k]) for k in keys)
        out[key] = {"rows": row["rows"], "tokens": row["tokens"], "bytes": row["bytes"]}
    return out


def build_reports(folder: RunFolder, job, result: dict, wall_s: float) -> dict:
    """Write `reports/NN-stage.json` for every stage; return the summary, which the runner completes
    (outcome, schema changes) and writes as `reports/summary.json`."""
    reports = folder.output_dir("reports")
    reports.mkdir(parents=True, exist_ok=True)
    summary = result["summary"] if result["summary"] is not None else pl.DataFrame(
        schema={"status": pl.Utf8, "reject_stage": pl.Utf8, "reject_reason": pl.Utf8, "license": pl.Utf8,
                "source": pl.Utf8, "domain": pl.Utf8, "rows": pl.Int64, "bytes": pl.Int64, "tokens": pl.Int64,
                "examples": pl.List(pl.Utf8)})
    names = [p.name for p in job.stages]
    read = result["read_stats"]
    rows_read = sum(r["rows_read"] for r in read)
    quarantined = _rows_on_disk(folder, "quarantine")
    # Counted from the files on disk; the manifests' summaries must agree (they feed the stage tables).
    curated, rejected = _rows_on_disk(folder, "curated"), _rows_on_disk(folder, "rejected")
    listed = {k: int(summary.filter(pl.col("status") == k)["rows"].sum()) for k in ("curated", "rejected")}
    score_cols: dict[str, list[str]] = {
        p.name: [c for c, t in p.stage.output_columns().items() if _is_numeric(t)] for p in job.stages}
    bool_cols = {c for p in job.stages for c, t in p.stage.output_columns().items() if pa.types.is_boolean(t)}
    all_cols = sorted({c for cols in score_cols.values() for c in cols})
    rule_cols = sorted({c for p in job.stages for k, t in (p.rules or {}).items() for c in _rule_columns(k, t)})
    texts = _outputs(folder, sorted({"id", "text", "reject_stage", "reject_reason", *rule_cols}))
    data = _outputs(folder, ["reject_stage", *all_cols])
    if (curated + rejected) * (len(all_cols) + 1) <= IN_MEMORY_VALUES:  # one read, not three per stage
        data = _collect(data).lazy()
    stage_stats = result["stage_stats"]
    specs = []
    for k, p in enumerate(job.stages):
        out_k = summary.filter(pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(names[k + 1:]))
        rej_k = summary.filter(pl.col("reject_stage") == p.name).group_by("reject_reason").agg(pl.col("rows").sum())
        specs.append({"stage": p.name, "rules": p.rules or {}, "rows_out": int(out_k["rows"].sum()),
                      "live_after": pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(names[k + 1:]),
                      "rejections": {r["reject_reason"]: int(r["rows"]) for r in rej_k.sort(
                          ["rows", "reject_reason"], descending=[True, False]).iter_rows(named=True)}})
    samples = stage_samples(texts, specs)
    stage_rows = []
    for k, p in enumerate(job.stages):
        later = names[k:]
        here = summary.filter(pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(later))
        out_ = summary.filter(pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(names[k + 1:]))
        rej = summary.filter(pl.col("reject_stage") == p.name)
        st = stage_stats.get(p.name, {})
        rows_in, rows_out = int(here["rows"].sum()), int(out_["rows"].sum())
        live = data.filter(pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(later))
        live_after = pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(names[k + 1:])
        thresholds = stage_thresholds(p.rules)
        rejections = specs[k]["rejections"]
        examples_rej = {reason: _examples(rej.filter(pl.col("reject_reason") == reason))
                        for reason in list(rejections)[:20]}
        wall = st.get("wall_s", 0.0) + result["fit_reports"].get(p.name, {}).get("fit_wall_s", 0.0)
        rep = {
            "stage": p.name, "index": k, "kind": _kind(p.stage),
            "class": f"{type(p.stage).__module__}:{type(p.stage).__name__}",
            "params": p.stage.get_params(), "keep": p.rules,
            "rows_in": rows_in, "rows_out": rows_out, "rows_rejected": rows_in - rows_out,
            "bytes_in": int(here["bytes"].sum()), "bytes_out": int(out_["bytes"].sum()),
            "tokens_in": int(here["tokens"].sum()), "tokens_out": int(out_["tokens"].sum()),
            "wall_s": wall, "cpu_s": st.get("cpu_s", 0.0) + result["fit_reports"].get(p.name, {}).get(
                "fit_driver_cpu_s", 0.0),
            "rows_per_s": rows_in / wall if wall > 0 else None, "batches": st.get("batches", 0),
            "rejections": rejections,
            "thresholds": thresholds,
            "scores": score_stats(live, score_cols[p.name], kept=live_after,
                                  bools=[c for c in score_cols[p.name] if c in bool_cols], marks=_marks(thresholds)),
            "examples": {"kept": _examples(out_), "rejected": examples_rej},
            "samples": samples[k],
            "licenses": {"in": _group(here, ["license"]), "out": _group(out_, ["license"])},
            "sources": {"in": _group(here, ["source"]), "out": _group(out_, ["source"])},
            "extra": result["fit_reports"].get(p.name, {}),
            "nodes": {k[5:]: v for k, v in st.get("extra", {}).items() if k.startswith("node:")},
            "quarantined_rows": st.get("extra", {}).get("quarantined_rows", 0),
        }
        if "duplicate_of" in p.stage.output_columns():  # a dedup stage: its largest clusters
            rep["clusters"] = dedup_clusters(folder, p.name, p.stage.output_columns())
        if p.stage.edits_text:  # every edit counted: rows changed, characters removed, per rule
            rep["edits"] = {key: st.get("extra", {}).get(key, 0)
                            for key in ("rows_edited", "chars_removed", "rows_emptied")}
        (reports / f"{k:02d}-{p.name}.json").write_text(json.dumps(rep, indent=1, default=str))
        stage_rows.append({key: rep[key] for key in ("stage", "kind", "rows_in", "rows_out", "rows_rejected",
                                                     "wall_s", "rows_per_s")})
    cur = summary.filter(pl.col("status") == "curated")
    quarantine_errors = _quarantine_errors(folder)
    total = {
        "job": job.spec.name, "run_dir": str(folder.root), "wall_s": wall_s,
        "rows_read": rows_read, "curated": curated, "rejected": rejected, "quarantined": quarantined,
        "conservation": {"holds": rows_read == curated + rejected + quarantined
                                  and listed == {"curated": curated, "rejected": rejected},
                         "equation": f"{rows_read} read = {curated} curated + {rejected} rejected + "
                                     f"{quarantined} quarantined",
                         "counted_from": "the Parquet files in curated/, rejected/ and quarantine/",
                         "manifests": listed},
        "stages": stage_rows,
        "tokens": {"unit": token_unit(job.tokenizer), "tokenizer": job.tokenizer},
        "provenance": {"by_license": _group(cur, ["license"]), "by_source": _group(cur, ["source"]),
                       "by_domain": _group(cur, ["domain"])},
        "inputs": [{k: r[k] for k in ("file", "rows_read", "rows_ok", "rows_quarantined", "bytes_read")}
                   for r in read],
        "warnings": [w for r in read for w in r["warnings"]],
        "quarantine_errors": quarantine_errors,
    }
    return total


def _kind(stage) -> str:
    return "global" if isinstance(stage, GlobalStage) else "editor" if stage.edits_text else "scorer"


def _rows_on_disk(folder: RunFolder, part: str) -> int:
    return folder.rows(part)


def _quarantine_errors(folder: RunFolder) -> dict:
    files = folder.output_files("quarantine")
    if not files:
        return {}
    kinds = pl.concat([pl.scan_parquet(f).select(pl.col("error").str.split(":").list.first().alias("kind"))
                       for f in files]).group_by("kind").len()
    return {r["kind"]: int(r["len"]) for r in _collect(kinds).sort("len", descending=True).iter_rows(named=True)}


def run_tokenizer(summary: dict) -> tuple[str | None, str]:
    """The tokenizer a run's reports counted with (None: whitespace words) and how to name the unit;
    whitespace words, said so, when that tokenizer is no longer where the run found it."""
    tok = (summary.get("tokens") or {}).get("tokenizer")
    if tok:
        try:
            tokenizer_file(tok)
        except TokenizerError:
            return None, f"{token_unit(None)} ({tok} not found; the run's own reports count its tokens)"
    return tok, token_unit(tok)


def load_reports(run_dir: Path | str) -> tuple[dict, list[dict]]:
    folder = RunFolder(run_dir)
    reports = folder.output_dir("reports")
    if not folder.summary_file.is_file():
        raise FileNotFoundError(f"{run_dir}: no reports/summary.json (not a tamis run folder, or the run "
                                f"did not finish)")
    summary = json.loads(folder.summary_file.read_text())
    stages = [json.loads(p.read_text()) for p in sorted(reports.glob("[0-9][0-9]-*.json"))]
    return summary, stages


def format_table(summary: dict, stages: list[dict]) -> str:
    """The per-stage table `tamis report` prints."""
    head = f"{'stage':<22}{'kind':<8}{'in':>10}{'out':>10}{'rejected':>10}{'kept %':>8}{'wall s':>9}{'rows/s':>10}  top reasons"
    lines = [head, "-" * len(head)]
    for s in stages:
        pct = 100.0 * s["rows_out"] / s["rows_in"] if s["rows_in"] else 100.0
        reasons = ", ".join(f"{r} {n}" for r, n in list(s["rejections"].items())[:3])
        rps = f"{s['rows_per_s']:.0f}" if s.get("rows_per_s") else "-"
        lines.append(f"{s['stage']:<22}{s['kind']:<8}{s['rows_in']:>10}{s['rows_out']:>10}"
                     f"{s['rows_rejected']:>10}{pct:>7.1f}%{s['wall_s']:>9.2f}{rps:>10}  {reasons}")
    c = summary["conservation"]
    lines += ["", f"read {summary['rows_read']}  curated {summary['curated']}  rejected {summary['rejected']}  "
                  f"quarantined {summary['quarantined']}  conservation {'holds' if c['holds'] else 'BROKEN'}"]
    if summary.get("warnings"):
        lines += ["warnings:"] + [f"  {w}" for w in summary["warnings"][:20]]
    return "\n".join(lines)


# -- what-if: re-decide the stored rows under changed keep rules, without re-running -----------------
class WhatIfError(ValueError):
    """A `--what-if` that names an unknown stage or rule, or does not parse."""


def parse_what_if(specs: list[str], stages: list[dict]) -> dict[str, dict[str, str]]:
    """`STAGE.RULE=EXPR` strings -> {stage: {rule: expression}}. RULE is a keep rule of STAGE (its
    reject reason key); EXPR replaces its expression (`True` switches the rule off)."""
    known = {s["stage"]: s.get("keep") or {} for s in stages}
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        target, eq, expr = spec.partition("=")
        stage, dot, rule = target.strip().partition(".")
        if not eq or not dot or not expr.strip():
            raise WhatIfError(f"--what-if {spec!r}: expected STAGE.RULE=EXPR, e.g. "
                              f"'gopher_quality.gopher_quality_short_doc=gopher_quality_word_count >= 100'")
        if stage not in known:
            raise WhatIfError(f"--what-if {spec!r}: unknown stage {stage!r}; stages with keep rules: "
                              f"{', '.join(n for n, r in known.items() if r) or 'none'}")
        if rule not in known[stage]:
            raise WhatIfError(f"--what-if {spec!r}: stage {stage!r} has no rule {rule!r}; its rules: "
                              f"{', '.join(known[stage]) or 'none'}")
        try:
            compile_rule(rule, expr)
        except RuleError as e:
            raise WhatIfError(f"--what-if {spec!r}: {e}") from None
        out.setdefault(stage, {})[rule] = expr.strip()
    return out


def _stage_index(names: list[str]) -> pl.Expr:
    """The index of the stage that rejected a row; len(names) for a kept row."""
    return pl.col("reject_stage").replace_strict(names, list(range(len(names))), default=len(names),
                                                 return_dtype=pl.Int32).fill_null(len(names))


def _needs_columns(s: dict) -> bool:
    """Whether deciding a row at this stage needs the stage's own outputs (it has rules, or rejected rows)."""
    return bool(s.get("keep")) or s.get("rows_rejected", 0) > 0


def _decision(stages: list[dict], changes: dict[str, dict[str, str]], columns: set[str]) -> tuple[pl.Expr, pl.Expr]:
    """The new reject-stage index of every stored row (len(stages) kept, -1 unknown) and its new reason.

    Stage by stage, in order: an unchanged stage keeps its recorded decision for the rows that reached
    it; a changed stage re-evaluates its rules (the changed ones and the others) on the stored columns
    of the rows that reached it. A row that now passes the stage that rejected it reaches later stages
    whose outputs were never computed for it: if such a stage has rules, the row is unknown (needs a
    re-run)."""
    names = [s["stage"] for s in stages]
    r = _stage_index(names)
    produced_later = {}
    for k, s in enumerate(stages):
        for c in s.get("scores", {}):
            produced_later.setdefault(c, k)
    chain, reasons = None, []
    for k, s in enumerate(stages):
        new = changes.get(s["stage"])
        if new:
            rules = compile_rules({**s["keep"], **new})
            for rule in rules:
                late = sorted(c for c in rule.columns if produced_later.get(c, -1) > k)
                missing = sorted(c for c in rule.columns if c not in columns)
                if late or missing:
                    raise WhatIfError(f"--what-if for stage {s['stage']!r}, rule {rule.reason!r} reads "
                                      f"{late or missing}, which " + ("later stages compute" if late else
                                      "the stored outputs lack"))
            reason = pl.when(~rules[0].expr.fill_null(False)).then(rules[0].reason_expr)
            for rule in rules[1:]:
                reason = reason.when(~rule.expr.fill_null(False)).then(rule.reason_expr)
            reason = reason.otherwise(pl.lit(None, dtype=pl.Utf8))
            rejected = (r >= k) & reason.is_not_null()
            reasons.append((k, reason))
        else:
            rejected = r == k
        chain = (pl.when(rejected) if chain is None else chain.when(rejected)).then(k)
        if _needs_columns(s):
            chain = chain.when(r < k).then(-1)
    decided = (chain.otherwise(len(stages)) if chain is not None else pl.lit(len(stages))).cast(pl.Int32)
    reason = pl.col("reject_reason")
    for k, expr in reasons:
        reason = pl.when(decided == k).then(expr).otherwise(reason)
    return decided, pl.when(decided >= 0).then(reason).otherwise(pl.lit(None, dtype=pl.Utf8))


def what_if(run_dir: Path | str, changes: dict[str, dict[str, str]]) -> dict:
    """Kept/rejected rows, tokens and source shares before and after `changes` (see `parse_what_if`),
    recomputed from the stored score columns of curated/ and rejected/ in one streaming scan."""
    t0 = time.perf_counter()
    folder = RunFolder(run_dir)
    summary, stages = load_reports(run_dir)
    names = [s["stage"] for s in stages]
    files = _output_files(folder)
    columns = set().union(*(pl.scan_parquet(f).collect_schema().names() for f in files)) if files else set()
    needed = sorted({c for st, new in changes.items() for k, t in {**next(s["keep"] for s in stages
                     if s["stage"] == st), **new}.items() for c in _rule_columns(k, t)} & columns)
    new, reason = _decision(stages, changes, columns)
    tokenizer, unit = run_tokenizer(summary)
    lf = _outputs(folder, sorted({"reject_stage", "reject_reason", "source", "text", *needed})).select(
        _stage_index(names).alias("old"), new.alias("new"), reason.alias("reason"),
        pl.col("reject_reason").alias("old_reason"), pl.col("source").cast(pl.Utf8).fill_null("(none)"),
        tokens_expr(tokenizer).alias("tokens"))
    g = _collect(lf.group_by("old", "new", "reason", "old_reason", "source").agg(
        pl.len().alias("rows"), pl.col("tokens").sum()))
    n = len(names)

    def total(df: pl.DataFrame, col: str = "rows") -> int:
        return int(df[col].sum()) if df.height else 0

    per_stage = [{"stage": s["stage"], "changed": s["stage"] in changes,
                  "rejected_before": total(g.filter(pl.col("old") == k)),
                  "rejected_after": total(g.filter(pl.col("new") == k))} for k, s in enumerate(stages)]
    reasons = {}
    for st in changes:
        k = names.index(st)
        before = g.filter(pl.col("old") == k).group_by("old_reason").agg(pl.col("rows").sum())
        after = g.filter(pl.col("new") == k).group_by("reason").agg(pl.col("rows").sum())
        b, a = dict(before.iter_rows()), dict(after.iter_rows())
        reasons[st] = {key: {"before": int(b.get(key, 0)), "after": int(a.get(key, 0))}
                       for key in sorted(set(b) | set(a), key=lambda x: -(b.get(x, 0) + a.get(x, 0)))}
    kept_b, kept_a, unknown = g.filter(pl.col("old") == n), g.filter(pl.col("new") == n), g.filter(pl.col("new") == -1)
    sources = {}
    for src in sorted(set(g["source"].to_list())):
        kb, ka = total(kept_b.filter(pl.col("source") == src)), total(kept_a.filter(pl.col("source") == src))
        sources[src] = {"kept_before": kb, "kept_after": ka,
                        "share_before": kb / total(kept_b) if total(kept_b) else 0.0,
                        "share_after": ka / total(kept_a) if total(kept_a) else 0.0,
                        "unknown": total(unknown.filter(pl.col("source") == src))}
    return {"changes": changes, "rows": total(g),
            "kept": {"before": total(kept_b), "after": total(kept_a)},
            "tokens": {"before": total(kept_b, "tokens"), "after": total(kept_a, "tokens"),
                       "unknown": total(unknown, "tokens"), "unit": unit},
            "unknown": {"rows": total(unknown), "by_stage_that_rejected_them": {
                names[int(k)]: int(v) for k, v in unknown.group_by("old").agg(pl.col("rows").sum()).sort("old").iter_rows()}},
            "newly_rejected": total(g.filter((pl.col("old") == n) & (pl.col("new") >= 0) & (pl.col("new") < n))),
            "newly_kept": total(g.filter((pl.col("old") < n) & (pl.col("new") == n))),
            "stages": per_stage, "reasons": reasons, "sources": sources,
            "seconds": time.perf_counter() - t0}


def format_what_if(w: dict) -> str:
    """The before/after table `tamis report --what-if` prints."""
    lines = ["what-if: " + "; ".join(f"{st}.{r} = {e}" for st, rs in w["changes"].items() for r, e in rs.items()), ""]
    head = f"{'':<40}{'before':>12}{'after':>12}{'change':>12}"
    lines += [head, "-" * len(head)]

    def row(label, b, a):
        lines.append(f"{label:<40}{b:>12}{a:>12}{a - b:>+12}")

    row("kept rows", w["kept"]["before"], w["kept"]["after"])
    row("kept tokens", w["tokens"]["before"], w["tokens"]["after"])
    lines.append(f"  (tokens: {w['tokens'].get('unit', token_unit(None))})")
    for s in w["stages"]:
        if s["rejected_before"] or s["rejected_after"] or s["changed"]:
            row(f"rejected at {s['stage']}{' *' if s['changed'] else ''}", s["rejected_before"], s["rejected_after"])
    for st, rs in w["reasons"].items():
        for key, v in rs.items():
            row(f"  {key}"[:40], v["before"], v["after"])
    u = w["unknown"]
    lines.append(f"{'unknown / needs a re-run':<40}{0:>12}{u['rows']:>12}{u['rows']:>+12}")
    if u["rows"]:
        lines.append(f"  ({u['rows']} rows now pass the stage that rejected them, but later stages with rules "
                     f"never scored them: {', '.join(f'{k} {v}' for k, v in u['by_stage_that_rejected_them'].items())}."
                     f" Kept after lies between {w['kept']['after']} and {w['kept']['after'] + u['rows']}.)")
    lines += ["", f"{'source':<40}{'share before':>14}{'share after':>14}{'kept after':>12}{'unknown':>10}"]
    for src, v in w["sources"].items():
        lines.append(f"{src[:39]:<40}{100 * v['share_before']:>13.1f}%{100 * v['share_after']:>13.1f}%"
                     f"{v['kept_after']:>12}{v['unknown']:>10}")
    lines += ["", f"{w['newly_rejected']} kept rows newly rejected, {w['newly_kept']} rejected rows now kept; "
                  f"recomputed from the stored scores of {w['rows']} rows in {w['seconds']:.2f} s (* = changed stage)"]
    return "\n".join(lines)


def what_if_data(run_dir: Path | str, stages: list[dict], max_rows: int = WHATIF_ROWS) -> dict:
    """What the HTML report's what-if sliders need, embedded in the page: per stored row its original
    reject-stage index, tokens (`run_tokenizer`) and source, the values of the columns that the simple
    threshold rules (`rule_thresholds`) of the stages with sliders read, and for those stages' other
    rules whether the row passed them. At most `max_rows` rows: beyond, a hash sample of the ids
    (`sampled`: the page scales its counts by rows / sample and says so)."""
    folder = RunFolder(run_dir)
    names = [s["stage"] for s in stages]
    slider_stages = [s for s in stages if any(t["simple"] for t in stage_thresholds(s.get("keep")).values())]
    files = _output_files(folder)
    columns = set().union(*(pl.scan_parquet(f).collect_schema().names() for f in files)) if files else set()
    cols, bits, rules_out = set(), {}, []
    for s in slider_stages:
        th = stage_thresholds(s["keep"])
        out = []
        for key, text in s["keep"].items():
            t = th[key]
            if t["simple"] and {c["column"] for c in t["comparisons"]} <= columns:
                cols |= {c["column"] for c in t["comparisons"]}
                out.append({"rule": key, "simple": True, "comparisons": t["comparisons"]})
            else:
                rule = compile_rule(key, text)
                if rule.columns <= columns:
                    bits[f"{s['stage']}\x1f{key}"] = rule.expr.fill_null(False)
                else:  # cannot be evaluated on the stored outputs: it keeps every row it reached, as recorded
                    bits[f"{s['stage']}\x1f{key}"] = _stage_index(names) > names.index(s["stage"])
                out.append({"rule": key, "simple": False, "bits": f"{s['stage']}\x1f{key}"})
        rules_out.append({"stage": s["stage"], "index": names.index(s["stage"]), "rules": out})
    rule_cols = sorted({c for e in bits.values() for c in e.meta.root_names()} & columns)
    lf = _outputs(folder, sorted({"id", "reject_stage", "source", "text", *cols, *rule_cols}))
    n = _collect(lf.select(pl.len())).item() if files else 0
    every = max(1, -(-n // max_rows))
    if every > 1:
        lf = lf.filter(_row_hash("what-if") % every == 0)
    df = _collect(lf.select(_stage_index(names).alias("old"), pl.col("source").cast(pl.Utf8).fill_null("(none)"),
                            tokens_expr(run_tokenizer(json.loads(folder.summary_file.read_text()))[0]).alias("tokens"),
                            *[pl.col(c).cast(pl.Float64) for c in sorted(cols)],
                            *[e.alias(k) for k, e in bits.items()]))
    sources = sorted(set(df["source"].to_list()))
    index = {s: i for i, s in enumerate(sources)}
    return {"stages": names, "needs": [_needs_columns(s) for s in stages], "sliders": rules_out,
            "rows": n, "sample": df.height, "sampled": every > 1, "sources": sources,
            "old": df["old"].to_list(), "tokens": df["tokens"].to_list(),
            "source": [index[s] for s in df["source"].to_list()],
            "columns": {c: df[c].to_list() for c in sorted(cols)},
            "bits": {k: [int(b) for b in df[k].to_list()] for k in bits}}
