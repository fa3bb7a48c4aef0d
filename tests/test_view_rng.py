"""Stochastic views are drawn from generators derived from (seed, epoch, sample ids), never from the global RNG at
collate time: a run stopped mid-epoch and resumed equals an uninterrupted one with word augmentation
(``token_augment="delete"``) and with image views (kornia), even though Accelerate fetches one batch ahead (the
saved RNG state already includes the next batch's collate-time draws).

Also: the word augmentation of a sample depends only on (seed, epoch, sample id) - not on its batch-mates, nor on
the global RNG - and differs across epochs and between the two views.
"""
import json
from pathlib import Path

import pytest
import torch

import textrun
from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig
from textmoco.data.images import ImageDataset
from textmoco.data.loader import IdCollator
from textmoco.data.text import SentenceDataset
from textmoco.encoders.text import TextEncoder
from textmoco.encoders.vision import VisionEncoder
from textmoco.model import MoCoModel
from textmoco.trainer import MoCoTrainer

torch.set_num_threads(1)
KEYS = ("loss", "loss_q2k", "loss_k2q", "queue_filled", "neg_cos")


def objective():
    return ObjectiveConfig(temperature=0.2, dual_weight=0.5, selection="top_k", top_k=6, id_guard=True)


def text_trainer(model_dir, out, **kw):
    torch.manual_seed(1234)
    enc = TextEncoder(model_dir, token_augment="delete", augment_rate=0.3, max_length=16)
    return MoCoTrainer(MoCoModel(enc), SentenceDataset(textrun.sentences(40)), objective(), QueueConfig(size=16),
                       TrainConfig(output_dir=str(out), batch_size=8, max_steps=8, lr=1e-3, momentum=0.9,
                                   progress=False, seed=3, **kw))


def vision_trainer(model_dir, out, **kw):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 16, 16), dtype=torch.uint8, generator=g)
    torch.manual_seed(1234)
    enc = VisionEncoder.from_scratch(image_size=16, patch_size=4, hidden_size=16, num_layers=1, heads=2, seed=0)
    return MoCoTrainer(MoCoModel(enc), ImageDataset(images), objective(), QueueConfig(size=16),
                       TrainConfig(output_dir=str(out), batch_size=8, max_steps=8, lr=1e-3, momentum=0.9,
                                   progress=False, seed=3, **kw))


def read_metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line]


@pytest.mark.parametrize("kind", ["text-delete", "vision"])
def test_stop_and_resume_with_augmentation_equals_uninterrupted(tiny_bert, tmp_path, kind):
    make = text_trainer if kind == "text-delete" else vision_trainer
    ref = make(tiny_bert, tmp_path / "ref")
    ref.fit()
    make(tiny_bert, tmp_path / "run", stop_after=3).fit()  # mid-epoch (5 batches per epoch)
    torch.manual_seed(999)  # whatever the global RNG holds in the new process, the resumed run is the same
    second = make(tiny_bert, tmp_path / "run")
    second.fit(resume_from="latest")
    a, b = read_metrics(tmp_path / "ref"), read_metrics(tmp_path / "run")
    assert [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b):
        for key in KEYS:
            assert ra[key] == rb[key], (ra["step"], key, ra[key], rb[key])
    assert second.loader.collate_fn.epoch == 1  # the trainer told the collator the epoch
    assert torch.equal(ref.queue.keys, second.queue.keys) and torch.equal(ref.queue.ids, second.queue.ids)
    for (name, x), y in zip(ref.unwrapped.state_dict().items(), second.unwrapped.state_dict().values()):
        assert torch.equal(x, y), name


def test_word_augmentation_depends_only_on_seed_epoch_and_id(tiny_bert):
    enc = TextEncoder(tiny_bert, token_augment="delete", augment_rate=0.5, max_length=32)
    sents = textrun.sentences(16)
    collate = IdCollator(enc.collate, seed=7)

    def views(ids, epoch=0, global_seed=0):
        torch.manual_seed(global_seed)
        collate.set_epoch(epoch)
        a, b = collate([(i, sents[i]) for i in ids])["inputs"]
        return {i: (a["input_ids"][r][a["attention_mask"][r].bool()].tolist(),
                    b["input_ids"][r][b["attention_mask"][r].bool()].tolist()) for r, i in enumerate(ids)}

    full = views(list(range(16)))
    assert views([5, 3, 11], global_seed=1) == {i: full[i] for i in (5, 3, 11)}  # batch-mates and global RNG
    assert any(va != vb for va, vb in full.values())  # the two views differ
    assert views(list(range(16)), epoch=1) != full  # a new epoch, new draws
