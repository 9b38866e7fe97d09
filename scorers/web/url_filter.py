"""URL block lists (C4 / FineWeb / RefinedWeb style): `url_filter_match` names the list and entry a
row's URL hits, and `url_normalized` gives the URL in one canonical form.

Lists are plain text files, one entry a line, `#` starts a comment, blank lines ignored. `blocklist`
must be given (`null` when only the word lists are used):
- `blocklist`: domains and URLs. An entry with a `/` is a URL and matches that exact normalised URL;
  any other entry is a domain and matches it and every sub-domain (`example.com` blocks
  `ads.example.com`, not `badexample.com`), like the UT1 lists RefinedWeb and FineWeb use.
- `banned_words`: words matched against the URL's words (split at anything not a letter or digit),
  as FineWeb's `URLFilter` checks its banned words.
- `banned_subwords`: strings matched anywhere in the normalised URL (FineWeb's soft-banned sub-words).
Entries are lowercased. A file path is taken as written, relative to the directory the job runs from
(as `tamis run jobs/web.yaml` from the repository root resolves `data/url_blocklist.txt`, like the
`eval_sets` paths of `decontaminate`); the lists are read once on the driver (`prepare`).

Normalisation (`normalize_url`): scheme and host lowercased, a default port (`:80` for http, `:443` for
https) and a leading `www.` dropped, a trailing dot of the host dropped, the fragment dropped, an empty
path made `/`; path and query are kept as they are (they are case-sensitive). A row with no URL or
one that does not parse gets null columns and is kept.

Default rule: `url_{url_filter_match}` rejects a row matching any list, e.g. with reason
`url_blocklist:example.com`. For URL-level dedup, dedup on `url_normalized` (see docs/web.md).
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from tamis.pipeline.stage import Resources, Scorer

LISTS = ("blocklist", "banned_words", "banned_subwords")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WORD_SPLIT = re.compile(r"[^0-9a-z]+")


def normalize_url(url: str | None) -> str | None:
    """The canonical form of `url` (see the module doc), None when it has no host."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".")
        port = parts.port
    except ValueError:
        return None
    if not host:
        return None
    scheme = parts.scheme.lower()
    if host.startswith("www."):
        host = host[4:]
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def read_list(path: str) -> list[str]:
    """The entries of a list file (lowercased; comments and blank lines dropped)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"list file not found: {path}")
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        entry = line.split("#", 1)[0].strip().lower()
        if entry:
            out.append(entry)
    return out


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


class UrlFilter(Scorer):
    """Which block-list entry, if any, a row's URL matches."""

    name = "url_filter"
    requires = ("url",)
    columns = {"url_normalized": pa.string(), "url_filter_match": pa.string()}
    resources = Resources(cpus=1)
    default_keep = {"url_{url_filter_match}": "url_filter_match is None"}

    def __init__(self, blocklist: str | None, banned_words: str | None = None,
                 banned_subwords: str | None = None):
        self.blocklist = blocklist
        self.banned_words = banned_words
        self.banned_subwords = banned_subwords

    def validate(self) -> None:
        given = [p for p in LISTS if getattr(self, p) is not None]
        if not given:
            raise ValueError(f"give at least one list file: {', '.join(LISTS)}")
        for p in given:
            if not isinstance(getattr(self, p), str):
                raise ValueError(f"{p} must be a file path, got {getattr(self, p)!r}")
            read_list(getattr(self, p))

    def prepare(self) -> None:
        """Read the lists once, on the driver (relative paths against its working directory); the
        entries travel to the workers with the stage."""
        self._domains: dict[str, str] = {}
        self._urls: dict[str, str] = {}
        if self.blocklist:
            for e in read_list(self.blocklist):
                if "/" in e:
                    self._urls[normalize_url(e if "://" in e else "http://" + e) or e] = e
                else:
                    self._domains[e.rstrip(".").removeprefix("www.")] = e
        self._words = set(read_list(self.banned_words)) if self.banned_words else set()
        self._subwords = read_list(self.banned_subwords) if self.banned_subwords else []

    def match(self, norm: str) -> str | None:
        """`list:entry` of the first list `norm` (a normalised URL) hits, or None."""
        host = _host(norm)
        labels = host.split(".")
        for i in range(len(labels)):
            entry = self._domains.get(".".join(labels[i:]))
            if entry is not None:
                return f"blocklist:{entry}"
        # the exact URL, or the same without the scheme (list entries are often written without one)
        entry = self._urls.get(norm) or self._urls.get("http://" + norm.split("://", 1)[-1])
        if entry is not None:
            return f"blocklist:{entry}"
        if self._words:
            hit = next((w for w in _WORD_SPLIT.split(norm.lower()) if w in self._words), None)
            if hit:
                return f"banned_words:{hit}"
        low = norm.lower()
        hit = next((s for s in self._subwords if s in low), None)
        return f"banned_subwords:{hit}" if hit else None

    def score(self, batch: pa.Table) -> dict[str, pa.Array]:
        if not hasattr(self, "_domains"):
            self.prepare()
        norms, matches = [], []
        for url in batch["url"].to_pylist():
            norm = normalize_url(url)
            norms.append(norm)
            matches.append(None if norm is None else self.match(norm))
        return {"url_normalized": pa.array(norms, pa.string()), "url_filter_match": pa.array(matches, pa.string())}
