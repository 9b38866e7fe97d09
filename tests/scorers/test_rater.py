"""`tamis.scorers.meta_rater.rater`: expected scores from local HF classifiers and from tamis fast raters."""
from __future__ import annotations

import pickle

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tamis.scorers.meta_rater.rater import Rater, expected_score
from tamis.scorers.meta_rater.train import FastRater

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def corpus_texts(corpus_dir, n=24) -> list[str]:
    t = pq.read_table(corpus_dir / "dict-devil.parquet", columns=["text"]).slice(0, n // 2)
    u = pq.read_table(corpus_dir / "git-doc.parquet", columns=["text"]).slice(0, n // 2)
    return t["text"].to_pylist() + u["text"].to_pylist()


def tiny_tokenizer(texts, folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(
        vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(folder)
    return fast


def tiny_model(kind: str, vocab: int, num_labels: int, folder, seed: int):
    torch.manual_seed(seed)
    if kind == "bert":
        from transformers import BertConfig, BertForSequenceClassification
        cfg = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64, num_labels=num_labels,
                         initializer_range=0.5)
        model = BertForSequenceClassification(cfg)
    else:
        from transformers import ModernBertConfig, ModernBertForSequenceClassification
        cfg = ModernBertConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                               num_attention_heads=2, max_position_embeddings=64, num_labels=num_labels,
                               pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2,
                               eos_token_id=3, global_attn_every_n_layers=1, local_attention=16,
                               initializer_range=0.5)
        model = ModernBertForSequenceClassification(cfg)
    with torch.no_grad():  # random heads are near-uniform; spread the logits so the test bites
        model.classifier.weight.mul_(5.0)
    model.save_pretrained(folder)
    return model.eval()


@pytest.fixture(scope="module")
def hf_folders(corpus_dir, tmp_path_factory):
    texts = corpus_texts(corpus_dir)
    out = {}
    for kind, labels in (("bert", 6), ("modernbert", 6), ("bert", 1)):
        folder = tmp_path_factory.mktemp(f"{kind}{labels}")
        tok = tiny_tokenizer(texts, folder)
        out[(kind, labels)] = (folder, tok, tiny_model(kind, len(tok), labels, folder, seed=labels))
    return out


def manual(model, tok, texts, max_length):
    """Each text alone (no padding): softmax(logits) · (0..k-1), as the published raters define."""
    out = []
    with torch.no_grad():
        for t in texts:
            logits = model(**tok(t, truncation=True, max_length=max_length, return_tensors="pt")).logits[0]
            p = torch.softmax(logits.double(), -1).numpy()
            out.append(float(p @ np.arange(len(p))) if len(p) > 1 else float(logits[0]))
    return np.array(out)


@pytest.mark.parametrize("key", [("bert", 6), ("modernbert", 6), ("bert", 1)])
def test_hf_expected_score_matches_manual_softmax(hf_folders, corpus_dir, key):
    folder, tok, model = hf_folders[key]
    texts = corpus_texts(corpus_dir) + ["", "short"]
    sc = Rater(models={"professionalism": str(folder), "reasoning": str(folder)}, max_length=48,
                     batch_size=5, device="cpu")
    sc.validate()
    pickle.loads(pickle.dumps(sc))  # pickles before setup
    sc.setup()
    out = sc.score(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}))
    assert list(out) == ["rater_professionalism", "rater_reasoning"]
    got = out["rater_professionalism"].to_numpy()
    np.testing.assert_allclose(got, manual(model, tok, texts, 48), atol=2e-5)
    np.testing.assert_array_equal(got, out["rater_reasoning"].to_numpy())
    if key[1] == 6:
        assert ((got >= 0) & (got <= 5)).all() and np.ptp(got) > 0.1
    assert out["rater_professionalism"].type == pa.float64()


def test_expected_score_formula():
    logits = np.array([[0.0, 0, 0, 0, 0, 0], [100.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 100.0]])
    np.testing.assert_allclose(expected_score(logits), [2.5, 0.0, 5.0], atol=1e-12)
    np.testing.assert_allclose(expected_score(np.array([[3.7], [-1.0]])), [3.7, -1.0])


def test_fast_rater_folder_and_mixed_models(hf_folders, corpus_dir, tmp_path):
    df = pl.concat([pl.read_parquet(corpus_dir / f, columns=["text"]).head(40).with_columns(pl.lit(s).alias("y"))
                    for f, s in (("git-doc.parquet", 5.0), ("sotu.parquet", 1.0))])
    fast = FastRater(n_features=2**10, num_rounds=20, min_child_samples=3, n_jobs=1, max_chars=1500)
    folder = fast.fit(df["text"].to_list(), df["y"].to_list()).save(tmp_path / "fast")
    hf_folder = hf_folders[("bert", 6)][0]
    sc = Rater(models={"cleanliness": str(folder), "readability": str(hf_folder), "edu": str(folder)},
                     max_length=48)
    sc.validate()
    assert list(sc.output_columns()) == ["rater_readability", "rater_cleanliness", "rater_edu"]
    texts = df["text"].to_list()[::8]
    out = sc.score(pa.table({"text": texts}))  # setup runs lazily
    np.testing.assert_allclose(out["rater_cleanliness"].to_numpy(), fast.predict(texts))
    np.testing.assert_allclose(out["rater_edu"].to_numpy(), out["rater_cleanliness"].to_numpy())
    assert sc._raters["cleanliness"] is sc._raters["edu"]  # one copy per folder
    empty = sc.score(pa.table({"text": pa.array([], pa.large_string())}))
    assert all(len(v) == 0 and v.type == pa.float64() for v in empty.values())


def test_validate_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="models"):
        Rater().validate()
    with pytest.raises(ValueError, match="models.reasoning"):
        Rater(models={"reasoning": str(tmp_path)}).validate()
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="snake_case"):
        Rater(models={"Bad Name": str(tmp_path)}).validate()
    with pytest.raises(ValueError, match="device"):
        Rater(models={"reasoning": str(tmp_path)}, device="tpu").validate()
    assert set(Rater.columns) == {"rater_professionalism", "rater_readability", "rater_reasoning",
                                        "rater_cleanliness"}
