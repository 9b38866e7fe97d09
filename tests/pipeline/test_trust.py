"""Issue 18: a job exits 0 only when its output is right, and nothing in a run folder is executed or
trusted as a path outside it."""
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tamis.pipeline.cli import main
from tamis.pipeline.data import LocalData
from tamis.pipeline.run_folder import RunFolder
from tamis.pipeline.runner import fit_state
from tamis.pipeline.runner.job import RunFailed, run_job
from tamis.pipeline.spec import SpecError, load_job

REPO = Path(__file__).resolve().parents[2]

PLUGINS = '''
import os
import pyarrow as pa
import pyarrow.compute as pc
from tamis.pipeline.stage import GlobalStage, Scorer


class OffByOne(Scorer):
    """Returns one value too many or too few: a broken contract."""
    name = "off_by_one"
    columns = {"off_by_one_len": pa.int64()}

    def __init__(self, extra: int = 1):
        self.extra = extra

    def score(self, batch):
        return {"off_by_one_len": pa.array([1] * (batch.num_rows + self.extra), pa.int64())}


class AlwaysFails(Scorer):
    """Raises on every batch: a bug, not bad data."""
    name = "always_fails"
    columns = {"always_fails_x": pa.int64()}

    def score(self, batch):
        raise ZeroDivisionError("bug in my scorer")


class FailOnce(GlobalStage):
    """Fails its first fit (marker file): leaves a run folder half done."""
    name = "fail_once"
    requires = ("text",)
    columns = {"fail_once_len": pa.int64()}

    def __init__(self, marker: str = ""):
        self.marker = marker

    def fit(self, data):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise RuntimeError("killed during the fit")
        self.total_ = int(sum(b.num_rows for b in data.iter_batches()))
        return self

    def transform(self, batch):
        return {"fail_once_len": pc.cast(pc.utf8_length(batch["text"]), pa.int64())}
'''


@pytest.fixture(scope="module")
def docs(tmp_path_factory, corpus_dir):
    d = tmp_path_factory.mktemp("trust")
    df = pl.concat([pl.read_parquet(corpus_dir / f).head(150) for f in ("sotu.parquet", "dict-devil.parquet",
                                                                        "git-doc.parquet")], how="diagonal_relaxed")
    for i in range(3):
        df[i * 150:(i + 1) * 150].write_parquet(d / f"part-{i}.parquet")
    (d / "plug").mkdir()
    (d / "plug" / "trustplug.py").write_text(PLUGINS)
    sys.path.insert(0, str(d / "plug"))
    return d


def job(docs, tmp_path, stages: str, extra: str = "") -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(f"inputs: [{docs}]\n{extra}stages:\n{stages}")
    return p


def test_ppl_bucket_fits_cutoffs_inside_a_job(ray_session, tmp_path):
    """Case 1: the fit's view lacked `text`, every row failed an earlier stage's transform there and
    was dropped: `ppl_bucket` fitted no cutoffs and rejected everything as `ppl_missing`."""
    spec = tmp_path / "job.yaml"
    spec.write_text(f"inputs: [{REPO / 'data' / 'sample'}]\nstages:\n  - use: signals\n  - use: ppl_bucket\n"
                    "    params: {column: signals_word_count, by: domain}\n    keep: default\n")
    summary = run_job(load_job(spec, output=str(tmp_path / "run")), progress=False)
    report = json.loads(next((tmp_path / "run" / "reports").glob("*-ppl_bucket.json")).read_text())
    assert len(report["extra"]["cutoffs"]) >= 5
    assert "ppl_missing" not in report["rejections"]
    assert 0.3 < summary["curated"] / summary["rows_read"] < 0.8 and summary["conservation"]["holds"]


