"""Perplexity on a tiny GPT-2 trained here (seconds) on five Jane Austen novels."""
from __future__ import annotations

import math
import pickle
import re

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")

from tamis.scorers.perplexity.model import Perplexity, make_windows, micro_batches, use_bf16  # noqa: E402
from tamis.scorers.perplexity.train_lm import train_reference_lm  # noqa: E402

HELD_OUT = "janeausten/Emma.txt"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def austen(corpus_dir):
    return pl.read_parquet(corpus_dir / "janeausten.parquet")


@pytest.fixture(scope="module")
def ref_lm(austen, tmp_path_factory):
    """2-layer GPT-2 (d=64, ctx 64, BPE 2048) on 60k chars of each novel but Emma (~15 CPU-s)."""
    train = austen.filter(pl.col("id") != HELD_OUT)["text"].str.slice(0, 60_000).to_list()
    out = tmp_path_factory.mktemp("ref_lm") / "model"
    return train_reference_lm(train, out, steps=300, layers=2, d_model=64, heads=2, seq_len=64,
                              vocab_size=2048, batch_size=16, lr=3e-3, progress=False)


@pytest.fixture(scope="module")
def scorer(ref_lm):
    s = Perplexity(model=str(ref_lm))
    s.setup()
    return s


@pytest.fixture(scope="module")
def held_out_docs(austen):
    """210 documents of 120 words from the held-out novel."""
    words = re.sub(r"\s+", " ", austen.filter(pl.col("id") == HELD_OUT)["text"][0]).split()
    return [" ".join(words[i:i + 120]) for i in range(0, 120 * 210, 120)]


def shuffle_words(text: str, seed: int) -> str:
    words = text.split()
    np.random.default_rng(seed).shuffle(words)
    return " ".join(words)


def char_noise(text: str, seed: int, rate: float = 0.1) -> str:
    """Replace ~`rate` of the lower-case letters with random lower-case letters."""
    a = np.frombuffer(text.encode("ascii", "ignore"), dtype=np.uint8).copy()
    rng = np.random.default_rng(seed)
    hit = (rng.random(a.size) < rate) & (a >= 97) & (a <= 122)
    a[hit] = rng.integers(97, 123, hit.sum())
    return a.tobytes().decode()


