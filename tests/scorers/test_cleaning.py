"""Text cleaning stages (docs/cleaning.md): `pii`, `line_filter`, `paragraph_dedup`, on real text."""
import importlib.util
import ipaddress
import json
import random
import re

import polars as pl
import pyarrow as pa
import pytest

from tamis.pipeline.data import LocalData
from tamis.pipeline.runner.job import run_job
from tamis.pipeline.spec import load_job
from tamis.scorers.cleaning.line_filter import CITATION_RE, LineFilter
from tamis.scorers.cleaning.paragraph_dedup import ParagraphDedup
from tamis.scorers.cleaning.pii import Pii
from tamis.pipeline.text.normalize import normalize_text

PLACEHOLDERS = ("email@example.com", "192.0.2.1", "2001:db8::1", "+1-555-0100")


def _t(texts):
    return pa.table({"text": pa.array(texts, pa.large_string())})


def _read(corpus_dir, name, n, seed=0):
    df = pl.read_parquet(corpus_dir / f"{name}.parquet", columns=["id", "text"])
    return df.sample(min(n, df.height), seed=seed, shuffle=True) if n < df.height else df


# ---- planted PII -------------------------------------------------------------------------------

def _d(rng, n):
    return "".join(str(rng.randint(0, 9)) for _ in range(n))


def _email(rng):
    first = rng.choice(["anna", "j.smith", "bob_lee", "m.garcia", "li.wei", "x-ray", "o'neil", "k.tanaka+news"])
    dom = rng.choice(["gmail.com", "mail.ru", "uni-bonn.de", "cs.stanford.edu", "bbc.co.uk", "proton.me",
                      "startup.io", "yahoo.fr", "company.org"])
    return f"{first}{rng.randint(1, 999)}@{dom}"


def _ipv4(rng):
    while True:
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        if ip.is_global and str(ip).split(".")[3] != "0":
            return str(ip)


def _ipv6(rng):
    ip = ipaddress.IPv6Address((0x2 << 124) | rng.getrandbits(124))  # 2000::/4, global unicast
    return str(ip) if rng.random() < 0.5 else ip.exploded


def _phone(rng):
    a, e = str(rng.randint(2, 9)) + _d(rng, 2), str(rng.randint(2, 9)) + _d(rng, 2)
    forms = [f"({a}) {e}-{_d(rng, 4)}", f"{a}-{e}-{_d(rng, 4)}", f"{a}.{e}.{_d(rng, 4)}", f"+1 {a} {e} {_d(rng, 4)}",
             f"+44 20 {_d(rng, 4)} {_d(rng, 4)}", f"020 {_d(rng, 4)} {_d(rng, 4)}", f"07{_d(rng, 3)} {_d(rng, 6)}",
             f"+33 1 {_d(rng, 2)} {_d(rng, 2)} {_d(rng, 2)} {_d(rng, 2)}", f"01 {_d(rng, 2)} {_d(rng, 2)} {_d(rng, 2)} {_d(rng, 2)}",
             f"+49 30 {_d(rng, 7)}", f"030-{_d(rng, 7)}", f"+91 98{_d(rng, 3)} {_d(rng, 5)}", f"+1-{a}-{e}-{_d(rng, 4)}"]
    return rng.choice(forms)


TEMPLATES = ["You can reach me at {x} for details.", "Contact: {x}", "(see {x})", "Send it to {x}, please.",
             "The host {x} answered.", "Call {x} today!", "{x}", "It was logged from {x} at noon."]


def plant(texts, seed=0, per_doc=3):
    """Insert PII of every kind as new lines at random line boundaries; returns texts and what was planted."""
    rng = random.Random(seed)
    out, planted = [], []
    for t in texts:
        lines = t.split("\n")
        mine = []
        for _ in range(per_doc):
            x = rng.choice([_email, _ipv4, _ipv6, _phone])(rng)
            mine.append(x)
            lines.insert(rng.randint(0, len(lines)), rng.choice(TEMPLATES).format(x=x))
        out.append("\n".join(lines))
        planted.append(mine)
    return out, planted


def _real_docs(corpus_dir, n_each=100):
    return pl.concat([_read(corpus_dir, s, n_each) for s in ("linux-doc-6.1", "git-doc", "sotu", "postgresql-doc-15")])


