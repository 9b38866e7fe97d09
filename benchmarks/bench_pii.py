"""PII redaction: tamis' `pii` editor against DataTrove's `PIIFormatter`, one core each, same documents.

Real documents (tech docs, speeches, licences, dictionaries: stratified over the shared corpus) with
PII planted as new lines in a share of them (`--planted`, 2 items per planted document: e-mails,
public IPv4, global IPv6, phone numbers in 13 national / international formats). Timed as CPU
seconds of this process (POLARS_MAX_THREADS=1; DataTrove in-process, one `format` per document).
Prints docs/s, the ratio, recall per kind (a planted string gone from the output counts as found)
and the share of unplanted documents without an '@' that each tool changed.
DataTrove covers e-mails and IPv4 only; recall is compared on those, tamis' other kinds are shown.

    .venv/bin/python benchmarks/bench_pii.py [--docs 3000] [--planted 0.2 1.0]
"""
from __future__ import annotations

import os

for _v in ("POLARS_MAX_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_v] = "1"  # before polars is imported

import argparse  # noqa: E402
import ipaddress  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import polars as pl  # noqa: E402
import pyarrow as pa  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tamis.scorers.cleaning.pii import Pii  # noqa: E402

CORPUS = (REPO / ".." / "shared" / "corpus").resolve()
SOURCES = ("linux-doc-6.1", "git-doc", "postgresql-doc-15", "python3.11-doc", "debian-manuals", "sotu",
           "licenses-copyright", "reuters-tm", "dict-foldoc", "fortunes")


def _d(rng, n):
    return "".join(str(rng.randint(0, 9)) for _ in range(n))


def email(rng):
    return (f"{rng.choice(['anna', 'j.smith', 'bob_lee', 'li.wei', 'k.tanaka+news'])}{rng.randint(1, 999)}@"
            f"{rng.choice(['gmail.com', 'uni-bonn.de', 'cs.stanford.edu', 'bbc.co.uk', 'startup.io'])}")


def ipv4(rng):
    while True:
        ip = ipaddress.IPv4Address(rng.getrandbits(32))
        if ip.is_global and not str(ip).endswith(".0"):
            return str(ip)


def ipv6(rng):
    return str(ipaddress.IPv6Address((0x2 << 124) | rng.getrandbits(124)))


def phone(rng):
    a, e = str(rng.randint(2, 9)) + _d(rng, 2), str(rng.randint(2, 9)) + _d(rng, 2)
    return rng.choice([f"({a}) {e}-{_d(rng, 4)}", f"{a}-{e}-{_d(rng, 4)}", f"{a}.{e}.{_d(rng, 4)}",
                       f"+1 {a} {e} {_d(rng, 4)}", f"+44 20 {_d(rng, 4)} {_d(rng, 4)}", f"020 {_d(rng, 4)} {_d(rng, 4)}",
                       f"07{_d(rng, 3)} {_d(rng, 6)}", f"+33 1 {_d(rng, 2)} {_d(rng, 2)} {_d(rng, 2)} {_d(rng, 2)}",
                       f"01 {_d(rng, 2)} {_d(rng, 2)} {_d(rng, 2)} {_d(rng, 2)}", f"+49 30 {_d(rng, 7)}",
                       f"030-{_d(rng, 7)}", f"+91 98{_d(rng, 3)} {_d(rng, 5)}", f"+1-{a}-{e}-{_d(rng, 4)}"])


KINDS = {"email": email, "ipv4": ipv4, "ipv6": ipv6, "phone": phone}
TEMPLATES = ["You can reach me at {x} for details.", "Contact: {x}", "(see {x})", "Send it to {x}, please.",
             "The host {x} answered.", "Call {x} today!", "{x}"]


def load(n_docs: int, max_bytes: int) -> list[str]:
    per = -(-n_docs // len(SOURCES))
    frames = [pl.read_parquet(CORPUS / f"{s}.parquet", columns=["text"]).filter(
        pl.col("text").str.len_bytes() <= max_bytes) for s in SOURCES]
    frames = [f.sample(min(per, f.height), seed=0) for f in frames]
    return pl.concat(frames)["text"].head(n_docs).to_list()


def plant(texts: list[str], share: float, seed: int = 0):
    rng = random.Random(seed)
    out, planted = [], []
    for t in texts:
        mine = []
        if rng.random() < share:
            lines = t.split("\n")
            for _ in range(2):
                kind = rng.choice(list(KINDS))
                x = KINDS[kind](rng)
                mine.append((kind, x))
                lines.insert(rng.randint(0, len(lines)), rng.choice(TEMPLATES).format(x=x))
            t = "\n".join(lines)
        out.append(t)
        planted.append(mine)
    return out, planted


def run_tamis(texts: list[str], batch_size: int) -> tuple[float, list[str]]:
    stage = Pii()
    stage.edit(pa.table({"text": pa.array(texts[:8], pa.large_string())}))  # warm up (regex compilation)
    out: list[str] = []
    t = time.process_time()
    for s in range(0, len(texts), batch_size):
        out += stage.edit(pa.table({"text": pa.array(texts[s:s + batch_size], pa.large_string())}))["text"].to_pylist()
    return time.process_time() - t, out


def run_datatrove(texts: list[str]) -> tuple[float, list[str]]:
    from datatrove.pipeline.formatters import PIIFormatter

    f = PIIFormatter()
    f.format("warm up 8.8.8.8 a@b.com")
    t = time.process_time()
    out = [f.format(x) for x in texts]
    return time.process_time() - t, out


def recall(out: list[str], planted) -> dict[str, float]:
    found: dict[str, list[int]] = {}
    for t, mine in zip(out, planted):
        for kind, x in mine:
            found.setdefault(kind, []).append(int(x not in t))
    return {k: sum(v) / len(v) for k, v in sorted(found.items())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--max-bytes", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--planted", type=float, nargs="+", default=[0.2, 1.0], help="shares of documents with PII")
    args = ap.parse_args()
    base = load(args.docs, args.max_bytes)
    mb = sum(len(t.encode()) for t in base) / 1e6
    print(f"{len(base)} documents, {mb:.1f} MB, {len(SOURCES)} sources, polars threads=1")
    for share in args.planted:
        texts, planted = plant(base, share)
        t_tamis, o_tamis = run_tamis(texts, args.batch_size)
        t_dt, o_dt = run_datatrove(texts)
        n = len(texts)
        clean = [i for i in range(n) if not planted[i] and "@" not in texts[i]]
        print(f"\nplanted in {share:.0%} of documents ({sum(map(len, planted))} items)")
        for name, t, o in (("tamis", t_tamis, o_tamis), ("datatrove", t_dt, o_dt)):
            rec = " ".join(f"{k} {v:.1%}" for k, v in recall(o, planted).items())
            changed = sum(o[i] != texts[i] for i in clean) / max(1, len(clean))
            print(f"{name:10s} {t:7.2f} s CPU {n / t:8.0f} docs/s   recall: {rec}   "
                  f"clean docs changed {changed:.2%} of {len(clean)}")
        print(f"ratio {t_dt / t_tamis:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
