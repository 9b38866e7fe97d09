"""`tamis report RUN --html OUT.html`: one self-contained page (inline SVG and plain JavaScript, no
network, no external assets) to decide keep thresholds with.

Per stage: its rules, rejections by reason, a histogram of every numeric score column (kept and
rejected rows stacked, log-scaled bins when the values span decades, the keep thresholds of the rules
drawn as vertical lines with their values), true/false counts of boolean columns, rejected examples per
reason with text snippets and the values the failing rule read, kept examples, and stage figures
(clusters paged, never cut). On top: the provenance of the curated output (licence, source, domain) and
a what-if panel: a slider and an exact number per threshold; the page recomputes kept rows, tokens and
source shares from the score columns embedded in it, with the rules of `tamis report --what-if`.
`?whatif=STAGE.RULE=EXPR` in the page's address sets thresholds on load (same syntax as the CLI).
"""
from __future__ import annotations

import html
import json
import math

W, H = 540, 240
ML, MR, MT, MB = 58, 40, 34, 44  # histogram margins: room for every tick label in full
PAGE = 25  # rows per page of long tables
CLUSTER_PAGE = 10  # duplicate clusters (expandable blocks) per page
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac"]
KEPT, REJECTED, LINE = "#4e79a7", "#f28e2b", "#c0392b"
CHAR_W = 7.0  # px per character of the 12px label font, generous: widths are computed, never cut


def _e(x) -> str:
    return html.escape(str(x))


