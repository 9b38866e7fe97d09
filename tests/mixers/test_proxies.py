"""Proxy LMs (n-gram, tiny GPT-2) and per-mixture proxy runs on shared-corpus text."""
import math

import numpy as np
import polars as pl
import pytest

from tamis.mixers import proxy_runs as pr
from tamis.mixers.ngram_lm import KneserNeyLM
from tamis.mixers.proxy_models import count_tokens, train_proxy


@pytest.fixture(scope="module")
def texts(corpus_dir):
    def read(name, n):
        return pl.scan_parquet(corpus_dir / f"{name}.parquet").select("text").head(n).collect()["text"].to_list()
    return {"speeches": read("sotu", 60), "code": read("python-stdlib", 120)}


@pytest.fixture(scope="module")
def corpus(corpus_dir):
    files = ["sotu", "python-stdlib", "licenses-copyright", "bible-web", "fortunes"]
    return pl.concat([pl.scan_parquet(corpus_dir / f"{f}.parquet").select("id", "text", "domain").head(80).collect()
                      for f in files])


def test_kneser_ney_is_a_distribution():
    lm = KneserNeyLM(order=3, vocab_size=256).fit(np.frombuffer(b"abracadabra cadabra abra", np.uint8))
    for ctx in (b"ab", b"zz", b""):
        c = np.frombuffer(ctx, np.uint8).astype(np.int64)
        total = sum(lm.token_probs(np.append(c, w))[-1] for w in range(256))
        assert total == pytest.approx(1.0, abs=1e-9)
    seen = lm.token_probs(np.frombuffer(b"abra", np.uint8))[-1]
    unseen = lm.token_probs(np.frombuffer(b"abrq", np.uint8))[-1]
    assert seen > 0.3 and 0 < unseen < 0.01


def test_ngram_in_domain_training_wins(texts):
    valid = {"speeches": texts["speeches"][-8:], "code": texts["code"][-15:]}
    on_speech = train_proxy("ngram", texts["speeches"][:-8], valid, token_budget=300_000, order=4)
    on_code = train_proxy("ngram", texts["code"][:-15], valid, token_budget=300_000, order=4)
    assert set(on_speech) == {"speeches", "code"}
    assert all(0 < v < math.log(256) for v in [*on_speech.values(), *on_code.values()])
    assert on_speech["speeches"] < on_code["speeches"] - 0.3
    assert on_code["code"] < on_speech["code"] - 0.3
    again = train_proxy("ngram", texts["speeches"][:-8], valid, token_budget=300_000, order=4)
    assert again == on_speech


def test_token_budget_is_enforced(texts):
    valid = {"speeches": texts["speeches"][-8:]}
    small = train_proxy("ngram", texts["speeches"][:-8], valid, token_budget=20_000, order=4)
    large = train_proxy("ngram", texts["speeches"][:-8], valid, token_budget=400_000, order=4)
    assert large["speeches"] < small["speeches"] - 0.2
    with pytest.raises(ValueError, match="kind"):
        train_proxy("kenlm", ["x y"], valid, token_budget=10)
    with pytest.raises(ValueError, match="empty"):
        train_proxy("ngram", texts["speeches"][:2], {"none": []}, token_budget=1000)


