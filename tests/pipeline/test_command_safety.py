"""Issue 18: a job exits 0 only when its output is right, and no way in through a run folder.

Refused at load: an output folder that overlaps an input (10), pathological keep rules (11), stage
names that are not plain folder names (14). `tamis submit` uploads only what the job needs (17).
"""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tamis.pipeline.spec import SpecError, load_job


@pytest.fixture
def data(tmp_path, monkeypatch):
    """A working folder with `data/a.jsonl`, as the shell's current folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"text": "one document"}\n')
    return tmp_path


def job(folder: Path, text: str) -> Path:
    p = folder / "job.yaml"
    p.write_text(text)
    return p


# -- 10: output folder inside an input folder -------------------------------------------------

@pytest.mark.parametrize("inputs, output", [
    ("[data/]", "data/run"),                # the case: --restart deleted the outputs, then crashed
    ("[data]", "data"),
    ("[data/a.jsonl]", "data"),             # the output folder would hold an input file
    ("[linked]", "data/run"),               # through a symlink
    ("[data]", "other/../data/x/../run"),   # through `..`
    ("[data/*]", "data/run"),               # a glob that matches the run folder once it exists
    ("[data/**/*.jsonl]", "data/run"),
    ("[data/a.jsonl, data]", "."),
])
def test_output_overlapping_an_input_is_refused_at_load(data, inputs, output):
    (data / "other").mkdir()
    (data / "linked").symlink_to(data / "data")
    with pytest.raises(SpecError, match=r"job.yaml: output: .*inputs\[\d\]") as e:
        load_job(job(data, f"inputs: {inputs}\noutput: {output}\n"))
    assert str((data / output).resolve()) in str(e.value)


def test_output_beside_the_inputs_loads(data):
    for output in ("runs/x", "data_run", "data-run/../datax"):
        assert load_job(job(data, f"inputs: [data/, data/*.jsonl]\noutput: {output}\n")).output.name


def test_cli_output_override_is_checked_too(data):
    with pytest.raises(SpecError, match="overlaps inputs"):
        load_job(job(data, "inputs: [data]\noutput: runs/x\n"), output=str(data / "data" / "run"))


# -- 11: pathological rules ------------------------------------------------------------------

@pytest.mark.parametrize("rule, why", [("x > " + "-" * 100_000 + "1", "characters long"),
                                       ("x > " + "-" * 5_000 + "1", "nested deeper")])
def test_pathological_rule_is_a_spec_error_naming_the_key(data, rule, why):
    with pytest.raises(SpecError, match=rf"job.yaml: stages\[1\]\.keep: rule 'r' .*{why}") as e:
        load_job(job(data, f"inputs: [data]\nstages:\n  - use: signals\n  - use: filter\n"
                           f"    keep: {{r: '{rule}'}}\n"))
    assert len(str(e.value)) < 500  # the rule is cut short in the message


# -- 14: stage names -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../escape", "a/b", "Upper", "with-dash", "x" * 65, "''", "é"])
def test_stage_names_must_be_plain_folder_names(data, name):
    with pytest.raises(SpecError, match=r"job.yaml: stages\[1\]\.name: stage name .* must be 1-64 lowercase"):
        load_job(job(data, f"inputs: [data]\nstages:\n  - use: signals\n  - use: filter\n    name: {name}\n"))


def test_a_plugin_default_name_is_checked_too(data):
    (data / "safety_plugin_names.py").write_text(
        "import pyarrow as pa\nfrom tamis.pipeline.stage import Scorer\n\n\n"
        "class Escape(Scorer):\n    name = '../../outside'\n    columns = {'esc': pa.int64()}\n\n"
        "    def score(self, batch):\n        return {'esc': pa.array([0] * batch.num_rows, pa.int64())}\n")
    with pytest.raises(SpecError, match=r"stages\[0\]\.name: the default name '\.\./\.\./outside' of "
                                        r"safety_plugin_names:Escape .*give the stage a 'name:'"):
        load_job(job(data, "inputs: [data]\nstages:\n  - class: safety_plugin_names:Escape\n"))
    loaded = load_job(job(data, "inputs: [data]\nstages:\n  - class: safety_plugin_names:Escape\n    name: esc\n"))
    assert [s.name for s in loaded.stages] == ["esc", "unique_ids"]


def test_valid_stage_names_load(data):
    loaded = load_job(job(data, "inputs: [data]\nstages:\n  - use: signals\n    name: sig_2\n  - use: filter\n"))
    assert [s.name for s in loaded.stages] == ["sig_2", "filter", "unique_ids"]
    assert os.sep not in "".join(s.name for s in loaded.stages)


# -- 17: what `tamis submit` uploads ---------------------------------------------------------

@pytest.fixture
def workdir(data):
    """A working folder as people have them: secrets, VCS, a venv, notes, and the job's data."""
    (data / ".env").write_text("API_KEY=sk-live\n")
    (data / ".git").mkdir()
    (data / ".git" / "config").write_text("[remote]\n")
    (data / ".venv" / "lib").mkdir(parents=True)
    (data / ".venv" / "lib" / "big.jsonl").write_text('{"text": "x"}\n')
    (data / "secrets").mkdir()
    (data / "secrets" / "tokens.jsonl").write_text('{"text": "token"}\n')
    (data / "notes.txt").write_text("mine\n")
    (data / "data" / ".cache.jsonl").write_text('{"text": "hidden"}\n')
    pq.write_table(pa.table({"text": ["two"]}), data / "data" / "b.parquet")
    (data / "data" / "scratch").mkdir()
    (data / "data" / "scratch" / "c.jsonl").write_text('{"text": "scratch"}\n')
    (data / ".tamisignore").write_text("# not for the cluster\nsecrets/\nscratch/\n")
    (data / "jobs").mkdir()
    return data


