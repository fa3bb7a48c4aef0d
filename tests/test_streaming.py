"""Streaming corpora: column check, per-process sharding, exact resume of the position from the checkpoint."""
import pytest
import torch

from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig
from textmoco.data.retrieval import StreamingDataset, text_id

TEXTS = [f"streamed document number {i} with a few words" for i in range(40)]


def stream(n_shards=4):
    import datasets
    return datasets.Dataset.from_dict({"text": TEXTS, "n": list(range(len(TEXTS)))}).to_iterable_dataset(n_shards)


def test_missing_text_column_is_a_clear_error():
    with pytest.raises(ValueError, match="no column 'body'.*--text_column"):
        StreamingDataset(stream(), "body")


def test_sharding_gives_each_process_different_samples():
    parts = [[sid for sid, _ in StreamingDataset(stream(), "text", id_column="n").shard(r, 2)] for r in range(2)]
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == list(range(len(TEXTS)))


def test_ids_and_crops():
    ds = StreamingDataset(stream(), "text", crop={"min_length": 2})
    sid, (a, b) = next(iter(ds))
    assert sid == text_id(TEXTS[0]) and a in TEXTS[0] and b in TEXTS[0]


def make_stream_trainer(out, tiny_bert, **kw):
    from textmoco import MoCoModel
    from textmoco.encoders.text import TextEncoder
    from textmoco.trainer import MoCoTrainer

    torch.manual_seed(0)
    train = dict(output_dir=str(out), batch_size=4, max_steps=14, lr=1e-3, progress=False, seed=0, save_every=3)
    train.update(kw)
    ds = StreamingDataset(stream(), "text", id_column="n")
    return MoCoTrainer(MoCoModel(TextEncoder(tiny_bert, max_length=16)), ds, ObjectiveConfig(temperature=0.1),
                       QueueConfig(size=8), TrainConfig(**train))


def test_streaming_needs_max_steps(tmp_path, tiny_bert):
    with pytest.raises(ValueError, match="max_steps"):
        make_stream_trainer(tmp_path, tiny_bert, max_steps=None, epochs=1)


def test_streaming_resume_continues_at_the_saved_position(tmp_path, tiny_bert):
    # 40 samples / 4 = 10 batches an epoch; 14 steps cross into epoch 1; stop at 6, resume
    full = make_stream_trainer(tmp_path / "full", tiny_bert)
    order = []
    full._loss = (lambda f: lambda batch: (order.append(batch["ids"].tolist()), f(batch))[1])(full._loss)
    full.fit()
    part = make_stream_trainer(tmp_path / "part", tiny_bert, stop_after=6)
    part.fit()
    resumed = make_stream_trainer(tmp_path / "part", tiny_bert)
    seen = []
    resumed._loss = (lambda f: lambda batch: (seen.append(batch["ids"].tolist()), f(batch))[1])(resumed._loss)
    resumed.fit(resume_from="latest")
    assert seen == order[6:]
    assert torch.equal(full.queue.ids, resumed.queue.ids)
    assert torch.allclose(full.queue.keys, resumed.queue.keys, atol=1e-6)
