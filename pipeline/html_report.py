"""`tamis report RUN --html OUT.html`: one self-contained page (inline SVG, no scripts, no network)."""
from __future__ import annotations

import html
import json

W, H = 420, 150
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac"]


def _e(x) -> str:
    return html.escape(str(x))


def bar_chart(labels: list[str], values: list[float], title: str, width: int = W) -> str:
    """Horizontal bars, one per label."""
    if not values:
        return ""
    top = max(values) or 1
    row = 18
    height = row * len(values) + 24
    parts = [f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width + 180}" height="{height}">',
             f'<text x="0" y="12" class="t">{_e(title)}</text>']
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = 20 + i * row
        w = max(1, int(width * v / top))
        parts.append(f'<text x="0" y="{y + 12}" class="l">{_e(lab)[:24]}</text>'
                     f'<rect x="170" y="{y}" width="{w}" height="{row - 4}" fill="{PALETTE[i % 10]}"/>'
                     f'<text x="{174 + w}" y="{y + 12}" class="l">{v:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(col: str, stats: dict) -> str:
    h = stats.get("histogram")
    if not h:
        return f'<div class="hist"><b>{_e(col)}</b>: no values</div>'
    counts, edges = h["counts"], h["edges"]
    top = max(counts) or 1
    bw = W / len(counts)
    bars = "".join(f'<rect x="{i * bw:.1f}" y="{H - 20 - (H - 40) * c / top:.1f}" width="{bw - 1:.1f}" '
                   f'height="{(H - 40) * c / top:.1f}" fill="#4e79a7"><title>[{edges[i]:.4g}, {edges[i + 1]:.4g}): {c}</title></rect>'
                   for i, c in enumerate(counts))
    q = stats.get("quantiles", {})
    return (f'<figure class="hist"><svg role="img" aria-label="histogram of {_e(col)}" width="{W}" height="{H}">'
            f'<text x="0" y="12" class="t">{_e(col)}</text>{bars}'
            f'<text x="0" y="{H - 4}" class="l">{edges[0]:.4g}</text>'
            f'<text x="{W - 60}" y="{H - 4}" class="l">{edges[-1]:.4g}</text></svg>'
            f'<figcaption>n={stats["count"]} nulls={stats["nulls"]} mean={stats.get("mean", 0):.4g} '
            f'median={q.get("0.5", 0):.4g} p5={q.get("0.05", 0):.4g} p95={q.get("0.95", 0):.4g} '
            f'(below {h["below"]}, above {h["above"]} outside the plotted range)</figcaption></figure>')


def scatter(points: list, title: str) -> str:
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (W - 10) / ((x1 - x0) or 1)
    sy = (H * 2 - 30) / ((y1 - y0) or 1)
    dots = "".join(f'<circle cx="{5 + (x - x0) * sx:.1f}" cy="{20 + (y - y0) * sy:.1f}" r="2" '
                   f'fill="{PALETTE[int(c) % 10]}"/>' for x, y, c in (p[:3] for p in points))
    return (f'<svg role="img" aria-label="{_e(title)}" width="{W}" height="{H * 2}"><text x="0" y="12" '
            f'class="t">{_e(title)}</text>{dots}</svg>')


def _table(rows: list[list], head: list[str]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _extra(extra: dict) -> str:
    out = []
    sizes = extra.get("cluster_sizes") or extra.get("sizes")
    if sizes:
        items = sorted(sizes.items(), key=lambda kv: -kv[1]) if isinstance(sizes, dict) else list(enumerate(sizes))
        out.append(bar_chart([f"cluster {k}" for k, _ in items[:30]], [v for _, v in items[:30]], "cluster sizes"))
    if extra.get("top_terms"):
        terms = extra["top_terms"]
        items = terms.items() if isinstance(terms, dict) else enumerate(terms)
        out.append(_table([[k, ", ".join(v[:8]) if isinstance(v, list) else v] for k, v in list(items)[:30]],
                          ["cluster", "top terms"]))
    if extra.get("map_2d"):
        out.append(scatter(extra["map_2d"], "2-D map of documents (PCA), coloured by cluster"))
    for key in ("mixture", "weights"):
        if isinstance(extra.get(key), dict) and extra[key]:
            vals = {k: v for k, v in extra[key].items() if isinstance(v, (int, float))}
            out.append(bar_chart(list(vals), list(vals.values()), f"{key}"))
    rest = {k: v for k, v in extra.items() if k not in ("cluster_sizes", "sizes", "top_terms", "map_2d")}
    if rest:
        out.append(f"<details><summary>stage details</summary><pre>{_e(json.dumps(rest, indent=1, default=str)[:20000])}</pre></details>")
    return "".join(out)


CSS = """body{font:14px system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}.t{font:bold 12px sans-serif}.l{font:11px sans-serif}
section{border-top:2px solid #4e79a7;margin-top:24px}.hist{display:inline-block;margin:6px 12px 6px 0;
vertical-align:top;max-width:440px;font-size:11px}.ok{color:#2a7}.bad{color:#c22}"""


def render_html(summary: dict, stages: list[dict]) -> str:
    c = summary["conservation"]
    rows = [[s["stage"], s["kind"], s["rows_in"], s["rows_out"], s["rows_rejected"], f"{s['wall_s']:.2f}",
             f"{s['rows_per_s']:.0f}" if s.get("rows_per_s") else "-"] for s in stages]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tamis report: {_e(summary['job'])}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>tamis report: {_e(summary['job'])}</h1><p>{_e(summary['run_dir'])} · {summary['wall_s']:.1f} s</p>",
             f"<p class='{'ok' if c['holds'] else 'bad'}' id='conservation'>Conservation "
             f"{'holds' if c['holds'] else 'BROKEN'}: {_e(c['equation'])}</p>",
             _table(rows, ["stage", "kind", "rows in", "rows out", "rejected", "wall s", "rows/s"]),
             bar_chart([s["stage"] for s in stages], [s["rows_out"] for s in stages], "rows kept after each stage")]
    prov = summary.get("provenance", {}).get("by_license", {})
    if prov:
        parts.append("<h2>Provenance of the curated output</h2>" + _table(
            [[k, v["rows"], v["tokens"]] for k, v in prov.items()], ["licence", "rows", "tokens"]))
    if summary.get("warnings") or summary.get("quarantine_errors"):
        parts.append("<h2>Input problems</h2>" + _table(
            [[k, v] for k, v in summary.get("quarantine_errors", {}).items()], ["quarantined: error", "rows"]) +
            "".join(f"<p>{_e(w)}</p>" for w in summary.get("warnings", [])[:50]))
    for s in stages:
        parts.append(f"<section id='stage-{_e(s['stage'])}'><h2>{s['index']}. {_e(s['stage'])} "
                     f"<small>({_e(s['class'])})</small></h2>"
                     f"<p>{s['rows_in']} in → {s['rows_out']} out ({s['rows_rejected']} rejected), "
                     f"{s['wall_s']:.2f} s wall, {s['cpu_s']:.2f} s CPU</p>")
        if s["keep"]:
            parts.append(_table([[k, v] for k, v in s["keep"].items()], ["rule (reject reason)", "keep if"]))
        if s["rejections"]:
            parts.append(bar_chart(list(s["rejections"])[:20], list(s["rejections"].values())[:20],
                                   "rejections by reason"))
        parts.extend(histogram(col, st) for col, st in s["scores"].items())
        ex = s["examples"]
        parts.append(f"<p>examples kept: {_e(', '.join(ex['kept']))}</p>")
        parts.append(_extra(s.get("extra", {})))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
