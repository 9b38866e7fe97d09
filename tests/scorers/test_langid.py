"""LangId on the shared corpus (English) and on paragraphs written here in other languages."""
from __future__ import annotations

import pickle
import sys

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from tamis.pipeline.rules import compile_rules, first_failure
from tamis.scorers.langid import FASTTEXT_HINT, LangId, normalize_for_lid

PROSE_FILES = ["janeausten", "shakespeare-milton", "dict-devil", "bible-web", "mhcc-commentary", "sotu",
               "reuters-tm"]
PROSE_MIN_CHARS = 200  # "prose": literature, religion, speeches and news documents of 200+ characters

FOREIGN = {
    "fr": "Le village se trouve au bord d'une petite rivière, entouré de champs de blé et de vignes. "
          "Chaque matin, les habitants se retrouvent au marché pour acheter du pain frais, du fromage "
          "et des légumes, puis ils discutent longuement des nouvelles de la semaine.",
    "de": "Die Stadt liegt am Ufer eines breiten Flusses und ist für ihre alte Brücke bekannt. Im "
          "Sommer kommen viele Besucher, um durch die engen Gassen zu spazieren, in den kleinen Cafés "
          "zu sitzen und die Aussicht auf die Berge zu genießen.",
    "es": "La biblioteca del barrio abre todos los días a las nueve de la mañana. Los estudiantes "
          "llegan temprano para encontrar un lugar junto a la ventana, mientras los mayores leen el "
          "periódico y conversan en voz baja sobre la política y el tiempo.",
    "it": "Il piccolo porto era pieno di barche colorate che dondolavano sull'acqua tranquilla. I "
          "pescatori tornavano al tramonto con le reti piene, e le famiglie li aspettavano sul molo "
          "per comprare il pesce migliore della giornata.",
    "pt": "A estrada atravessa uma região de colinas suaves, com árvores antigas e pequenas casas "
          "brancas. Durante o verão, os agricultores trabalham desde cedo nos campos e descansam à "
          "sombra quando o sol fica mais forte à tarde.",
    "nl": "Het oude station in het centrum van de stad is onlangs gerestaureerd. Reizigers kunnen nu "
          "genieten van een ruime wachtkamer met grote ramen, een klein restaurant en een winkel waar "
          "kranten en boeken worden verkocht.",
}


def _table(texts: list[str]) -> pa.Table:
    return pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": pa.array(texts, pa.large_string())})


def _reasons(stage: LangId, table: pa.Table, out: dict) -> list:
    df = pl.from_arrow(table).with_columns(**{k: pl.from_arrow(v) for k, v in out.items()})
    return first_failure(df, compile_rules(stage.default_rules())).to_list()


@pytest.fixture(scope="module")
def scorer() -> LangId:
    s = LangId()
    s.setup()
    return s


@pytest.fixture(scope="module")
def prose(corpus_dir) -> pa.Table:
    df = pl.concat([pl.read_parquet(corpus_dir / f"{f}.parquet", columns=["id", "text", "domain"]) for f in PROSE_FILES])
    df = df.filter(pl.col("text").str.len_chars() >= PROSE_MIN_CHARS)
    return df.to_arrow()


def test_keeps_at_least_99_percent_of_english_prose(scorer, prose):
    assert prose.num_rows >= 1000
    out = scorer.score(prose)
    reasons = _reasons(scorer, prose, out)
    kept = sum(r is None for r in reasons) / len(reasons)
    assert kept >= 0.99, (kept, [r for r in reasons if r][:10])
    assert (np.array(out["lang"].to_pylist()) == "en").mean() >= 0.99


@pytest.mark.parametrize("lang", sorted(FOREIGN))
def test_rejects_other_languages_naming_the_detected_language(scorer, lang):
    table = _table([FOREIGN[lang]])
    out = scorer.score(table)
    assert out["lang"].to_pylist() == [lang]
    assert out["lang_score"][0].as_py() > 0.9
    assert _reasons(scorer, table, out) == [f"lang_{lang}"]


def test_languages_param_keeps_listed_languages(corpus_dir):
    stage = LangId(languages=["en", "fr"])
    stage.setup()
    english = pl.read_parquet(corpus_dir / "sotu.parquet")["text"][0]
    table = _table([FOREIGN["fr"], FOREIGN["de"], english])
    assert _reasons(stage, table, stage.score(table)) == [None, "lang_de", None]


