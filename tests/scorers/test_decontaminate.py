"""Decontaminate: eval passages planted in shared-corpus documents are found; clean documents stay."""
from __future__ import annotations

import json
import random

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from tamis.pipeline.data import LocalData
from tamis.pipeline.rules import compile_rules, first_failure
from tamis.scorers.decontamination.ngrams import BloomFilter, tokenize, window_hashes
from tamis.scorers.decontamination.decontaminate import Decontaminate

# A small eval set written for this test: question + answer, 45-75 words each.
QA = [
    ("Which unit of measurement did the committee of surveyors propose in their final report, and why did the "
     "coastal towns object to it so strongly during the winter hearings?",
     "They proposed the harbour fathom, and the coastal towns objected because every existing chart and mooring "
     "contract would have had to be redrawn at their own expense."),
    ("During the long drought described in the regional almanac, what method did the orchard growers use to "
     "keep their young apricot trees alive until the autumn rains finally returned?",
     "They buried clay jars filled with water beside each sapling so that moisture seeped slowly through the "
     "porous walls straight into the roots, and not a single tree was lost."),
    ("In the story about the lighthouse keeper and the lost cargo ship, what signal did the keeper invent when "
     "the great lamp failed on the stormiest night of the year?",
     "He hung three copper kettles from the gallery rail and struck them in turn with an iron poker so the "
     "crew could steer by the ringing."),
    ("What did the village council decide to do with the abandoned railway station after the branch line "
     "closed, according to the minutes recorded by the parish clerk that spring?",
     "The council turned the waiting room into a lending library and let the old goods shed to a cooperative "
     "of beekeepers for one shilling a year."),
    ("How did the apprentice glassblower finally solve the problem of the bubbles that kept appearing in the "
     "thick green bottles ordered by the mineral water company?",
     "She kept the furnace two hours longer before each shift and stirred the molten batch with a beechwood "
     "paddle to release the trapped air before the glass was blown."),
    ("Why did the expedition doctor insist that every member of the mountain survey party carry a small tin of "
     "dried cranberries on the glacier crossing?",
     "Because the tart berries prevented scurvy, lifted morale during the whiteouts, and weighed almost "
     "nothing compared with the tinned fruit the quartermaster preferred for the long march north."),
    ("Which three improvements did the engineers make to the canal locks after the flood, and how long did the "
     "repairs keep the barges from reaching the market town?",
     "They raised the lock walls, fitted oak gates with iron hinges, and dug a spillway, which kept the barges "
     "away for eleven weeks of the busy season."),
    ("According to the weaver's diary, what pattern was woven into the wedding blanket for the miller's "
     "daughter, and which dyes produced its unusual colours?",
     "A chain of interlocking stars was woven in madder red and woad blue, with a border of saffron yellow "
     "taken from the family's own garden behind the old mill."),
    ("What reason did the schoolmaster give for moving the afternoon lessons outdoors under the chestnut trees "
     "during the unusually hot summer term?",
     "He said the classroom roof trapped the heat like a baker's oven, and that the children learned their "
     "sums far better in the shade and the breeze of the open meadow."),
    ("How did the clockmaker's guild test whether a new member's pocket watch was accurate enough to earn the "
     "guild's silver seal of approval?",
     "The watch was left beside the cathedral regulator for thirty days and had to lose or gain no more than "
     "nine seconds during the whole month of the trial."),
    ("In the account of the great fair, what did the travelling astronomer charge visitors to look through his "
     "brass telescope at the rings of the distant planet?",
     "He charged a penny for adults and nothing for children, but asked everyone to sign a ledger he later "
     "sent to the royal society in the capital."),
    ("What became of the old windmill on the hill after the storm tore away two of its sails, according to the "
     "letters written by the miller's widow?",
     "Her nephews rebuilt it as a lookout and a pigeon loft, and the remaining sails were sawn into benches for "
     "the new chapel by the river."),
    ("Why were the fishermen of the northern bay forbidden to set their nets near the reef during the first "
     "two weeks of every spring season?",
     "The elders protected the spawning grounds of the silver herring there, believing the whole year's catch "
     "depended on those fourteen quiet days at the turn of the season."),
    ("Which instrument did the wandering musician teach the innkeeper's son to play, and what song did the boy "
     "perform at the harvest supper that autumn?",
     "He taught him the hurdy gurdy, and the boy played a slow ballad about a drowned ferryman that made half "
     "the hall weep into their ale by the fire."),
    ("How did the botanist manage to carry living orchid cuttings across the ocean without losing them to salt "
     "spray and the cold winds at sea?",
     "She sealed them in glass cases lined with damp moss, lashed the cases below deck near the galley stove, "
     "and opened them only on calm days to let in fresh air."),
    ("What rule did the public baths introduce after the dispute between the wool merchants and the tanners "
     "over the hot water on market days?",
     "The baths set aside the early morning hours for the tanners and the late afternoon for the merchants, "
     "with a bell rung to mark each change of the hour."),
    ("According to the shipwright's ledger, how many oak trees were felled to build the three masted merchant "
     "vessel launched at midsummer, and from which forest?",
     "Some two thousand oaks were felled from the royal forest by the estuary, each one chosen and marked by "
     "the master shipwright himself in the early spring."),
    ("Why did the postmistress of the mountain village begin sending letters with trained goats instead of the "
     "mule carts during the winter of heavy snow?",
     "The goats could climb the icy shortcut above the ravine where the carts could not pass, and they arrived "
     "two days sooner with the mail and the parcels."),
    ("What did the archivist discover hidden inside the binding of the old tax register when it was taken apart "
     "for repair at the county record office?",
     "She found a folded map of the medieval town walls and a list of gate keepers' wages written in a hand "
     "older than the register itself by two centuries."),
    ("How did the farmers in the valley protect their beehives from the bears that came down from the forest "
     "every year once the berries ran out?",
     "They placed the hives on tall platforms with smooth tin sheets nailed around the posts, so the bears "
     "could neither climb them nor reach the honey stored above."),
    ("What method did the cartographer use to measure the height of the twin peaks without ever climbing "
     "either of them during the summer survey?",
     "He measured the angles to both summits from the two ends of a carefully paced baseline in the meadow and "
     "worked out the heights by trigonometry using tables of sines."),
    ("Which custom did the ferry town keep on the last evening of the year, and how did it begin according to "
     "the oldest residents of the quay?",
     "Everyone floated a candle on a walnut shell down the river, a custom that began when a ferryman's "
     "daughter guided her father home through thick fog."),
    ("Why did the printing house refuse to publish the young poet's first collection, despite the glowing "
     "recommendation from the professor of rhetoric?",
     "The printer objected that the poems mocked the town's aldermen by name, and he feared losing the "
     "council's lucrative contract for public notices and the yearly almanac of fairs."),
    ("How were the stones for the new bridge transported from the quarry to the river crossing before the road "
     "through the marsh had been finished?",
     "They were dragged on wooden sledges over frozen ground in midwinter and then floated downstream on rafts "
     "once the ice had melted in the spring, a slow task for the masons."),
    ("What did the observatory's night assistant record in the logbook on the evening the great comet first "
     "became visible above the western hills?",
     "She noted a pale smudge with a faint forked tail low in the west at a quarter past nine, and underlined "
     "the entry twice in red ink before calling the director."),
    ("In the cooking manual of the old abbey, which spices were required for the Christmas pudding, and how "
     "long was it meant to hang before serving?",
     "The manual asked for mace, cloves, ginger and a little pepper, and said the pudding should hang in a cool "
     "larder for six full weeks before the feast day."),
    ("What problem did the blacksmith's new bellows solve for the ironworks, and who first suggested the "
     "design to the foreman of the forge?",
     "The double chamber bellows gave a steady blast instead of puffs, and it was first suggested by a "
     "travelling organ builder who lodged nearby at the sign of the swan during the fair."),
    ("Why did the herb gardeners at the infirmary plant lavender in long rows between the beds of sage and "
     "thyme along the southern wall?",
     "The lavender drew bees to pollinate the other herbs and its scent was thought to calm the patients who "
     "walked in the garden after surgery or a long fever in the ward."),
    ("How did the river pilots warn the approaching barges about the shifting sandbanks after the spring flood "
     "had changed the channel once again?",
     "They planted willow poles topped with white rags along the new edges of the banks and moved them every "
     "week as the sand kept drifting downstream with the current."),
    ("What agreement ended the quarrel between the two neighbouring monasteries over the rights to the spring "
     "that fed both of their fish ponds?",
     "They agreed to share the water on alternate days and to repair the stone channel together each autumn, "
     "sealing the pact with a shared feast at the spring itself."),
]
SHORT = ["Which metal did the guild stamp on apprentice medals?",  # 9 tokens: matched whole (exact)
         "Name the river that powered the first paper mill there",  # 10 tokens
         "What colour was the banner of the carpenters guild"]  # 9 tokens
