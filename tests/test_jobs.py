"""Every job in jobs/ is product: each runs end to end, as written, on the sample shipped in the repo
(from a folder laid out like a user's fresh clone: no ../shared beside it) and keeps a sensible share."""
import json
from pathlib import Path

import pytest

from tamis.pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]
JOBS = sorted(p.name for p in (REPO / "jobs").glob("*.yaml") if not p.name.startswith("_"))
# share of the sample's documents each job keeps (curated / read), with why
KEEPS = {
    "classifier.yaml": (0.25, 0.50),    # fastText keeps long-form prose and docs (36.5%), not fragments
    "quickstart.yaml": (0.10, 0.40),    # Gopher rules drop most dictionary entries and short code
    "dedup.yaml": (0.80, 1.00),         # the sample has few near-duplicates
    "decontaminate.yaml": (0.50, 1.00),  # non-English and contaminated rows only
    "diversity.yaml": (0.30, 0.60),     # budget 0.5 of what survives dedup
    "perplexity.yaml": (0.40, 0.75),    # the tail bucket (above the 60th percentile) goes
    "regmix.yaml": (0.05, 1.00),        # documents of the mixture's domains, up to the token budget
    "pii.yaml": (0.95, 1.00),           # cleaning edits text; only emptied rows, lorem ipsum and exact copies go
    "web.yaml": (0.20, 0.45),           # of 288 WARC records: redirect stubs, code-heavy pages, non-HTML go
}


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A working folder like a user's fresh clone: data/ and jobs/ of the repo, and nothing beside it
    (a job that reads ../shared, as jobs/perplexity.yaml once did, fails here)."""
    root = tmp_path_factory.mktemp("clone")
    work = root / "tamis"
    work.mkdir()
    for name in ("data", "jobs"):
        (work / name).symlink_to(REPO / name)
    return work


def test_no_job_reads_outside_the_repo():
    for p in sorted((REPO / "jobs").glob("*.yaml")):
        assert "../" not in p.read_text(), f"{p.name} reads a path outside the repo"


def test_every_job_is_listed():
    assert sorted(KEEPS) == JOBS


# The embedding job reads half the sample here (one of its two shipped files, through the CLI's
# --input), to keep the suite within its time budget: MiniLM on 2,769 documents takes ~150 s of 2 CPUs.
ARGS = {"diversity.yaml": ["--input", "data/sample/part-0.parquet"]}


@pytest.mark.parametrize("name", JOBS)
def test_job_runs_as_written(ray_session, clone, monkeypatch, name):
    monkeypatch.chdir(clone)
    assert main(["run", f"jobs/{name}", "--no-progress", *ARGS.get(name, [])]) == 0
    out = clone / "runs" / Path(name).stem
    summary = json.loads((out / "reports" / "summary.json").read_text())
    assert summary["conservation"]["holds"] and summary["completed"] and summary["quarantined"] == 0
    lo, hi = KEEPS[name]
    share = summary["curated"] / summary["rows_read"]
    assert lo <= share <= hi, f"{name} kept {share:.1%} ({summary['curated']} of {summary['rows_read']})"
