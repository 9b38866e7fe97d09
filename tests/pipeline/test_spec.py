import json
from pathlib import Path

import pytest

from tamis.pipeline.spec import SpecError, load_job

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    p = tmp_path / "job.yaml"
    p.write_text(text)
    return p


def test_quickstart_loads_and_inserts_unique_ids():
    job = load_job(REPO / "jobs" / "quickstart.yaml")
    names = [s.name for s in job.stages]
    assert names[-2:] == ["unique_ids", "exact_dedup"]
    assert len(job.input_files) == 2


def test_unknown_top_level_key_is_named(tmp_path):
    with pytest.raises(SpecError, match=r"job.yaml: outptu"):
        load_job(write(tmp_path, f"inputs: [{REPO}/data/sample]\noutptu: x\n"))


def test_wrong_type_names_key_path(tmp_path):
    with pytest.raises(SpecError, match=r"stages\[0\]\.params"):
        load_job(write(tmp_path, f"inputs: [{REPO}/data/sample]\nstages:\n  - use: filter\n    params: 3\n"))


def test_unknown_param_and_stage(tmp_path):
    with pytest.raises(SpecError, match=r"stages\[0\]\.params: unknown parameter\(s\) \['kep'\]"):
        load_job(write(tmp_path, f"inputs: [{REPO}/data/sample]\nstages:\n  - use: exact_dedup\n    params: {{kep: x}}\n"))
    with pytest.raises(SpecError, match=r"stages\[0\]\.use: unknown stage 'gopher_qualty'"):
        load_job(write(tmp_path, f"inputs: [{REPO}/data/sample]\nstages:\n  - use: gopher_qualty\n"))


def test_bad_param_value_and_rule(tmp_path):
    with pytest.raises(SpecError, match=r"stages\[0\]\.params: keep must be"):
        load_job(write(tmp_path, f"inputs: [{REPO}/data/sample]\nstages:\n  - use: exact_dedup\n    params: {{keep: biggest}}\n"))
    with pytest.raises(SpecError, match=r"stages\[0\]\.keep: cannot parse"):
        load_job(write(tmp_path, f"inputs: [{REPO}/data/sample]\nstages:\n  - use: filter\n    keep: {{r: 'a <'}}\n"))


def test_missing_input_file_is_named(tmp_path):
    with pytest.raises(SpecError, match=r"inputs\[0\]: no such file or folder: .*nothere.jsonl"):
        load_job(write(tmp_path, "inputs: [nothere.jsonl]\n"))


def test_cli_overrides_inputs_and_output(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text('{"text": "x"}\n')
    job = load_job(write(tmp_path, "inputs: [x]\noutput: y\n"), inputs=[str(f)], output=str(tmp_path / "out"))
    assert job.input_files == [f.resolve()] and job.output == tmp_path / "out"


def test_rule_reading_a_later_column_is_refused(tmp_path):
    with pytest.raises(SpecError, match="reorder"):
        load_job(write(tmp_path, f"inputs: [{REPO}/data/sample]\nstages:\n  - use: filter\n"
                                 f"    keep: {{d: 'exact_duplicate == False'}}\n  - use: exact_dedup\n"))


def test_folder_expansion_skips_hidden_and_keeps_hf_dataset(tmp_path):
    import datasets
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "in" / ".hidden.jsonl").write_text('{"text": "x"}\n')
    datasets.Dataset.from_dict({"text": ["a", "b"]}).save_to_disk(str(tmp_path / "in" / "hf"))
    job = load_job(write(tmp_path, "inputs: []\n"), inputs=[str(tmp_path / "in")])
    assert sorted(p.name for p in job.input_files) == ["a.jsonl", "hf"]


def test_a_class_path_of_the_old_layout_names_the_new_one(tmp_path, corpus_dir):
    job = tmp_path / "job.yaml"
    job.write_text(f"inputs: [{corpus_dir / 'sotu.parquet'}]\nstages:\n  - class: scorers.signals:SignalsScorer\n")
    with pytest.raises(SpecError, match=r"stages\[0\]\.class: .*tamis\.scorers\.signals:Signals"):
        load_job(job)


def test_the_registry_shipped_with_code_resolves_without_package_metadata(tmp_path, monkeypatch):
    """`tamis submit` copies the code with `_entry_points.json` (a cluster may lack tamis's metadata)."""
    from tamis.pipeline import registry
    from tamis.pipeline.commands.cluster import code_dir

    staged = code_dir()
    shipped = json.loads((staged / "pipeline" / registry.ENTRY_POINTS_FILE).read_text())
    assert shipped == registry.registered() and shipped["signals"] == "tamis.scorers.signals:Signals"
    assert sorted(p.name for p in staged.iterdir()) == ["mixers", "pipeline", "scorers"]
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    monkeypatch.setattr(registry, "__file__", str(staged / "pipeline" / "registry.py"))
    assert registry.stage_class("minhash_dedup").__name__ == "MinHashDedup"
