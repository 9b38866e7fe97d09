"""`tamis.scorers.meta_rater.annotate` against a local chat-completions server that misbehaves on purpose."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tamis.scorers.meta_rater import rubrics as _rubrics
from tamis.scorers.meta_rater.label_cache import LabelCache
from tamis.scorers.meta_rater.annotate import Annotator, labels_table, parse_score

REPO = Path(__file__).resolve().parents[2]


class LocalServer:
    """A threaded HTTP server on a free 127.0.0.1 port, running inside `with`; `url` ends in /v1."""

    def serve(self, handler) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class JudgeServer(LocalServer):
    """Answers like an OpenAI-compatible endpoint; the document's first word picks the behaviour.

    `good-N` -> an answer ending in `<Label>: N`; `bad` -> no score; `outofrange` -> score 7;
    `slow` -> sleeps past the client timeout; `html` -> a 200 that is not JSON; `flaky` -> HTTP 500
    on the first ask, then a good answer; `down` -> always 503; `noreply` -> JSON without choices.
    """

    def __init__(self, stop_after: int | None = None, delay: float = 0.0):
        self.hits: Counter = Counter()
        self.lock = threading.Lock()
        self.stop_after = stop_after
        self.stop = threading.Event()
        self.delay = delay
        self.auth: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                doc = re.search(r"<<<\n(.*?)\n>>>", prompt, re.S).group(1)
                label = prompt.strip().splitlines()[-1].split(":")[0]
                word = doc.split()[0]
                with server.lock:
                    server.hits[(doc, label)] += 1
                    n = server.hits[(doc, label)]
                    server.auth.append(self.headers.get("Authorization"))
                    if server.stop_after and sum(server.hits.values()) >= server.stop_after:
                        server.stop.set()
                if server.delay:
                    time.sleep(server.delay)
                if word == "slow":
                    time.sleep(1.0)
                    return self._json({"choices": [{"message": {"content": f"{label}: 3"}}]})
                if word == "html":
                    return self._send(200, b"<html><body>Bad gateway</body></html>", "text/html")
                if word == "down" or (word == "flaky" and n == 1):
                    return self._send(503 if word == "down" else 500, b"oops", "text/plain")
                if word == "noreply":
                    return self._json({"error": {"message": "overloaded"}})
                if word == "bad":
                    return self._json({"choices": [{"message": {"content": "A fine text, I think."}}]})
                if word == "outofrange":
                    return self._json({"choices": [{"message": {"content": f"Great.\n{label}: 7"}}]})
                score = int(word.split("-")[1]) if word.startswith("good-") else 2
                return self._json({"choices": [{"message": {"role": "assistant",
                                                            "content": f"Clear enough.\n**{label}: {score}**"}}]})

            def _json(self, obj):
                self._send(200, json.dumps(obj).encode(), "application/json")

            def _send(self, code, data, ctype):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.serve(Handler)


def docs(texts):
    return pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts})


def fast(url, **kw):
    kw = {"concurrency": 4, "timeout": 0.3, "retries": 1, "backoff": 0.01, "flush_every": 2,
          "dimensions": ("professionalism", "reasoning"), **kw}
    return Annotator(url, "judge-1", **kw)


def test_parse_score_takes_last_valid_line_and_never_guesses():
    assert parse_score("Because...\nProfessionalism: 4", "professionalism") == 4
    assert parse_score("Readability: 1\nOn reflection\nReadability: 3", "readability") == 3
    assert parse_score("**Reasoning:** 2", "reasoning") == 2
    assert parse_score("Score: 5", "cleanliness") == 5
    assert parse_score("Professionalism: 7", "professionalism") is None
    assert parse_score("Professionalism: 2.5", "professionalism") is None
    assert parse_score("I would say four.", "professionalism") is None
    assert parse_score("", "reasoning") is None


def test_statuses_counts_and_cache(tmp_path):
    texts = ["good-4 a well written note", "good-1 another", "bad text", "outofrange text",
             "slow text", "html text", "flaky text", "down text", "noreply text"]
    cache = tmp_path / "labels.parquet"
    with JudgeServer() as srv:
        rep = fast(srv.url, api_key="sk-test").run(docs(texts), str(cache))
    assert rep["asked"] == 18 and rep["skipped_cached"] == 0
    assert rep["by_status"] == {"ok": 6, "unparsable": 4, "timeout": 2, "non_json": 2, "http_error": 2,
                                "bad_reply": 2}
    assert rep["bad_answers"] == 4 and rep["timeouts"] == 2 and rep["non_json"] == 2
    assert rep["failed_attempts"] == {"http_500": 2, "http_503": 4, "timeout": 4}  # retries=1: 2 tries each
    assert rep["left"] == 8 and rep["finished"] == 10
    assert set(srv.auth) == {"Bearer sk-test"}
    t = pl.from_arrow(pq.read_table(cache))
    assert not (tmp_path / "labels.parquet.parts").exists()  # compacted
    assert t.height == 18
    by = {(r["id"], r["dimension"]): r for r in t.iter_rows(named=True)}
    assert by[("d0", "professionalism")]["score"] == 4.0 and by[("d0", "reasoning")]["status"] == "ok"
    assert by[("d6", "reasoning")]["status"] == "ok" and by[("d6", "reasoning")]["attempts"] == 2
    for i in (2, 3):  # never guessed
        assert by[(f"d{i}", "reasoning")]["status"] == "unparsable"
        assert by[(f"d{i}", "reasoning")]["score"] is None
        assert by[(f"d{i}", "reasoning")]["answer"]
    assert by[("d4", "professionalism")]["status"] == "timeout"
    assert by[("d5", "professionalism")]["status"] == "non_json"
    assert by[("d8", "professionalism")]["status"] == "bad_reply"
    assert set(t["prompt_version"].unique()) == {_rubrics.prompt_version("professionalism"),
                                                 _rubrics.prompt_version("reasoning")}
    labels = pl.from_arrow(labels_table(pq.read_table(cache), docs(texts)))
    assert labels.columns == ["id", "text", *_rubrics.DIMENSIONS]
    assert labels["professionalism"].to_list()[:4] == [4.0, 1.0, None, None]
    assert labels["readability"].null_count() == len(texts)


def test_rerun_asks_only_unfinished(tmp_path):
    texts = ["good-3 x", "bad x", "html x", "down x", "good-5 y"]
    cache = str(tmp_path / "c.parquet")
    with JudgeServer() as srv:
        fast(srv.url).run(docs(texts), cache)
        first = Counter(srv.hits)
        rep = fast(srv.url).run(docs(texts), cache)
    second = srv.hits - first
    asked_again = {doc.split()[0] for doc, _ in second}
    assert asked_again == {"html", "down"}  # ok and unparsable are final; failures are retried
    assert rep["skipped_cached"] == 6 and rep["asked"] == 4


def test_max_items_interrupt_then_resume_never_reasks(tmp_path):
    texts = [f"good-{i % 6} document number {i}" for i in range(15)]
    cache = str(tmp_path / "c.parquet")
    with JudgeServer() as srv:
        rep1 = fast(srv.url).run(docs(texts), cache, max_items=11)
        assert rep1["asked"] == 11 and rep1["left"] == 19
        rep2 = fast(srv.url).run(docs(texts), cache)
    assert rep2["skipped_cached"] == 11 and rep2["asked"] == 19 and rep2["left"] == 0
    assert len(srv.hits) == 30 and set(srv.hits.values()) == {1}


def test_stop_event_mid_run_then_resume(tmp_path):
    texts = [f"good-2 doc {i}" for i in range(20)]
    cache = str(tmp_path / "c.parquet")
    with JudgeServer(stop_after=9, delay=0.02) as srv:
        rep1 = fast(srv.url).run(docs(texts), cache, stop=srv.stop)
        assert 9 <= rep1["asked"] < 40
        rep2 = fast(srv.url).run(docs(texts), cache)
    assert rep1["asked"] + rep2["asked"] == 40
    assert set(srv.hits.values()) == {1}
    assert pl.from_arrow(LabelCache(cache).load())["status"].to_list() == ["ok"] * 40


def test_prompt_or_model_change_invalidates(tmp_path):
    cache = str(tmp_path / "c.parquet")
    with JudgeServer() as srv:
        fast(srv.url).run(docs(["good-1 a"]), cache)
        rep = Annotator(srv.url, "judge-2", dimensions=("professionalism",), backoff=0.01).run(
            docs(["good-1 a"]), cache)
    assert rep["asked"] == 1 and srv.hits[("good-1 a", "Professionalism")] == 2


def test_killed_process_resumes_without_reasking(tmp_path):
    """SIGKILL a real annotate process partway; the rerun asks only what was not saved."""
    texts = [f"good-{i % 6} text {i}" for i in range(40)]
    src = tmp_path / "docs.parquet"
    pq.write_table(docs(texts), src)
    cache = tmp_path / "c.parquet"
    with JudgeServer(delay=0.05) as srv:
        code = ("import pyarrow.parquet as pq; from tamis.scorers.meta_rater.annotate import Annotator; "
                f"Annotator({srv.url!r}, 'judge-1', concurrency=2, flush_every=1, "
                f"dimensions=('reasoning',)).run(pq.read_table({str(src)!r}), {str(cache)!r})")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen([sys.executable, "-c", code], env=env)
        parts = Path(str(cache) + ".parts")
        deadline = time.time() + 60
        while time.time() < deadline and len(list(parts.glob("*.parquet")) if parts.exists() else []) < 6:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saved = LabelCache(cache).load()
        assert 6 <= saved.num_rows < 40
        hits_before = Counter(srv.hits)
        rep = Annotator(srv.url, "judge-1", concurrency=2, dimensions=("reasoning",)).run(docs(texts), str(cache))
    saved_docs = {texts[int(i[1:])] for i in saved["id"].to_pylist()}
    reasked = {doc for (doc, _), n in (srv.hits - hits_before).items()}
    assert not (reasked & saved_docs)
    assert rep["skipped_cached"] == saved.num_rows and rep["left"] == 0
    assert LabelCache(cache).load().num_rows == 40


def test_real_corpus_text_round_trip(corpus_dir, tmp_path):
    t = pq.read_table(corpus_dir / "dict-devil.parquet", columns=["id", "text"]).slice(0, 6)
    with JudgeServer() as srv:  # real text starts with no marker word: the server answers 2
        rep = fast(srv.url, dimensions=("cleanliness",), text_chars=200).run(t, str(tmp_path / "c.parquet"))
    assert rep["by_status"] == {"ok": 6}
    docs_seen = [d for d, _ in srv.hits]
    assert all(len(d) <= 200 for d in docs_seen)  # text_chars truncates what the judge sees


def test_validate_names_parameter():
    with pytest.raises(ValueError, match="dimensions"):
        Annotator("http://x", "m", dimensions=("humour",)).validate()
    with pytest.raises(ValueError, match="concurrency"):
        Annotator("http://x", "m", concurrency=0).validate()


def test_cli_annotate_then_resume(tmp_path, monkeypatch):
    from tamis.pipeline.cli import main

    texts = [f"good-{i % 6} cli doc {i}" for i in range(12)] + ["bad cli doc"]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": f"x{i}", "text": t}) for i, t in enumerate(texts)) + "\n")
    out = tmp_path / "cache.parquet"
    monkeypatch.setenv("JUDGE_KEY", "sk-cli")
    with JudgeServer() as srv:
        args = ["annotate", "--input", str(src), "--endpoint", srv.url, "--model", "judge-1", "--out", str(out),
                "--dimensions", "readability", "--sample", "10", "--api-key-env", "JUDGE_KEY",
                "--backoff", "0.01", "--concurrency", "3"]
        assert main(args + ["--max-items", "4"]) == 1  # partial run: says so in its exit code
        assert main(args) == 0
    rep = json.loads((tmp_path / "cache.report.json").read_text())
    assert rep["skipped_cached"] == 4 and rep["asked"] == 6 and rep["left"] == 0
    assert sum(srv.hits.values()) == 10 and set(srv.auth) == {"Bearer sk-cli"}
    labels = pl.read_parquet(tmp_path / "cache.labels.parquet")
    assert labels.height == 10 and labels.columns[:2] == ["id", "text"]
    ok = labels.filter(pl.col("readability").is_not_null())
    assert ok.height == 10 - labels["text"].str.starts_with("bad").sum()
    assert all(float(t.split()[0].split("-")[1]) == s for t, s in zip(ok["text"], ok["readability"]))


def test_rubrics_page_matches_the_prompts():
    page = (REPO / "docs" / "meta_rater_rubrics.md").read_text()
    assert _rubrics.SYSTEM in page and _rubrics.TEMPLATE in page
    for d in _rubrics.DIMENSIONS:
        assert _rubrics.RUBRICS[d] in page and _rubrics.prompt_version(d) in page


class ScriptedServer(LocalServer):
    """A local HTTP server whose answer to every GET/POST is `reply(n, handler) -> (code, headers,
    body)` (n counts requests from 1); records each request's method and Authorization header."""

    def __init__(self, reply):
        self.requests: list[tuple[str, str | None]] = []
        self.times: list[float] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                if self.headers.get("Content-Length"):
                    self.rfile.read(int(self.headers["Content-Length"]))
                server.requests.append((self.command, self.headers.get("Authorization")))
                server.times.append(time.monotonic())
                code, headers, body = reply(len(server.requests), self)
                self.send_response(code)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.serve(Handler)


