"""`tamis export`: token shards that Megatron-Core reads back, document by document; seeded global
shuffle, shard bounds, resume after a kill, mixtures to a token budget."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tamis.pipeline.cli import main
from tamis.pipeline.export import formats, work
from tamis.pipeline.export.tokenize import TokenizerError, load_tokenizer, resolve_eos
from tamis.pipeline.runner.export import run_export

FILES = ("dict-foldoc", "dict-jargon", "fortunes", "python-stdlib", "sotu")


@pytest.fixture(scope="module")
def data(corpus_dir, tmp_path_factory):
    """A small run folder (run.json + curated/) of real text in 5 domains, and a BPE tokenizer trained on it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    import pyarrow.compute as pc

    root = tmp_path_factory.mktemp("export")
    run = root / "run"
    (run / "curated").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"completed": True}))
    tables = []
    for name in FILES:
        t = pq.read_table(corpus_dir / f"{name}.parquet", columns=["id", "text", "domain", "source", "license"])
        t = t.slice(0, 60)
        tables.append(t.set_column(1, "text", pc.utf8_slice_codeunits(t["text"], 0, 1500)))
    table = pa.concat_tables(tables)
    # two curated files, as a run writes them
    pq.write_table(table.slice(0, 150), run / "curated" / "part-a.parquet")
    pq.write_table(table.slice(150), run / "curated" / "part-b.parquet")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(table["text"].to_pylist(), trainer)
    (root / "tok").mkdir()
    tok.save(str(root / "tok" / "tokenizer.json"))
    return run, root / "tok", table


def _settings(data, fmt="megatron", shard_tokens=20_000, seed=0, **kw):
    run, tok, _ = data
    return work.make_settings([str(run)], str(tok), fmt, shard_tokens, seed, **kw)


def _expected(data) -> dict[str, list[int]]:
    _, tok_dir, table = data
    tok = load_tokenizer(tok_dir)
    eos = tok.token_to_id("<|endoftext|>")
    return {i: tok.encode(t).ids + [eos] for i, t in zip(table["id"].to_pylist(), table["text"].to_pylist())}


def _shards(out: Path, fmt: str, dtype) -> list[tuple[str, list[str], list[np.ndarray]]]:
    """(prefix, ids, token arrays) per shard, read with our reader."""
    m = json.loads((out / "manifest.json").read_text())
    res = []
    for s in m["shards"]:
        prefix = out / s["shard"]
        ids = pq.read_table(f"{prefix}.docs.parquet")["id"].to_pylist()
        res.append((str(prefix), ids, formats.documents(fmt, prefix, dtype)))
    return res


def test_megatron_shards_read_back_with_megatron_core(data, tmp_path, ray_session):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset

    settings = _settings(data, shard_tokens=40_000)
    manifest, done = run_export(settings, tmp_path / "out")
    assert not done
    expected = _expected(data)
    seen = Counter()
    assert len(manifest["shards"]) > 2
    for s in manifest["shards"]:
        prefix = tmp_path / "out" / s["shard"]
        ds = IndexedDataset(str(prefix))
        ids = pq.read_table(f"{prefix}.docs.parquet")["id"].to_pylist()
        assert len(ds) == len(ids) == s["documents"]
        assert ds.sequence_lengths.sum() == s["tokens"]
        assert s["tokens"] <= settings["shard_tokens"] or s["documents"] == 1
        assert ds[0].dtype == np.uint16  # vocabulary 800 < 65,500
        for k, i in enumerate(ids):
            assert ds[k].tolist() == expected[i], i
            seen[i] += 1
        ours, lengths, _ = formats.read_megatron(prefix)
        assert (lengths == ds.sequence_lengths).all()
    assert seen == Counter(expected.keys())  # every curated row exactly once
    assert manifest["tokens"] == sum(map(len, expected.values()))
    assert sum(v for v in manifest["licenses"].values()) == len(expected)
    assert set(manifest["domains"]) == set(data[2]["domain"].to_pylist())
    assert not (tmp_path / "out" / "_work").exists()


