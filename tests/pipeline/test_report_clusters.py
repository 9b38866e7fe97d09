"""The duplicate-clusters browser of the run report (docs/reports.md, "Duplicate clusters"): a real run
of exact_dedup + minhash_dedup over real text with planted exact copies and near-copies, under the
input's own id field; the JSON clusters agree with polars over the outputs, and the HTML page lists
every planted cluster with its member ids, escaped snippets, nothing clipped (headless Chromium)."""
import random
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from tamis.pipeline.html_report import render_html
from tamis.pipeline.report import N_CLUSTERS, N_MEMBERS, dedup_clusters, load_reports
from tamis.pipeline.run_folder import RunFolder
from tamis.pipeline.runner.job import run_job
from tamis.pipeline.spec import load_job

REPO = Path(__file__).resolve().parents[2]
NEAR = [2, 3, 4, 5, 13] + [2] * 8  # planted near-duplicate clusters (documents each, the original included)
EXACT = [3, 2]           # planted exact-copy groups
BANNED = "n1-00"         # the kept document of a near cluster, rejected by a later stage
HOSTILE = "<script>alert(1)</script> & "


def _edit(text: str, rng: random.Random, k: int = 3) -> str:
    """A near-copy: `k` words replaced (MinHash Jaccard of word 5-grams stays well above 0.8)."""
    words = text.split()
    for _ in range(k):
        words[rng.randrange(len(words))] = f"edited{rng.randrange(10**6)}"
    return " ".join(words)


@pytest.fixture(scope="module")
def planted(ray_session, tmp_path_factory):
    d = tmp_path_factory.mktemp("clusters")
    src = pl.read_parquet(REPO / "data" / "sample" / "part-0.parquet")
    n_words = src["text"].str.count_matches(r"\S+")
    long = src.filter((n_words >= 300) & (n_words <= 2000)).head(150 + len(NEAR) + len(EXACT))
    rng = random.Random(7)
    rows, clusters = [], []
    base = long.head(150).with_columns(pl.format("doc-{}", pl.int_range(150).cast(pl.Utf8).str.zfill(3)).alias("doc_id"))
    rows += base.drop("id").to_dicts()
    extra = long.tail(len(NEAR) + len(EXACT)).drop("id").to_dicts()
    for c, size in enumerate(NEAR):
        doc = extra[c]
        if c == 0:
            doc = {**doc, "text": HOSTILE + doc["text"]}
        ids = [f"n{c}-{j:02d}" for j in range(size)]
        for j, i in enumerate(ids):
            rows.append({**doc, "doc_id": i, "text": doc["text"] if j == 0 else _edit(doc["text"], rng),
                         "license": "Banned" if i == BANNED else doc["license"]})
        clusters.append(("minhash_dedup", ids))
    for c, size in enumerate(EXACT):
        doc = extra[len(NEAR) + c]
        ids = [f"x{c}-{j}" for j in range(size)]
        for j, i in enumerate(ids):  # exact after normalisation: case and whitespace changed
            rows.append({**doc, "doc_id": i, "text": doc["text"].upper() if j == 1 else doc["text"] + "  "})
        clusters.append(("exact_dedup", ids))
    inp = d / "in.parquet"
    pl.DataFrame(rows).sample(fraction=1.0, shuffle=True, seed=3).write_parquet(inp)
    job = d / "job.yaml"
    job.write_text(f"name: clusters\ninputs: [{inp}]\nfields: {{id: doc_id}}\nstages:\n"
                   "  - use: exact_dedup\n    keep: default\n"
                   "  - use: minhash_dedup\n    keep: default\n"
                   "  - use: filter\n    name: licences\n"
                   "    keep: {'licence_not_allowed:{license}': \"license not in ['Banned']\"}\n")
    run_job(load_job(job, output=str(d / "run")), progress=False)
    return d / "run", clusters


def outputs(run: Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(run / "curated"), pl.read_parquet(run / "rejected")], how="diagonal_relaxed")


