"""Reports to decide thresholds with: histogram data (kept/rejected per bin, thresholds, log bins),
examples with snippets, `tamis report --what-if`, and the HTML page driven in headless Chromium
(every label in full, thresholds drawn, the what-if slider agrees with the CLI, screenshots)."""
import json
import shutil
import struct
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import polars as pl
import pytest

from tamis.pipeline.cli import main
from tamis.pipeline.html_report import render_html
from tamis.pipeline.report import (load_reports, parse_what_if, rule_thresholds, what_if, what_if_data,
                                   WhatIfError)
from tamis.pipeline.rules import compile_rules
from tamis.pipeline.runner.job import run_job
from tamis.pipeline.spec import load_job

REPO = Path(__file__).resolve().parents[2]
GQ = "gopher_quality"
TIGHTER = f"{GQ}.gopher_quality_short_doc=gopher_quality_word_count >= 100"
LOOSER = f"{GQ}.gopher_quality_short_doc=gopher_quality_word_count >= 20"


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory):
    """One real run (1,384 documents of data/sample) shared by the module."""
    d = tmp_path_factory.mktemp("rephtml")
    job = d / "job.yaml"
    job.write_text(f"name: report-html\ninputs: [{REPO / 'data' / 'sample' / 'part-0.parquet'}]\nstages:\n"
                   "  - use: gopher_quality\n    keep: default\n"
                   "  - use: gopher_repetition\n    keep: default\n"
                   "  - use: filter\n    name: licences\n"
                   "    keep: {'licence_not_allowed:{license}': \"license not in ['WordNet-3.0 (BSD-like)']\"}\n"
                   "  - use: exact_dedup\n    keep: default\n")
    run_job(load_job(job, output=str(d / "run")), progress=False)
    return d / "run"


def outputs(run: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(run / "curated"), pl.read_parquet(run / "rejected")], how="diagonal_relaxed")


def test_rule_thresholds_parse_simple_comparisons_only():
    assert rule_thresholds("x >= 50") == {"comparisons": [{"column": "x", "op": ">=", "value": 50}], "simple": True}
    assert rule_thresholds("0.1 > y and y <= 3") == {"comparisons": [
        {"column": "y", "op": "<", "value": 0.1}, {"column": "y", "op": "<=", "value": 3}], "simple": True}
    assert rule_thresholds("-5 < z < 5")["comparisons"] == [{"column": "z", "op": ">", "value": -5},
                                                            {"column": "z", "op": "<", "value": 5}]
    assert rule_thresholds("a >= 1 and lang in ['en']") == {
        "comparisons": [{"column": "a", "op": ">=", "value": 1}], "simple": False}
    assert rule_thresholds("x is not None") == {"comparisons": [], "simple": False}
    assert rule_thresholds("a > b")["comparisons"] == [] and rule_thresholds("((")["simple"] is False


def test_histograms_split_kept_and_rejected_with_thresholds(run):
    _, stages = load_reports(run)
    names = [s["stage"] for s in stages]
    out = outputs(run)
    for k, s in enumerate(stages):
        live = out.filter(pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(names[k:]))
        kept = live.filter(pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(names[k + 1:]))
        for col, st in s["scores"].items():
            if live[col].dtype == pl.Boolean:  # true/false counts instead of a histogram
                assert "histogram" not in st
                assert st["values"]["true"] == {"rows": int(live[col].sum()), "kept": int(kept[col].sum())}
                continue
            v, vk = (f[col].cast(pl.Float64).fill_nan(None).drop_nulls() for f in (live, kept))
            h = st["histogram"]
            assert sum(h["counts"]) + h["below"] + h["above"] == v.len()
            assert sum(h["counts_kept"]) + h["below_kept"] + h["above_kept"] == vk.len()
            assert all(0 <= a <= b for a, b in zip(h["counts_kept"], h["counts"]))
            log = v.min() > 0 and v.max() / v.min() > 1000
            assert h["scale"] == ("log" if log else "linear"), col
            for m in st.get("thresholds", []):
                assert s["keep"][m["rule"]].replace(" ", "").endswith(f"{m['op']}{m['value']}")
                if v.min() <= m["value"] <= v.max():  # thresholds inside the data lie inside the plot
                    assert h["edges"][0] <= m["value"] <= h["edges"][-1]
    gq = stages[0]
    assert gq["scores"]["gopher_quality_word_count"]["histogram"]["scale"] == "log"  # 3 to ~10,000 words
    assert {m["value"] for m in gq["scores"]["gopher_quality_word_count"]["thresholds"]} == {50, 100000}
    stop = gq["scores"]["gopher_quality_stop_word_count"]["histogram"]  # small integers: one bin each
    assert all(abs(b - a - 1) < 1e-9 for a, b in zip(stop["edges"], stop["edges"][1:]))


