"""End-to-end runs through Ray (one shared session) on real text and on deliberately bad input."""
import gzip
import json
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tamis.pipeline.counts import BatchStats, merge_stats
from tamis.pipeline.runner.apply import carry_stats, pop_stats
from tamis.pipeline.cli import main
from tamis.pipeline.report import load_reports
from tamis.pipeline.runner.job import run_job
from tamis.pipeline.spec import SpecError, load_job

REPO = Path(__file__).resolve().parents[2]


def ids_in(folder: Path) -> list[str]:
    files = sorted(folder.glob("*.parquet"))
    return sorted(pl.concat([pl.read_parquet(f, columns=["id"]) for f in files])["id"].to_list()) if files else []


def quarantined(run: Path) -> pl.DataFrame:
    files = sorted((run / "quarantine").glob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


@pytest.fixture(scope="module")
def quickstart_run(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "run"
    assert main(["run", str(REPO / "jobs" / "quickstart.yaml"), "--output", str(out), "--no-progress"]) == 0
    return out


def test_quickstart_conservation_and_reports(quickstart_run):
    run = quickstart_run
    summary, stages = load_reports(run)
    curated, rejected = ids_in(run / "curated"), ids_in(run / "rejected")
    assert summary["rows_read"] == 2769 == len(curated) + len(rejected) + summary["quarantined"]
    assert summary["conservation"]["holds"] and summary["curated"] == len(curated)
    assert not set(curated) & set(rejected)
    assert [s["stage"] for s in stages] == ["signals", "gopher_quality", "gopher_repetition", "unique_ids",
                                            "exact_dedup"]
    for prev, s in zip(stages, stages[1:]):
        assert s["rows_in"] == prev["rows_out"]
    gq = stages[1]
    assert gq["rows_rejected"] == sum(gq["rejections"].values()) > 0
    assert gq["scores"] and all("histogram" in v for v in gq["scores"].values() if v["count"])
    assert gq["examples"]["kept"] and gq["licenses"]["in"]
    assert summary["provenance"]["by_license"]
    rej = pl.read_parquet(sorted((run / "rejected").glob("*.parquet"))[0])
    assert {"reject_stage", "reject_reason", "text", "license", "domain", "source"} <= set(rej.columns)
    cur = pl.read_parquet(sorted((run / "curated").glob("*.parquet"))[0])
    assert "reject_stage" not in cur.columns and "gopher_quality_word_count" in cur.columns
    meta = pq.ParquetFile(sorted((run / "curated").glob("*.parquet"))[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_report_figures_match_the_outputs(quickstart_run):
    """Examples, score statistics and histograms recomputed in memory from the written Parquet."""
    run = quickstart_run
    _, stages = load_reports(run)
    out = pl.concat([pl.read_parquet(f) for f in sorted(run.glob("*/*.parquet")) if f.parent.name in
                     ("curated", "rejected")], how="diagonal_relaxed")
    names = [s["stage"] for s in stages]
    gq = stages[1]
    live = out.filter(pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(names[1:]))
    kept = out.filter(pl.col("reject_stage").is_null() | pl.col("reject_stage").is_in(names[2:]))
    assert gq["examples"]["kept"] == kept["id"].sort().head(5).to_list()
    for reason, ids in gq["examples"]["rejected"].items():
        want = out.filter((pl.col("reject_stage") == "gopher_quality") & (pl.col("reject_reason") == reason))
        assert ids == want["id"].sort().head(5).to_list()
    for col, st in gq["scores"].items():
        v = live[col].cast(pl.Float64).fill_nan(None).drop_nulls()
        assert st["count"] == v.len() and "sample_every" not in st
        if v.len():
            assert st["mean"] == pytest.approx(v.mean())
            assert st["quantiles"]["0.5"] == pytest.approx(v.quantile(0.5, "linear"))
            h = st["histogram"]
            assert sum(h["counts"]) + h["below"] + h["above"] == v.len()


def test_rejected_rows_leave_before_global_stages(quickstart_run):
    """Rows rejected by scorers go to rejected/ at once (not through every global stage's segment),
    and all of rejected/ still shares one schema: the curated columns plus the reject columns."""
    import json

    run = quickstart_run
    _, stages = load_reports(run)
    rej, cur = pl.read_parquet(run / "rejected"), pl.read_parquet(run / "curated")
    assert [c for c in rej.columns if c not in ("reject_stage", "reject_reason")] == cur.columns
    early = rej.filter(pl.col("reject_stage") == "gopher_quality")
    assert early.height and early["id_first_seen"].is_null().all() and early["exact_duplicate"].is_null().all()
    seg_rows = sum(json.loads(f.read_text())["rows"] for f in (run / "_work" / "manifest" / "stream-01").glob("*.json"))
    assert seg_rows == stages[2]["rows_out"] < stages[0]["rows_in"]  # live rows only entered unique_ids


def test_score_stats_sample_beyond_limit(monkeypatch):
    """Past SAMPLE_ROWS, quantiles come from every k-th row; counts, means and histograms stay exact."""
    import numpy as np

    from tamis.pipeline import report

    x = np.random.default_rng(0).lognormal(size=50_000)
    lf = pl.LazyFrame({"s": x, "n": [None] * 49_000 + [1.0] * 1_000})
    exact = report.score_stats(lf, ["s", "n"])
    monkeypatch.setattr(report, "SAMPLE_ROWS", 5_000)
    sampled = report.score_stats(lf, ["s", "n"])
    s, e = sampled["s"], exact["s"]
    assert s["sample_every"] == 10 and "sample_every" not in e
    assert s["count"] == e["count"] == 50_000 and s["mean"] == pytest.approx(x.mean())
    assert e["quantiles"]["0.5"] == pytest.approx(np.quantile(x, 0.5))
    for q in ("0.1", "0.5", "0.9"):
        assert s["quantiles"][q] == pytest.approx(e["quantiles"][q], rel=0.05)
    h = s["histogram"]
    assert sum(h["counts"]) + h["below"] + h["above"] == 50_000
    assert sampled["n"]["nulls"] == 49_000 and sampled["n"]["histogram"]["counts"] == [1_000]


def test_report_command_and_html_in_chromium(quickstart_run, tmp_path, capsys):
    html = tmp_path / "report.html"
    assert main(["report", str(quickstart_run), "--html", str(html)]) == 0
    table = capsys.readouterr().out
    assert "gopher_repetition" in table and "conservation holds" in table
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    for stage in ["signals", "gopher_quality", "gopher_repetition", "unique_ids", "exact_dedup"]:
        assert f'id="stage-{stage}"' in dom
    assert "Conservation holds" in dom and dom.count("<svg") >= 5
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,2000", html.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, corpus_dir):
    d = tmp_path_factory.mktemp("bad")
    real = pl.read_parquet(corpus_dir / "sotu.parquet").head(20)
    texts = real["text"].to_list()
    rows = [{"id": f"s{i}", "text": t, "license": "public-domain"} for i, t in enumerate(texts[:10])]
    rows.append({"id": "z-case-variant", "text": "  " + texts[0].upper().replace(" ", "   ") + "\n"})
    rows.append({"id": "s3", "text": texts[12]})            # duplicate id, different text
    rows.append({"id": "huge", "text": "lorem ipsum dolor " * (3 * 1024 * 1024)})  # ~54 MB
    rows.append({"id": "empty", "text": ""})
    good = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    bad = (b'{"id": "broken", "text": "no end\n' b'{"id": "latin1", "text": "caf\xe9"}\n'
           b'{"id": "notext", "body": "x"}\n')
    (d / "a.jsonl").write_bytes(good[: good.index(b"\n") + 1] + bad + good[good.index(b"\n") + 1:])
    (d / "empty.jsonl").write_bytes(b"")
    with gzip.open(d / "b.jsonl.gz", "wb") as f:
        f.write(json.dumps({"id": "s0", "text": texts[15]}).encode() + b"\n")  # duplicate id in another file
        f.write(json.dumps({"id": "s5", "text": texts[5]}).encode() + b"\n")  # a whole row twice
    pq.write_table(pa.table({"id": ["p1", "p2"], "body": ["no", "text column"]}), d / "c.parquet")
    return d


def test_bad_input_run_loses_nothing(ray_session, bad_inputs, tmp_path):
    job_file = tmp_path / "job.yaml"
    job_file.write_text("name: bad\nstages:\n  - use: filter\n    keep: {empty: 'len(text) > 0'}\n"
                        "  - use: exact_dedup\n    keep: default\n")
    job = load_job(job_file, inputs=[str(bad_inputs)], output=str(tmp_path / "run"))
    summary = run_job(job, progress=False)
    run = tmp_path / "run"
    curated, rejected, q = ids_in(run / "curated"), ids_in(run / "rejected"), quarantined(run)
    assert summary["rows_read"] == 21 == len(curated) + len(rejected) + q.height
    assert summary["conservation"]["holds"] and summary["quarantined"] == q.height == 5
    errs = dict(zip(q["row"].to_list(), q["error"].to_list()))
    a_file = str((bad_inputs / "a.jsonl").resolve())
    assert set(q.filter(pl.col("row") > 0)["file"].to_list()) == {a_file, str((bad_inputs / "c.parquet").resolve())}
    assert errs[2].startswith("malformed JSON") and errs[3].startswith("invalid UTF-8")
    assert "missing text" in errs[4]
    assert any("empty input" in w and "empty.jsonl" in w for w in summary["warnings"])
    rej = pl.concat([pl.read_parquet(f) for f in sorted((run / "rejected").glob("*.parquet"))], how="diagonal_relaxed")
    reasons = dict(zip(rej["id"].to_list(), rej["reject_reason"].to_list()))
    assert reasons["empty"] == "empty" and reasons["z-case-variant"] == "exact_duplicate"
    assert rej.filter(pl.col("id") == "z-case-variant")["duplicate_of"].to_list() == ["s0"]
    dup_ids = rej.filter(pl.col("reject_reason") == "duplicate_id")
    assert sorted(dup_ids["id"].to_list()) == ["s0", "s3", "s5"]
    assert all(":" in v and v.split(":")[0].endswith("a.jsonl") for v in dup_ids["id_first_seen"].to_list())
    # exact_dedup is fitted after unique_ids in the same stream: it never saw the second s5, so the
    # first one is not its "duplicate"
    assert "huge" in curated and "s5" in curated
    assert sorted(p.name for p in (run / "_work" / "manifest").iterdir()) == ["stream-00", "stream-01"]


def test_global_fits_in_place_and_on_ray_agree(ray_session, bad_inputs, tmp_path, monkeypatch):
    """Small segments are fitted on the driver, larger ones over Ray Data: the same decisions either way,
    with the earlier global stage of the stream (unique_ids) applied before exact_dedup fits."""
    from tamis.pipeline.runner import fits

    job_file = tmp_path / "job.yaml"
    job_file.write_text("stages:\n  - use: filter\n    keep: {empty: 'len(text) > 0'}\n"
                        "  - use: exact_dedup\n    keep: default\n")
    got = {}
    for where, rows in (("driver", fits.LOCAL_FIT_ROWS), ("ray", 0)):
        monkeypatch.setattr(fits, "LOCAL_FIT_ROWS", rows)
        run = tmp_path / where
        run_job(load_job(job_file, inputs=[str(bad_inputs)], output=str(run)), progress=False)
        _, stages = load_reports(run)
        assert [s["extra"]["fit_on"] for s in stages if s["kind"] == "global"] == [where, where]
        rej = pl.concat([pl.read_parquet(f) for f in sorted((run / "rejected").glob("*.parquet"))],
                        how="diagonal_relaxed").sort("id", "reject_reason")
        got[where] = (ids_in(run / "curated"), rej.select("id", "reject_reason", "duplicate_of").rows())
    assert got["driver"] == got["ray"]
    assert "s5" in got["ray"][0] and ("z-case-variant", "exact_duplicate", "s0") in got["ray"][1]


def test_changed_job_refused_without_restart(ray_session, bad_inputs, tmp_path):
    job_file = tmp_path / "job.yaml"
    job_file.write_text("stages:\n  - use: filter\n    keep: {empty: 'len(text) > 0'}\n")
    out = str(tmp_path / "run")
    run_job(load_job(job_file, inputs=[str(bad_inputs / "a.jsonl")], output=out), progress=False)
    job_file.write_text("stages:\n  - use: filter\n    keep: {empty: 'len(text) > 10'}\n")
    with pytest.raises(SpecError, match="--restart"):
        run_job(load_job(job_file, inputs=[str(bad_inputs / "a.jsonl")], output=out), progress=False)
    s = run_job(load_job(job_file, inputs=[str(bad_inputs / "a.jsonl")], output=out), restart=True, progress=False)
    assert s["conservation"]["holds"]


PLUGIN = '''
import pyarrow as pa
import pyarrow.compute as pc
from tamis.pipeline.stage import Scorer


class VowelShare(Scorer):
    """Share of characters that are vowels (a plug-in written outside the tamis package)."""

    name = "vowels"
    columns = {"vowels_share": pa.float64()}
    default_keep = {"few_vowels": "vowels_share >= 0.2"}

    def __init__(self, letters: str = "aeiou"):
        self.letters = letters

    def score(self, batch):
        text = pc.utf8_lower(batch["text"])
        hits = pc.count_substring_regex(text, f"[{self.letters}]")
        total = pc.max_element_wise(pc.utf8_length(text), 1)
        return {"vowels_share": pc.divide(pc.cast(hits, pa.float64()), pc.cast(total, pa.float64()))}
'''


def run_plugin(tmp_path: Path, corpus_dir: Path, module: str, code: str, stages: str) -> tuple[dict, pl.DataFrame]:
    """Write plug-in `module` beside a job over reuters-tm with `stages` (YAML), run it, read curated/."""
    (tmp_path / f"{module}.py").write_text(code)
    (tmp_path / "job.yaml").write_text(f"inputs: [{corpus_dir / 'reuters-tm.parquet'}]\nstages:\n{stages}")
    summary = run_job(load_job(tmp_path / "job.yaml", output=str(tmp_path / "run")), progress=False)
    assert summary["rows_read"] == 81 and summary["conservation"]["holds"]
    return summary, pl.read_parquet(tmp_path / "run" / "curated")


def test_plugin_scorer_outside_package(ray_session, tmp_path, corpus_dir):
    _, cur = run_plugin(tmp_path, corpus_dir, "my_vowels", PLUGIN,
                        "  - class: my_vowels:VowelShare\n    params: {letters: aeiouy}\n    keep: default\n"
                        "  - use: filter\n    keep: {no_x: \"vowels_share < 0.9\"}\n")
    assert cur["vowels_share"].min() >= 0.2 and cur["vowels_share"].max() < 0.9


def test_plugin_from_entry_point(ray_session, tmp_path, corpus_dir, monkeypatch):
    import sys
    site = tmp_path / "site"
    (site / "ep_vowels-0.1.dist-info").mkdir(parents=True)
    (site / "ep_vowels.py").write_text(PLUGIN)
    (site / "ep_vowels-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: ep-vowels\nVersion: 0.1\n")
    (site / "ep_vowels-0.1.dist-info" / "entry_points.txt").write_text("[tamis.stages]\nvowels = ep_vowels:VowelShare\n")
    monkeypatch.syspath_prepend(str(site))
    (tmp_path / "job.yaml").write_text(f"inputs: [{corpus_dir / 'reuters-tm.parquet'}]\nstages:\n  - use: vowels\n    keep: default\n")
    summary = run_job(load_job(tmp_path / "job.yaml", output=str(tmp_path / "run")), progress=False)
    assert summary["conservation"]["holds"] and "ep_vowels" in sys.modules
    # registered in the group's old name: the error says where it moved
    (site / "ep_vowels-0.1.dist-info" / "entry_points.txt").write_text("[tamis.scorers]\nvowels = ep_vowels:VowelShare\n")
    with pytest.raises(SpecError, match="'tamis.scorers' of tamis before 0.2; register it in 'tamis.stages'"):
        load_job(tmp_path / "job.yaml")


THREADS_PLUGIN = '''
import pyarrow as pa
from tamis.pipeline.stage import Scorer


class Threads(Scorer):
    """Records the library thread pools a worker gives a stage."""
    name = "threads"

    def __init__(self, suffix: str = ""):
        self.suffix = suffix
        self.columns = {f"polars_threads{suffix}": pa.int64(), f"torch_threads{suffix}": pa.int64()}

    def setup(self):
        import torch  # noqa: F401 - a model stage imports torch in setup()

    def score(self, batch):
        import polars as pl
        import torch
        n = batch.num_rows
        return {f"polars_threads{self.suffix}": pa.array([pl.thread_pool_size()] * n, pa.int64()),
                f"torch_threads{self.suffix}": pa.array([torch.get_num_threads()] * n, pa.int64())}
'''


def test_workers_get_one_library_thread_per_cpu(ray_session, tmp_path, corpus_dir):
    """No oversubscription: a 1-CPU stage runs polars and torch on one thread, a 2-CPU stage gets 2."""
    _, cur = run_plugin(tmp_path, corpus_dir, "my_threads", THREADS_PLUGIN,
                        "  - class: my_threads:Threads\n  - class: my_threads:Threads\n    name: threads2\n"
                        "    params: {suffix: _2}\n    resources: {cpus: 2}\n")
    assert cur["polars_threads"].unique().to_list() == [1] and cur["torch_threads"].unique().to_list() == [1]
    assert cur["torch_threads_2"].unique().to_list() == [2]


def test_tamis_command_output_and_exit_codes(ray_session, tmp_path, corpus_dir):
    """The command leaves with `os._exit` after Ray's shutdown (`cli.entry_point`): piped output must
    still arrive whole and the exit codes stay; it joins this session's Ray with --address."""
    import sys

    import ray
    job = tmp_path / "job.yaml"
    job.write_text(f"inputs: [{corpus_dir / 'reuters-tm.parquet'}]\nstages:\n  - use: gopher_quality\n"
                   "    keep: default\n")
    cmd = [sys.executable, "-m", "tamis.pipeline.cli", "run", "--no-progress"]
    ok = subprocess.run([*cmd, str(job), "--output", str(tmp_path / "run"), "--address",
                         ray.get_runtime_context().gcs_address], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert ok.stdout.rstrip().endswith("--html report.html)"), ok.stdout[-1000:]
    assert json.loads((tmp_path / "run" / "reports" / "summary.json").read_text())["rows_read"] == 81
    bad = subprocess.run([*cmd, str(tmp_path / "missing.yaml")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "job file not found" in bad.stderr


def test_groupby_and_partition_map_in_memory_and_in_a_ray_shuffle(ray_session, monkeypatch):
    """`groupby_map` calls `fn` once per group; `partition_map` calls it on whole groups, several at
    once, in memory and through Ray's hash shuffles alike."""
    import ray

    from tamis.pipeline.runner import ray_data as ray_runner
    from tamis.pipeline.data import LocalData

    def _counts(part: pa.Table) -> pa.Table:  # nested: Ray ships it by value; one row per key and call
        df = pl.from_arrow(part).group_by("k").agg(pl.len().cast(pl.Int64).alias("n"), pl.col("v").min().alias("call"))
        return df.with_columns(pl.col("call").min()).to_arrow() if part.num_rows else pa.table({})
    table = pa.table({"k": [i % 50 for i in range(1000)], "v": list(range(1000))})
    whole = {k: 20 for k in range(50)}
    as_dict = lambda t: dict(zip(t["k"].to_pylist(), t["n"].to_pylist()))  # noqa: E731
    calls = lambda t: len(set(t["call"].to_pylist()))  # noqa: E731
    local = LocalData(table)
    assert as_dict(local.groupby_map(["k"], _counts).to_arrow()) == whole
    assert calls(local.groupby_map(["k"], _counts).to_arrow()) == 50
    assert as_dict(local.partition_map(["k"], _counts).to_arrow()) == whole
    assert calls(local.partition_map(["k"], _counts).to_arrow()) == 1
    monkeypatch.setattr(ray_runner, "LOCAL_GROUPBY_ROWS", 0)
    ds = ray.data.from_arrow(table).repartition(8)
    by_group = ray_runner.RayData(ds, rows=1000).groupby_map(["k"], _counts).to_arrow()
    assert as_dict(by_group) == whole and calls(by_group) == 50
    parts = ray_runner.RayData(ds, rows=1000).partition_map(["k"], _counts).to_arrow()
    assert as_dict(parts) == whole and by_group.num_rows == parts.num_rows  # each key whole, in one call
    assert 1 < calls(parts) < 50


def test_stage_counters_ride_with_the_rows_once_through_rebatching():
    def batch(xs, stage, rows):
        return carry_stats(pa.table({"x": xs}), [[stage, BatchStats(batches=1, rows_in=rows).__dict__]])
    a, b = batch([1, 2, 3], "s", 3), batch([4, 5], "s", 2)
    rows_b, carried_b = pop_stats(b)
    b = carry_stats(rows_b, [*carried_b, ["t", {"batches": 1}]])  # a second stage on the same batch
    joined = pa.concat_tables([a, b])
    parts = [joined.slice(0, 2), joined.slice(2, 2), joined.slice(4)]  # Ray Data re-batching
    got = merge_stats([e for p in parts for e in pop_stats(p)[1]])
    assert (got["s"].batches, got["s"].rows_in, got["t"].batches) == (2, 5, 1)
    assert [pop_stats(p)[0].column_names for p in parts] == [["x"]] * 3
    assert pop_stats(carry_stats(pa.table({"x": pa.array([], pa.int64())}), [["s", {}]]))[1] == []


def test_big_parquet_input_split_across_tasks(ray_session, tmp_path, corpus_dir):
    """One Parquet file read as 5 units of row groups gives the output of reading it whole, and one
    input entry in the summary (resuming by part: `test_resume`)."""
    docs = pl.concat([pl.read_parquet(corpus_dir / f"{s}.parquet").head(1000) for s in ("linux-doc-6.1", "dict-jargon")])
    docs.write_parquet(tmp_path / "big.parquet", row_group_size=400)
    runs = {}
    for name, split in (("whole", 1 << 40), ("split", 1)):
        job = tmp_path / f"{name}.yaml"
        job.write_text(f"inputs: [{tmp_path / 'big.parquet'}]\nread: {{batch_rows: 200, split_bytes: {split}}}\n"
                       "stages:\n  - use: gopher_quality\n    keep: default\n  - use: exact_dedup\n    keep: default\n")
        runs[name] = run_job(load_job(job, output=str(tmp_path / name)), progress=False)
    whole, split = runs["whole"], runs["split"]
    assert split["conservation"]["holds"] and split["rows_read"] == whole["rows_read"] == 2000
    assert [i["file"] for i in split["inputs"]] == [str(tmp_path / "big.parquet")]
    assert split["inputs"][0]["rows_ok"] == 2000 and 0 < split["curated"] < 2000
    for part in ("curated", "rejected"):
        assert ids_in(tmp_path / "split" / part) == ids_in(tmp_path / "whole" / part)
    manifest = tmp_path / "split" / "_work" / "manifest" / "stream-00"
    units = {json.loads(p.read_text())["unit"] for p in manifest.glob("*.json")}
    assert len(units) == 5 and all("#row_groups=" in u for u in units)


def test_embedded_workers_get_one_library_thread_and_the_system_arrow_allocator(ray_session):
    """`session.WORKER_ENV` reaches the workers of an embedded Ray (jemalloc kept ~0.1 GB more per job)."""
    import os

    import ray

    @ray.remote
    def worker_env():
        import os

        import pyarrow as pa
        return os.environ.get("POLARS_MAX_THREADS"), pa.default_memory_pool().backend_name

    assert ray.get(worker_env.remote()) == (os.environ.get("POLARS_MAX_THREADS", "1"),
                                            os.environ.get("ARROW_DEFAULT_MEMORY_POOL", "system"))


def test_a_job_tokenizer_makes_reports_count_its_tokens(ray_session, corpus_dir, tmp_path):
    """`tokenizer:` in a job: stage reports, provenance and what-if count tokens of that tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from tamis.pipeline.report import what_if

    table = pq.read_table(corpus_dir / "fortunes.parquet", columns=["id", "text", "source", "license"]).slice(0, 300)
    pq.write_table(table, tmp_path / "in.parquet")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(table["text"].to_pylist(), trainers.BpeTrainer(
        vocab_size=500, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    (tmp_path / "tok").mkdir()
    tok.save(str(tmp_path / "tok" / "tokenizer.json"))
    spec = tmp_path / "job.yaml"
    spec.write_text(f"inputs: [{tmp_path / 'in.parquet'}]\noutput: {tmp_path / 'run'}\ntokenizer: {tmp_path / 'tok'}\n"
                    "stages:\n  - use: gopher_quality\n    keep: default\n")
    summary = run_job(load_job(spec), progress=False)
    count = {r["id"]: len(e.ids) for r, e in zip(table.to_pylist(), tok.encode_batch(
        table["text"].to_pylist(), add_special_tokens=False))}
    curated = pl.read_parquet(tmp_path / "run" / "curated")["id"].to_list()
    assert summary["tokens"]["unit"] == f"tokens of {tmp_path / 'tok'}"
    assert 0 < len(curated) < table.num_rows
    stage = load_reports(tmp_path / "run")[1][0]
    assert stage["tokens_in"] == sum(count.values()) != sum(len(t.split()) for t in table["text"].to_pylist())
    assert stage["tokens_out"] == sum(count[i] for i in curated)
    assert sum(v["tokens"] for v in summary["provenance"]["by_source"].values()) == stage["tokens_out"]
    w = what_if(tmp_path / "run", {"gopher_quality": {}})
    assert w["tokens"]["before"] == stage["tokens_out"] and w["tokens"]["unit"] == summary["tokens"]["unit"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace(str(tmp_path / "tok"), str(tmp_path / "nowhere")))
    with pytest.raises(SpecError, match=r"bad.yaml: tokenizer: .*nowhere: no tokenizer.json"):
        load_job(bad)