def auc(neg: np.ndarray, pos: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties count half (Mann-Whitney)."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def ppl(scorer, texts):
    return scorer.score(pa.table({"text": pa.array(texts, pa.large_string())}))["ppl"].to_numpy()


def test_prose_scores_lower_than_shuffled_and_noisy_versions(scorer, held_out_docs):
    clean = ppl(scorer, held_out_docs)
    shuffled = ppl(scorer, [shuffle_words(t, i) for i, t in enumerate(held_out_docs)])
    noisy = ppl(scorer, [char_noise(t, i) for i, t in enumerate(held_out_docs)])
    assert len(clean) >= 200 and np.isfinite(clean).all()
    assert auc(clean, shuffled) >= 0.95, (np.median(clean), np.median(shuffled))
    assert auc(clean, noisy) >= 0.95, (np.median(clean), np.median(noisy))


def test_output_types_empty_text_and_empty_batch(scorer):
    batch = pa.table({"id": ["a", "b", "c"], "text": pa.array(["It was a truth.", "", "x"], pa.large_string())})
    out = scorer.score(batch)
    assert set(out) == set(scorer.columns)
    assert out["ppl"].type == pa.float64() and out["ppl_tokens"].type == pa.int64()
    assert out["ppl"].to_pylist()[1] is None and out["ppl_tokens"].to_pylist()[1] == 0
    assert out["ppl"].null_count == 1 and out["ppl_tokens"].to_pylist()[2] >= 1
    empty = scorer.score(batch.slice(0, 0))
    assert len(empty["ppl"]) == 0 and len(empty["ppl_tokens"]) == 0
    assert batch.num_columns == 2  # input untouched


def test_matches_transformers_loss_when_document_fits_window(scorer, held_out_docs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = held_out_docs[3][:200]
    tok = AutoTokenizer.from_pretrained(scorer.model)
    model = AutoModelForCausalLM.from_pretrained(scorer.model).eval()
    ids = [tok.eos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) <= scorer.window_
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    out = scorer.score(pa.table({"text": [text]}))
    assert out["ppl_tokens"][0].as_py() == len(ids) - 1
    assert out["ppl"][0].as_py() == pytest.approx(math.exp(loss), rel=1e-4)


def test_padding_is_masked(scorer, held_out_docs):
    """A document scores the same alone and padded inside a batch of longer documents."""
    short = held_out_docs[0][:80]
    alone = ppl(scorer, [short])[0]
    mixed = ppl(scorer, [held_out_docs[1], short, held_out_docs[2] * 2])[1]
    assert mixed == pytest.approx(alone, rel=1e-4)


def test_long_document_windows_match_reference_computation(ref_lm, held_out_docs):
    """Windows with stride: every token scored once, NLL token-weighted as transformers' loss."""
    from transformers import AutoModelForCausalLM

    text = " ".join(held_out_docs[5:8])
    s = Perplexity(model=str(ref_lm), max_length=48, stride=20, batch_tokens=100,
                   precision="float32")  # the reference below is float32; "auto" may pick bf16
    s.setup()
    ids = s.tokenize([text])[0]
    assert len(ids) > 3 * 48
    doc, start, end, first = make_windows([ids], 48, 20)
    assert (end - start <= 48).all() and first[0] == 1 and (first[1:] == end[:-1]).all()
    assert (first[1:] - start[1:] >= 48 - 20).all() and end[-1] == len(ids)
    model = AutoModelForCausalLM.from_pretrained(ref_lm).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for b, e, f in zip(start, end, first):
            x = torch.tensor(ids[b:e])[None]
            labels = x.clone()
            labels[0, : f - b] = -100
            n = e - f
            total += model(input_ids=x, labels=labels).loss.item() * n
            count += n
    out = s.score(pa.table({"text": [text]}))
    assert out["ppl_tokens"][0].as_py() == count == len(ids) - 1
    assert out["ppl"][0].as_py() == pytest.approx(math.exp(total / count), rel=1e-4)


def test_micro_batches_sorted_and_within_budget():
    lengths = np.array([5, 50, 20, 50, 7, 33])
    groups = micro_batches(lengths, 100)
    flat = np.concatenate(groups)
    assert sorted(flat.tolist()) == list(range(6))
    assert list(lengths[flat]) == sorted(lengths, reverse=True)
    assert all(len(g) * lengths[g].max() <= 100 or len(g) == 1 for g in groups)


def test_bf16_autocast_within_tolerance(ref_lm, held_out_docs):
    docs = held_out_docs[:4]
    fp32 = Perplexity(model=str(ref_lm), precision="float32")
    bf16 = Perplexity(model=str(ref_lm), precision="bfloat16")
    a, b = ppl(fp32, docs), ppl(bf16, docs)
    assert bf16.dtype_ == torch.bfloat16 and fp32.dtype_ is None
    np.testing.assert_allclose(b, a, rtol=0.02)


def test_cpu_precision_rule():
    assert use_bf16(1000.0, 1001.0, 500, t32=2.0, t16=1.0)
    assert not use_bf16(1000.0, 1001.0, 500, t32=1.1, t16=1.0)  # not faster enough
    assert not use_bf16(1000.0, 1010.0, 500, t32=2.0, t16=1.0)  # ppl off by 2%
    assert not use_bf16(0.0, 0.0, 0, t32=2.0, t16=1.0)


def test_pickles_before_setup_and_loads_nothing_in_init(ref_lm):
    s = Perplexity(model=str(ref_lm), max_length=32)
    assert not hasattr(s, "model_")
    clone = pickle.loads(pickle.dumps(s))
    assert clone.get_params() == s.get_params() and len(pickle.dumps(s)) < 2000
    out = clone.score(pa.table({"text": ["Emma Woodhouse, handsome, clever, and rich."]}))
    assert out["ppl"][0].as_py() > 1.0


def test_validate_names_the_parameter():
    for kw, word in [({"precision": "fp16"}, "precision"), ({"stride": 1}, "stride"),
                     ({"max_length": 8, "stride": 9}, "stride"), ({"batch_tokens": 0}, "batch_tokens"),
                     ({"device": "tpu"}, "device"), ({"train_if_missing": {"steps": 3}}, "train_if_missing"),
                     ({"train_if_missing": {"input": ["x"], "bogus": 1}}, "train_if_missing")]:
        with pytest.raises(ValueError, match=word):
            Perplexity(**kw).validate()
    Perplexity(train_if_missing={"input": ["x"], "domains": ["literature"], "steps": 5}).validate()


def test_missing_model_folder_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-lm"):
        Perplexity(model=str(tmp_path / "nope")).setup()


def test_prepare_trains_once_when_missing(tmp_path, corpus_dir):
    target = tmp_path / "ref"
    opts = {"input": [str(corpus_dir / "dict-devil.parquet")], "max_chars": 30_000, "steps": 2,
            "layers": 1, "d_model": 32, "heads": 2, "seq_len": 32, "vocab_size": 300}
    s = Perplexity(model=str(target), train_if_missing=opts)
    s.validate()
    s.prepare()
    assert (target / "config.json").is_file() and s.model_path_ == str(target.resolve())
    stamp = (target / "config.json").stat().st_mtime_ns
    s2 = Perplexity(model=str(target), train_if_missing=opts)
    s2.prepare()  # reuses the folder
    assert (target / "config.json").stat().st_mtime_ns == stamp
    out = pickle.loads(pickle.dumps(s2)).score(pa.table({"text": ["A bore is a person who talks."]}))
    assert out["ppl_tokens"][0].as_py() > 0
