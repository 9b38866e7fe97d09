"""LLM-judge labels for the Meta-rater dimensions through an OpenAI-compatible chat-completions API.

`Annotator.run(docs, cache)` asks the judge one question per (document, dimension) with the
additive 0–5 rubrics of `tamis.scorers.meta_rater.rubrics`, a bounded number of requests in flight (threads, stdlib
`urllib`), and retries with exponential back-off on timeouts, HTTP 429/5xx and connection errors.
Every answer goes to a resumable Parquet cache (`tamis.scorers.meta_rater.label_cache.LabelCache`) keyed by
(doc id, dimension, prompt version, judge model): a killed run resumes without asking again for
what was finished. An answer whose final line holds no score in 0..5 is stored with status
`unparsable` and a null score (never guessed); replies that are not JSON, or JSON without a
message, are stored as `non_json` / `bad_reply` and asked again on the next run, like timeouts.

Redirects are never followed: `urllib` would send the API key to wherever `Location` points (another
host or port) and turn a POST redirected by 301/302/303 into a GET whose answer looks like a label. A
3xx is an `http_error` (status and `Location` in the error), asked again on the next run. A 429 or 503 with `Retry-After` (seconds or an
HTTP date) waits that long before the retry, at most `max_retry_after` seconds.
"""
from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from email.message import Message
from email.utils import parsedate_to_datetime

import pyarrow as pa

from tamis.scorers.meta_rater import rubrics as _rubrics
from tamis.scorers.meta_rater.label_cache import FINAL_STATUSES, LabelCache

RETRY_HTTP = frozenset({408, 429, 500, 502, 503, 504})
RETRY_AFTER_HTTP = frozenset({429, 503})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Follows no redirect: the 3xx comes back as an `HTTPError` with its `Location`."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A `Retry-After` header in seconds from now (delta seconds or an HTTP date); None if absent
    or unreadable, 0 for a date in the past."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_score(answer: str, dimension: str) -> float | None:
    """The score on the judge's last `<Dimension>: N` (or `Score: N`) line; None unless N in 0..5."""
    pattern = rf"(?:{re.escape(_rubrics.label(dimension))}|score)\W{{0,3}}[:=]\W{{0,3}}(-?\d+(?:\.\d+)?)"
    hits = re.findall(pattern, answer or "", flags=re.IGNORECASE)
    if not hits:
        return None
    value = float(hits[-1])
    return value if value.is_integer() and 0 <= value <= 5 else None


@dataclass
class Reply:
    status: str          # ok | unparsable | non_json | bad_reply | timeout | http_error | connection_error
    score: float | None
    answer: str | None
    error: str | None
    attempts: int
    latency_s: float
    events: tuple[str, ...] = ()  # one entry per failed attempt: timeout | http_5xx | connection_error


