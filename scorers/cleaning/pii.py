"""PII redaction: e-mail addresses, IPv4 / IPv6 addresses and phone numbers (and, with Presidio
installed, person names), replaced in `text`.

Defaults follow DataTrove's `PIIFormatter` where it has one: e-mails become `email@example.com`,
private and reserved IP ranges are kept (`only_remove_public_ips=True` there). Unlike DataTrove the
default IP placeholders are addresses reserved for documentation (192.0.2.1, 2001:db8::1: RFC 5737 /
3849), so a second pass leaves them alone and no real host's address is written into the corpus.
Precision comes first: a dotted quad after "version", "kernel", "release" ... is a version number,
a run of two-digit groups is a hex dump or a table, a date is never a phone number.

Speed: a Rust regex (polars) over the whole column marks candidate spans; Python's `re` (look-arounds)
and `ipaddress` validation run only on a small window around each span, never over a whole text.
See docs/cleaning.md for the figures against DataTrove.
"""
from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import re

import numpy as np
import polars as pl
import pyarrow as pa

from tamis.pipeline.stage import Editor

KINDS = ("email", "ip", "phone")
MODES = ("redact", "mark", "count")
# placeholder keys: `ip` is IPv4, `ipv6` IPv6, `name` a person (Presidio only)
REDACT = {"email": "email@example.com", "ip": "192.0.2.1", "ipv6": "2001:db8::1", "phone": "+1-555-0100",
          "name": "Jane Doe"}
MARK = {"email": "<EMAIL>", "ip": "<IP_ADDRESS>", "ipv6": "<IP_ADDRESS>", "phone": "<PHONE_NUMBER>",
        "name": "<PERSON>"}

# Candidate spans, found by polars' Rust regex over the whole column (no look-arounds there): every
# match of the validating Python patterns below lies inside one of these spans, so Python only looks
# at a small window around each span (the span, 40 characters before it and 16 after it).
CANDIDATES = {
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+",
    "ipv6": r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){2,7}",
    "ipv4": r"\d{1,3}(?:\.\d{1,3}){3}",
    "phone": r"[+(]?\d[\d ().-]{5,}\d",
}
BEFORE, AFTER = 40, 16
OPEN, CLOSE = "\x00", "\x01"  # span marks; rows already holding them take the slow path (whole text)

EMAIL_RE = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9][A-Za-z0-9._%+-]*@((?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+([A-Za-z]{2,24}))"
    r"(?![\w-])")
# generic TLDs accepted besides every two-letter country code (`obj@np.linalg` in code is not an e-mail)
GENERIC_TLDS = frozenset(
    "com org net edu gov mil int info biz name pro aero coop museum mobi asia tel travel jobs io ai app dev "
    "xyz online site tech store blog cloud email mail club shop live news world space top eu".split())
EXAMPLE_DOMAINS = ("example.com", "example.org", "example.net")
EXAMPLE_TLDS = ("example", "test", "invalid", "localhost", "local")

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4_RE = re.compile(rf"(?<![\w.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\w|\.\w)")
IPV6_RE = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{3,39}(?![\w:])")
# words after which a dotted quad is a version, release or OID, not an address
VERSION_CONTEXT = re.compile(
    r"(?i)(?:\bv|\bversions?|\bver\.?|\breleases?|\brev\.?|\brevision|\bkernel|\blinux|\bbuild|\bupdate|"
    r"\bpatch(?:es)?|\bpython|\bperl|\bgcc|\bfirmware|\boid|\bsnmp|\bv\.|"
    r"\bsections?|\bchapters?|\bclauses?|\btables?|\bfig(?:ure)?s?\.?|\bsteps?|\bparagraphs?|\bappendix|\bitems?|"
    r"\brfc|\bisbn|§)[^\S\n]*[:=]?[^\S\n]*\(?\Z|\w/\Z")
# a dotted quad opening a line and followed by a title ("14.3.2.1. In Real Time") is a section number
HEADING_START = re.compile(r"(?:(?:^|\n)[ \t]*(?:#+|\*)?|/\*)[ \t]*$")
HEADING_END = re.compile(r"\.?[ \t\xa0]+[A-Z]|\.[ \t\xa0]")
LINE_END = re.compile(r"\.?[ \t]*(?:\n|$)")

PHONE_RE = re.compile(
    # international: +CC then groups, optional (0) or (area)
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(0?\d{1,4}\))?(?:[ .-]?\d{1,5}){1,6}(?!\w|[.-]\d)(?! \d)"
    # North American: (415) 555-2671, 415-555-2671, 415.555.2671, 1 415 555 2671
    r"|(?<![\w.+-])(?<!\d )(?:1[ .-]?)?(?:\([2-9]\d{2}\) ?[2-9]\d{2}[ .-]|[2-9]\d{2}(?P<s1>[ .-])[2-9]\d{2}(?P=s1))\d{4}"
    r"(?![\w-]|\.\d)(?! \d)"
    # national with a trunk 0: 020 7946 0958, 01 23 45 67 89, 030-1234567
    r"|(?<![\w.+-])(?<!\d )0[1-9]\d{0,4}(?P<s2>[ -])\d{2,8}(?:(?P=s2)\d{2,8}){0,3}(?![\w-]|\.\d)(?! \d)")