def test_clusters_json_agrees_with_the_outputs(planted):
    run, clusters = planted
    _, stages = load_reports(run)
    out = outputs(run)
    assert "doc_id" in out.columns and "id" not in out.columns  # the input's own id field
    by_id = {r["doc_id"]: r for r in out.iter_rows(named=True)}
    reps = {s["stage"]: s for s in stages}
    assert "clusters" not in reps["licences"]
    for stage, sim in (("exact_dedup", None), ("minhash_dedup", "minhash_jaccard")):
        cl = reps[stage]["clusters"]
        removed = out.filter((pl.col("reject_stage") == stage) & pl.col("duplicate_of").is_not_null())
        sizes = removed.group_by("duplicate_of").len()
        want_hist = sizes.group_by("len").len("clusters").sort("len")
        assert cl["size_histogram"] == {str(s + 1): n for s, n in want_hist.iter_rows()}
        assert cl["clusters"] == sizes.height and cl["rows_removed"] == removed.height
        assert cl["similarity"] == ("exact" if sim is None else "jaccard") and cl["similarity_column"] == sim
        top = sizes.sort(["len", "duplicate_of"], descending=[True, False]).head(N_CLUSTERS)
        assert [(c["kept"]["id"], c["size"]) for c in cl["largest"]] == [(k, n + 1) for k, n in top.iter_rows()]
        for c in cl["largest"]:
            kept = by_id[c["kept"]["id"]]
            mine = removed.filter(pl.col("duplicate_of") == c["kept"]["id"])
            assert len(c["members"]) == min(N_MEMBERS, mine.height) and c["more"] == mine.height - len(c["members"])
            assert {m["id"] for m in c["members"]} <= set(mine["doc_id"])
            assert c["kept"]["status"] == ("curated" if kept["reject_stage"] is None else
                                           f"rejected at {kept['reject_stage']}: {kept['reject_reason']}")
            assert c["kept"]["snippet"][:40] == " ".join(kept["text"].split())[:40]
            sims = [m["similarity"] for m in c["members"]]
            assert sims == sorted(sims)  # least similar first
            for m in c["members"]:
                row = by_id[m["id"]]
                assert m["similarity"] == pytest.approx(1.0 if sim is None else row[sim])
                assert 0 < len(m["snippet"]) <= 160 and m["snippet"][:40] == " ".join(row["text"].split())[:40]
            if stage == "minhash_dedup":  # the stage's own cluster size agrees
                assert kept["minhash_cluster_size"] == c["size"]
            if stage == "exact_dedup":
                assert all(by_id[m["id"]]["exact_group_size"] == c["size"] for m in c["members"])
    for stage, ids in clusters:  # every planted cluster is found whole, kept = its lowest id
        c = next(c for c in reps[stage]["clusters"]["largest"] if c["kept"]["id"] == ids[0])
        assert c["size"] == len(ids)
        shown = {m["id"] for m in c["members"]}
        assert shown == set(ids[1:]) if len(ids) - 1 <= N_MEMBERS else len(shown) == N_MEMBERS and c["more"] == len(ids) - 1 - N_MEMBERS
    big = next(c for c in reps["minhash_dedup"]["clusters"]["largest"] if c["kept"]["id"] == f"n{NEAR.index(13)}-00")
    assert big["more"] == 12 - N_MEMBERS
    small = dedup_clusters(RunFolder(run), "minhash_dedup", ["minhash_jaccard"], n=3, members=2)
    full = reps["minhash_dedup"]["clusters"]
    assert small["size_histogram"] == full["size_histogram"] and len(small["largest"]) == 3
    for a, b in zip(small["largest"], full["largest"]):  # the same clusters, fewer members shown
        assert a["kept"] == b["kept"] and a["size"] == b["size"] and a["members"] == b["members"][:2]
        assert a["more"] == a["removed"] - 2
    banned = next(c for c in reps["minhash_dedup"]["clusters"]["largest"] if c["kept"]["id"] == BANNED)
    assert banned["kept"]["status"] == "rejected at licences: licence_not_allowed:Banned"