def test_examples_carry_snippets_and_the_failing_rules_values(run):
    _, stages = load_reports(run)
    out = outputs(run).with_columns(pl.col("id").cast(pl.Utf8))
    by_id = {r["id"]: r for r in out.iter_rows(named=True)}
    kept_ids = []
    for s in stages:
        sm = s["samples"]
        for reason, v in sm["rejected"].items():
            assert 1 <= len(v["rows"]) <= 3 and reason in s["rejections"]
            cols = sorted(compile_rules({v["rule"]: s["keep"][v["rule"]]})[0].columns)
            for ex in v["rows"]:
                row = by_id[ex["id"]]
                assert row["reject_stage"] == s["stage"] and row["reject_reason"] == reason
                assert 0 < len(ex["snippet"]) <= 200 and ex["snippet"][:30] == " ".join(row["text"].split())[:30]
                assert sorted(ex["values"]) == cols
                assert all(ex["values"][c] == pytest.approx(row[c]) if isinstance(row[c], float) else
                           ex["values"][c] == row[c] for c in cols)
        assert len(sm["kept"]) == min(5, s["rows_out"])
        kept_ids.append([ex["id"] for ex in sm["kept"]])
    assert len({tuple(ids) for ids in kept_ids}) == len(kept_ids)  # every stage shows other rows
    lic = next(s for s in stages if s["stage"] == "licences")["samples"]["rejected"]
    assert lic["licence_not_allowed:WordNet-3.0 (BSD-like)"]["rule"] == "licence_not_allowed:{license}"


def _cli(run, *specs, capsys) -> dict:
    assert main(["report", str(run), "--json", *[a for s in specs for a in ("--what-if", s)]]) == 0
    return json.loads(capsys.readouterr().out)["what_if"]


def test_what_if_recomputes_from_the_stored_scores(run, capsys):
    _, stages = load_reports(run)
    names = [s["stage"] for s in stages]
    out = outputs(run)
    curated = out.filter(pl.col("reject_stage").is_null())
    t0 = time.perf_counter()
    same = _cli(run, f"{GQ}.gopher_quality_short_doc=gopher_quality_word_count >= 50", capsys=capsys)
    assert time.perf_counter() - t0 < 10
    assert same["kept"]["before"] == same["kept"]["after"] == curated.height and same["unknown"]["rows"] == 0
    assert [s["rejected_after"] for s in same["stages"]] == [s["rows_rejected"] for s in stages]

    tight = _cli(run, TIGHTER, capsys=capsys)  # only newly rejected rows: every decision is known
    want = curated.filter(pl.col("gopher_quality_word_count") >= 100)
    assert tight["kept"]["after"] == want.height < curated.height and tight["unknown"]["rows"] == 0
    assert tight["tokens"]["after"] == int(want["text"].str.count_matches(r"\S+").sum())
    assert tight["newly_rejected"] == curated.height - want.height
    share = want.group_by("source").len()
    for src, n in share.iter_rows():
        assert tight["sources"][src]["share_after"] == pytest.approx(n / want.height)

    loose = _cli(run, LOOSER, capsys=capsys)  # rows that now pass gopher_quality were never scored later
    rules = compile_rules({**stages[0]["keep"], "gopher_quality_short_doc": "gopher_quality_word_count >= 20"})
    passes = pl.all_horizontal([r.expr.fill_null(False) for r in rules])
    revived = out.filter((pl.col("reject_stage") == GQ) & passes).height
    assert loose["unknown"]["rows"] == revived > 0 and loose["unknown"]["by_stage_that_rejected_them"] == {GQ: revived}
    assert loose["kept"]["after"] == curated.height and loose["newly_kept"] == 0

    assert main(["report", str(run), "--what-if", TIGHTER]) == 0  # the printed table
    table = capsys.readouterr().out
    assert f"kept rows{' ' * 31}{curated.height:>12}{want.height:>12}" in table and "unknown / needs a re-run" in table
    for bad, hint in [("nostage.x=a > 1", "gopher_quality, gopher_repetition"),
                      (f"{GQ}.nope=a > 1", "gopher_quality_short_doc"), (f"{GQ}.gopher_quality_short_doc", "STAGE.RULE=EXPR"),
                      (f"{GQ}.gopher_quality_short_doc=(", "cannot parse")]:
        assert main(["report", str(run), "--what-if", bad]) == 2
        msg = capsys.readouterr().out
        assert msg.count("\n") == 1 and msg.startswith("tamis: error: --what-if") and hint in msg, msg
    with pytest.raises(WhatIfError, match="later stages compute"):
        what_if(run, parse_what_if([f"{GQ}.gopher_quality_short_doc=exact_group_size >= 1"], stages))
    assert names[0] == GQ