# ---- pii -----------------------------------------------------------------------------------------

def test_pii_removes_planted_pii_from_real_documents(corpus_dir):
    docs = _real_docs(corpus_dir)
    texts, planted = plant(docs["text"].to_list(), seed=1)
    out = Pii().edit(_t(texts))
    new = out["text"].to_pylist()
    total = sum(len(p) for p in planted)
    missed = [x for t, p in zip(new, planted) for x in p if x in t]
    recall = 1 - len(missed) / total
    assert total >= 1000 and recall >= 0.99, (recall, missed[:10])
    counted = sum(sum(out[c].to_pylist()) for c in ("pii_emails", "pii_ips", "pii_phones"))
    assert counted >= total - len(missed)  # the counters see at least what was planted and caught


def test_pii_changes_few_clean_real_documents(corpus_dir):
    """Technical docs hold version numbers, section numbers, dates, hex dumps and times; documents
    with an '@' are left out: their e-mail addresses are real PII."""
    docs = _real_docs(corpus_dir, 200).filter(~pl.col("text").str.contains("@", literal=True))
    texts = docs["text"].to_list()
    new = Pii().edit(_t(texts))["text"].to_pylist()
    changed = sum(a != b for a, b in zip(texts, new))
    assert len(texts) >= 500 and changed / len(texts) <= 0.01, (changed, len(texts))


def test_pii_windowed_scan_agrees_with_whole_text_regexes(corpus_dir):
    """`edit` validates only windows around Rust-regex candidate spans; `redact` runs the Python
    regexes over whole texts. Same output, same counts, on real documents with planted PII."""
    docs = _real_docs(corpus_dir, 60)
    texts, _ = plant(docs["text"].to_list(), seed=3)
    texts.append("a mark \x00 char, then 8.8.4.4 and ann@gmail.com")  # the slow path
    stage = Pii()
    out = stage.edit(_t(texts))
    ref = [stage.redact(t) for t in texts]
    assert out["text"].to_pylist() == [r[0] for r in ref]
    assert out["pii_ips"].to_pylist() == [r[2] for r in ref]
    assert out["pii_phones"].to_pylist() == [r[3] for r in ref]
    assert out["text"].to_pylist()[-1] == "a mark \x00 char, then 192.0.2.1 and email@example.com"


@pytest.mark.parametrize("text", [
    "Upgrade to version 1.2.3.4 before May.", "see Section 14.3.2.1 for the rules", "14.3.2.1. In Real Time",
    "released on 2023-01-15 and 15.01.2023", "at 12:30:45 UTC", "00 11 22 33 44 55 66 77 88",
    "Boston, MA 02110-1301, USA.", "RFC 2822:: the standard", "y = a@np.linalg.inv(b)", "the git/1.8.3.1 agent",
    "route 10.1.2.3 and 192.168.1.20 stay private", "mail bob@example.com or root@localhost",
    "Clause 252.227-7013 of DFARs", "Face::add(x) in C++", "ISBN 978-0-306-40615-7",
])
def test_pii_leaves_non_pii_alone(text):
    out = Pii().edit(_t([text]))
    assert out["text"].to_pylist() == [text]


def test_pii_modes_placeholders_and_private_ranges():
    text = "Mail ann.lee@gmail.com, host 8.8.4.4 or 10.0.0.7, phone (415) 555-2671, v6 2a00:1450:4001:80b::200e."
    red = Pii().edit(_t([text]))
    assert red["text"].to_pylist() == ["Mail email@example.com, host 192.0.2.1 or 10.0.0.7, phone +1-555-0100, "
                                       "v6 2001:db8::1."]
    assert [red[c].to_pylist() for c in ("pii_emails", "pii_ips", "pii_phones")] == [[1], [2], [1]]
    mark = Pii(mode="mark", keep_private_ips=False).edit(_t([text]))["text"].to_pylist()[0]
    assert mark == ("Mail <EMAIL>, host <IP_ADDRESS> or <IP_ADDRESS>, phone <PHONE_NUMBER>, v6 <IP_ADDRESS>.")
    count = Pii(mode="count").edit(_t([text]))
    assert count["text"].to_pylist() == [text] and count["pii_ips"].to_pylist() == [2]
    only = Pii(kinds=["email"], placeholders={"email": "[email]"}).edit(_t([text]))
    assert only["text"].to_pylist()[0].startswith("Mail [email], host 8.8.4.4")
    assert only["pii_ips"].to_pylist() == [0]
    # a second pass leaves the redacted text as it is (reserved placeholders)
    again = Pii().edit(_t(red["text"].to_pylist()))
    assert again["text"].to_pylist() == red["text"].to_pylist() and again["pii_ips"].to_pylist() == [0]


