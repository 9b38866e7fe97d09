"""`tamis report RUN_DIR [--html OUT.html] [--json]`."""
from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="print a run's per-stage table, or write an HTML report")
    p.add_argument("run_dir", type=Path, help="the run folder of `tamis run` (its output)")
    p.add_argument("--html", type=Path, metavar="OUT.html", help="write a self-contained page with plots")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from tamis.pipeline.report import format_table, load_reports

    try:
        summary, stages = load_reports(args.run_dir)
    except FileNotFoundError as e:
        print(f"tamis: error: {e}")
        return 2
    if args.json:
        print(json.dumps({"summary": summary, "stages": stages}, indent=1))
    else:
        print(format_table(summary, stages))
    if args.html:
        from tamis.pipeline.html_report import render_html
        args.html.write_text(render_html(summary, stages))
        print(f"wrote {args.html}")
    return 0
