"""Web front end: `extract` (trafilatura / resiliparse main text) and `url_filter` (block lists)."""
import gzip
import json
import signal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
import trafilatura
from resiliparse.extract.html2text import extract_plain_text

from tamis.pipeline.readers import Quarantine, ReadStats, read_file
from tamis.pipeline.rules import compile_rules
from tamis.pipeline.runner.apply import apply_stage
from tamis.pipeline.runner.job import run_job
from tamis.pipeline.spec import load_job
from tamis.scorers.web.extract import Extract
from tamis.scorers.web.url_filter import UrlFilter, normalize_url

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample_web" / "sample.warc.gz"
PAGE = "<html><body><article><p>" + "Paragraph {i} of a page about nothing much. " * 30 + "</p></article></body></html>"


def response(url: str, body: bytes, i: int) -> bytes:
    """A WARC response record of an HTML page (as tests/pipeline/test_warc.py builds them)."""
    http = (f"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\n\r\n"
            .encode() + body)
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-{i:012d}>\r\n"
            f"WARC-Date: 2024-01-01T00:00:00Z\r\nWARC-Target-URI: {url}\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


@pytest.fixture(scope="module")
def sample() -> pa.Table:
    stats, q = ReadStats(str(SAMPLE)), Quarantine(str(SAMPLE))
    return pa.concat_tables(read_file(SAMPLE, stats, q))