def test_threshold_rejects_low_confidence(scorer):
    table = _table(["It is good."])  # English, p ~ 0.84
    out = scorer.score(table)
    assert out["lang"].to_pylist() == ["en"] and 0.5 < out["lang_score"][0].as_py() < 0.95
    assert _reasons(scorer, table, out) == [None]
    strict = LangId(threshold=0.95)
    assert _reasons(strict, table, out) == ["lang_low_score"]


def test_matches_py3langid_classify(scorer, corpus_dir):
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    files = ["linux-doc-6.1", "dict-gcide", "python-stdlib", "fortunes", "sotu", "licenses-copyright"]
    texts = pl.concat([pl.read_parquet(corpus_dir / f"{f}.parquet", columns=["text"]).head(50)
                       for f in files])["text"].to_list() + list(FOREIGN.values()) + ["ALL CAPS SHOUTING HERE",
                                                                                     "Ελληνικά κείμενα", "日本語の文章です"]
    out = scorer.score(_table(texts))
    norm = normalize_for_lid(pa.array(texts), scorer.max_chars).to_list()
    ref = [ident.classify(t) for t in norm]
    assert out["lang"].to_pylist() == [r[0] for r in ref]
    np.testing.assert_allclose(out["lang_score"].to_numpy(), [r[1] for r in ref], atol=1e-4)


def test_empty_text_and_empty_batch(scorer):
    table = _table(["", "   \n\t ", FOREIGN["es"]])
    out = scorer.score(table)
    assert out["lang"].to_pylist() == ["und", "und", "es"]
    assert out["lang_score"].to_pylist()[:2] == [0.0, 0.0]
    assert _reasons(scorer, table, out) == ["lang_und", "lang_und", "lang_es"]
    empty = scorer.score(_table([]))
    assert empty["lang"].type == pa.string() and len(empty["lang"]) == 0
    assert empty["lang_score"].type == pa.float64() and len(empty["lang_score"]) == 0


def test_output_types_and_pickles_before_setup():
    stage = pickle.loads(pickle.dumps(LangId(languages=["de"])))
    out = stage.score(_table([FOREIGN["de"]]))  # loads the model lazily
    assert {k: v.type for k, v in out.items()} == stage.output_columns()
    assert stage.default_rules() == {"lang_{lang}": "lang in ['de']", "lang_low_score": "lang_score >= 0.5"}


@pytest.mark.parametrize("params, field", [({"languages": []}, "languages"), ({"languages": "en"}, "languages"),
                                           ({"threshold": 1.5}, "threshold"), ({"max_chars": 0}, "max_chars"),
                                           ({"model_path": "/nonexistent/lid.176.bin"}, "model_path")])
def test_validate_names_the_parameter(params, field):
    with pytest.raises(ValueError, match=field):
        LangId(**params).validate()


def test_fasttext_missing_gives_pip_hint(tmp_path, monkeypatch):
    model = tmp_path / "lid.bin"
    model.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "fasttext", None)
    with pytest.raises(ImportError, match="pip install"):
        LangId(model_path=str(model)).setup()
    assert "pip install" in FASTTEXT_HINT


def test_fasttext_model_path(tmp_path, corpus_dir):
    fasttext = pytest.importorskip("fasttext")
    english = pl.read_parquet(corpus_dir / "sotu.parquet")["text"].head(21).to_list()
    lines = []
    for text in english[:-1]:  # the last one is held out
        lines += [f"__label__en {s.strip()}" for s in text.replace("\n", " ").split(". ")[:40] if len(s) > 30]
    for lang, para in FOREIGN.items():
        lines += [f"__label__{lang} {s.strip()}" for s in para.split(", ") if s.strip()] * 20
    train = tmp_path / "train.txt"
    train.write_text("\n".join(lines) + "\n")
    model = tmp_path / "tiny_lid.bin"
    fasttext.train_supervised(str(train), epoch=25, lr=0.5, wordNgrams=1, minn=2, maxn=4, dim=16,
                              thread=1, seed=0, verbose=0).save_model(str(model))
    stage = LangId(model_path=str(model), languages=["en"])
    stage.validate()
    stage.setup()
    table = _table([english[-1], FOREIGN["fr"], FOREIGN["de"], ""])
    out = stage.score(table)
    assert out["lang"].to_pylist() == ["en", "fr", "de", "und"]
    scores = out["lang_score"].to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all() and scores[0] > 0.5
    assert _reasons(stage, table, out) == [None, "lang_fr", "lang_de", "lang_und"]
