"""Licence and provenance accounting: carried end to end, counted per stage, allow-list enforced."""
from pathlib import Path

import polars as pl

from tamis.pipeline.report import load_reports
from tamis.pipeline.runner.job import run_job
from tamis.pipeline.spec import load_job

REPO = Path(__file__).resolve().parents[2]


def test_licence_allow_list_and_provenance_tables(ray_session, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text(f"inputs: [{REPO / 'data' / 'sample' / 'part-0.parquet'}]\nstages:\n"
                   "  - use: filter\n    name: licences\n"
                   "    keep: {'licence_not_allowed:{license}': \"license in ['public-domain', 'GPL-2.0', 'PSF-2.0']\"}\n"
                   "  - use: exact_dedup\n    keep: default\n")
    summary = run_job(load_job(job, output=str(tmp_path / "run")), progress=False)
    _, stages = load_reports(tmp_path / "run")
    src = pl.read_parquet(REPO / "data" / "sample" / "part-0.parquet")
    allowed = src.filter(pl.col("license").is_in(["public-domain", "GPL-2.0", "PSF-2.0"]))
    lic = stages[0]
    assert sum(v["rows"] for v in lic["licenses"]["in"].values()) == src.height
    assert set(lic["licenses"]["out"]) == set(allowed["license"].unique())
    assert lic["licenses"]["in"]["WordNet-3.0 (BSD-like)"]["rows"] == src.filter(
        pl.col("license") == "WordNet-3.0 (BSD-like)").height
    assert lic["rejections"]["licence_not_allowed:WordNet-3.0 (BSD-like)"] > 0
    cur = pl.read_parquet(tmp_path / "run" / "curated")
    by_lic = dict(cur.group_by("license").len().iter_rows())
    assert {k: v["rows"] for k, v in summary["provenance"]["by_license"].items()} == by_lic
    assert set(cur["source"].unique()) <= set(allowed["source"].unique())
    assert summary["provenance"]["by_source"] and all(v["tokens"] > 0 for v in summary["provenance"]["by_source"].values())