def test_npy_shards_and_dolma_index(data, tmp_path):
    settings = _settings(data, fmt="npy", shard_tokens=30_000)
    manifest, _ = run_export(settings, tmp_path / "out", local=True)
    expected = _expected(data)
    assert settings["dtype"] == "uint16"
    got = {}
    for prefix, ids, docs in _shards(tmp_path / "out", "npy", np.uint16):
        raw = np.memmap(prefix + ".npy", dtype=np.uint16, mode="r")  # OLMo's read: no header
        assert raw.size == sum(map(len, docs))
        for i, d in zip(ids, docs):
            assert i not in got
            got[i] = d.tolist()
    assert got == expected


def test_shuffle_is_seeded_and_independent_of_shard_size(data, tmp_path):
    def order(name, **kw):
        run_export(_settings(data, **kw), tmp_path / name, local=True)
        return [i for _, ids, _ in _shards(tmp_path / name, "megatron", np.uint16) for i in ids]

    a, b = order("a", seed=1), order("b", seed=1, shard_tokens=7_000)
    c = order("c", seed=2)
    assert a == b                      # one global order, cut differently
    assert a != c and sorted(a) == sorted(c)
    assert a != data[2]["id"].to_pylist()  # shuffled, not input order


def test_killed_export_resumes_without_duplicates(data, tmp_path, monkeypatch):
    settings = _settings(data, shard_tokens=10_000, seed=3)
    run_export(settings, tmp_path / "clean", local=True)
    real, calls = work.shard_task, []

    def dies_after_two(*a):
        calls.append(1)
        if len(calls) > 2:
            prefix = work.ExportFolder(a[1]).shard_prefix(a[2][0])
            Path(f"{prefix}.bin.tmp").write_bytes(b"half a shard")  # killed mid-write
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(work, "shard_task", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_export(settings, tmp_path / "out", local=True)
    assert not (tmp_path / "out" / "manifest.json").exists()
    monkeypatch.setattr(work, "shard_task", real)
    # also lose one bucket's record: it is redone
    next((tmp_path / "out" / "_work" / "buckets").glob("*.json")).unlink()
    manifest, done = run_export(settings, tmp_path / "out", local=True)
    assert not done
    clean = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    assert manifest["shards"] == clean["shards"]
    for s in clean["shards"]:
        for f in s["files"]:
            assert (tmp_path / "out" / f).read_bytes() == (tmp_path / "clean" / f).read_bytes(), f
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in (tmp_path / "clean").iterdir())
    stamp = (tmp_path / "out" / "manifest.json").stat().st_mtime_ns
    assert run_export(settings, tmp_path / "out", local=True)[1]  # finished: a no-op
    assert (tmp_path / "out" / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(work.ExportError, match="other settings"):
        run_export(_settings(data, shard_tokens=10_000, seed=4), tmp_path / "out", local=True)


def test_mixture_follows_weights_to_the_budget(data, tmp_path):
    run, _, table = data
    asked = {"dictionary": 0.4, "code": 0.3, "speeches": 0.2, "news": 0.1}  # no news in the data
    domains = set(table["domain"].to_pylist())
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"target": "x", "mixture": asked}))  # `tamis mix fit --out` shape
    settings = _settings(data, mixture_file=str(mix), tokens=60_000, seed=5)
    manifest, _ = run_export(settings, tmp_path / "out", local=True)
    got = manifest["mixture"]
    total = manifest["tokens"]
    assert abs(total - 60_000) / 60_000 < 0.02
    for d, w in asked.items():
        if not got[d]["missing"]:
            assert abs(got[d]["achieved"] - w / sum(w for k, w in asked.items() if not got[k]["missing"])) < 0.02, got
    for d in domains - set(asked):
        assert got[d]["tokens"] == 0
    # copies: every (id, copy) once, copies of a document hold the same tokens
    pairs = Counter()
    for prefix, _, docs in _shards(tmp_path / "out", "megatron", np.uint16):
        meta = pq.read_table(prefix + ".docs.parquet")
        pairs.update(zip(meta["id"].to_pylist(), meta["copy"].to_pylist()))
    assert max(pairs.values()) == 1