TINY = ["Capital of the moon?"]  # 4 tokens: below exact_match_min_tokens, skipped
PLANT_LENGTHS = (8, 13, 20, 50)
CLEAN_FILES = ["janeausten", "shakespeare-milton", "sotu", "bible-web", "linux-doc-6.1", "python3.11-doc",
               "postgresql-doc-15", "dict-gcide", "dict-wn", "licenses-copyright", "fortunes", "reuters-tm",
               "mhcc-commentary", "git-doc"]
MAX_CHARS = 20_000  # keep each corpus document short enough for a fast test


def _item_text(i: int) -> str:
    return f"{QA[i][0]} {QA[i][1]}"


@pytest.fixture(scope="module")
def eval_jsonl(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("eval") / "trivia.jsonl"
    rows = [{"question": q, "answer": a} for q, a in QA] + [{"question": q, "answer": None} for q in SHORT + TINY]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def corpus(corpus_dir):
    """>= 500 clean documents plus one planted document per (item, plant length)."""
    df = pl.concat([pl.read_parquet(corpus_dir / f"{f}.parquet", columns=["id", "text"]).sample(
        n=100, seed=7, with_replacement=True).unique("id") for f in CLEAN_FILES])
    df = df.with_columns(pl.col("text").str.slice(0, MAX_CHARS)).filter(pl.col("text").str.len_chars() > 200)
    rng = random.Random(0)
    hosts = df.sample(n=len(QA) * len(PLANT_LENGTHS) + len(SHORT) * 2, seed=1)
    clean = df.join(hosts.select("id"), on="id", how="anti")
    planted, truth = [], []
    host_iter = iter(hosts.iter_rows())
    for i in range(len(QA)):
        words = _item_text(i).split()
        for length in PLANT_LENGTHS:
            start = rng.randrange(0, len(words) - length + 1)
            passage = " ".join(words[start:start + length])
            hid, text = next(host_iter)
            planted.append((f"plant-{i}-{length}", _insert(text, passage, rng)))
            truth.append((f"plant-{i}-{length}", str(i), length, passage))
    for j, q in enumerate(SHORT):
        hid, text = next(host_iter)
        planted.append((f"short-{j}-whole", _insert(text, q, rng)))
        truth.append((f"short-{j}-whole", str(len(QA) + j), -1, q))
        hid, text = next(host_iter)
        part = " ".join(q.split()[:-1])  # all but the last word: not the whole item
        planted.append((f"short-{j}-part", _insert(text, part, rng)))
        truth.append((f"short-{j}-part", str(len(QA) + j), -2, part))
    table = pa.table({"id": clean["id"].to_list() + [p[0] for p in planted],
                      "text": pa.array(clean["text"].to_list() + [p[1] for p in planted], pa.large_string())})
    return table, clean.height, pl.DataFrame(truth, schema=["id", "item", "length", "passage"], orient="row")


def _insert(text: str, passage: str, rng) -> str:
    cut = text.find(" ", rng.randrange(len(text) // 4, 3 * len(text) // 4))
    cut = cut if cut > 0 else len(text)
    return f"{text[:cut]} {passage} {text[cut:]}"


def run(stage: Decontaminate, table: pa.Table, data=None) -> pl.DataFrame:
    """Fit, join the decisions by id as the runner does, transform, apply the default rules."""
    stage.fit(data if data is not None else LocalData(table))
    dec = stage.decisions_
    batch = table
    pos = pc.index_in(table["id"], value_set=dec["id"])
    for c in dec.column_names:
        if c != "id":
            batch = batch.append_column(c, dec[c].take(pos))
    out = stage.transform(batch)
    assert {k: v.type for k, v in out.items()} == stage.output_columns()
    df = pl.from_arrow(table.select(["id"])).with_columns(**{k: pl.from_arrow(v) for k, v in out.items()})
    return df.with_columns(reason=first_failure(df, compile_rules(stage.default_rules())))


@pytest.fixture(scope="module")
def default_run(eval_jsonl, corpus):
    table, _, _ = corpus
    stage = Decontaminate(eval_sets=[{"name": "trivia", "path": eval_jsonl, "fields": ["question", "answer"]}])
    stage.validate()
    return stage, run(stage, table)


def test_all_plants_of_13_tokens_or_more_found_with_set_and_item(corpus, default_run):
    _, _, truth = corpus
    _, res = default_run
    long = truth.filter(pl.col("length") >= 13).join(res, on="id")
    assert long.height == len(QA) * 3
    assert (long["decontam_hits"] > 0).all()
    assert (long["decontam_set"] == "trivia").all()
    assert (long["decontam_item"] == long["item"]).all()
    assert (long["reason"] == "decontam_trivia").all()
    # A plant of L tokens holds L - 12 13-grams of the item (more when a word splits in two).
    assert (long["decontam_hits"] >= long["length"] - 12).all()


def test_no_clean_document_removed(corpus, default_run):
    _, n_clean, _ = corpus
    _, res = default_run
    assert n_clean >= 500
    clean = res.filter(~pl.col("id").str.starts_with("plant-") & ~pl.col("id").str.starts_with("short-"))
    assert clean.height == n_clean
    assert (clean["decontam_hits"] == 0).all() and clean["reason"].is_null().all()
    assert clean["decontam_set"].is_null().all() and (clean["decontam_frac"] == 0.0).all()


def test_short_plants_follow_the_n_gram_rule(corpus, default_run):
    _, _, truth = corpus
    _, res = default_run
    eight = truth.filter(pl.col("length") == 8).join(res, on="id")
    assert (eight["decontam_hits"] == 0).all() and eight["reason"].is_null().all()


def test_short_items_match_whole_and_only_whole(corpus, default_run):
    _, _, truth = corpus
    _, res = default_run
    whole = truth.filter(pl.col("length") == -1).join(res, on="id")
    assert (whole["decontam_item"] == whole["item"]).all() and (whole["reason"] == "decontam_trivia").all()
    part = truth.filter(pl.col("length") == -2).join(res, on="id")
    assert (part["decontam_hits"] == 0).all()


def test_report_counts_per_set_and_shows_spans(corpus, default_run):
    _, _, truth = corpus
    stage, res = default_run
    rep = stage.report()
    (s,) = rep["eval_sets"]
    assert s["name"] == "trivia" and s["items"] == len(QA) + len(SHORT) + len(TINY)
    assert (s["ngram_items"], s["exact_items"], s["skipped_items"]) == (len(QA), len(SHORT), len(TINY))
    assert s["docs_removed"] == s["docs_contaminated"] == res.filter(pl.col("reason").is_not_null()).height
    assert s["docs_removed"] == len(QA) * 3 + len(SHORT)
    assert len(s["examples"]) == 3
    for ex in s["examples"]:  # the longest plants: up to 50 tokens of the item, as written there
        assert ex["id"].endswith("-50")
        assert ex["span"] in " ".join(_item_text(int(ex["item"])).split()), ex
        assert len(ex["span"].split()) >= 40
    assert rep["index"]["confirmed_keys"] > 0 and rep["index"]["bloom_bytes"] > 0


def test_mark_mode_keeps_rows_but_marks_them(eval_jsonl, corpus):
    table, _, truth = corpus
    small = table.slice(table.num_rows - 40)  # the last planted documents
    stage = Decontaminate(eval_sets=[{"name": "trivia", "path": eval_jsonl, "fields": ["question", "answer"]}],
                          mode="mark")
    assert stage.default_rules() == {}
    res = run(stage, small)
    assert res["reason"].is_null().all()
    assert (res["decontam_hits"] > 0).sum() > 0
    assert stage.report()["eval_sets"][0]["docs_removed"] == 0


def test_threshold_on_fraction_of_ngrams(eval_jsonl, corpus_dir):
    host = pl.read_parquet(corpus_dir / "sotu.parquet")["text"][0][:20_000]
    texts = [f"{host} {_item_text(3)}", f"Notes. {_item_text(3)} {_item_text(4)}"]
    table = pa.table({"id": ["long-host", "mostly-eval"], "text": pa.array(texts, pa.large_string())})
    stage = Decontaminate(eval_sets=[{"name": "trivia", "path": eval_jsonl, "fields": ["question", "answer"]}],
                          threshold=0.5)
    assert stage.default_rules() == {"decontam_{decontam_set}": "decontam_hits == 0 or decontam_frac < 0.5"}
    res = run(stage, table)
    assert res["decontam_hits"].to_list()[0] > 0 and res["decontam_frac"][0] < 0.05
    assert res["decontam_frac"][1] > 0.75
    assert res["reason"].to_list() == [None, "decontam_trivia"]
    (s,) = stage.report()["eval_sets"]
    assert (s["docs_removed"], s["docs_below_threshold"]) == (1, 1)


def test_bloom_false_positives_never_remove_documents(eval_jsonl, corpus, tmp_path):
    table, n_clean, truth = corpus
    sub = pa.concat_tables([table.slice(0, 200), table.slice(n_clean, 40)])
    # 100k filler n-grams (words that occur nowhere) fill a filter sized for a 30% false-positive rate.
    rng = np.random.default_rng(0)
    filler = tmp_path / "filler.jsonl"
    filler.write_text("\n".join(json.dumps({"q": " ".join(f"zq{w}" for w in rng.integers(0, 10**9, 62))})
                                for _ in range(2000)) + "\n")
    stage = Decontaminate(eval_sets=[{"name": "trivia", "path": eval_jsonl, "fields": ["question", "answer"]},
                                     {"name": "filler", "path": str(filler), "fields": ["q"]}],
                          bloom_fp_rate=0.3)
    res = run(stage, sub)
    idx = stage.report()["index"]
    assert idx["bloom_positives"] > 10_000  # the filter let many clean windows through ...
    flagged = set(res.filter(pl.col("decontam_hits") > 0)["id"].to_list())
    expected = set(truth.filter(pl.col("length") != 8).filter(pl.col("length") != -2)["id"]) & set(
        sub["id"].to_pylist())
    assert flagged == expected  # ... and exact confirmation dropped every one of them
    assert (res.filter(pl.col("decontam_hits") > 0)["decontam_set"] == "trivia").all()


class BatchedData(LocalData):
    """LocalData that calls map functions on small batches, like a cluster would."""

    def map_batches(self, fn):
        outs = [fn(pa.Table.from_batches([b])) for b in self.table.to_batches(max_chunksize=37)]
        return LocalData(pa.concat_tables(outs))


def test_batching_does_not_change_decisions(eval_jsonl, corpus, default_run):
    table, _, _ = corpus
    stage, res = default_run
    again = Decontaminate(**stage.get_params())
    res2 = run(again, table, BatchedData(table))
    assert res2.sort("id").equals(res.sort("id"))


def test_eval_set_formats_and_several_sets(tmp_path, corpus):
    datasets = pytest.importorskip("datasets")
    table, n_clean, truth = corpus
    sub = table.slice(n_clean)  # the planted documents
    half = len(QA) // 2
    pq_path = tmp_path / "first.parquet"
    pl.DataFrame({"q": [q for q, _ in QA[:half]], "a": [a for _, a in QA[:half]],
                  "uid": [f"A{i}" for i in range(half)]}).write_parquet(pq_path)
    ds_path = tmp_path / "second_ds"
    datasets.Dataset.from_dict({"question": [q for q, _ in QA[half:]],
                                "choices": [[a, "none of these"] for _, a in QA[half:]]}).save_to_disk(str(ds_path))
    stage = Decontaminate(eval_sets=[
        {"name": "first", "path": str(pq_path), "fields": ["q", "a"], "id_field": "uid"},
        {"name": "second", "path": str(ds_path), "fields": ["question", "choices"]}])
    stage.validate()
    res = run(stage, sub).join(truth, on="id")
    found = res.filter(pl.col("length") >= 13)
    assert found.height == len(QA) * 3 and (found["decontam_hits"] > 0).all()
    item = found["item"].cast(pl.Int64).to_list()
    expected_set = ["first" if i < half else "second" for i in item]
    expected_item = [f"A{i}" if i < half else str(i - half) for i in item]  # id_field, else row number
    assert found["decontam_set"].to_list() == expected_set
    assert found["decontam_item"].to_list() == expected_item
    assert found["reason"].to_list() == [f"decontam_{s}" for s in expected_set]
    assert [s["docs_removed"] for s in stage.report()["eval_sets"]] == [half * 3, (len(QA) - half) * 3]


def test_empty_corpus_and_empty_batch(eval_jsonl):
    stage = Decontaminate(eval_sets=[{"name": "trivia", "path": eval_jsonl, "fields": ["question"]}])
    empty = pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.large_string())})
    stage.fit(LocalData(empty))
    assert stage.decisions_.num_rows == 0
    out = stage.transform(empty)
    assert all(len(v) == 0 for v in out.values())
    one = pa.table({"id": ["a"], "text": pa.array([""], pa.large_string())})
    stage.fit(LocalData(one))
    assert stage.transform(one)["decontam_hits"].to_pylist() == [0]