@pytest.mark.parametrize("params,word", [({"mode": "hide"}, "mode"), ({"kinds": ["ssn"]}, "kinds"),
                                         ({"placeholders": {"ssn": "x"}}, "placeholders"),
                                         ({"names": True}, "names")])
def test_pii_bad_params(params, word):  # presidio is not installed here: `names` must say so
    if word == "names" and importlib.util.find_spec("presidio_analyzer") is not None:
        pytest.skip("presidio is installed: `names: true` is valid")
    with pytest.raises(ValueError, match=word):
        Pii(**params).validate()


# ---- line_filter ---------------------------------------------------------------------------------

def test_line_filter_rules_and_counters():
    text = ("A normal sentence that ends well.\nMenu\nPlease enable JavaScript in your browser now.\n"
            "This site uses cookies to work.\nA claim with a citation [12] here.\n" + "x" * 1001 + " end.\n"
            "Lorem ipsum dolor sit amet, consectetur.")
    out = LineFilter().edit(_t([text, "function f() { return 1; }."]))
    assert out["text"].to_pylist()[0] == ("A normal sentence that ends well.\nA claim with a citation  here.\n"
                                          "Lorem ipsum dolor sit amet, consectetur.")
    got = {c: out[c].to_pylist() for c in out if c != "text"}
    assert got["line_filter_no_terminal_punct"] == [1, 0] and got["line_filter_javascript"] == [1, 0]
    assert got["line_filter_policy"] == [1, 0] and got["line_filter_long_word"] == [1, 0]
    assert got["line_filter_citations"] == [1, 0] and got["line_filter_lorem_ipsum"] == [1, 0]
    assert got["line_filter_curly_bracket"] == [0, 1]
    assert LineFilter().default_rules() == {"line_filter_lorem_ipsum": "line_filter_lorem_ipsum == 0",
                                            "line_filter_curly_bracket": "line_filter_curly_bracket == 0"}
    rw = LineFilter(terminal_punct=False, min_words=0, uppercase=True, numeric=True, counter=True, single_word=True)
    lines = ["BREAKING NEWS TODAY", "12 345", "3 likes", "Home", "A line to keep, in full."]
    o = rw.edit(_t(["\n".join(lines)]))
    assert o["text"].to_pylist() == ["A line to keep, in full."]
    assert [o[f"line_filter_{r}"].to_pylist()[0] for r in ("uppercase", "numeric", "counter", "single_word")] == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="min_words"):
        LineFilter(min_words=-1).validate()


def test_line_filter_c4_defaults_on_real_speeches(corpus_dir):
    docs = _read(corpus_dir, "sotu", 60)["text"].to_list()
    out = LineFilter().edit(_t(docs))
    for old, new in zip(docs, out["text"].to_pylist()):
        kept = new.split("\n")
        assert all(ln.strip().endswith((".", "?", "!", '"', "'")) and len(ln.split()) >= 3 for ln in kept if new)
        # lines are kept or dropped, never rewritten, but for citation marks ("September 9 [7], 1977")
        assert set(kept) <= set(re.sub(CITATION_RE, "", old).split("\n"))
    removed = sum(sum(out[f"line_filter_{r}"].to_pylist()) for r in
                  ("long_word", "no_terminal_punct", "few_words", "javascript", "policy"))
    assert removed == sum(len(o.split("\n")) - (len(n.split("\n")) if n else 0)
                          for o, n in zip(docs, out["text"].to_pylist()))


