"""Contriever crop views: span lengths and contiguity, ids = documents, (seed, epoch, id)-seeded reproducibility,
exact resume of a crop run, and the clear error for a document shorter than the crop minimum."""
import pytest
import torch

from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig
from textmoco.data.loader import build_train_loader
from textmoco.data.retrieval import CropDataset

DOCS = [" ".join(f"d{d}w{i}" for i in range(20 + 3 * d)) for d in range(12)]


def is_span(crop: str, doc: str) -> bool:
    c, w = crop.split(), doc.split()
    return any(w[s:s + len(c)] == c for s in range(len(w) - len(c) + 1))


def test_crops_are_two_independent_spans_of_10_to_50_percent():
    ds = CropDataset(DOCS, min_length=2, seed=3)
    differ = 0
    for i, doc in enumerate(DOCS):
        a, b = ds[i]
        n = len(doc.split())
        for crop in (a, b):
            assert is_span(crop, doc)
            assert max(2, int(0.1 * n)) <= len(crop.split()) <= round(0.5 * n) + 1
        differ += a != b
    assert differ >= len(DOCS) - 1  # independent draws


def test_word_deletion_keeps_order_and_drops_words():
    ds = CropDataset(DOCS, ratio_min=0.5, ratio_max=0.5, delete_rate=0.5, seed=0)
    a, _ = ds[11]
    words = DOCS[11].split()
    idx = [words.index(w) for w in a.split()]
    assert idx == sorted(idx) and len(idx) < round(0.5 * len(words))


def test_crops_are_seeded_by_seed_epoch_and_id_not_global_rng():
    ds = CropDataset(DOCS, seed=1)
    first = [ds[i] for i in range(len(DOCS))]
    torch.manual_seed(999)
    assert [ds[i] for i in reversed(range(len(DOCS)))] == first[::-1]  # order/global RNG do not matter
    assert CropDataset(DOCS, seed=1)[4] == first[4]
    ds.set_epoch(1)
    assert sum(ds[i] != first[i] for i in range(len(DOCS))) >= len(DOCS) - 1
    assert CropDataset(DOCS, seed=2)[4] != first[4]


def test_sample_id_is_the_document():
    ds = CropDataset(DOCS, seed=0)
    train = TrainConfig(output_dir="unused", batch_size=4, max_steps=1, progress=False)
    batch = next(iter(build_train_loader(ds, lambda items: items, train)))
    for sid, (a, b) in zip(batch["ids"].tolist(), batch["inputs"]):
        assert is_span(a, DOCS[sid]) and is_span(b, DOCS[sid])


def test_document_shorter_than_crop_minimum_is_a_clear_error():
    with pytest.raises(ValueError, match=r"shorter than the crop minimum of 5 words, the first is document 1"):
        CropDataset(["one two three four five six", "too short", "a b c d e f g"], min_length=5)


def make_crop_trainer(out, tiny_bert, **kw):
    from textmoco import MoCoModel
    from textmoco.encoders.text import TextEncoder
    from textmoco.trainer import MoCoTrainer

    torch.manual_seed(0)
    enc = TextEncoder(tiny_bert, max_length=24)
    train = dict(output_dir=str(out), batch_size=4, max_steps=6, lr=1e-3, progress=False, seed=0, save_every=3)
    train.update(kw)
    return MoCoTrainer(MoCoModel(enc), CropDataset(DOCS, seed=0), ObjectiveConfig(temperature=0.1),
                       QueueConfig(size=8), TrainConfig(**train))


def test_crop_run_resumes_exactly_across_an_epoch(tmp_path, tiny_bert):
    # 12 docs / batch 4 = 3 batches per epoch: step 4 is in epoch 1, whose crops differ from epoch 0's
    full = make_crop_trainer(tmp_path / "full", tiny_bert)
    full.fit()
    part = make_crop_trainer(tmp_path / "part", tiny_bert, stop_after=4, save_every=2)
    part.fit()
    resumed = make_crop_trainer(tmp_path / "part", tiny_bert, save_every=2)
    resumed.fit(resume_from="latest")
    assert torch.equal(full.queue.ids, resumed.queue.ids)
    assert torch.allclose(full.queue.keys, resumed.queue.keys, atol=1e-6)
    for (name, x), y in zip(full.unwrapped.state_dict().items(), resumed.unwrapped.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), name