@pytest.mark.parametrize("params, field", [
    ({"eval_sets": []}, "eval_sets"),
    ({"eval_sets": [{"name": "x", "path": "/nonexistent.jsonl", "fields": ["q"]}]}, "path"),
    ({"eval_sets": [{"name": "x", "path": ".", "fields": []}]}, "fields"),
    ({"eval_sets": [{"name": "x", "path": ".", "fields": ["q"], "colour": 1}]}, "unknown"),
    ({"n": 0}, "n must"), ({"threshold": 2}, "threshold"), ({"mode": "drop"}, "mode"),
    ({"exact_match_min_tokens": 0}, "exact_match_min_tokens"), ({"bloom_fp_rate": 0}, "bloom_fp_rate"),
])
def test_validate_names_the_parameter(eval_jsonl, params, field):
    base = {"eval_sets": [{"name": "t", "path": eval_jsonl, "fields": ["question"]}]}
    with pytest.raises(ValueError, match=field):
        Decontaminate(**{**base, **params}).validate()


def test_missing_field_names_set_and_field(eval_jsonl):
    stage = Decontaminate(eval_sets=[{"name": "t", "path": eval_jsonl, "fields": ["question", "rationale"]}])
    with pytest.raises(ValueError, match="'t'.*rationale"):
        stage.fit(LocalData(pa.table({"id": ["a"], "text": ["x"]})))


