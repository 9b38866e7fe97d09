"""Differential test: tamis's Gopher scorers + default rules against DataTrove's Gopher filters.

About 2,100 shared-corpus documents from every source (nine domains), each at most 4,000 bytes
(longer ones are cut at a line break so that speeches and novels are represented too). DataTrove
splits English words with `spacy.blank("en")`, which needs no model download.
"""
from __future__ import annotations


import polars as pl
import pyarrow as pa
import pytest

from tamis.pipeline.rules import compile_rules, first_failure
from tamis.pipeline.text.words import split_words
from tamis.scorers.gopher.quality import GopherQuality
from tamis.scorers.gopher.repetition import GopherRepetition
from test_gopher_repetition import synthetic  # the same generator (tests/scorers is on sys.path)

datatrove = pytest.importorskip("datatrove")
pytest.importorskip("spacy")

PER_SOURCE, MAX_BYTES = 160, 4000
PROSE = (
    "The committee met on Tuesday to review the budget for the coming year. Members agreed that the "
    "library should have longer opening hours, and that the new reading room would open in the spring. "
    "Several speakers asked for more money to be spent on books for children, while others wanted to "
    "repair the old roof before winter. After a long debate, the chair proposed a compromise with both."
)


def sample(corpus_dir) -> pl.DataFrame:
    frames = []
    for f in sorted(corpus_dir.glob("*.parquet")):
        df = pl.read_parquet(f, columns=["id", "text", "domain"])
        short = df.filter(pl.col("text").str.len_bytes() <= MAX_BYTES)
        if short.height >= 20:
            frames.append(short.sample(min(PER_SOURCE, short.height), seed=0))
        else:  # long documents only: keep their first lines
            head = df.head(20).with_columns(pl.col("text").str.slice(0, MAX_BYTES // 2)
                                            .str.replace(r"\n[^\n]*$", ""))
            frames.append(pl.concat([short, head]))
    return pl.concat(frames)


def dt_reason(flt, text: str):
    from datatrove.data import Document

    r = flt.filter(Document(text=text, id="0"))
    return None if r is True else r[1]


def tamis_reasons(scorer, texts: list[str]) -> list[str | None]:
    b = pa.table({"id": [str(i) for i in range(len(texts))], "text": pa.array(texts, pa.large_string())})
    return first_failure(pl.DataFrame(scorer.score(b)), compile_rules(scorer.default_rules())).to_list()


def as_datatrove(reason: str | None, stage: str) -> str | None:
    """tamis reason -> DataTrove reason (the stage prefix; DataTrove's quality reasons start with gopher_)."""
    if reason is None:
        return None
    short = reason.removeprefix(stage + "_")
    if stage == "gopher_quality":
        return "gopher_enough_stop_words" if short == "few_stop_words" else "gopher_" + short
    return short


@pytest.fixture(scope="module")
def results(corpus_dir):
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.utils.text import split_into_words

    df = sample(corpus_dir)
    texts = df["text"].to_list()
    q, r = GopherQualityFilter(), GopherRepetitionFilter()
    return {
        "df": df,
        "dt_q": [dt_reason(q, t) for t in texts],
        "dt_r": [dt_reason(r, t) for t in texts],
        "dt_words": [split_into_words(t, "eng_Latn") for t in texts],
        "tq": [as_datatrove(x, "gopher_quality") for x in tamis_reasons(GopherQuality(), texts)],
        "tr": [as_datatrove(x, "gopher_repetition") for x in tamis_reasons(GopherRepetition(), texts)],
    }


def test_sample_is_large_and_varied(results):
    df = results["df"]
    assert df.height >= 2000
    assert df["domain"].n_unique() >= 8


def rate(a: list, b: list) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)


def test_keep_drop_decisions_agree(results):
    kept_dt = [q is None and r is None for q, r in zip(results["dt_q"], results["dt_r"])]
    kept_tm = [q is None and r is None for q, r in zip(results["tq"], results["tr"])]
    assert rate([x is None for x in results["dt_q"]], [x is None for x in results["tq"]]) >= 0.99
    assert rate([x is None for x in results["dt_r"]], [x is None for x in results["tr"]]) >= 0.99
    assert rate(kept_dt, kept_tm) >= 0.99
    assert 0.05 < sum(kept_dt) / len(kept_dt) < 0.95  # both outcomes are well represented


def test_drop_reasons_agree(results):
    assert rate(results["dt_q"], results["tq"]) >= 0.99
    assert rate(results["dt_r"], results["tr"]) >= 0.99
    assert len({x for x in results["dt_q"] if x}) >= 4 and len({x for x in results["dt_r"] if x}) >= 5


def test_words_agree_with_spacy(results):
    mine = split_words(pa.array(results["df"]["text"].to_list(), pa.large_string()))
    by_doc = mine.group_by("doc", maintain_order=True).agg("word")
    words = dict(zip(by_doc["doc"].to_list(), by_doc["word"].to_list()))
    same = [words.get(i, []) == w for i, w in enumerate(results["dt_words"])]
    assert sum(same) / len(same) >= 0.99


@pytest.mark.parametrize("seed", [0, 1, 5, 7, 8, 10, 15, 58, 88, 163])
def test_synthetic_repetition_reasons(seed):
    from datatrove.pipeline.filters import GopherRepetitionFilter

    text = synthetic(seed)
    mine = as_datatrove(tamis_reasons(GopherRepetition(), [text])[0], "gopher_repetition")
    assert mine == dt_reason(GopherRepetitionFilter(), text)


@pytest.mark.parametrize("text", [
    "I am " * 30, "# comment " * 60, "... comment " * 60, "quick brown foxes jump over lazy dogs " * 9,
    "- the quick brown fox jumps over the lazy dog\n" * 10, "the lazy dog sat...\n" * 20, PROSE, "",
    "Don't stop: U.S. e-mail (see http://example.com/a-b?x=1), 3.5kg, 'quoted', C++ & co...",
])
def test_small_quality_cases(text):
    from datatrove.pipeline.filters import GopherQualityFilter

    mine = as_datatrove(tamis_reasons(GopherQuality(), [text])[0], "gopher_quality")
    assert mine == dt_reason(GopherQualityFilter(), text)
