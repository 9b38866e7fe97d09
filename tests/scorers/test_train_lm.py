"""`tamis train-lm` and tamis.scorers.perplexity.train_lm: tokenizer, token stream, GPT-2 training, saved folder."""
from __future__ import annotations

import argparse
import json
import math

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

from tamis.pipeline.readers import InputError, expand_inputs  # noqa: E402
from tamis.scorers.perplexity.train_lm import (INFO_FILE, read_texts, token_stream,  # noqa: E402
                              train_from_files, train_tokenizer)

TINY = dict(steps=40, layers=1, d_model=32, heads=2, seq_len=32, vocab_size=400, batch_size=8, lr=5e-3)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def devil(corpus_dir):
    return corpus_dir / "dict-devil.parquet"


@pytest.fixture(scope="module")
def tiny_model(devil, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "tiny"
    return train_from_files([str(devil)], out, max_chars=40_000, progress=False, **TINY)


def test_saved_folder_loads_with_auto_classes(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.config.n_positions == 32 and model.config.n_layer == 1 and model.config.n_embd == 32
    assert len(tok) <= 400 and tok.eos_token == "<|endoftext|>"
    text = "Cynic, n. A blackguard whose faulty vision sees things as they are — naïvely."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level BPE: lossless on any Unicode
    info = json.loads((tiny_model / INFO_FILE).read_text())
    assert info["steps"] == 40 and info["train_tokens"] > 1000 and info["params"] > 0
    assert info["final_loss"] < math.log(len(tok)) - 1.0  # learned more than a uniform guess
    assert not list(tiny_model.parent.glob(".tiny.tmp-*"))  # written atomically


def test_token_stream_separates_documents(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    docs = ["A bore.", "", "Egotist, n. A person of low taste."]
    stream = token_stream(tok, docs)
    eos = tok.eos_token_id
    assert stream.dtype == np.int32 and (stream == eos).sum() == 3 and stream[-1] == eos
    parts = np.split(stream, np.flatnonzero(stream == eos) + 1)[:-1]
    assert [tok.decode(p[:-1]) for p in parts] == docs


def test_tokenizer_vocab_size_option(devil):
    texts = read_texts([str(devil)], max_chars=20_000)
    assert len(train_tokenizer(texts, 300)) <= 300 < len(train_tokenizer(texts, 600))


def test_read_texts_domains_budget_and_inputs(corpus_dir, devil, tmp_path):
    fortunes = corpus_dir / "fortunes.parquet"
    texts = read_texts([str(devil), str(fortunes)], domains=["literature"], max_chars=5000)
    assert sum(map(len, texts)) == 5000
    devil_texts = pl.read_parquet(devil)["text"].to_list()
    assert all(any(d.startswith(t) for d in devil_texts) for t in texts)
    jsonl = tmp_path / "ref.jsonl"
    pl.DataFrame({"body": ["one doc", "", "two doc"]}).write_ndjson(jsonl)
    assert read_texts([str(tmp_path)], text_column="body") == ["one doc", "two doc"]
    assert expand_inputs([str(corpus_dir / "dict-*.parquet")], "train-lm")[0].name == "dict-devil.parquet"
    with pytest.raises(InputError, match="missing.parquet"):
        expand_inputs([str(tmp_path / "missing.parquet")], "train-lm")
    with pytest.raises(ValueError, match="column 'text'"):
        read_texts([str(jsonl)])
    with pytest.raises(ValueError, match="domain"):
        read_texts([str(jsonl)], domains=["x"], text_column="body")


def test_bad_options_are_rejected(devil, tmp_path):
    with pytest.raises(ValueError, match="heads"):
        train_from_files([str(devil)], tmp_path / "m", max_chars=2000, **{**TINY, "heads": 3})
    with pytest.raises(ValueError, match="unknown"):
        train_from_files([str(devil)], tmp_path / "m", max_chars=2000, warmup=3)


def test_cli_command_trains_and_the_scorer_loads_it(devil, tmp_path, capsys):
    import pyarrow as pa

    from tamis.pipeline.commands import train_lm as cmd
    from tamis.scorers.perplexity.model import Perplexity

    parser = argparse.ArgumentParser(prog="tamis")
    cmd.add_parser(parser.add_subparsers())
    out = tmp_path / "ref-lm"
    args = parser.parse_args(["train-lm", "--input", str(devil), "--domains", "literature",
                              "--output", str(out), "--steps", "3", "--layers", "1", "--d-model", "32",
                              "--heads", "2", "--seq-len", "32", "--vocab-size", "300",
                              "--batch-size", "4", "--max-chars", "20000"])
    assert args.func(args) == 0
    said = capsys.readouterr()
    assert "saved" in said.out
    # Not silent before the step bar: what it reads, the tokenizer, then the model.
    lines = [x for x in said.err.splitlines() if x.startswith("train-lm: ")]
    assert lines[0] == f"train-lm: reading {devil} (sampling 20,000 characters)", lines
    assert any(x.startswith(f"train-lm: read {devil} (") for x in lines), lines
    assert any(x.startswith("train-lm: training the tokenizer (byte-level BPE, vocabulary 300)") for x in lines)
    assert any(x.startswith("train-lm: training GPT-2 (") and "for 3 steps on " in x for x in lines), lines
    scored = Perplexity(model=str(out)).score(pa.table({"text": ["Abstainer, n. A weak person."]}))
    assert scored["ppl"][0].as_py() > 1.0
    with pytest.raises(SystemExit):
        parser.parse_args(["train-lm", "--output", str(out)])  # --input is required
    bad = parser.parse_args(["train-lm", "--input", str(devil), "--domains", "no-such-domain",
                             "--output", str(tmp_path / "x")])
    assert bad.func(bad) == 2 and "no reference text" in capsys.readouterr().err


def small_cli(devil, out, *extra):
    return ["train-lm", "--input", str(devil), "--output", str(out), "--steps", "2", "--layers", "1",
            "--d-model", "32", "--heads", "2", "--seq-len", "32", "--vocab-size", "300", "--batch-size", "4",
            "--max-chars", "20000", *extra]


def test_train_lm_never_deletes_a_folder_it_did_not_write(devil, tmp_path, capsys):
    from tamis.pipeline.cli import main

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(small_cli(devil, out)) == 2
    assert f"output folder {out} is not empty" in capsys.readouterr().err
    assert main(small_cli(devil, out, "--overwrite")) == 2  # not a model tamis trained
    assert "even with --overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # nothing left beside it


def test_overwrite_replaces_only_an_earlier_tamis_model(devil, tmp_path):
    from tamis.pipeline.cli import main

    out = tmp_path / "lm"
    out.mkdir()  # an empty folder is fine without --overwrite
    assert main(small_cli(devil, out)) == 0
    assert json.loads((out / INFO_FILE).read_text())["steps"] == 2
    assert main(small_cli(devil, out, "--steps", "3")) == 2  # a model is there: needs --overwrite
    assert main(small_cli(devil, out, "--overwrite", "--seq-len", "100000")) == 2  # fails before saving
    assert json.loads((out / INFO_FILE).read_text())["steps"] == 2  # the old model is whole
    assert main(small_cli(devil, out, "--overwrite", "--steps", "3")) == 0
    assert json.loads((out / INFO_FILE).read_text())["steps"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["lm"]  # no temporary or old folder left


def test_train_if_missing_never_deletes(devil, tmp_path):
    from tamis.scorers.perplexity.model import Perplexity

    folder = tmp_path / "ref-lm"
    folder.mkdir()
    (folder / "readme.md").write_text("my notes")
    stage = Perplexity(model=str(folder), train_if_missing={"input": [str(devil)], "steps": 2, "layers": 1,
                                                             "d_model": 32, "heads": 2, "seq_len": 32,
                                                             "vocab_size": 300, "batch_size": 4,
                                                             "max_chars": 20000})
    with pytest.raises(FileExistsError, match="ref-lm.*never deletes"):
        stage.prepare()
    assert [p.name for p in folder.iterdir()] == ["readme.md"]
