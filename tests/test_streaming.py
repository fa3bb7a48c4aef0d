"""Streaming corpora: column check, per-process sharding, the block shuffle, exact resume of the position from the
checkpoint (in order and block-shuffled)."""
from itertools import islice

import pytest
import torch

from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig
from textmoco.data.streaming import StreamingDataset, text_id

TEXTS = [f"streamed document number {i} with a few words" for i in range(40)]


def stream(n_shards=4):
    import datasets
    return datasets.Dataset.from_dict({"text": TEXTS, "n": list(range(len(TEXTS)))}).to_iterable_dataset(n_shards)


def test_missing_text_column_is_a_clear_error():
    with pytest.raises(ValueError, match="no column 'body'.*--text_column"):
        StreamingDataset(stream(), "body")


@pytest.mark.parametrize("block", [0, 6])
def test_sharding_gives_each_process_different_samples(block):
    parts = [[sid for sid, _ in StreamingDataset(stream(), "text", id_column="n", shuffle_block=block).shard(r, 2)]
             for r in range(2)]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(len(TEXTS)))


def test_ids_and_crops():
    ds = StreamingDataset(stream(), "text", crop={"min_length": 2})
    sid, (a, b) = next(iter(ds))
    assert sid == text_id(TEXTS[0]) and a in TEXTS[0] and b in TEXTS[0]


def ids(ds, limit=None):
    return [sid for sid, _ in islice(iter(ds), limit)]


def test_block_shuffle_permutes_each_block_by_seed_and_epoch():
    blocks = ids(StreamingDataset(stream(), "text", id_column="n", shuffle_block=8))
    assert [sorted(blocks[i:i + 8]) for i in range(0, 40, 8)] == [list(range(i, i + 8)) for i in range(0, 40, 8)]
    assert blocks != list(range(40))  # shuffled inside the blocks, never across them
    assert blocks == ids(StreamingDataset(stream(), "text", id_column="n", shuffle_block=8))  # reproducible
    other_seed = StreamingDataset(stream(), "text", id_column="n", shuffle_block=8, seed=1)
    next_epoch = StreamingDataset(stream(), "text", id_column="n", shuffle_block=8)
    next_epoch.set_epoch(1)
    assert ids(other_seed) != blocks and ids(next_epoch) != blocks
    last = ids(StreamingDataset(stream(), "text", id_column="n", shuffle_block=16))[32:]  # a short last block
    assert sorted(last) == list(range(32, 40))
    assert sorted(ids(StreamingDataset(stream(), "text", id_column="n", shuffle_block=100))) == list(range(40))


@pytest.mark.parametrize("block", [0, 7])
def test_state_dict_after_any_number_of_items_resumes_the_same_sequence(block):
    whole = ids(StreamingDataset(stream(), "text", id_column="n", shuffle_block=block))
    for k in (0, 1, 6, 7, 8, 13, 14, 39, 40):
        ds = StreamingDataset(stream(), "text", id_column="n", shuffle_block=block)
        it = iter(ds)
        head = [sid for sid, _ in islice(it, k)]
        state = ds.state_dict()
        resumed = StreamingDataset(stream(), "text", id_column="n", shuffle_block=block)
        resumed.load_state_dict(state)
        assert head + ids(resumed) == whole, k


def test_block_size_must_match_the_checkpoint():
    ds = StreamingDataset(stream(), "text", id_column="n", shuffle_block=7)
    next(iter(ds))
    with pytest.raises(ValueError, match="shuffle_block=7.*this run has shuffle_block=0.*--shuffle_block 7"):
        StreamingDataset(stream(), "text", id_column="n").load_state_dict(ds.state_dict())
    with pytest.raises(ValueError, match=r"shuffle_block=-1 is invalid"):
        StreamingDataset(stream(), "text", shuffle_block=-1)


def make_stream_trainer(out, tiny_bert, shuffle_block=0, **kw):
    from textmoco import MoCoModel
    from textmoco.encoders.text import TextEncoder
    from textmoco.trainer import MoCoTrainer

    torch.manual_seed(0)
    train = dict(output_dir=str(out), batch_size=4, max_steps=14, lr=1e-3, progress=False, seed=0, save_every=3)
    train.update(kw)
    ds = StreamingDataset(stream(), "text", id_column="n", shuffle_block=shuffle_block)
    return MoCoTrainer(MoCoModel(TextEncoder(tiny_bert, max_length=16)), ds, ObjectiveConfig(temperature=0.1),
                       QueueConfig(size=8), TrainConfig(**train))


def test_streaming_needs_max_steps(tmp_path, tiny_bert):
    with pytest.raises(ValueError, match="max_steps"):
        make_stream_trainer(tmp_path, tiny_bert, max_steps=None, epochs=1)


@pytest.mark.parametrize("block", [0, 7])
def test_streaming_resume_continues_at_the_saved_position(tmp_path, tiny_bert, block):
    # 40 samples / 4 = 10 batches an epoch; 14 steps cross into epoch 1; stop at 6 (mid-block for 7), resume
    full = make_stream_trainer(tmp_path / "full", tiny_bert, block)
    order = []
    full._loss = (lambda f: lambda batch: (order.append(batch["ids"].tolist()), f(batch))[1])(full._loss)
    full.fit()
    part = make_stream_trainer(tmp_path / "part", tiny_bert, block, stop_after=6)
    part.fit()
    resumed = make_stream_trainer(tmp_path / "part", tiny_bert, block)
    seen = []
    resumed._loss = (lambda f: lambda batch: (seen.append(batch["ids"].tolist()), f(batch))[1])(resumed._loss)
    resumed.fit(resume_from="latest")
    assert seen == order[6:]
    assert torch.equal(full.queue.ids, resumed.queue.ids)
    assert torch.allclose(full.queue.keys, resumed.queue.keys, atol=1e-6)