def test_clusters_html_in_chromium(planted, tmp_path):
    run, clusters = planted
    summary, stages = load_reports(run)
    html = render_html(summary, stages)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in html
    page = tmp_path / "report.html"
    page.write_text(html)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=800,2000"]
    d = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri() + "?check=1"], capture_output=True,
                       text=True, timeout=120).stdout
    assert '<pre id="clip-check" data-clipped="0">' in d, d[d.find("clip-check"):][:2000]
    for stage in ("exact_dedup", "minhash_dedup"):
        sec = d[d.find(f'id="clusters-{stage}"'):]
        sec = sec[:sec.find("</section>")]
        cl = next(s for s in stages if s["stage"] == stage)["clusters"]
        assert "Duplicate clusters" in sec and f"{cl['clusters']} clusters" in sec
        for size, n in cl["size_histogram"].items():  # the size histogram, numbers in full
            assert f">{size} documents</text>" in sec and f"<td class=\"n\">{size}</td><td class=\"n\">{n}</td>" in sec
        for c in cl["largest"]:
            assert f"<code>{c['kept']['id']}</code>" in sec and all(f"<code>{m['id']}</code>" in sec for m in c["members"])
        for st, ids in clusters:
            if st == stage:
                shown = ids if len(ids) - 1 <= N_MEMBERS else ids[:1]
                assert all(f"<code>{i}</code>" in sec for i in shown), (stage, ids)
        assert sec.count("<details class=\"item cluster\"") == len(cl["largest"])
    mh = d[d.find('id="clusters-minhash_dedup"'):]
    assert "page 1 of 2 (13 clusters)" in mh and mh.count('style="display: none;"') >= 3  # paged: 10 shown
    assert f"and {12 - N_MEMBERS} more" in mh and "rejected at licences: licence_not_allowed:Banned" in mh


def test_semantic_clusters_use_the_cosine_and_only_the_stages_own_removals(tmp_path):
    """No Ray: a hand-written outputs folder. Cosine similarity; a row whose `duplicate_of` an earlier
    stage set but another stage rejected is not this stage's; a kept id absent from the outputs is said so."""
    (tmp_path / "curated").mkdir()
    (tmp_path / "rejected").mkdir()
    pl.DataFrame({"id": ["a", "z"], "text": ["kept  <a>\ndoc", "other"], "duplicate_of": [None, None],
                  "semdedup_cosine": [-1.0, -1.0], "reject_stage": [None, None], "reject_reason": [None, None]},
                 schema_overrides={"duplicate_of": pl.Utf8, "reject_stage": pl.Utf8, "reject_reason": pl.Utf8}
                 ).write_parquet(tmp_path / "curated" / "0.parquet")
    pl.DataFrame({"id": ["b", "c", "d", "e", "f"], "text": ["b text", "c text", "d text", "e text", "f text"],
                  "duplicate_of": ["a", "a", "a", "gone", "a"], "semdedup_cosine": [0.99, 0.97, 0.98, 0.96, 0.5],
                  "reject_stage": ["semantic_dedup"] * 4 + ["quality"],
                  "reject_reason": ["semantic_duplicate"] * 4 + ["short"]}).write_parquet(tmp_path / "rejected" / "0.parquet")
    cl = dedup_clusters(RunFolder(tmp_path), "semantic_dedup", {"duplicate_of": 0, "semdedup_cosine": 0}, members=2)
    assert (cl["similarity"], cl["similarity_column"], cl["clusters"], cl["rows_removed"]) == ("cosine", "semdedup_cosine", 2, 4)
    assert cl["size_histogram"] == {"2": 1, "4": 1}
    a, gone = cl["largest"]
    assert a["kept"] == {"id": "a", "snippet": "kept <a> doc", "status": "curated", "reject_stage": None}
    assert [(m["id"], m["similarity"], m["snippet"]) for m in a["members"]] == [("c", 0.97, "c text"), ("d", 0.98, "d text")]
    assert (a["size"], a["removed"], a["more"]) == (4, 3, 1)
    assert gone["kept"]["status"] == "not in the outputs" and gone["members"][0]["id"] == "e"
    assert "&lt;a&gt;" in render_html({"job": "j", "run_dir": "r", "wall_s": 0, "conservation": {
        "holds": True, "equation": ""}, "provenance": {}}, [{
        "stage": "semantic_dedup", "index": 0, "class": "c", "rows_in": 7, "rows_out": 2, "rows_rejected": 5,
        "wall_s": 0, "cpu_s": 0, "keep": {}, "rejections": {}, "scores": {}, "samples": None,
        "examples": {"kept": []}, "clusters": cl, "extra": {}, "kind": "global"}])