def test_line_filter_repairs_mojibake_in_real_text(corpus_dir):
    df = pl.read_parquet(corpus_dir / "dict-foldoc.parquet", columns=["text"])
    real = df.filter(pl.col("text").str.contains("[éèàüöñç]")).head(40)["text"].to_list()
    assert len(real) == 40
    broken = [t.encode("utf-8").decode("latin-1") for t in real]
    lf = LineFilter(terminal_punct=False, min_words=0, citations=False, curly_bracket=False)
    out = lf.edit(_t(broken + real))
    assert out["text"].to_pylist()[:40] == real  # repaired
    assert out["text"].to_pylist()[40:] == real  # good text untouched
    assert out["line_filter_unicode_fixed"].to_pylist() == [1] * 40 + [0] * 40


# ---- paragraph_dedup -----------------------------------------------------------------------------

def test_paragraph_dedup_removes_real_boilerplate_but_one_copy(corpus_dir):
    docs = _read(corpus_dir, "licenses-copyright", 200).sort("id")
    table = docs.to_arrow()
    stage = ParagraphDedup().fit(LocalData(table))
    out = stage.transform(table)
    paras = lambda t: [normalize_text(pa.array([p]))[0].as_py() for p in t.split("\n\n")]  # noqa: E731
    before = {}
    for i, t in zip(docs["id"], docs["text"]):
        for p in set(paras(t)):
            if len(p) >= 20:
                before.setdefault(p, []).append(i)
    repeated = {p: ids for p, ids in before.items() if len(ids) >= 2}
    assert len(repeated) >= 50  # GPL / Debian licence paragraphs
    after = {}
    for i, t in zip(docs["id"], out["text"].to_pylist()):
        for p in set(paras(t)):
            after.setdefault(p, []).append(i)
    for p, ids in repeated.items():
        assert after.get(p) == [min(ids)], p[:80]
    assert sum(out["paragraph_dedup_removed"].to_pylist()) >= 100
    # documents holding no repeated paragraph come back byte for byte
    for t, new, n in zip(docs["text"], out["text"].to_pylist(), out["paragraph_dedup_removed"].to_pylist()):
        if n == 0:
            assert t == new
    # above max_doc_freq a paragraph goes from every document
    every = ParagraphDedup(max_doc_freq=5).fit(LocalData(table)).transform(table)
    common = [p for p, ids in repeated.items() if len(ids) > 5]
    left = {p for t in every["text"].to_pylist() for p in paras(t)}
    assert common and not set(common) & left


def test_paragraph_dedup_collision_rate_matches_the_formula(corpus_dir):
    """Distinct real lines, one per document: every removal is a hash collision. With b-bit hashes
    about U^2 / 2^(b+1) of U units collide; with 64 bits none."""
    lines = (_read(corpus_dir, "sotu", 249)["text"].str.split("\n").explode().to_frame("t")
             .with_columns(pl.col("t").str.strip_chars().str.to_lowercase().str.replace_all(r"\s+", " "))
             .filter(pl.col("t").str.len_chars() >= 40).unique("t", keep="first", maintain_order=True))
    u = 20_000
    texts = lines["t"].head(u).to_list()
    assert len(texts) == u
    table = pa.table({"id": [f"d{i:05d}" for i in range(u)], "text": pa.array(texts, pa.large_string())})
    removed = {}
    for bits in (20, 64):
        st = ParagraphDedup(unit="line", min_chars=20, hash_bits=bits).fit(LocalData(table))
        removed[bits] = sum(st.transform(table)["paragraph_dedup_removed"].to_pylist())
    expected = u * u / 2 ** 21  # ~190.7 (Poisson: sd ~14)
    assert 0.8 * expected <= removed[20] <= 1.25 * expected, (removed, expected)
    assert removed[64] == 0


def test_paragraph_dedup_fits_the_same_through_a_ray_shuffle(ray_session, corpus_dir, monkeypatch):
    import ray

    from tamis.pipeline.runner import ray_data as ray_runner
    monkeypatch.setattr(ray_runner, "LOCAL_GROUPBY_ROWS", 0)
    table = _read(corpus_dir, "licenses-copyright", 120).to_arrow()
    local = ParagraphDedup().fit(LocalData(table)).repeated_
    on_ray = ParagraphDedup().fit(ray_runner.RayData(ray.data.from_arrow(table).repartition(4),
                                                     rows=table.num_rows)).repeated_
    assert local.num_rows > 20
    assert sorted(on_ray.to_pylist(), key=str) == sorted(local.to_pylist(), key=str)