def test_misspelt_rule_column_fails_at_load_naming_the_closest(docs, tmp_path):
    """Case 2: caught before Ray starts, not by quarantining every row."""
    p = job(docs, tmp_path, "  - use: gopher_quality\n    keep: {short: 'gopher_quality_wordcount >= 50'}\n")
    with pytest.raises(SpecError, match=r"stages\[0\]\.keep.*'gopher_quality_wordcount'.*did you mean "
                                         r"'gopher_quality_word_count'"):
        load_job(p)
    assert main(["run", str(p), "--no-progress"]) == 2
    # an input column is fine, and so is a column of an earlier stage
    ok = job(docs, tmp_path, "  - use: signals\n  - use: filter\n    keep: {a: 'signals_word_count > 0', "
                             "b: \"domain != 'x'\"}\n")
    load_job(ok)


@pytest.mark.parametrize("extra", [1, -1])
def test_wrong_output_length_stops_the_job_naming_the_stage(ray_session, docs, tmp_path, extra):
    """Case 3: a contract error, not a quarantine of every row."""
    p = job(docs, tmp_path, f"  - class: trustplug:OffByOne\n    params: {{extra: {extra}}}\n")
    with pytest.raises(RunFailed, match="stage 'off_by_one'.*rows for a batch of") as e:
        run_job(load_job(p, output=str(tmp_path / "run")), progress=False)
    assert e.value.exit_code == 1
    assert not json.loads((tmp_path / "run" / "run.json").read_text())["completed"]
    assert not list((tmp_path / "run" / "quarantine").glob("*.parquet"))


def test_a_stage_failing_on_every_row_stops_the_job(ray_session, docs, tmp_path):
    p = job(docs, tmp_path, "  - class: trustplug:AlwaysFails\n")
    with pytest.raises(RunFailed, match="stage 'always_fails' failed on .* rows.*ZeroDivisionError: bug in my scorer"):
        run_job(load_job(p, output=str(tmp_path / "run")), progress=False)
    env = {**__import__("os").environ, "PYTHONPATH": str(docs / "plug")}
    out = subprocess.run([sys.executable, "-m", "tamis.pipeline.cli", "run", str(p), "--output",
                          str(tmp_path / "cli"), "--no-progress"], env=env, capture_output=True, text=True)
    assert out.returncode == 1 and "always_fails" in out.stderr and "Traceback" not in out.stderr


def test_conservation_is_counted_from_the_files_and_a_broken_run_is_not_complete(ray_session, docs, tmp_path,
                                                                                   monkeypatch):
    """Case 9: curated/rejected counted on disk; a run whose conservation fails exits 3, not complete."""
    from tamis.pipeline import report

    p = job(docs, tmp_path, "  - use: gopher_quality\n    keep: default\n")
    run = tmp_path / "run"
    real = report._rows_on_disk
    monkeypatch.setattr(report, "_rows_on_disk", lambda folder, part: real(folder, part) - (part == "curated"))
    with pytest.raises(RunFailed, match="conservation broken") as e:
        run_job(load_job(p, output=str(run)), progress=False)
    assert e.value.exit_code == 3
    assert not json.loads((run / "run.json").read_text())["completed"]
    assert json.loads((run / "reports" / "summary.json").read_text())["completed"] is False
    monkeypatch.setattr(report, "_rows_on_disk", real)
    summary = run_job(load_job(p, output=str(run)), progress=False)  # resumed: nothing to redo, now right
    assert summary["conservation"]["holds"] and summary["completed"]
    assert summary["curated"] == pl.scan_parquet(run / "curated" / "*.parquet").select(pl.len()).collect().item()
    sorted((run / "curated").glob("*.parquet"))[0].unlink()  # a file vanished after the run completed
    with pytest.raises(RunFailed, match="changed since its run completed.*curated") as e:
        run_job(load_job(p, output=str(run)), progress=False)
    assert main(["run", str(p), "--output", str(run), "--no-progress"]) == 3