def test_submit_uploads_only_the_job_and_its_relative_inputs(workdir, corpus_dir):
    from tamis.pipeline.commands.cluster import upload_set

    spec = workdir / "jobs" / "job.yaml"
    spec.write_text(f"inputs: [data, {corpus_dir / 'sotu.parquet'}]\nstages:\n  - use: filter\n")
    files = upload_set(load_job(spec), Path("jobs/job.yaml"), workdir)
    assert files == ["data/a.jsonl", "data/b.parquet", "jobs/job.yaml"]  # the absolute input stays on the cluster


def test_submit_upload_takes_named_paths_plugins_and_refuses_outside_or_ignored(workdir):
    from tamis.pipeline.commands.cluster import UploadError, ignored_by, upload_set

    (workdir / "lists").mkdir()
    (workdir / "lists" / "words.txt").write_text("a\n")
    (workdir / "safety_plugin_upload.py").write_text(
        "import pyarrow as pa\nfrom tamis.pipeline.stage import Scorer\n\n\n"
        "class Words(Scorer):\n    name = 'words'\n    columns = {'words_n': pa.int64()}\n\n"
        "    def __init__(self, lexicon: str = ''):\n        self.lexicon = lexicon\n\n"
        "    def score(self, batch):\n        return {'words_n': pa.array([0] * batch.num_rows, pa.int64())}\n")
    spec = job(workdir, "inputs: [data/*.jsonl, .env]\nstages:\n  - class: safety_plugin_upload:Words\n"
                        "    params: {lexicon: lists/words.txt}\n")
    files = upload_set(load_job(spec), spec, workdir)
    assert files == [".env", "data/a.jsonl", "job.yaml", "lists/words.txt", "safety_plugin_upload.py"]  # .env: named
    spec.write_text("inputs: [secrets]\n")
    with pytest.raises(UploadError, match=r"inputs\[0\] \(secrets\) is excluded by .tamisignore .*'secrets/'"):
        upload_set(load_job(spec), spec, workdir)
    spec.write_text("inputs: [../outside.jsonl]\n")
    (workdir.parent / "outside.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(UploadError, match=r"inputs\[0\] \(\.\./outside\.jsonl\) lies outside the working folder"):
        upload_set(load_job(spec), spec, workdir)
    assert ignored_by("a/secrets/b.txt", ["secrets/"]) == "secrets/" and not ignored_by("secrets", ["secrets/"])
    assert ignored_by("data/raw/x.jsonl", ["/data/raw"]) and not ignored_by("other/data/raw/x", ["/data/raw"])
    assert ignored_by("x/y.tmp", ["*.tmp"]) and not ignored_by("x/y.jsonl", ["*.tmp"])


def test_submit_refuses_a_big_upload_before_contacting_the_cluster(workdir, capsys):
    from tamis.pipeline.cli import main

    (workdir / "data" / "big.jsonl").write_text('{"text": "%s"}\n' % ("x" * 300_000))
    spec = job(workdir, "inputs: [data]\n")
    # No cluster listens on this address: the refusal comes first.
    assert main(["submit", str(spec.name), "--address", "http://127.0.0.1:9", "--max-upload-mb", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "uploading 4 file(s), 0.3 MB" in err and "data/big.jsonl" in err and "--max-upload-mb 0.1" in err
    assert ".env" not in err and "secrets" not in err
