"""Rebuild data/sample_web/sample.warc.gz: a small web crawl of real HTML for jobs/web.yaml.

Pages: The Rust Programming Language book (chapters and appendices) and the Rust Edition Guide, as
shipped with the Rust toolchain (`rustup component add rust-docs`), both MIT OR Apache-2.0 (The Rust
Project Developers). Each record is a WARC `response` at the page's public URL on doc.rust-lang.org and
carries its licence in a `WARC-License` header, which tamis reads into the `license` column.

So that every path of the web recipe shows in the report, the crawl also holds:
- non-HTML responses: two SVG and one PNG figure of the book, a WOFF2 font, and a robots.txt;
- a 301 redirect (empty body) and a 404 page;
- one page sent as windows-1252 (declared in Content-Type) and one with no charset at all;
- two pages fetched again under un-normalised URLs (`http://WWW.Doc.Rust-Lang.org:80/...`);
- three pages copied onto a mirror host listed in data/url_blocklist.txt (`docs-mirror.spam.test`);
- a `warcinfo` record first (describes the crawl; not a document).
Records are gzip members one by one (like Common Crawl), written deterministically (fixed dates, ids
from the URL), so a rebuild is byte-identical.

Run:  .venv/bin/python data/sample_web/build.py [--rust-docs DIR]
"""
from __future__ import annotations

import argparse
import glob
import gzip
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "sample.warc.gz"
DATE = "2025-05-20T00:00:00Z"
LICENSE = "MIT OR Apache-2.0 (The Rust Project Developers)"
OURS = "CC0-1.0 (tamis sample)"  # the few records written here (robots.txt, redirect, 404)
BASE = "https://doc.rust-lang.org/"


def default_docs() -> str:
    found = sorted(glob.glob("/root/.rustup/toolchains/*/share/doc/rust/html")
                   + glob.glob(str(Path.home() / ".rustup/toolchains/*/share/doc/rust/html")))
    if not found:
        raise SystemExit("Rust docs not found: pass --rust-docs DIR (rustup component add rust-docs)")
    return found[0]


def record(url: str, status: str, headers: list[tuple[str, str]], body: bytes, license: str) -> bytes:
    http = f"HTTP/1.1 {status}\r\n".encode()
    for k, v in [*headers, ("Content-Length", str(len(body)))]:
        http += f"{k}: {v}\r\n".encode()
    http += b"\r\n" + body
    rid = uuid.uuid5(uuid.NAMESPACE_URL, f"{url}#{status}")
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{rid}>\r\nWARC-Date: {DATE}\r\n"
            f"WARC-Target-URI: {url}\r\nWARC-License: {license}\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n").encode()
    return head + http + b"\r\n\r\n"


def warcinfo() -> bytes:
    body = (b"software: tamis data/sample_web/build.py\r\n"
            b"description: Rust documentation pages (MIT OR Apache-2.0) served as a small web crawl\r\n")
    head = (f"WARC/1.0\r\nWARC-Type: warcinfo\r\nWARC-Record-ID: <urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'info')}>"
            f"\r\nWARC-Date: {DATE}\r\nWARC-Filename: sample.warc.gz\r\nContent-Type: application/warc-fields\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body + b"\r\n\r\n"


def html(url: str, body: bytes, charset: str | None = "utf-8", license: str = LICENSE) -> bytes:
    ctype = "text/html" + (f"; charset={charset}" if charset else "")
    return record(url, "200 OK", [("Content-Type", ctype)], body, license)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rust-docs", default=None)
    docs = Path(ap.parse_args().rust_docs or default_docs())
    pages = sorted(docs.glob("book/ch*.html")) + sorted(docs.glob("book/appendix-*.html"))
    pages += sorted(p for p in docs.glob("edition-guide/**/*.html") if p.name not in ("print.html", "404.html"))
    recs = [warcinfo()]
    for i, p in enumerate(pages):
        url = BASE + p.relative_to(docs).as_posix()
        body = p.read_bytes()
        if i == 7:  # one page sent as windows-1252, declared in the header
            recs.append(html(url, body.decode("utf-8").encode("cp1252", "xmlcharrefreplace"), "windows-1252"))
        elif i == 11:  # one page without a charset: detected
            recs.append(html(url, body, None))
        else:
            recs.append(html(url, body))
    for p in pages[20:22]:  # fetched again under un-normalised URLs
        url = "http://WWW.Doc.Rust-Lang.org:80/" + p.relative_to(docs).as_posix()
        recs.append(html(url, p.read_bytes()))
    for p in pages[30:33]:  # copies on a blocklisted mirror
        recs.append(html("https://docs-mirror.spam.test/" + p.relative_to(docs).as_posix(), p.read_bytes()))
    for name, ctype in (("book/img/trpl04-01.svg", "image/svg+xml"), ("book/img/trpl04-02.svg", "image/svg+xml"),
                        ("book/img/trpl14-01.png", "image/png")):
        recs.append(record(BASE + name, "200 OK", [("Content-Type", ctype)], (docs / name).read_bytes(), LICENSE))
    font = sorted(docs.glob("rustdoc/fonts/*.woff2")) or sorted(docs.glob("**/*.woff2"))
    recs.append(record(BASE + "static/" + font[0].name, "200 OK", [("Content-Type", "font/woff2")],
                       font[0].read_bytes(), LICENSE))
    recs.append(record(BASE + "robots.txt", "200 OK", [("Content-Type", "text/plain")],
                       b"User-agent: *\nDisallow: /nightly/\n", OURS))
    recs.append(record(BASE + "book/title-page.html", "301 Moved Permanently",
                       [("Location", BASE + "book/"), ("Content-Type", "text/html")], b"", OURS))
    recs.append(record(BASE + "book/no-such-page.html", "404 Not Found", [("Content-Type", "text/html; charset=utf-8")],
                       b"<html><head><title>404</title></head><body><h1>Document not found (404)</h1>"
                       b"<p>This URL is invalid, sorry. Please use the navigation bar or search to continue.</p>"
                       b"</body></html>", OURS))
    OUT.write_bytes(b"".join(gzip.compress(r, compresslevel=9, mtime=0) for r in recs))
    print(f"{OUT}: {len(recs)} records ({len(pages)} pages), {OUT.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