GOOD = json.dumps({"choices": [{"message": {"content": "Fine.\nProfessionalism: 5"}}]}).encode()


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed_and_the_key_stays_home(tmp_path, code):
    """A redirect to another port would get the API key (and a POST turned GET its answer stored
    as a label): the 3xx is an error for that question, the other server sees nothing."""
    with ScriptedServer(lambda n, h: (200, {"Content-Type": "application/json"}, GOOD)) as elsewhere:
        target = elsewhere.url + "/chat/completions"
        with ScriptedServer(lambda n, h: (code, {"Location": target}, b"moved")) as home:
            rep = fast(home.url, api_key="sk-secret", dimensions=("professionalism",)).run(
                docs(["good-3 a text"]), str(tmp_path / "c.parquet"))
    assert elsewhere.requests == []
    assert home.requests == [("POST", "Bearer sk-secret")]  # no retry of a redirect
    assert rep["by_status"] == {"http_error": 1} and rep["left"] == 1
    row = LabelCache(tmp_path / "c.parquet").load().to_pylist()[0]
    assert row["score"] is None and f"HTTP {code}" in row["error"] and target in row["error"]


def test_retry_after_is_honoured_and_capped(tmp_path):
    def busy(after):
        return lambda n, h: ((429, {"Retry-After": after}, b"slow down") if n == 1
                             else (200, {"Content-Type": "application/json"}, GOOD))

    with ScriptedServer(busy("1")) as srv:
        rep = fast(srv.url, dimensions=("professionalism",), retries=2, backoff=0.01).run(
            docs(["good-5 x"]), str(tmp_path / "a.parquet"))
    assert rep["by_status"] == {"ok": 1} and rep["failed_attempts"] == {"http_429": 1}
    assert 0.9 <= srv.times[1] - srv.times[0] < 5
    with ScriptedServer(busy("3600")) as srv:  # an hour, capped to max_retry_after
        rep = fast(srv.url, dimensions=("professionalism",), retries=2, backoff=0.01,
                   max_retry_after=0.3).run(docs(["good-5 x"]), str(tmp_path / "b.parquet"))
    assert rep["by_status"] == {"ok": 1} and 0.25 <= srv.times[1] - srv.times[0] < 2