def _email_ok(m: re.Match, keep_example: bool) -> bool:
    domain, tld = m.group(1).lower(), m.group(2).lower()
    if len(tld) != 2 and tld not in GENERIC_TLDS:
        return False
    if keep_example and (domain.endswith(EXAMPLE_DOMAINS) or tld in EXAMPLE_TLDS):
        return False
    return True


def _ipv4_ok(m: re.Match, text: str, keep_private: bool) -> bool:
    if VERSION_CONTEXT.search(text, max(0, m.start() - 24), m.start()):
        return False
    octets = [int(x) for x in m.group(0).split(".")]
    if octets[3] == 0:  # a network (10.1.0.0), a version (2.2.0.0): not a host's address
        return False
    if HEADING_START.search(text, max(0, m.start() - 24), m.start()) and (
            HEADING_END.match(text, m.end()) or (max(octets) < 20 and LINE_END.match(text, m.end()))):
        return False
    ip = ipaddress.IPv4Address(m.group(0))
    return ip.is_global or not keep_private


def _ipv6_ok(s: str, keep_private: bool) -> bool:
    groups = [g for g in s.split(":") if g]
    if not any(c.isdigit() for c in s) or len(groups) < 3 or s.endswith("::"):  # "RFC 2822::", "Foo::"
        return False
    try:
        ip = ipaddress.IPv6Address(s)
    except ValueError:
        return False
    if keep_private:  # globally routed unicast is 2000::/3; the rest is reserved, local or unassigned
        return ip.is_global and ip in _GLOBAL_UNICAST
    return True


ZIP4_RE = re.compile(r"\d{5}-\d{4}")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _phone_ok(s: str) -> bool:
    digits = sum(c.isdigit() for c in s)
    if s.startswith("+"):
        return 8 <= digits <= 15
    if s.startswith("0"):  # not a US ZIP+4 (02110-1301)
        return 9 <= digits <= 12 and not ZIP4_RE.fullmatch(s)
    return digits in (10, 11)


