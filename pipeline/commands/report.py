"""`tamis report RUN_DIR [--html OUT.html] [--json] [--what-if STAGE.RULE=EXPR ...]`."""
from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="print a run's per-stage table, or write an HTML report")
    p.add_argument("run_dir", type=Path, help="the run folder of `tamis run` (its output)")
    p.add_argument("--html", type=Path, metavar="OUT.html",
                   help="write a self-contained page with histograms, examples and what-if sliders")
    p.add_argument("--json", action="store_true", help="print the summary (and any what-if) as JSON")
    p.add_argument("--what-if", action="append", default=[], metavar="STAGE.RULE=EXPR", dest="what_if",
                   help="re-decide the stored rows with keep rule RULE of STAGE replaced by EXPR (repeatable; "
                        "EXPR `True` switches the rule off) and print kept rows, tokens and source shares "
                        "before and after, without re-running; e.g. "
                        "'gopher_quality.gopher_quality_short_doc=gopher_quality_word_count >= 100'")
    p.set_defaults(func=run)


def run(args) -> int:
    from tamis.pipeline.report import (WhatIfError, format_table, format_what_if, load_reports, parse_what_if,
                                       what_if, what_if_data)

    try:
        summary, stages = load_reports(args.run_dir)
    except FileNotFoundError as e:
        print(f"tamis: error: {e}")
        return 2
    result = None
    if args.what_if:
        try:
            changes = parse_what_if(args.what_if, stages)
            result = what_if(args.run_dir, changes)
        except WhatIfError as e:
            print(f"tamis: error: {e}")
            return 2
    if args.json:
        print(json.dumps({"summary": summary, "stages": stages, **({"what_if": result} if result else {})}, indent=1))
    else:
        print(format_table(summary, stages))
        if result:
            print()
            print(format_what_if(result))
    if args.html:
        from tamis.pipeline.html_report import render_html
        args.html.write_text(render_html(summary, stages, what_if_data(args.run_dir, stages), args.what_if))
        print(f"wrote {args.html}")
    return 0
