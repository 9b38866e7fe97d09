"""Main-text extraction from HTML: an `Editor` that replaces the HTML in `text` by the page's main text.

Extractors (`extractor:`):
- `trafilatura` (default; Barbaresi 2021) with FineWeb's settings, as DataTrove's `Trafilatura` step
  calls it: `favor_precision=True`, `include_comments=False`, plain text out. Tables are left out unless
  `include_tables: true` (trafilatura's own default keeps them). `deduplicate` (trafilatura's
  per-process LRU cache of repeated text segments, on in FineWeb) is off by default: with it the text a
  page gets depends on which pages the same worker saw before, so a rerun or a resumed run could
  differ; exact and MinHash dedup stages do that job over the whole corpus instead.
- `resiliparse` (Bevendorff et al. 2018; DCLM's extractor, about 10x faster):
  `extract_plain_text(html, main_content=True)`, formatting (paragraphs, lists) preserved.

Rows are read from WARC files by `tamis.pipeline.warc`; its columns, when present, decide which rows
are pages at all. A row is not extracted, keeps its text and gets a reason in `extract_skip` (which the
default rule turns into its reject reason) when its `http_status` is a redirect (3xx: `redirect`) or
not a success (`http_<status>`), or its `content_type` is not HTML (`not_html`: images, PDFs, fonts,
robots.txt). A WET `conversion` record is already text and passes unchanged. Input without these
columns (e.g. JSONL of HTML) is extracted row by row. A page with no main text comes back empty, and
the runner rejects it as `emptied`; a page the extractor fails on gets `extract_error`, and one it
spends more than `timeout_s` seconds on (default 5; DataTrove's sandbox default is 1) gets
`extract_timeout`: a pathological page cannot hold a worker. The limit is a SIGALRM timer in the
worker's main thread (where Ray runs tasks), checked between Python bytecodes: a single C call of
the parser is not interrupted, and where a stage runs off the main thread (or another alarm is armed)
no limit applies.

The HTML is dropped once extracted; `keep_original: true` keeps it in `text_original`.
"""
from __future__ import annotations

import logging
import signal
import threading

import pyarrow as pa
import trafilatura
from resiliparse.extract.html2text import extract_plain_text

from tamis.pipeline.stage import Editor, Resources

EXTRACTORS = ("trafilatura", "resiliparse")
HTML_TYPES = ("text/html", "application/xhtml+xml")
log = logging.getLogger(__name__)


class PageTimeout(BaseException):
    """Raised by the page timer; a BaseException so that no `except Exception` in an extractor eats it."""


def _on_alarm(signum, frame):
    raise PageTimeout


def can_time_out() -> bool:
    """SIGALRM reaches only the main thread, so a page timer works only there, and only when no one
    else's alarm is armed (ours would cancel it)."""
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0)


def skip_reason(status: int | None, content_type: str | None, warc_type: str | None) -> str | None:
    """Why a row is not an HTML page to extract (None when it is one)."""
    if status is not None:
        if 300 <= status < 400:
            return "redirect"
        if not 200 <= status < 300:
            return f"http_{status}"
    if content_type is not None and content_type not in HTML_TYPES:
        return None if warc_type == "conversion" else "not_html"
    return None


class Extract(Editor):
    """The main text of each HTML page, in place of its HTML."""

    name = "extract"
    requires = ("text",)
    columns = {"extract_skip": pa.string()}
    resources = Resources(cpus=1, batch_size=200)
    default_keep = {"{extract_skip}": "extract_skip is None"}

    def __init__(self, extractor: str = "trafilatura", include_tables: bool = False, include_comments: bool = False,
                 favor_precision: bool = True, deduplicate: bool = False, keep_original: bool = False,
                 timeout_s: float | None = 5.0):
        self.extractor = extractor
        self.include_tables = include_tables
        self.include_comments = include_comments
        self.favor_precision = favor_precision
        self.deduplicate = deduplicate
        self.keep_original = keep_original
        self.timeout_s = timeout_s

    def validate(self) -> None:
        if self.extractor not in EXTRACTORS:
            raise ValueError(f"extractor must be one of {list(EXTRACTORS)}, got {self.extractor!r}")
        for p in ("include_tables", "include_comments", "favor_precision", "deduplicate", "keep_original"):
            if not isinstance(getattr(self, p), bool):
                raise ValueError(f"{p} must be true or false, got {getattr(self, p)!r}")
        t = self.timeout_s
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0):
            raise ValueError(f"timeout_s must be a number of seconds > 0 or null (no limit), got {t!r}")

    def extract_one(self, html: str) -> str:
        """The main text of one page ('' when it has none)."""
        if self.extractor == "resiliparse":
            return extract_plain_text(html, main_content=True)
        return trafilatura.extract(html, favor_precision=self.favor_precision,
                                   include_comments=self.include_comments, include_tables=self.include_tables,
                                   deduplicate=self.deduplicate) or ""

    def edit(self, batch: pa.Table) -> dict[str, pa.Array]:
        n = batch.num_rows
        names = batch.column_names
        col = {c: batch[c].to_pylist() if c in names else [None] * n for c in ("http_status", "content_type", "warc_type")}
        timed = bool(self.timeout_s) and can_time_out()
        if self.timeout_s and not timed and not getattr(self, "_warned", False):
            log.warning("extract: timeout_s is not enforced off the main thread or under another alarm")
            self._warned = True
        previous = signal.signal(signal.SIGALRM, _on_alarm) if timed else None
        texts, skips = [], []
        try:
            for i, html in enumerate(batch["text"].to_pylist()):
                why = skip_reason(col["http_status"][i], col["content_type"][i], col["warc_type"][i])
                out = html
                if why is None and col["warc_type"][i] != "conversion":
                    out, why = self._extract_timed(html, timed)
                texts.append(out)
                skips.append(why)
        finally:
            if timed:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
        return {"text": pa.array(texts, pa.large_string()), "extract_skip": pa.array(skips, pa.string())}

    def _extract_timed(self, html: str, timed: bool) -> tuple[str, str | None]:
        """(text, None), or the page unchanged with `extract_error` / `extract_timeout`."""
        try:
            try:
                if timed:
                    signal.setitimer(signal.ITIMER_REAL, self.timeout_s)
                return self.extract_one(html), None
            except Exception:  # noqa: BLE001 - an extractor bug on one page must not stop the job
                return html, "extract_error"
            finally:
                if timed:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except PageTimeout:  # also when the timer fired just as the page finished
            return html, "extract_timeout"