def test_shared_tokenizer_is_used_for_every_run(texts, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator([t[:3000] for t in texts["speeches"][:20] + texts["code"][:40]],
                            trainers.BpeTrainer(vocab_size=600, special_tokens=["[UNK]"]))
    path = str(tmp_path / "tokenizer.json")
    tok.save(path)
    n_bytes = count_tokens(texts["speeches"][:5])
    n_bpe = count_tokens(texts["speeches"][:5], path)
    assert np.all(n_bpe < n_bytes) and np.all(n_bpe > 0)
    valid = {"speeches": texts["speeches"][-8:]}
    by_bpe = train_proxy("ngram", texts["speeches"][:-8], valid, token_budget=60_000, order=3, tokenizer=path)
    by_byte = train_proxy("ngram", texts["speeches"][:-8], valid, token_budget=60_000, order=3)
    assert by_bpe["speeches"] > by_byte["speeches"]          # nats per BPE token > nats per byte
    assert count_tokens(["two words", " ", ""], "whitespace").tolist() == [2, 0, 0]


def test_tiny_gpt2_learns_the_domain(texts):
    valid = {"speeches": texts["speeches"][-4:], "code": texts["code"][-8:]}
    params = dict(n_layer=1, n_head=2, n_embd=32, block_size=64, batch_size=8, lr=1e-2,
                  max_valid_tokens=2048, device="cpu")
    on_speech = train_proxy("gpt2", texts["speeches"], valid, token_budget=8192, seed=0, **params)
    on_code = train_proxy("gpt2", texts["code"], valid, token_budget=8192, seed=0, **params)
    assert all(0 < v < math.log(256) for v in on_speech.values())
    assert on_speech["speeches"] < on_code["speeches"]
    assert on_code["code"] < on_speech["code"]


def test_pools_hold_out_and_share(corpus):
    pools = pr.build_pools(corpus, pool_tokens=100_000, valid_tokens=20_000, valid_fraction=0.1, seed=0)
    assert pools.domains == sorted(corpus["domain"].unique().to_list())
    assert sum(pools.natural.values()) == pytest.approx(1.0)
    assert all(pools.stats["pool_tokens"][d] <= 100_000 + 4096 * 4 for d in pools.domains)
    train_text = {t for d in pools.domains for t in pools.texts[d]}
    assert not train_text & {t for d in pools.domains for t in pools.valid[d]}
    assert max(len(t) for d in pools.domains for t in pools.texts[d]) <= 4096
    v = pr.targets(pools, ["all", "legal+speeches", "code"])
    assert list(v) == ["all", "legal+speeches", "code"] and all(v.values())
    with pytest.raises(ValueError, match="unknown target"):
        pr.targets(pools, ["poetry"])


def test_sample_texts_follows_the_mixture(corpus):
    pools = pr.build_pools(corpus, pool_tokens=60_000, seed=0)
    small = min(pools.domains, key=lambda d: pools.tokens[d].sum())
    w = {d: 0.0 for d in pools.domains}
    w.update({"code": 0.5, small: 0.5})
    budget = 2 * int(pools.tokens[small].sum()) + 10_000      # the small pool must be cycled
    got = pr.sample_texts(pools, w, budget, seed=3)
    def domain_of(t):   # the last piece of a domain is a cut (prefix) of a pool chunk
        return next(d for d in ("code", small) if any(p.startswith(t) for p in pools.texts[d]))
    per = {"code": 0, small: 0}
    for t in got:
        per[domain_of(t)] += len(t.encode())
    assert per["code"] == pytest.approx(budget / 2, rel=0.02)
    assert per[small] == pytest.approx(budget / 2, rel=0.02)
    assert got == pr.sample_texts(pools, w, budget, seed=3)
    assert got != pr.sample_texts(pools, w, budget, seed=4)


def test_run_proxies_writes_regmix_csvs(corpus, tmp_path):
    pools = pr.build_pools(corpus, pool_tokens=40_000, seed=0)
    valid = pr.targets(pools, ["all", "code"], all_tokens=20_000)
    M = np.eye(len(pools.domains))[:3] * 0.6 + 0.4 / len(pools.domains)
    mix, loss = pr.run_proxies(M, pools, valid, token_budget=40_000, params={"order": 3}, runner=map)
    assert mix.columns == ["index", *[f"train_{d}" for d in pools.domains]]
    assert loss.columns == ["index", "metric/all_val_loss", "metric/code_val_loss", "seconds"]
    assert mix["index"].to_list() == loss["index"].to_list() == [1, 2, 3]
    pr.write_csvs(mix, loss, tmp_path / "m.csv", tmp_path / "l.csv")
    assert (tmp_path / "m.csv").read_text().splitlines()[0] == ",".join(mix.columns)
    assert (tmp_path / "l.csv").read_text().splitlines()[0] == "index,metric/all_val_loss,metric/code_val_loss"
    back = pr.read_table(tmp_path / "l.csv", "loss")
    np.testing.assert_allclose(back["metric/code_val_loss"].to_numpy(), loss["metric/code_val_loss"].to_numpy())
    # the pure per-run function gives what the runner gave
    one = pr.run_mixture(2, dict(zip(pools.domains, M[1])), pools, valid, token_budget=40_000,
                         params={"order": 3})
    assert one["losses"]["code"] == pytest.approx(loss["metric/code_val_loss"][1])


def test_stable_hash_is_fixed():
    h = pr.stable_hash(["a", "doc-1", "", "ünï"], seed=0)
    assert h.dtype == np.uint64 and len(set(h.tolist())) == 4
    np.testing.assert_array_equal(h, pr.stable_hash(pl.Series(["a", "doc-1", "", "ünï"]), seed=0))
    assert not np.array_equal(h, pr.stable_hash(["a", "doc-1", "", "ünï"], seed=1))
    assert int(pr.stable_hash(["doc-1"], seed=0)[0]) == int(h[1])      # independent of batch


def test_proxies_run_as_ray_tasks(corpus, ray_session):
    from tamis.pipeline.runner.session import map_tasks
    pools = pr.build_pools(corpus, pool_tokens=30_000, seed=0)
    valid = pr.targets(pools, ["code"], all_tokens=10_000)
    M = np.full((2, len(pools.domains)), 1 / len(pools.domains))
    M[1] = np.eye(len(pools.domains))[pools.domains.index("code")]
    mix, loss = pr.run_proxies(M, pools, valid, token_budget=30_000, params={"order": 3}, runner=map_tasks)
    local = pr.run_proxies(M, pools, valid, token_budget=30_000, params={"order": 3}, runner=pr.local_runner)[1]
    np.testing.assert_allclose(loss["metric/code_val_loss"].to_numpy(), local["metric/code_val_loss"].to_numpy())
    assert loss["metric/code_val_loss"][1] < loss["metric/code_val_loss"][0]