def test_mixture_repetition_cap(data, tmp_path):
    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps({"quotes": 0.5, "speeches": 0.5}))
    settings = _settings(data, mixture_file=str(mix), tokens=50_000, max_epochs=2.0)
    manifest, _ = run_export(settings, tmp_path / "out", local=True)
    quotes, speeches = manifest["mixture"]["quotes"], manifest["mixture"]["speeches"]
    assert quotes["capped"] and quotes["epochs"] <= 2.0 + 1e-9
    assert speeches["achieved"] > 0.5 and not speeches["capped"]  # the capped excess went there
    assert abs(manifest["tokens"] - 50_000) / 50_000 < 0.02


def test_cli_errors_are_one_line_exit_2(data, tmp_path, capsys):
    run, tok, _ = data
    bare = tmp_path / "bare"
    bare.mkdir()
    from tokenizers import Tokenizer, models
    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(str(bare / "tokenizer.json"))
    with pytest.raises(TokenizerError, match="--eos"):
        resolve_eos(bare, load_tokenizer(bare))
    assert resolve_eos(bare, load_tokenizer(bare), "1") == (1, "[UNK]")
    with pytest.raises(TokenizerError, match="not a token"):
        resolve_eos(bare, load_tokenizer(bare), "</s>")
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "tokenizer.json").write_text((bare / "tokenizer.json").read_text())
    (cfg / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "a"}}))
    assert resolve_eos(cfg, load_tokenizer(cfg)) == (0, "a")
    assert main(["export", str(run), "--tokenizer", str(bare), "--output", str(tmp_path / "o"), "--local"]) == 2
    assert "no EOS token" in capsys.readouterr().err
    assert main(["export", str(run), "--tokenizer", str(bare), "--eos", "a", "--output", str(tmp_path / "o"),
                 "--local", "--mixture", "m.json"]) == 2
    assert "--mixture and --tokens go together" in capsys.readouterr().err
    assert main(["export", str(run), "--tokenizer", str(tmp_path), "--output", str(tmp_path / "o"), "--local"]) == 2
    assert "no tokenizer.json" in capsys.readouterr().err
    assert main(["export", str(run), "--tokenizer", str(tok), "--output", str(run / "x"), "--local"]) == 2
    assert "inside the input" in capsys.readouterr().err
    (tmp_path / "nomix.json").write_text(json.dumps({"news": 1.0}))
    assert main(["export", str(run), "--tokenizer", str(tok), "--output", str(tmp_path / "o3"), "--local",
                 "--mixture", str(tmp_path / "nomix.json"), "--tokens", "1e4"]) == 2
    assert "none of its domains" in capsys.readouterr().err
    assert main(["export", str(run), "--tokenizer", str(tok), "--output", str(tmp_path / "o2"), "--local",
                 "--shard-tokens", "1e5"]) == 0
    out = capsys.readouterr().out
    assert "licences (documents)" in out and "shard(s)" in out
    assert main(["export", str(run), "--tokenizer", str(tok), "--output", str(tmp_path / "o2"), "--local",
                 "--shard-tokens", "1e5"]) == 0
    assert "already complete" in capsys.readouterr().out


def test_large_vocabularies_use_int32_megatron_and_uint32_npy(tmp_path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset

    assert formats.token_dtype("megatron", 65_499) == np.uint16
    assert formats.token_dtype("megatron", 65_500) == np.int32
    assert formats.token_dtype("npy", 65_536) == np.uint16 and formats.token_dtype("npy", 65_537) == np.uint32
    docs = [np.array([70_000, 3, 1], np.int32), np.array([1], np.int32), np.array([128_000, 2], np.int32)]
    meta = pa.table({"id": ["a", "b", "c"], "copy": pa.array([0, 0, 0], pa.int32()), "domain": ["x"] * 3,
                     "license": ["l"] * 3, "tokens": pa.array([3, 1, 2], pa.int32())})
    formats.write_shard("megatron", tmp_path / "m", np.concatenate(docs), meta)
    ds = IndexedDataset(str(tmp_path / "m"))
    assert [ds[i].tolist() for i in range(3)] == [d.tolist() for d in docs] and ds[0].dtype == np.int32
    formats.write_shard("npy", tmp_path / "n", np.concatenate(docs).astype(np.uint32), meta)
    assert [d.tolist() for d in formats.documents("npy", tmp_path / "n", np.uint32)] == [d.tolist() for d in docs]