def fmt(v) -> str:
    """A number in full: integers (and integral floats up to 1e15) with every digit, others to 4
    significant digits."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int) or (isinstance(v, float) and math.isfinite(v) and v == int(v) and abs(v) < 1e15):
        return str(int(v))
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.4g}"


def _svg(width: float, height: float, label: str, body: str, cls: str = "chart", extra: str = "") -> str:
    return (f'<svg class="{cls}" role="img" aria-label="{_e(label)}" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'width="{width:.0f}" height="{height:.0f}"{extra}>{body}</svg>')


def bar_chart(labels: list[str], values: list[float], title: str, width: int = 420) -> str:
    """Horizontal bars, one per label; the label column is as wide as the longest label."""
    if not values:
        return ""
    top = max(values) or 1
    row = 20
    lw = max(len(str(lab)) for lab in labels) * CHAR_W + 12
    vw = max(len(fmt(v)) for v in values) * CHAR_W + 10
    height = row * len(values) + 26
    parts = [f'<text x="0" y="14" class="t">{_e(title)}</text>']
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = 22 + i * row
        w = max(1.0, width * v / top)
        parts.append(f'<text x="0" y="{y + 13}" class="l">{_e(lab)}</text>'
                     f'<rect x="{lw:.0f}" y="{y}" width="{w:.1f}" height="{row - 5}" fill="{PALETTE[i % 10]}"/>'
                     f'<text x="{lw + w + 4:.1f}" y="{y + 13}" class="l">{fmt(v)}</text>')
    return _svg(lw + width + vw, height, title, "".join(parts))


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        ts = [10.0 ** e for e in range(math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9) + 1)]
        return ts if len(ts) >= 2 else [lo, hi]
    raw = (hi - lo) / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _ops(op: str) -> str:
    return {">=": "≥", "<=": "≤", ">": ">", "<": "<"}.get(op, op)


def histogram(col: str, stats: dict, stage: str = "") -> str:
    """One score column: kept and rejected rows stacked per bin, axes with ticks, the thresholds."""
    head = f'<div class="hname">{_e(col)}</div>'
    if stats.get("values"):  # a boolean column: counts of true and false
        v = stats["values"]
        rows = [[k, v[k]["rows"], v[k]["kept"], v[k]["rows"] - v[k]["kept"]] for k in ("true", "false")]
        return (f'<figure class="hist" data-column="{_e(col)}">{head}'
                f'{_table(rows, ["value", "rows", "kept", "rejected here"])}'
                f'<figcaption>boolean column: {stats["count"]} values, {stats["nulls"]} nulls</figcaption></figure>')
    h = stats.get("histogram")
    if not h:
        return f'<figure class="hist" data-column="{_e(col)}">{head}<p>no values</p></figure>'
    counts, edges = h["counts"], h["edges"]
    kept = h.get("counts_kept", counts)
    log = h.get("scale") == "log"
    lo, hi = edges[0], edges[-1]
    pw, ph = W - ML - MR, H - MT - MB

    def x(v: float) -> float:
        if hi == lo:
            return ML + pw / 2
        v = min(max(v, lo), hi)
        f = (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) if log else (v - lo) / (hi - lo)
        return ML + pw * f

    top = max(counts) or 1
    yt = _ticks(0, top, False) if top >= 5 else list(range(0, top + 1))
    top = max(top, yt[-1])

    def y(c: float) -> float:
        return MT + ph - ph * c / top

    parts = []
    for t in yt:  # y axis
        parts.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="grid"/>'
                     f'<text x="{ML - 5}" y="{y(t) + 4:.1f}" class="l" text-anchor="end">{fmt(t)}</text>')
    for i, c in enumerate(counts):
        x0, x1 = x(edges[i]), x(edges[i + 1])
        k = kept[i]
        tip = f"[{fmt(edges[i])}, {fmt(edges[i + 1])}): {c} rows, {k} kept, {c - k} rejected here"
        parts.append(f'<g><title>{_e(tip)}</title>'
                     f'<rect x="{x0:.1f}" y="{y(k):.1f}" width="{max(0.5, x1 - x0 - 1):.1f}" '
                     f'height="{MT + ph - y(k):.1f}" fill="{KEPT}"/>'
                     f'<rect x="{x0:.1f}" y="{y(c):.1f}" width="{max(0.5, x1 - x0 - 1):.1f}" '
                     f'height="{y(k) - y(c):.1f}" fill="{REJECTED}"/></g>')
    parts.append(f'<line x1="{ML}" x2="{ML + pw}" y1="{MT + ph}" y2="{MT + ph}" class="axis"/>'
                 f'<line x1="{ML}" x2="{ML}" y1="{MT}" y2="{MT + ph}" class="axis"/>')
    for t in _ticks(lo, hi, log) if hi > lo else [lo]:  # x axis: labels in full, anchored to stay inside
        xt = x(t)
        anchor = "end" if xt > W - 30 else "start" if xt < ML + 10 and len(fmt(t)) * CHAR_W / 2 > ML else "middle"
        parts.append(f'<line x1="{xt:.1f}" x2="{xt:.1f}" y1="{MT + ph}" y2="{MT + ph + 4}" class="axis"/>'
                     f'<text x="{xt:.1f}" y="{MT + ph + 16}" class="l" text-anchor="{anchor}">{fmt(t)}</text>')
    parts.append(f'<text x="{ML + pw / 2:.1f}" y="{H - 6}" class="l" text-anchor="middle">'
                 f'value{" (log scale)" if log else ""}</text>'
                 f'<text x="12" y="{MT + ph / 2:.1f}" class="l" text-anchor="middle" '
                 f'transform="rotate(-90 12 {MT + ph / 2:.1f})">rows</text>')
    # legend
    parts.append(f'<rect x="{ML}" y="6" width="10" height="10" fill="{KEPT}"/>'
                 f'<text x="{ML + 14}" y="15" class="l">kept</text>'
                 f'<rect x="{ML + 52}" y="6" width="10" height="10" fill="{REJECTED}"/>'
                 f'<text x="{ML + 66}" y="15" class="l">rejected at this stage</text>')
    if stats.get("thresholds"):
        parts.append(f'<line x1="{ML + 210}" x2="{ML + 210}" y1="5" y2="17" stroke="{LINE}" stroke-dasharray="3,2" '
                 f'stroke-width="2"/><text x="{ML + 216}" y="15" class="l">keep threshold</text>')
    notes = []
    for j, m in enumerate(stats.get("thresholds", [])):
        t = m["value"]
        inside = lo <= t <= hi
        xt = x(t)
        label = f'{_ops(m["op"])} {fmt(t)}' + ("" if inside else " (beyond the plot)")
        anchor = "end" if xt > W - 80 else "start"
        dx = -3 if anchor == "end" else 3
        parts.append(f'<line class="threshold" data-stage="{_e(stage)}" data-rule="{_e(m["rule"])}" '
                     f'data-column="{_e(col)}" data-op="{_e(m["op"])}" data-value="{t!r}" '
                     f'data-inside="{int(inside)}" x1="{xt:.1f}" x2="{xt:.1f}" y1="{MT - 6}" y2="{MT + ph}" '
                     f'stroke="{LINE}" stroke-width="2" stroke-dasharray="5,3"><title>{_e(m["rule"])}: keep if '
                     f'{_e(col)} {_e(m["op"])} {fmt(t)}</title></line>'
                     f'<text class="tlabel" x="{xt + dx:.1f}" y="{MT + 6 + 13 * j}" text-anchor="{anchor}">'
                     f'{_e(label)}</text>')
        if not inside:
            notes.append(f'{_e(m["rule"])} keeps {_ops(m["op"])} {fmt(t)}, outside the values')
    q = stats.get("quantiles", {})
    svg = _svg(W, H, f"histogram of {col}", "".join(parts), cls="chart histsvg",
               extra=f' data-lo="{lo!r}" data-hi="{hi!r}" data-scale="{"log" if log else "linear"}" '
                     f'data-x0="{ML}" data-x1="{ML + pw}"')
    return (f'<figure class="hist" data-column="{_e(col)}">{head}{svg}'
            f'<figcaption>n={stats["count"]} nulls={stats["nulls"]} mean={fmt(stats.get("mean"))} '
            f'median={fmt(q.get("0.5"))} p5={fmt(q.get("0.05"))} p95={fmt(q.get("0.95"))}; '
            f'outside the plot: {h["below"]} below, {h["above"]} above'
            f'{"; sampled 1 row in " + str(stats["sample_every"]) + " for the range" if stats.get("sample_every") else ""}'
            f'{"".join("<br>" + n for n in notes)}</figcaption></figure>')


def scatter(points: list, title: str) -> str:
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (W - 10) / ((x1 - x0) or 1)
    sy = (H * 2 - 30) / ((y1 - y0) or 1)
    dots = "".join(f'<circle cx="{5 + (x - x0) * sx:.1f}" cy="{20 + (y - y0) * sy:.1f}" r="2" '
                   f'fill="{PALETTE[int(c) % 10]}"/>' for x, y, c in (p[:3] for p in points))
    return _svg(W, H * 2, title, f'<text x="0" y="12" class="t">{_e(title)}</text>{dots}')


def _table(rows: list[list], head: list[str], cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td class='n'>{_e(fmt(c) if isinstance(c, (int, float)) else c)}</td>" if isinstance(c, (int, float)) or (
        isinstance(c, str) and c.rstrip("%").replace(".", "", 1).isdigit()) else f"<td>{_e(c)}</td>" for c in r)
                   + "</tr>" for r in rows)
    return f"<table class='{cls}'><tr>{th}</tr>{body}</table>"


def paged_table(rows: list[list], head: list[str], what: str) -> str:
    """Every row in the page; the script shows PAGE at a time with page buttons (all rows without it)."""
    count = f"<p class='count'>{len(rows)} {_e(what)}</p>"
    if len(rows) <= PAGE:
        return count + _table(rows, head)
    return (f"<div class='paged' data-page='{PAGE}'>{count}{_table(rows, head)}"
            f"<p class='pager'><button type='button' class='prev'>previous</button> <span class='pos'></span> "
            f"<button type='button' class='next'>next</button></p></div>")


def _share_rows(groups: dict) -> list[list]:
    total = sum(v["rows"] for v in groups.values()) or 1
    return [[k, v["rows"], f"{100 * v['rows'] / total:.1f}%", v["tokens"]]
            for k, v in sorted(groups.items(), key=lambda kv: -kv[1]["rows"])]


def _extra(extra: dict) -> str:
    out = []
    sizes = extra.get("cluster_sizes") or extra.get("sizes")
    if sizes:
        items = sorted(sizes.items(), key=lambda kv: -kv[1]) if isinstance(sizes, dict) else \
            sorted(enumerate(sizes), key=lambda kv: -kv[1])
        terms = extra.get("top_terms") or {}
        quality = extra.get("mean_quality") or []
        rows = []
        for k, v in items:
            t = terms.get(str(k), []) if isinstance(terms, dict) else (terms[int(k)] if int(k) < len(terms) else [])
            mq = quality[int(k)] if isinstance(quality, list) and str(k).isdigit() and int(k) < len(quality) else None
            rows.append([f"cluster {k}", v, fmt(mq), ", ".join(t) if isinstance(t, list) else t])
        shown = items[:30]
        out.append(bar_chart([f"cluster {k}" for k, _ in shown], [v for _, v in shown],
                             f"cluster sizes ({len(shown)} largest of {len(items)}; all in the table)"
                             if len(items) > 30 else "cluster sizes"))
        out.append(paged_table(rows, ["cluster", "rows", "mean quality", "top terms"], "clusters"))
    elif extra.get("top_terms"):
        terms = extra["top_terms"]
        items = terms.items() if isinstance(terms, dict) else enumerate(terms)
        out.append(paged_table([[k, ", ".join(v) if isinstance(v, list) else v] for k, v in items],
                               ["cluster", "top terms"], "clusters"))
    if extra.get("map_2d"):
        out.append(scatter(extra["map_2d"], "2-D map of documents (PCA), coloured by cluster"))
    for key in ("mixture", "weights"):
        if isinstance(extra.get(key), dict) and extra[key]:
            vals = {k: v for k, v in extra[key].items() if isinstance(v, (int, float))}
            out.append(bar_chart(list(vals), list(vals.values()), f"{key}"))
    rest = {k: v for k, v in extra.items() if k not in ("cluster_sizes", "sizes", "top_terms", "map_2d")}
    if rest:
        text = json.dumps(rest, indent=1, default=str)
        out.append(f"<details><summary>stage details ({len(text)} characters)</summary><pre>{_e(text)}</pre></details>")
    return "".join(out)


def _examples(rows: list[dict]) -> str:
    if not rows:
        return "<p>none</p>"
    items = []
    for r in rows:
        vals = ", ".join(f"{_e(k)} = {_e(fmt(v) if isinstance(v, (int, float)) else v)}" for k, v in r["values"].items())
        items.append(f"<li class='ex'><code>{_e(r['id'])}</code>{' · ' + vals if vals else ''}"
                     f"<div class='snip'>{_e(r['snippet'])}</div></li>")
    return "<ul class='examples'>" + "".join(items) + "</ul>"


def _samples(s: dict) -> str:
    sm = s.get("samples")
    if not sm:
        return f"<p>examples kept: {_e(', '.join(s['examples']['kept']))}</p>"
    parts = []
    for reason, v in sm["rejected"].items():
        rule = f" (rule <code>{_e(v['rule'])}</code>: keep if <code>{_e(v['keep_if'])}</code>)" if v.get("rule") else ""
        parts.append(f"<h4 class='reason'>rejected: {_e(reason)} · {s['rejections'].get(reason, 0)} rows{rule}</h4>"
                     + _examples(v["rows"]))
    if s["rows_out"]:
        parts.append("<h4>kept (sampled by a hash of id and stage)</h4>" + _examples(sm["kept"]))
    return "<div class='samples'>" + "".join(parts) + "</div>"


def _clusters(s: dict) -> str:
    """A dedup stage's duplicate clusters (`report.dedup_clusters`): the cluster-size histogram (bars and
    a table, numbers in full) and the largest clusters as expandable blocks, CLUSTER_PAGE per page."""
    cl = s.get("clusters")
    if not cl:
        return ""
    stage = s["stage"]
    measure = {"exact": "identical after normalisation (1.0)", "jaccard": "MinHash Jaccard to the kept document",
               "cosine": "SemDeDup cosine (highest to an earlier document of its k-means cluster)"}.get(
                   cl["similarity"], cl["similarity"])
    parts = [f"<div class='clusters' id='clusters-{_e(stage)}'><h3>Duplicate clusters</h3>"
             f"<p>{cl['clusters']} clusters, {cl['rows_removed']} rows removed by this stage as duplicates "
             f"(a cluster: the kept document and the rows removed as its duplicates). Similarity: {_e(measure)}.</p>"]
    if not cl["clusters"]:
        return parts[0] + "</div>"
    hist = sorted(((int(k), v) for k, v in cl["size_histogram"].items()))
    shown = hist[:30]
    parts.append(bar_chart([f"{k} documents" for k, _ in shown], [v for _, v in shown],
                           "clusters by size" + (f" (30 smallest sizes of {len(hist)}; all in the table)"
                                                 if len(hist) > 30 else "")))
    parts.append(paged_table([[k, v, k * v] for k, v in hist], ["cluster size (documents)", "clusters", "documents"],
                             "cluster sizes"))
    items = []
    for i, c in enumerate(cl["largest"]):
        k = c["kept"]
        rows = "".join(f"<tr><td><code>{_e(m['id'])}</code></td><td class='n'>{_e(fmt(m['similarity']))}</td>"
                       f"<td class='snip'>{_e(m['snippet'] or '')}</td></tr>" for m in c["members"])
        more = f"<p class='count'>and {c['more']} more</p>" if c["more"] else ""
        items.append(f"<details class='item cluster'{' open' if i == 0 else ''}><summary>{i + 1}. {c['size']} documents · "
                     f"kept <code>{_e(k['id'])}</code> ({_e(k['status'])})</summary>"
                     f"<div class='snip'><b>kept:</b> {_e(k['snippet'] or '')}</div>"
                     f"<table><tr><th>removed id</th><th>similarity</th><th>snippet</th></tr>{rows}</table>{more}</details>")
    title = f"<h4>the {len(items)} largest clusters</h4>"
    if len(items) <= CLUSTER_PAGE:
        parts.append(title + "".join(items))
    else:
        parts.append(f"{title}<div class='paged-list' data-page='{CLUSTER_PAGE}'><div class='items'>{''.join(items)}</div>"
                     f"<p class='pager'><button type='button' class='prev'>previous</button> <span class='pos'></span> "
                     f"<button type='button' class='next'>next</button></p></div>")
    return "".join(parts) + "</div>"


def _what_if_panel(data: dict, initial: list[str] = ()) -> str:
    rows = []
    for st in data["sliders"]:
        rows.append(f"<tr><th colspan='3' class='wi-stage'>{_e(st['stage'])}</th></tr>")
        for rule in st["rules"]:
            if not rule["simple"]:
                continue
            for j, c in enumerate(rule["comparisons"]):
                v = [x for x in data["columns"][c["column"]] if x is not None and math.isfinite(x)]
                lo, hi = (min(v), max(v)) if v else (c["value"], c["value"])
                lo, hi = min(lo, c["value"]), max(hi, c["value"])
                log = lo > 0 and hi / lo > 1000
                rows.append(
                    f"<tr><td>{_e(rule['rule'])}<br><code>{_e(c['column'])} {_e(c['op'])}</code></td>"
                    f"<td><input type='range' class='wi-range' min='0' max='1000' step='1' "
                    f"data-lo='{lo!r}' data-hi='{hi!r}' data-log='{int(log)}' aria-label='slider'></td>"
                    f"<td><input type='number' step='any' class='wi-num' data-stage='{_e(st['stage'])}' "
                    f"data-rule='{_e(rule['rule'])}' data-j='{j}' data-column='{_e(c['column'])}' "
                    f"data-op='{_e(c['op'])}' data-orig='{c['value']!r}' value='{c['value']!r}'></td></tr>")
    if not any(r.startswith("<tr><td>") for r in rows):
        return ""
    note = (f"estimated from a hash sample of {data['sample']} of the {data['rows']} stored rows (counts scaled)"
            if data["sampled"] else f"exact: all {data['rows']} stored rows are embedded in this page")
    cols = {c: [v if v is None or math.isfinite(v) else "NaN" if v != v else "Infinity" if v > 0 else "-Infinity"
                for v in vs] for c, vs in data["columns"].items()}  # JSON has no NaN: the script maps these back
    blob = json.dumps({**data, "columns": cols, "initial": list(initial)}, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return (
        "<section id='what-if'><h2>What if: move a threshold</h2>"
        "<p>Drag a slider or type a value; the page re-decides every stored row stage by stage with the rules of "
        "<code>tamis report RUN --what-if 'STAGE.RULE=EXPR'</code> (a stage whose threshold moved re-evaluates its "
        "rules on the stored scores; rows that a loosened threshold lets through never got the scores of later "
        f"stages with rules and count as <i>unknown / needs a re-run</i>). {_e(note)}. The address "
        "<code>?whatif=STAGE.RULE=EXPR</code> sets thresholds on load.</p>"
        "<p id='whatif-msg' class='bad'></p>"
        "<div class='wi-grid'><div class='scroll'><table class='sliders'><tr><th>rule: keep if</th><th>slider</th><th>threshold</th></tr>"
        + "".join(rows) + "</table></div>"
        "<div class='wi-out'><table id='wi-result'><tr><th></th><th>before</th><th>after</th><th>change</th></tr>"
        "<tr><td>kept rows</td><td id='wi-kept-before'></td><td id='wi-kept-after' data-value=''></td>"
        "<td id='wi-kept-change'></td></tr>"
        "<tr><td>kept tokens</td><td id='wi-tokens-before'></td><td id='wi-tokens-after'></td><td id='wi-tokens-change'></td></tr>"
        "<tr><td>unknown / needs a re-run</td><td>0</td><td id='wi-unknown' data-value=''></td><td></td></tr>"
        "</table><table id='wi-stages'></table><table id='wi-sources'></table></div></div>"
        f"<script id='whatif-data' type='application/json'>{blob}</script></section>")


JS = r"""
(function(){
if (new URLSearchParams(location.search).has('check')) window.addEventListener('load', function(){
  // ?check: list every SVG label that does not fit inside its chart (the tests read this)
  var bad = [];
  document.querySelectorAll('svg').forEach(function(svg){ var s = svg.getBoundingClientRect();
    svg.querySelectorAll('text').forEach(function(t){ var b = t.getBoundingClientRect();
      if (b.left < s.left - 1 || b.top < s.top - 1 || b.right > s.right + 1 || b.bottom > s.bottom + 1) bad.push(t.textContent); }); });
  var pre = document.createElement('pre'); pre.id = 'clip-check'; pre.dataset.clipped = bad.length;
  pre.textContent = bad.length + ' clipped labels' + (bad.length ? ': ' + bad.join(' | ') : ''); document.body.appendChild(pre);
});
document.querySelectorAll('.paged').forEach(function(div){
  var n = +div.dataset.page, rows = div.querySelectorAll('tr'), pages = Math.ceil((rows.length - 1) / n), p = 0;
  function show(){ rows.forEach(function(r, i){ if (i > 0) r.style.display = (Math.floor((i - 1) / n) === p) ? '' : 'none'; });
    div.querySelector('.pos').textContent = 'page ' + (p + 1) + ' of ' + pages + ' (' + (rows.length - 1) + ' rows)'; }
  div.querySelector('.prev').onclick = function(){ if (p > 0) { p--; show(); } };
  div.querySelector('.next').onclick = function(){ if (p < pages - 1) { p++; show(); } };
  show();
});
document.querySelectorAll('.paged-list').forEach(function(div){
  var n = +div.dataset.page, items = div.querySelector('.items').children, pages = Math.ceil(items.length / n), p = 0;
  function show(){ for (var i = 0; i < items.length; i++) items[i].style.display = (Math.floor(i / n) === p) ? '' : 'none';
    div.querySelector('.pager .pos').textContent = 'page ' + (p + 1) + ' of ' + pages + ' (' + items.length + ' clusters)'; }
  div.querySelector('.pager .prev').onclick = function(){ if (p > 0) { p--; show(); } };
  div.querySelector('.pager .next').onclick = function(){ if (p < pages - 1) { p++; show(); } };
  show();
});
var el = document.getElementById('whatif-data');
if (!el) return;
var D = JSON.parse(el.textContent);
function num(v){ return v === 'NaN' ? NaN : v === 'Infinity' ? Infinity : v === '-Infinity' ? -Infinity : v; }
Object.keys(D.columns).forEach(function(c){ D.columns[c] = D.columns[c].map(num); });
var nums = Array.prototype.slice.call(document.querySelectorAll('.wi-num'));
var ranges = Array.prototype.slice.call(document.querySelectorAll('.wi-range'));
function pass(v, op, t){  // polars: a null fails the rule, NaN is above every number
  if (v === null || v === undefined) return false;
  if (Number.isNaN(v)) return op.charAt(0) === '>';
  return op === '>=' ? v >= t : op === '<=' ? v <= t : op === '>' ? v > t : v < t;
}
function fmt(x){ return Math.round(x).toLocaleString('en-US').replace(/,/g, ''); }
function compute(){
  var n = D.stages.length, changed = {}, thr = {};
  nums.forEach(function(i){ var v = parseFloat(i.value); thr[i.dataset.stage + '\x1f' + i.dataset.rule + '\x1f' + i.dataset.j] = v;
    if (v !== parseFloat(i.dataset.orig)) changed[i.dataset.stage] = true; });
  var slid = {}; D.sliders.forEach(function(s){ slid[s.index] = s; });
  var scale = D.sampled ? D.rows / D.sample : 1, m = D.old.length;
  var keptB = 0, keptA = 0, tokB = 0, tokA = 0, unknown = 0, rejB = new Array(n).fill(0), rejA = new Array(n).fill(0);
  var srcB = new Array(D.sources.length).fill(0), srcA = srcB.slice(), srcU = srcB.slice();
  for (var i = 0; i < m; i++) {
    var old = D.old[i], d = n;
    for (var k = 0; k < n; k++) {
      var s = slid[k];
      if (s && changed[s.stage]) {
        if (old >= k) {
          var fail = false;
          for (var r = 0; r < s.rules.length && !fail; r++) {
            var rule = s.rules[r];
            if (rule.simple) { for (var j = 0; j < rule.comparisons.length; j++) { var c = rule.comparisons[j];
                if (!pass(D.columns[c.column][i], c.op, thr[s.stage + '\x1f' + rule.rule + '\x1f' + j])) { fail = true; break; } } }
            else if (!D.bits[rule.bits][i]) fail = true;
          }
          if (fail) { d = k; break; }
        }
      } else if (old === k) { d = k; break; }
      if (D.needs[k] && old < k) { d = -1; break; }
    }
    if (old === n) { keptB++; tokB += D.tokens[i]; srcB[D.source[i]]++; } else rejB[old]++;
    if (d === n) { keptA++; tokA += D.tokens[i]; srcA[D.source[i]]++; }
    else if (d === -1) { unknown++; srcU[D.source[i]]++; } else rejA[d]++;
  }
  function set(id, v){ var e = document.getElementById(id); e.textContent = (D.sampled ? '≈' : '') + fmt(v * scale); e.dataset.value = fmt(v * scale); }
  set('wi-kept-before', keptB); set('wi-kept-after', keptA); set('wi-tokens-before', tokB); set('wi-tokens-after', tokA);
  set('wi-unknown', unknown);
  document.getElementById('wi-kept-change').textContent = (keptA >= keptB ? '+' : '') + fmt((keptA - keptB) * scale);
  document.getElementById('wi-tokens-change').textContent = (tokA >= tokB ? '+' : '') + fmt((tokA - tokB) * scale);
  var h = '<tr><th>rejected at</th><th>before</th><th>after</th></tr>';
  for (var k2 = 0; k2 < n; k2++) if (rejB[k2] || rejA[k2]) h += '<tr><td>' + D.stages[k2] + (slid[k2] && changed[D.stages[k2]] ? ' *' : '') +
    '</td><td>' + fmt(rejB[k2] * scale) + '</td><td>' + fmt(rejA[k2] * scale) + '</td></tr>';
  document.getElementById('wi-stages').innerHTML = h;
  var t = '<tr><th>source</th><th>share before</th><th>share after</th><th>kept after</th><th>unknown</th></tr>';
  D.sources.forEach(function(src, q){ t += '<tr><td>' + src.replace(/&/g, '&amp;').replace(/</g, '&lt;') + '</td><td>' + (keptB ? (100 * srcB[q] / keptB).toFixed(1) : '0.0') +
    '%</td><td>' + (keptA ? (100 * srcA[q] / keptA).toFixed(1) : '0.0') + '%</td><td>' + fmt(srcA[q] * scale) + '</td><td>' + fmt(srcU[q] * scale) + '</td></tr>'; });
  document.getElementById('wi-sources').innerHTML = t;
  nums.forEach(function(i){ document.querySelectorAll('line.threshold').forEach(function(l){
    if (l.dataset.stage !== i.dataset.stage || l.dataset.rule !== i.dataset.rule || l.dataset.column !== i.dataset.column || l.dataset.op !== i.dataset.op) return;
    var svg = l.ownerSVGElement, lo = +svg.dataset.lo, hi = +svg.dataset.hi, v = Math.min(Math.max(parseFloat(i.value), lo), hi);
    var f = svg.dataset.scale === 'log' ? (Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) : (v - lo) / (hi - lo);
    var x = +svg.dataset.x0 + f * (+svg.dataset.x1 - +svg.dataset.x0);
    l.setAttribute('x1', x); l.setAttribute('x2', x); l.dataset.current = i.value;
    var lab = l.nextElementSibling; if (lab && lab.classList.contains('tlabel')) { lab.setAttribute('x', x + (lab.getAttribute('text-anchor') === 'end' ? -3 : 3));
      lab.textContent = lab.textContent.replace(/^(\S+) \S+/, '$1 ' + i.value); } }); });
}
function toRange(num, rg){ var lo = +rg.dataset.lo, hi = +rg.dataset.hi, v = parseFloat(num.value);
  if (hi === lo) { rg.value = 500; return; }
  var f = rg.dataset.log === '1' ? (Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo)) : (v - lo) / (hi - lo);
  rg.value = Math.round(1000 * Math.min(Math.max(f, 0), 1)); }
function fromRange(num, rg){ var lo = +rg.dataset.lo, hi = +rg.dataset.hi, f = rg.value / 1000;
  var v = rg.dataset.log === '1' ? Math.pow(10, Math.log10(lo) + f * (Math.log10(hi) - Math.log10(lo))) : lo + f * (hi - lo);
  num.value = +v.toPrecision(4); }
nums.forEach(function(num, q){ var rg = ranges[q]; toRange(num, rg);
  rg.addEventListener('input', function(){ fromRange(num, rg); compute(); });
  num.addEventListener('input', function(){ toRange(num, rg); compute(); }); });
var msgs = [];
var asked = new URLSearchParams(location.search).getAll('whatif');
(asked.length ? asked : D.initial).forEach(function(spec){
  var eq = spec.indexOf('='), target = spec.slice(0, eq).trim(), expr = spec.slice(eq + 1), dot = target.indexOf('.');
  var stage = target.slice(0, dot), rule = target.slice(dot + 1);
  var mine = nums.filter(function(i){ return i.dataset.stage === stage && i.dataset.rule === rule; });
  var parts = expr.split(/\s+and\s+/), ok = eq > 0 && dot > 0 && mine.length === parts.length, vals = [];
  parts.forEach(function(p){ var mm = /^\s*([A-Za-z_]\w*)\s*(>=|<=|>|<)\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)\s*$/.exec(p);
    var hit = mm && mine.filter(function(i){ return i.dataset.column === mm[1] && i.dataset.op === mm[2]; })[0];
    if (!hit) ok = false; else vals.push([hit, mm[3]]); });
  if (!ok) { msgs.push('cannot set ' + spec + ' in the page (not a simple threshold of a slider); use tamis report --what-if'); return; }
  vals.forEach(function(hv){ hv[0].value = hv[1]; toRange(hv[0], ranges[nums.indexOf(hv[0])]); });
});
document.getElementById('whatif-msg').textContent = msgs.join('; ');
compute();
})();
"""

CSS = """body{font:14px system-ui,sans-serif;margin:24px;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f3f3f3}td.n,#what-if td{text-align:right}#what-if td:first-child{text-align:left}td code{white-space:nowrap}
.t{font:bold 13px sans-serif}.l{font:12px sans-serif}.tlabel{font:bold 12px sans-serif;fill:#c0392b}
.grid{stroke:#eee}.axis{stroke:#555}svg.chart{max-width:100%;height:auto;display:block}
section{border-top:2px solid #4e79a7;margin-top:24px}.hist{display:inline-block;margin:6px 12px 6px 0;
vertical-align:top;max-width:100%;width:540px;font-size:12px}.hname{font-weight:bold;overflow-wrap:anywhere}
.ok{color:#2a7}.bad{color:#c22}.snip{color:#444;font-size:12px;margin:2px 0 6px 0;white-space:normal;
overflow-wrap:anywhere}.examples{padding-left:18px}h4.reason{overflow-wrap:anywhere;margin-bottom:2px}
.wi-grid{display:flex;flex-wrap:wrap;gap:16px}#what-if .sliders td{text-align:left}.sliders input[type=range]{width:140px}
.sliders input[type=number]{width:90px}.scroll{overflow-x:auto}.wi-out{position:sticky;top:0;align-self:flex-start;background:#fff}th.wi-stage{text-align:left;background:#e4ecf5}.count{margin:4px 0;color:#555}.prov{display:flex;flex-wrap:wrap;gap:24px}
details.cluster{margin:4px 0;border:1px solid #ddd;padding:4px 8px}details.cluster summary{cursor:pointer;overflow-wrap:anywhere}
.clusters td.snip{max-width:60ch}"""


def render_html(summary: dict, stages: list[dict], what_if: dict | None = None, initial: list[str] = ()) -> str:
    """The page. `what_if`: `report.what_if_data` (no what-if panel without it); `initial`: `STAGE.RULE=EXPR`
    changes the sliders start from (`tamis report --html --what-if`; `?whatif=` in the address wins)."""
    c = summary["conservation"]
    rows = [[s["stage"], s["kind"], s["rows_in"], s["rows_out"], s["rows_rejected"], f"{s['wall_s']:.2f}",
             f"{s['rows_per_s']:.0f}" if s.get("rows_per_s") else "-"] for s in stages]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>tamis report: {_e(summary['job'])}</title>"
             f"<meta name='viewport' content='width=device-width'><style>{CSS}</style></head><body>",
             f"<h1>tamis report: {_e(summary['job'])}</h1><p>{_e(summary['run_dir'])} · {summary['wall_s']:.1f} s</p>",
             f"<p class='{'ok' if c['holds'] else 'bad'}' id='conservation'>Conservation "
             f"{'holds' if c['holds'] else 'BROKEN'}: {_e(c['equation'])}</p>",
             _table(rows, ["stage", "kind", "rows in", "rows out", "rejected", "wall s", "rows/s"]),
             bar_chart([s["stage"] for s in stages], [s["rows_out"] for s in stages], "rows kept after each stage")]
    if what_if:
        parts.append(_what_if_panel(what_if, initial))
    prov = summary.get("provenance", {})
    if any(prov.values()):
        unit = (summary.get("tokens") or {}).get("unit", "whitespace-separated words")
        parts.append("<section id='provenance'><h2>Provenance of the curated output</h2>"
                     f"<p id='token-unit'>tokens: {_e(unit)}</p><div class='prov'>")
        for key, name in (("by_license", "licence"), ("by_source", "source"), ("by_domain", "domain")):
            if prov.get(key):
                parts.append(f"<div id='prov-{name}'><h3>by {name}</h3>" + paged_table(
                    _share_rows(prov[key]), [name, "rows", "share", "tokens"], f"{name}s") + "</div>")
        parts.append("</div></section>")
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
            parts.append(_table([[k, v, s["rejections"].get(k, 0)] for k, v in s["keep"].items()],
                                ["rule (reject reason)", "keep if", "rows rejected"]))
        if s["rejections"]:
            reasons = list(s["rejections"])
            parts.append(bar_chart(reasons[:30], list(s["rejections"].values())[:30],
                                   "rejections by reason" + (f" (30 commonest of {len(reasons)})" if len(reasons) > 30 else "")))
        parts.extend(histogram(col, st, s["stage"]) for col, st in s["scores"].items())
        parts.append(_samples(s))
        parts.append(_clusters(s))
        parts.append(_extra(s.get("extra", {})))
        parts.append("</section>")
    parts.append(f"<script>{JS}</script></body></html>")
    return "\n".join(parts)