# ------------------------------------------------------------------ helpers in tamis.scorers.decontamination.ngrams
def test_tokens_normalise_case_unicode_and_punctuation():
    tok = tokenize(pa.array(["The CAFÉ, naïve—résumé!", "the café naïve résumé", "ＴＨＥ ｃａｆé naïve résumé",
                             "", "don't"]))
    assert tok.counts.tolist() == [4, 4, 4, 0, 2]
    h = tok.hashes
    assert (h[0:4] == h[4:8]).all() and (h[0:4] == h[8:12]).all()
    assert tok.span_text(12, 14) == "don't"


def test_windows_stay_inside_one_document():
    tok = tokenize(pa.array(["a b c", "d e", "f g h i"]))
    win = window_hashes(tok, [2, 3])
    assert win[2][1].tolist() == [0, 1, 3, 5, 6, 7]
    assert win[3][1].tolist() == [0, 5, 6]
    same = tokenize(pa.array(["x y a b c"]))
    assert window_hashes(same, [3])[3][0][-1] == win[3][0][0]  # same words, same hash, anywhere


def test_bloom_filter_has_no_false_negatives_and_its_rate():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, 50_000, dtype=np.uint64)
    bloom = BloomFilter(len(keys), 0.01)
    bloom.add(keys)
    assert bloom.contains(keys).all()
    other = rng.integers(0, 2**63, 200_000, dtype=np.uint64)
    assert bloom.contains(other).mean() < 0.01
    assert bloom.nbytes <= 2 * 50_000 * 9.6 / 8 + 64