def test_retry_after_header_forms():
    from email.utils import formatdate

    from tamis.scorers.meta_rater.annotate import retry_after_seconds

    now = time.time()
    assert retry_after_seconds("7", now) == 7.0
    assert 29 <= retry_after_seconds(formatdate(now + 30, usegmt=True), now) <= 31
    assert retry_after_seconds(formatdate(now - 30, usegmt=True), now) == 0.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("-3") is None
    with pytest.raises(ValueError, match="endpoint"):
        Annotator("file:///etc/passwd", "m").validate()


def test_cli_summary_names_the_first_error_of_each_kind(tmp_path, capsys):
    """`connection_error: 5` alone does not say why: the summary carries the first message per kind."""
    import socket

    from tamis.pipeline.cli import main

    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": f"x{i}", "text": f"doc {i}"}) for i in range(3)) + "\n")
    out = tmp_path / "cache.parquet"
    assert main(["annotate", "--input", str(src), "--endpoint", f"http://127.0.0.1:{port}/v1", "--model", "j",
                 "--out", str(out), "--dimensions", "readability", "--retries", "0", "--timeout", "2"]) == 1
    rep = json.loads((tmp_path / "cache.report.json").read_text())
    assert rep["connection_errors"] == 3
    assert "refused" in rep["first_errors"]["connection_error"].lower()
    err = capsys.readouterr().err
    assert "3 connection_error, the first: " in err and "refused" in err.lower()