def test_paragraph_dedup_bad_params():
    with pytest.raises(ValueError, match="unit"):
        ParagraphDedup(unit="sentence").validate()
    with pytest.raises(ValueError, match="max_doc_freq"):
        ParagraphDedup(max_doc_freq=0).validate()


# ---- end to end ------------------------------------------------------------------------------------

def test_cleaning_job_end_to_end(ray_session, tmp_path, corpus_dir):
    docs = pl.concat([_read(corpus_dir, "licenses-copyright", 120), _read(corpus_dir, "sotu", 60)])
    texts, planted = plant(docs["text"].to_list(), seed=7, per_doc=2)
    docs.with_columns(pl.Series("text", texts)).write_parquet(tmp_path / "docs.parquet")
    job = tmp_path / "job.yaml"
    job.write_text(f"inputs: [{tmp_path / 'docs.parquet'}]\nstages:\n"
                   "  - use: pii\n    params: {keep_original: true}\n"
                   "  - use: line_filter\n    params: {terminal_punct: false, min_words: 0}\n    keep: default\n"
                   "  - use: paragraph_dedup\n  - use: exact_dedup\n    keep: default\n")
    summary = run_job(load_job(job, output=str(tmp_path / "run")), progress=False)
    assert summary["conservation"]["holds"] and summary["rows_read"] == 180
    curated = pl.concat([pl.read_parquet(f) for f in sorted((tmp_path / "run" / "curated").glob("*.parquet"))],
                        how="diagonal_relaxed")
    alltext = "\n".join(curated["text"].to_list())
    assert not [x for p in planted for x in p if x in alltext]
    assert (curated["pii_emails"] + curated["pii_ips"] + curated["pii_phones"] >= 2).all()
    reports = {p.name.split("-", 1)[1][:-5]: json.loads(p.read_text())
               for p in (tmp_path / "run" / "reports").glob("[0-9]*-*.json")}
    assert reports["pii"]["edits"]["rows_edited"] == 180
    assert reports["paragraph_dedup"]["edits"]["chars_removed"] > 10_000
    assert reports["line_filter"]["edits"]["rows_edited"] >= 0 and "edits" in reports["line_filter"]


def test_the_shipped_pii_job_on_planted_and_clean_real_documents(ray_session, tmp_path, corpus_dir):
    """`jobs/pii.yaml` as shipped (`--input` replaced): ≥ 99% of planted items gone from the outputs,
    `pii` edits ≤ 1% of the clean documents (no '@': their addresses would be real PII)."""
    from pathlib import Path
    repo = Path(__file__).resolve().parents[2]
    docs = _real_docs(corpus_dir, 60)
    texts, planted = plant(docs["text"].to_list(), seed=11, per_doc=3)
    clean = pl.concat([_read(corpus_dir, s, 150, seed=5) for s in ("linux-doc-6.1", "git-doc", "sotu",
                                                                     "postgresql-doc-15")])
    clean = clean.filter(~pl.col("text").str.contains("@", literal=True) & ~pl.col("id").is_in(docs["id"].to_list()))
    both = pl.concat([docs.with_columns(pl.Series("text", texts)), clean])
    both.write_parquet(tmp_path / "docs.parquet")
    job = load_job(repo / "jobs" / "pii.yaml", inputs=[str(tmp_path / "docs.parquet")], output=str(tmp_path / "run"))
    summary = run_job(job, progress=False)
    assert summary["conservation"]["holds"] and summary["rows_read"] == both.height
    out = pl.concat([pl.read_parquet(f) for part in ("curated", "rejected")
                     for f in sorted((tmp_path / "run" / part).glob("*.parquet"))], how="diagonal_relaxed")
    found = dict(zip(out["id"], out["text"]))
    total = sum(len(p) for p in planted)
    missed = [x for i, p in zip(docs["id"], planted) for x in p if x in found[i]]
    assert total == 720 and 1 - len(missed) / total >= 0.99, missed[:10]
    kinds = out.filter(pl.col("id").is_in(clean["id"].to_list()) & pl.col("pii_emails").is_not_null())
    touched = kinds.filter(pl.col("pii_emails") + pl.col("pii_ips") + pl.col("pii_phones") > 0).height
    assert kinds.height >= 300 and touched / kinds.height <= 0.01, (touched, kinds.height)