class Annotator:
    """Labels documents with an LLM judge; see the module docstring for statuses and the cache."""

    def __init__(self, endpoint: str, model: str, *, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 60.0, retries: int = 3, backoff: float = 1.0, max_tokens: int = 512,
                 temperature: float = 0.0, text_chars: int = 8000,
                 dimensions: tuple[str, ...] = _rubrics.DIMENSIONS, flush_every: int = 32,
                 max_retry_after: float = 120.0):
        self.endpoint = endpoint
        self.model = model
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.text_chars = text_chars
        self.dimensions = dimensions
        self.flush_every = flush_every
        self.max_retry_after = max_retry_after

    def validate(self) -> None:
        unknown = sorted(set(self.dimensions) - set(_rubrics.DIMENSIONS))
        if unknown:
            raise ValueError(f"dimensions: unknown {unknown}; known: {list(_rubrics.DIMENSIONS)}")
        for name in ("concurrency", "text_chars", "max_tokens", "flush_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0 or self.max_retry_after < 0:
            raise ValueError("timeout must be > 0, retries, backoff and max_retry_after >= 0")
        if urllib.parse.urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise ValueError(f"endpoint must be an http:// or https:// URL, got {self.endpoint!r}")

    @property
    def url(self) -> str:
        base = self.endpoint.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    # -- one request -------------------------------------------------------------------------
    def _post(self, body: bytes) -> tuple[int, bytes, Message]:
        """POST `body` to the endpoint, following no redirect: (status, body, headers)."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as e:
            return e.code, e.read() if e.fp is not None else b"", e.headers or Message()

    def ask(self, dimension: str, text: str) -> Reply:
        """One labelled answer, with retries; never raises for network or server trouble."""
        body = json.dumps({"model": self.model, "messages": _rubrics.messages(dimension, text[: self.text_chars]),
                           "temperature": self.temperature, "max_tokens": self.max_tokens}).encode()
        t0 = time.perf_counter()
        status, error, events = "connection_error", None, []
        wait_s = None  # the server's Retry-After for the next attempt, capped
        for attempt in range(self.retries + 1):
            if attempt:
                delay = min(self.backoff * 2 ** (attempt - 1), 60.0) * (0.5 + random.random() / 2)
                time.sleep(delay if wait_s is None else max(delay, wait_s))
            wait_s = None
            try:
                code, raw, headers = self._post(body)
            except (TimeoutError, OSError) as e:  # socket.timeout is TimeoutError; URLError is OSError
                reason = getattr(e, "reason", e)
                status = "timeout" if isinstance(reason, TimeoutError) or "timed out" in str(reason) else "connection_error"
                error = f"{type(reason).__name__}: {reason}"
                events.append(status)
                continue
            if 300 <= code < 400:
                return Reply("http_error", None, None,
                             f"HTTP {code} redirect to {headers.get('Location')!r} not followed "
                             f"(tamis never follows redirects; point --endpoint at the final URL)",
                             attempt + 1, time.perf_counter() - t0, tuple(events))
            if code in RETRY_HTTP:
                status, error = "http_error", f"HTTP {code}: {raw[:200]!r}"
                events.append(f"http_{code}")
                if code in RETRY_AFTER_HTTP:
                    after = retry_after_seconds(headers.get("Retry-After"))
                    wait_s = None if after is None else min(after, self.max_retry_after)
                continue
            if code >= 400:
                return Reply("http_error", None, None, f"HTTP {code}: {raw[:200]!r}", attempt + 1,
                             time.perf_counter() - t0, tuple(events))
            reply = self._read(raw, dimension, attempt + 1, time.perf_counter() - t0)
            reply.events = tuple(events)
            return reply
        return Reply(status, None, None, error, self.retries + 1, time.perf_counter() - t0, tuple(events))

    def _read(self, raw: bytes, dimension: str, attempts: int, latency: float) -> Reply:
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return Reply("non_json", None, None, f"reply is not JSON: {raw[:200]!r}", attempts, latency)
        try:
            answer = payload["choices"][0]["message"]["content"]
            if not isinstance(answer, str):
                raise TypeError("content is not a string")
        except (KeyError, IndexError, TypeError) as e:
            return Reply("bad_reply", None, None, f"no choices[0].message.content ({e}): {raw[:200]!r}",
                         attempts, latency)
        score = parse_score(answer, dimension)
        if score is None:
            return Reply("unparsable", None, answer, "no score 0..5 on a final line", attempts, latency)
        return Reply("ok", score, answer, None, attempts, latency)

    # -- a whole run -------------------------------------------------------------------------
    def run(self, docs: pa.Table, cache_path: str, *, max_items: int | None = None,
            stop: threading.Event | None = None, progress=None) -> dict:
        """Label every (doc, dimension) not finished in the cache; returns counts for the report.

        `docs` needs `id` and `text`. `max_items` caps how many questions this run asks and `stop`
        ends it early (in-flight questions finish and are saved); both leave a resumable cache.
        """
        self.validate()
        cache = LabelCache(cache_path)
        versions = {d: _rubrics.prompt_version(d) for d in self.dimensions}
        done = cache.finished_keys(self.model)
        ids = docs["id"].to_pylist()
        texts = docs["text"].to_pylist()
        todo = [(i, d) for i in range(len(ids)) for d in self.dimensions
                if (ids[i], d, versions[d]) not in done]
        skipped = len(ids) * len(self.dimensions) - len(todo)
        if max_items is not None:
            todo = todo[:max_items]
        if progress is not None and skipped:
            progress(skipped)
        counts: Counter = Counter()
        events: Counter = Counter()
        attempts = 0
        buffer: list[dict] = []
        pending: dict = {}  # future -> (row, dimension)
        queue = iter(todo)
        first_errors: dict[str, str] = {}  # status -> the first error message of that kind
        t0 = time.perf_counter()

        def flush():
            if buffer:
                cache.append(buffer)
                buffer.clear()

        try:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                while True:
                    while len(pending) < self.concurrency and not (stop is not None and stop.is_set()):
                        item = next(queue, None)
                        if item is None:
                            break
                        pending[pool.submit(self.ask, item[1], texts[item[0]])] = item
                    if not pending:
                        break
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        i, d = pending.pop(fut)
                        r = fut.result()
                        counts[r.status] += 1
                        if r.status != "ok" and r.error and r.status not in first_errors:
                            first_errors[r.status] = r.error  # the cause, once per kind
                        events.update(r.events)
                        attempts += r.attempts
                        buffer.append({"id": ids[i], "dimension": d, "prompt_version": versions[d],
                                       "model": self.model, "status": r.status, "score": r.score,
                                       "answer": r.answer, "error": r.error, "attempts": r.attempts,
                                       "latency_s": r.latency_s, "finished_at": time.time()})
                        if progress is not None:
                            progress(1)
                    if len(buffer) >= self.flush_every:
                        flush()
        finally:
            flush()
            cache.compact()
        asked = sum(counts.values())
        done = cache.finished_keys(self.model)
        left = sum((i, d, versions[d]) not in done for i in ids for d in self.dimensions)
        return {"docs": len(ids), "dimensions": list(self.dimensions), "asked": asked,
                "skipped_cached": skipped, "left": left, "requests": attempts, "retries": attempts - asked,
                "by_status": dict(sorted(counts.items())), "failed_attempts": dict(sorted(events.items())),
                "bad_answers": counts["unparsable"], "timeouts": counts["timeout"],
                "non_json": counts["non_json"], "bad_replies": counts["bad_reply"],
                "http_errors": counts["http_error"], "connection_errors": counts["connection_error"],
                "first_errors": dict(sorted(first_errors.items())),
                "finished": sum(counts[s] for s in FINAL_STATUSES),
                "wall_s": round(time.perf_counter() - t0, 3), "prompt_versions": versions,
                "cache": str(cache.path)}


def labels_table(cache: pa.Table, docs: pa.Table, model: str | None = None) -> pa.Table:
    """One row per document in `docs` with its text and a float64 score column per dimension.

    Scores come from the cache's `ok` answers under each dimension's current prompt version
    (and `model` when given); anything else is null, so a trainer can drop it.
    """
    import polars as pl

    df = pl.from_arrow(cache).filter(pl.col("status") == "ok")
    if model is not None:
        df = df.filter(pl.col("model") == model)
    current = pl.DataFrame({"dimension": list(_rubrics.DIMENSIONS),
                            "prompt_version": [_rubrics.prompt_version(d) for d in _rubrics.DIMENSIONS]})
    df = df.join(current, on=["dimension", "prompt_version"]).sort("finished_at")
    out = pl.from_arrow(docs.select(["id", "text"]))
    for d in _rubrics.DIMENSIONS:
        col = (df.filter(pl.col("dimension") == d).unique("id", keep="last")
               .select("id", pl.col("score").cast(pl.Float64).alias(d)))
        out = out.join(col, on="id", how="left", maintain_order="left")
    return out.to_arrow()