def test_what_if_page_data_is_a_hash_sample_beyond_its_limit(run):
    _, stages = load_reports(run)
    full = what_if_data(run, stages)
    assert not full["sampled"] and full["sample"] == full["rows"] == len(full["old"])
    small = what_if_data(run, stages, max_rows=300)
    assert small["sampled"] and small["rows"] == full["rows"] and 100 < small["sample"] < 600
    assert len(small["old"]) == len(small["tokens"]) == small["sample"]
    assert all(len(v) == small["sample"] for v in [*small["columns"].values(), *small["bits"].values()])
    summary, _ = load_reports(run)
    page = render_html(summary, stages, small)
    assert f"estimated from a hash sample of {small['sample']} of the {small['rows']} stored rows" in page


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_html_in_chromium_labels_thresholds_slider_and_screenshots(run, tmp_path, capsys):
    summary, stages = load_reports(run)
    # a clustering stage's report with 70 clusters: paged, never cut
    stages[-1] = {**stages[-1], "extra": {**stages[-1]["extra"], "sizes": list(range(100, 170)),
                                          "top_terms": {str(i): [f"term{i}a", f"term{i}b"] for i in range(70)}}}
    page = tmp_path / "report.html"
    page.write_text(render_html(summary, stages, what_if_data(run, stages)))
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]

    def dom(query: str, width: int = 1280) -> str:
        return subprocess.run([chromium, *flags, f"--window-size={width},2000", "--dump-dom",
                               page.as_uri() + query], capture_output=True, text=True, timeout=120).stdout

    d = dom("?check=1&whatif=" + quote(TIGHTER))
    assert '<pre id="clip-check" data-clipped="0">' in d, d[d.find("clip-check"):][:2000]  # no SVG label cut
    for s in stages:  # every label and number in full
        assert f'id="stage-{s["stage"]}"' in d
        for reason, n in s["rejections"].items():
            assert f">{reason}</text>" in d and f">{n}</text>" in d
        for col, st in s["scores"].items():
            assert f'<div class="hname">{col}</div>' in d
            for m in st.get("thresholds", []):  # the threshold line, with its value (Chromium may escape > <)
                assert any(f'<line class="threshold" data-stage="{s["stage"]}" data-rule="{m["rule"]}" '
                           f'data-column="{col}" data-op="{op}" data-value="{m["value"]!r}"' in d
                           for op in (m["op"], m["op"].replace(">", "&gt;").replace("<", "&lt;")))
        assert f"<td>{s['stage']}</td><td>{s['kind']}</td><td class=\"n\">{s['rows_in']}</td>" in d
    assert d.count('class="threshold"') == sum(len(st.get("thresholds", [])) for s in stages for st in s["scores"].values())
    assert ">gopher_repetition_duplicated_5_n_grams</text>" in d or "gopher_repetition_duplicated_5_n_grams" not in str(stages)
    for key, name in (("by_license", "licence"), ("by_source", "source"), ("by_domain", "domain")):
        assert f'id="prov-{name}"' in d and all(f"<td>{k}</td>" in d for k in summary["provenance"][key])
    assert all(f"<td>cluster {i}</td>" in d for i in range(70)) and "page 1 of 3 (70 rows)" in d
    assert "term69a, term69b" in d
    for s in stages:
        for v in s["samples"]["rejected"].values():
            for ex in v["rows"]:
                assert f"<code>{ex['id']}</code>" in d

    # the what-if slider, set from the address, counts what `tamis report --what-if` counts
    for spec in (TIGHTER, LOOSER):
        cli = _cli(run, spec, capsys=capsys)
        d = dom("?whatif=" + quote(spec)) if spec != TIGHTER else d
        assert f'id="wi-kept-after" data-value="{cli["kept"]["after"]}"' in d, spec
        assert f'id="wi-unknown" data-value="{cli["unknown"]["rows"]}"' in d, spec
        assert f'id="wi-tokens-after" data-value="{cli["tokens"]["after"]}"' in d, spec
        assert '<p id="whatif-msg" class="bad"></p>' in d
    assert "exact: all" in d and f"{summary['rows_read']} stored rows" in d
    page2 = tmp_path / "asked.html"  # `--html --what-if`: the page starts from the CLI's change
    assert main(["report", str(run), "--html", str(page2), "--what-if", LOOSER]) == 0
    assert "unknown / needs a re-run" in capsys.readouterr().out
    d2 = subprocess.run([chromium, *flags, "--dump-dom", page2.as_uri()], capture_output=True, text=True,
                        timeout=120).stdout
    assert f'id="wi-unknown" data-value="{_cli(run, LOOSER, capsys=capsys)["unknown"]["rows"]}"' in d2
    d = dom("?whatif=" + quote(f"{GQ}.gopher_quality_short_doc=len(text) > 3"))
    assert "cannot set" in d and "use tamis report --what-if" in d
    assert '<pre id="clip-check" data-clipped="0">' in dom("?check=1", 800)  # narrow window: charts scale, not cut

    for width in (1280, 800):  # screenshots at two widths
        shot = tmp_path / f"shot-{width}.png"
        subprocess.run([chromium, *flags, f"--screenshot={shot}", f"--window-size={width},1600", page.as_uri()],
                       capture_output=True, timeout=120)
        assert shot.stat().st_size > 20_000 and _png_size(shot) == (width, 1600)