def _half_done(docs, tmp_path, name="run") -> tuple[Path, Path]:
    marker = tmp_path / "fit-marker"
    p = job(docs, tmp_path, f"  - use: signals\n  - class: trustplug:FailOnce\n    params: {{marker: '{marker}'}}\n")
    run = tmp_path / name
    with pytest.raises(Exception, match="killed during the fit"):
        run_job(load_job(p, output=str(run)), progress=False)
    assert list((run / "_work").glob("seg-*/*.parquet")) and not (run / "reports" / "summary.json").exists()
    return p, run


def test_a_copied_half_done_run_resumes_to_the_same_output(ray_session, docs, tmp_path):
    """Case 9: manifests hold paths relative to the run folder, so a copy resumes completely."""
    p, run = _half_done(docs, tmp_path)
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(run, copy)
    shutil.rmtree(run)  # nothing of the original is left to lean on
    summary = run_job(load_job(p, output=str(copy)), progress=False)
    clean = run_job(load_job(p, output=str(tmp_path / "clean")), progress=False)
    assert summary["conservation"]["holds"] and summary["rows_read"] == 450
    assert summary["curated"] == clean["curated"] and summary["rejected"] == clean["rejected"]
    ids = sorted(pl.read_parquet(copy / "curated", columns=["id"])["id"])
    assert ids == sorted(pl.read_parquet(tmp_path / "clean" / "curated", columns=["id"])["id"])


class _Boom:
    def __reduce__(self):
        return (Path.write_text, (Path(self.target), "pwned"))


def test_resume_never_unpickles_the_run_folder(ray_session, docs, tmp_path):
    """Case 12: fitted state is data; a planted pickle is never loaded."""
    p, run = _half_done(docs, tmp_path)
    victim = tmp_path / "pwned.txt"
    boom = _Boom()
    boom.target = str(victim)
    for seg in (run / "_work").glob("seg-*"):
        for name in ("fail_once", "unique_ids"):
            (seg / f"{name}.pkl").write_bytes(pickle.dumps(boom))
    summary = run_job(load_job(p, output=str(run)), progress=False)
    assert summary["conservation"]["holds"] and not victim.exists()


def test_resume_refuses_a_manifest_entry_outside_the_run_folder(ray_session, docs, tmp_path):
    """Case 13: a planted entry naming any file is refused, the file untouched."""
    p, run = _half_done(docs, tmp_path)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    manifest = run / "_work" / "manifest" / "stream-01"
    manifest.mkdir(parents=True, exist_ok=True)
    unit = next(iter(json.loads(m.read_text())["files"] for m in (run / "_work" / "manifest" / "stream-00").glob("*.json")))[0]
    entry = {"unit": unit, "rows": 1, "files": [str(victim)], "summary": None, "stages": {}}
    (manifest / f"{RunFolder.tag(unit)}-planted.json").write_text(json.dumps(entry))
    with pytest.raises(RunFailed, match="outside the run folder") as e:
        run_job(load_job(p, output=str(run)), progress=False)
    assert e.value.exit_code == 3 and victim.read_text() == "keep me"


def test_fit_state_round_trips_as_data(tmp_path, corpus_dir):
    from tamis.scorers.dedup.minhash import MinHashDedup
    table = pl.read_parquet(corpus_dir / "dict-devil.parquet").head(300).select("id", "text").to_arrow()
    copies = table.slice(0, 40).set_column(0, "id", pa.array([f"copy-{i}" for i in range(40)], table.schema[0].type))
    table = pa.concat_tables([table, copies])
    stage = MinHashDedup()
    before = dict(vars(stage))
    stage.fit(LocalData(table))
    assert fit_state.save(tmp_path / "fit", fit_state.changed_attributes(before, stage), {"rows": 340})
    assert not list((tmp_path / "fit").glob("*.pkl"))
    fresh = MinHashDedup()
    assert fit_state.load(tmp_path / "fit", fresh) == {"rows": 340}
    assert fresh.decisions_.equals(stage.decisions_) and fresh.decisions_.num_rows >= 40
    assert pq.read_table(next((tmp_path / "fit").glob("decisions_*.parquet"))).num_rows == fresh.decisions_.num_rows
