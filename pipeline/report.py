"""Per-stage reports: JSON files under `RUN_DIR/reports/`, built from the run's own outputs.

Row, byte and token counts, rejections and example ids come from the summaries the write tasks
recorded (so they are exact and conservation is checked against what is on disk); times come from
the workers' counters; score statistics from streaming, column-projected polars scans of the outputs
(text is never loaded, and the driver's memory does not grow with the corpus: see `score_stats`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.run_folder import RunFolder
from tamis.pipeline.stage import GlobalStage

QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
N_BINS = 30
N_EXAMPLES = 5
SAMPLE_ROWS = 1_000_000
IN_MEMORY_VALUES = 20_000_000  # score values (160 MB) up to which reports read the outputs once, into memory


def _num(x):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return float(x) if isinstance(x, float) else x


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _output_files(folder: RunFolder) -> list[str]:
    return [str(p) for p in folder.output_files("curated", "rejected")]


def _outputs(folder: RunFolder, columns: list[str]) -> pl.LazyFrame:
    """A lazy scan of `columns` over curated/ and rejected/ (a column a file lacks reads as null)."""
    files = _output_files(folder)
    if not files:
        return pl.LazyFrame(schema={c: pl.Utf8 for c in columns})
    frames = []
    for f in files:
        lf = pl.scan_parquet(f)
        have = lf.collect_schema().names()
        frames.append(lf.select([pl.col(c) if c in have else pl.lit(None).alias(c) for c in columns]))
    return pl.concat(frames, how="diagonal_relaxed")


def _collect(lf: pl.LazyFrame) -> pl.DataFrame:
    return lf.collect(engine="streaming")


def score_stats(lf: pl.LazyFrame, cols: list[str]) -> dict[str, dict]:
    """Per numeric column: count, nulls, mean and histogram counts, exact; quantiles and the
    histogram's range (0.5th to 99.5th percentile) from every value up to SAMPLE_ROWS rows, and from
    every k-th row beyond (`sample_every`: k). Streaming scans: the driver holds at most SAMPLE_ROWS
    values per column, however large the run."""
    if not cols:
        return {}
    x = {c: pl.col(c).cast(pl.Float64) for c in cols}
    v = {c: x[c].fill_nan(None) for c in cols}
    agg = _collect(lf.select(pl.len().alias("_n"), *[e for c in cols for e in (
        v[c].count().alias(f"count:{c}"), x[c].null_count().alias(f"nulls:{c}"), v[c].mean().alias(f"mean:{c}"),
        v[c].min().alias(f"min:{c}"), v[c].max().alias(f"max:{c}"))])).row(0, named=True)
    step = max(1, -(-agg["_n"] // SAMPLE_ROWS))
    sample = lf.select(cols)
    if step > 1:
        sample = sample.with_row_index("_i").filter(pl.col("_i") % step == 0).drop("_i")
    sample = _collect(sample)
    out, bins = {}, {}
    for c in cols:
        st: dict = {"count": int(agg[f"count:{c}"]), "nulls": int(agg[f"nulls:{c}"])}
        out[c] = st
        vals = sample[c].cast(pl.Float64).fill_nan(None).drop_nulls()
        if st["count"] == 0 or vals.len() == 0:
            continue
        st["mean"] = _num(agg[f"mean:{c}"])
        *qs, lo, hi = np.quantile(vals.to_numpy(), [*QUANTILES, 0.005, 0.995]).tolist()  # one selection pass
        st["quantiles"] = {str(q): _num(v) for q, v in zip(QUANTILES, qs)}
        if step > 1:
            st["sample_every"] = step
        if lo == hi:
            lo, hi = float(agg[f"min:{c}"]), float(agg[f"max:{c}"])
        if lo == hi:
            st["histogram"] = {"edges": [lo, hi], "counts": [st["count"]], "below": 0, "above": 0}
        else:
            bins[c] = (lo, hi, (hi - lo) / N_BINS)
    # every histogram in one streaming pass: bin numbers (-1 below, N_BINS above), unpivoted, counted
    counts: dict = {}
    if bins:
        b = [pl.when(v[c] < lo).then(-1).when(v[c] > hi).then(N_BINS).otherwise(
            ((v[c] - lo) / width).floor().clip(0, N_BINS - 1)).cast(pl.Int64).alias(c)
             for c, (lo, hi, width) in bins.items()]
        for c, k, n in _collect(lf.select(b).unpivot().drop_nulls().group_by("variable", "value").len()).iter_rows():
            counts[(c, k)] = int(n)
    for c, (lo, _, width) in bins.items():
        out[c]["histogram"] = {"edges": [lo + i * width for i in range(N_BINS + 1)],
                               "counts": [counts.get((c, i), 0) for i in range(N_BINS)],
                               "below": counts.get((c, -1), 0), "above": counts.get((c, N_BINS), 0)}
    return out


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
    all_cols = sorted({c for cols in score_cols.values() for c in cols})
    data = _outputs(folder, ["reject_stage", *all_cols])
    if (curated + rejected) * (len(all_cols) + 1) <= IN_MEMORY_VALUES:  # one read, not three per stage
        data = _collect(data).lazy()
    stage_stats = result["stage_stats"]
    stage_rows = []
    for k, p in enumerate(job.stages):
        later = names[k:]
        here = summary.filter(pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(later))
        out_ = summary.filter(pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(names[k + 1:]))
        rej = summary.filter(pl.col("reject_stage") == p.name)
        st = stage_stats.get(p.name, {})
        rows_in, rows_out = int(here["rows"].sum()), int(out_["rows"].sum())
        live = data.filter(pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(later))
        rejections = {r["reject_reason"]: int(r["rows"]) for r in rej.group_by("reject_reason").agg(
            pl.col("rows").sum()).sort("rows", descending=True).iter_rows(named=True)}
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
            "scores": score_stats(live, score_cols[p.name]),
            "examples": {"kept": _examples(out_), "rejected": examples_rej},
            "licenses": {"in": _group(here, ["license"]), "out": _group(out_, ["license"])},
            "sources": {"in": _group(here, ["source"]), "out": _group(out_, ["source"])},
            "extra": result["fit_reports"].get(p.name, {}),
            "nodes": {k[5:]: v for k, v in st.get("extra", {}).items() if k.startswith("node:")},
            "quarantined_rows": st.get("extra", {}).get("quarantined_rows", 0),
        }
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