def _pages(sample, n=6):
    ok = pl.from_arrow(sample).filter((pl.col("content_type") == "text/html") & (pl.col("http_status") == 200)
                                      & (pl.col("text").str.len_bytes() > 20_000))  # not the redirect stubs
    return ok.gather_every(max(1, ok.height // n)).head(n).to_arrow()


def test_trafilatura_extraction_equals_trafilatura_called_directly(sample):
    pages = _pages(sample)
    out = Extract().edit(pages)
    direct = [trafilatura.extract(h, favor_precision=True, include_comments=False, include_tables=False,
                                  deduplicate=False) or "" for h in pages["text"].to_pylist()]
    assert out["text"].to_pylist() == direct
    assert all(len(t) > 200 and "<" not in t[:50] for t in direct)
    assert out["extract_skip"].null_count == pages.num_rows


def test_resiliparse_extraction_equals_resiliparse_called_directly(sample):
    pages = _pages(sample)
    out = Extract(extractor="resiliparse").edit(pages)
    assert out["text"].to_pylist() == [extract_plain_text(h, main_content=True) for h in pages["text"].to_pylist()]


def test_tables_are_kept_only_when_asked():
    html = ("<html><body><article><p>" + "A sentence of prose about tables in documents. " * 10 + "</p>"
            "<table><tr><td>cellalpha</td><td>cellbeta</td></tr><tr><td>cellgamma</td><td>celldelta</td></tr></table>"
            "</article></body></html>")
    batch = pa.table({"text": pa.array([html], pa.large_string())})
    assert "cellalpha" not in Extract().edit(batch)["text"][0].as_py()
    assert "cellalpha" in Extract(include_tables=True).edit(batch)["text"][0].as_py()


def test_non_pages_are_rejected_with_a_reason_and_empty_pages_as_emptied():
    batch = pa.table({
        "id": ["img", "redir", "404", "wet", "empty", "page"],
        "text": pa.array(["[image/png payload, 9 bytes, HTTP 200]", "[text/html payload, 0 bytes, HTTP 301]",
                          "<html><body><p>Not found</p></body></html>", "already plain text",
                          "<html><head><script>var x = 1;</script></head><body><div></div></body></html>",
                          "<html><body><article><p>" + "Real prose of a real page goes here. " * 20 + "</p></article></body></html>"],
                         pa.large_string()),
        "content_type": ["image/png", "text/html", "text/html", "text/plain", "text/html", "text/html"],
        "http_status": pa.array([200, 301, 404, None, 200, 200], pa.int32()),
        "warc_type": ["response", "response", "response", "conversion", "response", "response"]})
    stage = Extract(keep_original=True)
    out, st = apply_stage(batch, "extract", stage, compile_rules(stage.default_rules()), stage.edit)
    assert out["reject_reason"].to_pylist() == ["not_html", "redirect", "http_404", None, "emptied", None]
    assert out["text"][3].as_py() == "already plain text"  # WET text passes unchanged
    assert out["text"][5].as_py().startswith("Real prose")
    assert out["text_original"][5].as_py().startswith("<html>")
    assert st.extra["rows_emptied"] == 1


def test_a_page_over_the_time_limit_is_rejected_as_extract_timeout_and_the_timer_is_cleared(sample):
    """Real pages glued into one ~3 MB page take trafilatura well over 50 ms; the next page is not hit."""
    pages = _pages(sample, n=6)["text"].to_pylist()
    body = "".join(h.split("<body", 1)[-1].split("</body>")[0] for h in pages * 6)
    huge = "<html><body" + body + "</body></html>"
    batch = pa.table({"id": ["huge", "small"], "text": pa.array([huge, PAGE.format(i=1)], pa.large_string())})
    stage = Extract(timeout_s=0.05)
    out, _ = apply_stage(batch, "extract", stage, compile_rules(stage.default_rules()), stage.edit)
    assert out["reject_reason"].to_pylist() == ["extract_timeout", None]
    assert out["text"][0].as_py() == huge and out["text"][1].as_py().startswith("Paragraph")
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.default_int_handler)
    assert Extract(timeout_s=None).edit(batch.slice(0, 1))["extract_skip"][0].as_py() is None
    signal.setitimer(signal.ITIMER_REAL, 60)  # someone else's alarm: left armed, no page limit
    try:
        assert stage.edit(batch.slice(0, 1))["extract_skip"][0].as_py() is None
        assert 0 < signal.getitimer(signal.ITIMER_REAL)[0] <= 60
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def test_extract_validates_its_extractor():
    with pytest.raises(ValueError, match="extractor"):
        Extract(extractor="boilerpipe").validate()
    for bad in (0, -1, "5", True):
        with pytest.raises(ValueError, match="timeout_s"):
            Extract(timeout_s=bad).validate()


@pytest.mark.parametrize("url, norm", [
    ("HTTP://WWW.Example.COM:80/a/B?x=1#frag", "http://example.com/a/B?x=1"),
    ("https://example.com:443", "https://example.com/"),
    ("https://example.com:8443/p", "https://example.com:8443/p"),
    ("https://www.sub.example.com./p", "https://sub.example.com/p"),
    ("not a url", None), ("", None), (None, None)])
def test_url_normalisation(url, norm):
    assert normalize_url(url) == norm


def test_url_filter_blocks_domains_with_subdomains_urls_and_words(tmp_path):
    (tmp_path / "block.txt").write_text("# comment\nbad.com\n\nEvil.org   # trailing comment\nok.net/one/page\n")
    (tmp_path / "words.txt").write_text("casino\n")
    (tmp_path / "sub.txt").write_text("xxx\n")
    stage = UrlFilter(blocklist=str(tmp_path / "block.txt"), banned_words=str(tmp_path / "words.txt"),
                      banned_subwords=str(tmp_path / "sub.txt"))
    stage.validate()
    urls = ["https://bad.com/x", "http://ads.tracker.BAD.com:80/y", "https://notbad.com/", "https://www.evil.org",
            "https://ok.net/one/page", "http://WWW.ok.net/one/page#top", "https://ok.net/one/other",
            "https://games.io/free-casino-bonus", "https://games.io/casinos", "https://a.io/pxxxq", None]
    out = stage.score(pa.table({"url": pa.array(urls, pa.string())}))
    assert out["url_filter_match"].to_pylist() == [
        "blocklist:bad.com", "blocklist:bad.com", None, "blocklist:evil.org", "blocklist:ok.net/one/page",
        "blocklist:ok.net/one/page", None, "banned_words:casino", None, "banned_subwords:xxx", None]
    assert out["url_normalized"][1].as_py() == "http://ads.tracker.bad.com/y"
    assert stage.default_rules() == {"url_{url_filter_match}": "url_filter_match is None"}


def test_url_filter_needs_a_list_that_exists(tmp_path):
    with pytest.raises(ValueError, match="at least one list"):
        UrlFilter(blocklist=None).validate()
    with pytest.raises(ValueError, match="not found"):
        UrlFilter(blocklist=str(tmp_path / "none.txt")).validate()


def test_web_job_on_the_sample_conserves_rows_and_extracts_the_pages(ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    # beside the sample, a small crawl with one damaged gzip member: quarantined with its offset
    members = [gzip.compress(response(f"https://site.org/{i}", PAGE.format(i=i).encode(), i=i)) for i in range(4)]
    members[2] = members[2][:30] + b"\x00" * 40 + members[2][70:]
    bad = tmp_path / "bad.warc.gz"
    bad.write_bytes(b"".join(members))
    job = tmp_path / "web.yaml"
    job.write_text(f"inputs: [{SAMPLE}, {bad}]\nray: {{num_cpus: 2}}\nstages:\n"
                   "  - use: extract\n    keep: default\n"
                   "  - use: url_filter\n    params: {blocklist: data/url_blocklist.txt}\n    keep: default\n")
    summary = run_job(load_job(job, output=str(tmp_path / "run")), progress=False)
    assert summary["conservation"]["holds"] and summary["quarantined"] == 1 and summary["rows_read"] == 288 + 4
    quarantine = pl.concat([pl.read_parquet(f) for f in (tmp_path / "run" / "quarantine").glob("*.parquet")])
    assert quarantine["file"].to_list() == [str(bad)]
    assert f"after the record at byte offset {len(members[0])}" in quarantine["error"][0]
    out = pl.concat([pl.read_parquet(f) for part in ("curated", "rejected")
                     for f in sorted((tmp_path / "run" / part).glob("*.parquet"))], how="diagonal_relaxed")
    assert out.filter(pl.col("input_file") == str(bad))["url"].sort().to_list() == [
        "https://site.org/0", "https://site.org/1", "https://site.org/3"]
    out = out.filter(pl.col("input_file") == str(SAMPLE))
    html = out.filter((pl.col("content_type") == "text/html") & (pl.col("http_status") == 200))
    extracted = html.filter(pl.col("reject_stage").is_null() | (pl.col("reject_stage") != "extract"))
    assert extracted.height / html.height >= 0.95
    reasons = dict(out.group_by("reject_reason").len().iter_rows())
    assert reasons["not_html"] == 5 and reasons["redirect"] == 1 and reasons["http_404"] == 1
    assert reasons["url_blocklist:spam.test"] == 3
    curated = out.filter(pl.col("reject_stage").is_null())
    assert curated["url"].null_count() == 0 and not curated["text"].str.contains("<html").any()
    assert set(curated["license"]) == {"MIT OR Apache-2.0 (The Rust Project Developers)"}
    report = json.loads((tmp_path / "run" / "reports" / "summary.json").read_text())
    assert "MIT OR Apache-2.0 (The Rust Project Developers)" in report["provenance"]["by_license"]