class Pii(Editor):
    """Redacts e-mails, IP addresses and phone numbers; counts them per row (`pii_emails`, `pii_ips`,
    `pii_phones`, and `pii_names` with `names: true`).

    mode: `redact` (realistic reserved placeholders, DataTrove style), `mark` (typed tags such as
    `<EMAIL>`, Presidio's entity names) or `count` (text unchanged: use the counters in keep rules).
    placeholders: per-kind overrides, keys email / ip / ipv6 / phone / name.
    keep_private_ips: leave private, loopback, link-local and documentation addresses (DataTrove default).
    keep_example_emails: leave addresses at reserved example domains (example.com, *.test, ...).
    names: also replace person names found by Microsoft Presidio (`pip install presidio-analyzer`
    and a spaCy model; slow: a model call per row).
    """

    name = "pii"
    columns = {"pii_emails": pa.int32(), "pii_ips": pa.int32(), "pii_phones": pa.int32()}

    def __init__(self, kinds: list[str] | None = None, mode: str = "redact", placeholders: dict | None = None,
                 keep_private_ips: bool = True, keep_example_emails: bool = True, names: bool = False,
                 keep_original: bool = False):
        self.kinds = list(kinds) if kinds is not None else list(KINDS)
        self.mode = mode
        self.placeholders = dict(placeholders or {})
        self.keep_private_ips = keep_private_ips
        self.keep_example_emails = keep_example_emails
        self.names = names
        self.keep_original = keep_original

    def validate(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"pii: kinds must be a non-empty list of {list(KINDS)}, got {self.kinds!r}")
        if self.mode not in MODES:
            raise ValueError(f"pii: mode must be one of {list(MODES)}, got {self.mode!r}")
        bad = [k for k in self.placeholders if k not in REDACT]
        if bad:
            raise ValueError(f"pii: placeholders has unknown keys {bad}; known: {list(REDACT)}")
        if not all(isinstance(v, str) for v in self.placeholders.values()):
            raise ValueError("pii: placeholders values must be strings")
        if self.names and importlib.util.find_spec("presidio_analyzer") is None:
            raise ValueError("pii: names: true needs Microsoft Presidio, which is not installed "
                             "(pip install presidio-analyzer; python -m spacy download en_core_web_lg)")

    def output_columns(self) -> dict[str, pa.DataType]:
        cols = super().output_columns()
        if self.names:
            cols = {**cols, "pii_names": pa.int32()}
        return cols

    def _replacement(self, kind: str) -> str | None:
        if self.mode == "count":
            return None
        return self.placeholders.get(kind, (REDACT if self.mode == "redact" else MARK)[kind])

    def _passes(self):
        """(kind, pattern, validator(match, text), counter slot, placeholder) in the order they run."""
        kp, ke = self.keep_private_ips, self.keep_example_emails
        out = []
        if "email" in self.kinds:
            out.append(("email", EMAIL_RE, lambda m, t: _email_ok(m, ke), 0, self._replacement("email")))
        if "ip" in self.kinds:
            out.append(("ipv6", IPV6_RE, lambda m, t: _ipv6_ok(m.group(0), kp), 1, self._replacement("ipv6")))
            out.append(("ipv4", IPV4_RE, lambda m, t: _ipv4_ok(m, t, kp), 1, self._replacement("ip")))
        if "phone" in self.kinds:
            out.append(("phone", PHONE_RE, lambda m, t: _phone_ok(m.group(0)), 2, self._replacement("phone")))
        return out

    def redact(self, text: str) -> tuple[str, int, int, int]:
        """One text, whole-text regexes: (new text, e-mails, IPs, phones). The reference path, and the
        path of a text that holds the span marks itself."""
        counts = [0, 0, 0]
        for _, pattern, ok, slot, rep in self._passes():
            def fn(m: re.Match, ok=ok, slot=slot, rep=rep) -> str:
                if not ok(m, m.string):
                    return m.group(0)
                counts[slot] += 1
                return m.group(0) if rep is None else rep
            text = pattern.sub(fn, text)
        return text, *counts

    @staticmethod
    def _marked(marked: str, pattern, ok, rep) -> tuple[str, int]:
        """A text whose candidate spans are wrapped in OPEN/CLOSE: validate each span in its window."""
        parts = marked.split(OPEN)
        out, tail, n = [parts[0]], parts[0][-BEFORE:], 0
        for part in parts[1:]:
            span, rest = part.split(CLOSE, 1)
            window = tail + span + rest[:AFTER]
            lo, hi = len(tail), len(tail) + len(span)
            pieces, at = [], lo
            for m in pattern.finditer(window, lo, hi + AFTER):
                if m.end() > hi:
                    break
                if ok(m, window):
                    pieces.append(window[at:m.start()])
                    pieces.append(m.group(0) if rep is None else rep)
                    at = m.end()
                    n += 1
            out.append("".join(pieces) + window[at:hi] if pieces else span)
            out.append(rest)
            tail = (tail + span + rest)[-BEFORE:]
        return "".join(out), n

    def _analyzer(self):
        if getattr(self, "_presidio", None) is None:
            self._presidio = importlib.import_module("presidio_analyzer").AnalyzerEngine()
        return self._presidio

    def _names(self, text: str) -> tuple[str, int]:
        found = self._analyzer().analyze(text=text, entities=["PERSON"], language="en")
        rep = self._replacement("name")
        spans = sorted(((r.start, r.end) for r in found), reverse=True)
        if rep is not None:
            for a, b in spans:
                text = text[:a] + rep + text[b:]
        return text, len(spans)

    def edit(self, batch: pa.Table) -> dict[str, pa.Array]:
        texts = pl.from_arrow(batch["text"]).alias("t").fill_null("")
        n = len(texts)
        counts = [np.zeros(n, np.int32) for _ in range(3)]
        slow = texts.str.contains(f"[{OPEN}{CLOSE}]").arg_true().to_list()
        if slow:  # the rare text holding a mark character: whole-text regexes
            vals = texts.gather(slow).to_list()
            for j, i in enumerate(slow):
                vals[j], *c = self.redact(vals[j])
                for slot in range(3):
                    counts[slot][i] = c[slot]
            texts = texts.scatter(slow, vals)
        fast = ~texts.str.contains(f"[{OPEN}{CLOSE}]")
        for kind, pattern, ok, slot, rep in self._passes():
            marked = texts.str.replace_all(CANDIDATES[kind], OPEN + "${0}" + CLOSE)
            idx = ((marked.str.len_bytes() != texts.str.len_bytes()) & fast).arg_true()
            if not len(idx):
                continue
            new, found = [], counts[slot]
            for i, t in zip(idx.to_list(), marked.gather(idx).to_list()):
                t, k = self._marked(t, pattern, ok, rep)
                new.append(t)
                found[i] += k
            texts = texts.scatter(idx, new)
        result = {"text": texts.to_arrow().cast(pa.large_string()),
                  **{c: pa.array(v, pa.int32()) for c, v in zip(("pii_emails", "pii_ips", "pii_phones"), counts)}}
        if self.names:
            out = texts.to_list()
            names = [0] * n
            for i, t in enumerate(out):
                if t:
                    out[i], names[i] = self._names(t)
            result["text"] = pa.array(out, pa.large_string())
            result["pii_names"] = pa.array(names, pa.int32())
        return result

    def __getstate__(self):  # the Presidio engine is rebuilt on the worker
        return {k: v for k, v in vars(self).items() if k != "_presidio"}
