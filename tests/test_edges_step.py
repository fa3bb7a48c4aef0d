"""What one optimizer step does at the edges (issue 14), on MoCoTrainer with the small VectorEncoder:

- a finite loss with a non-finite gradient skips the step (weights, EMA key encoder and queue untouched) instead of
  clipping NaN into the weights; N consecutive skips stop the run; nothing non-finite is saved;
- what enters the queue: with the momentum held at 1 the queue holds exactly the *initial* key encoder's outputs of
  the enqueued samples (not the queries); a skipped step with finite keys enqueues nothing;
- the EMA uses the post-step query weights: k1 = m k0 + (1 - m) q1;
- filter warm-up keeps every negative up to its step and selects from it on;
- an fp16 step that the gradient scaler skips moves neither the EMA nor the queue, and the scale is lowered;
- one host read per optimizer step (the finite check) with the default guards on.
"""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from textmoco import checkpointing
from textmoco import trainer as trainer_module
from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig
from textmoco.encoders.vector import VectorEncoder
from textmoco.model import MoCoModel
from textmoco.trainer import MoCoTrainer, adamw
from vectorrun import DIM, IN_DIM, data

torch.set_num_threads(1)


def objective(**kw):
    base = dict(temperature=0.2, dual_weight=0.5, key_negatives="batch+queue", selection="top_k", top_k=6,
                id_guard=True, guard_threshold=0.9)
    base.update(kw)
    return ObjectiveConfig(**base)


def make_trainer(out, encoder=None, obj=None, queue_size=100, n=40, accelerator=None, **train_kw):
    torch.manual_seed(1234)
    model = MoCoModel(encoder if encoder is not None else VectorEncoder(IN_DIM, DIM, hidden=16, noise=0.1))
    train = dict(output_dir=str(out), batch_size=8, max_steps=6, lr=1e-2, warmup_ratio=0.0, momentum=0.9,
                 momentum_schedule="constant", progress=False, seed=0)
    train.update(train_kw)
    return MoCoTrainer(model, data(n), obj or objective(), QueueConfig(size=queue_size), TrainConfig(**train),
                       accelerator=accelerator)


def rows(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line]


class BadGradient(VectorEncoder):
    """Finite outputs always; on the query forward of the listed optimizer steps a term whose value is 0 and whose
    gradient is NaN (sqrt at 0 times 0): a finite loss with a non-finite gradient. The key forward (no grad) stays
    finite, so the step's keys are finite."""
    steps: set = set()
    calls = 0

    def forward(self, view):
        out = super().forward(view)
        if torch.is_grad_enabled():
            type(self).calls += 1
            if type(self).calls in self.steps:
                out = out + torch.sqrt((out - out.detach()).abs())
        return out


def bad_gradient_encoder(steps, noise=0.1):
    cls = type("Bad", (BadGradient,), {"steps": set(steps), "calls": 0})
    return cls(IN_DIM, DIM, hidden=16, noise=noise)


def params(module):
    return [p.detach().clone() for p in module.parameters()]


# ----------------------------------------------------------------------------------------- non-finite gradient
def test_finite_loss_with_nonfinite_gradient_skips_the_step(tmp_path, monkeypatch):
    seen = []
    original = MoCoTrainer._loss

    def spy(self, batch):  # state before each step: query, key, queue
        seen.append((params(self.unwrapped.query), params(self.unwrapped.key), self.queue.keys.clone(),
                     self.queue.num_enqueued))
        return original(self, batch)

    monkeypatch.setattr(MoCoTrainer, "_loss", spy)
    t = make_trainer(tmp_path, encoder=bad_gradient_encoder({3}), max_steps=5)
    t.fit()
    r = rows(tmp_path)
    assert [x["skipped"] for x in r] == [False, False, True, False, False]
    assert r[2]["loss"] is not None  # the loss itself was finite
    before, after = seen[2], seen[3]  # around step 3
    for a, b in zip(before[0] + before[1], after[0] + after[1]):
        assert torch.equal(a, b)  # no optimizer step, no EMA
    assert torch.equal(before[2], after[2]) and before[3] == after[3] == 16  # keys were finite: still not enqueued
    assert [x["queue_filled"] for x in r] == [8, 16, 16, 24, 32]
    assert all(torch.isfinite(p).all() for p in t.unwrapped.parameters())
    assert not torch.equal(seen[3][0][0], seen[4][0][0])  # training went on after the skip


def test_consecutive_skips_stop_the_run(tmp_path):
    t = make_trainer(tmp_path, encoder=bad_gradient_encoder(range(3, 100)), max_steps=10, save_every=1,
                     max_consecutive_skips=3)
    with pytest.raises(FloatingPointError, match=r"3 consecutive optimizer steps skipped .*last at step 5.*"
                                                 r"max_consecutive_skips=3"):
        t.fit()
    assert [x["skipped"] for x in rows(tmp_path)] == [False, False, True, True]
    assert checkpointing.resolve_resume("latest", str(tmp_path)).name == "step-4"


def test_nothing_nonfinite_is_saved_or_exported(tmp_path):
    t = make_trainer(tmp_path, max_steps=1)
    t.fit()
    with torch.no_grad():
        next(t.unwrapped.key.parameters())[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="non-finite values.*'key"):
        t.save()
    with pytest.raises(FloatingPointError, match="non-finite"):
        t.export(tmp_path / "export")
    assert not (tmp_path / "export").exists()
    assert checkpointing.resolve_resume("latest", str(tmp_path)).name == "step-1"


# ----------------------------------------------------------------------------------------- queue and EMA contents
def test_queue_holds_the_initial_key_encoders_outputs_at_momentum_one(tmp_path):
    """m = 1: the key encoder never moves, so every slot must be key0(x_id) exactly; the query encoder does move
    (lr > 0), so enqueueing queries (or keys from moved weights) fails from step 2 on. No view noise: view b = x."""
    t = make_trainer(tmp_path, encoder=VectorEncoder(IN_DIM, DIM, hidden=16, noise=0.0), momentum=1.0,
                     max_steps=4, queue_size=64)
    key0 = MoCoModel(VectorEncoder(IN_DIM, DIM, hidden=16))
    key0.load_state_dict(t.unwrapped.state_dict())
    t.fit()
    assert t.queue.num_enqueued == 32
    x = torch.stack(data())
    with torch.no_grad():
        expected = F.normalize(key0.key(x[t.queue.ids[:32]]), dim=1)
        query_now = F.normalize(t.unwrapped.query(x[t.queue.ids[:32]]), dim=1)
    torch.testing.assert_close(t.queue.keys[:32], expected, rtol=0, atol=1e-6)
    assert not torch.allclose(query_now, expected, atol=1e-3)  # queries would be distinguishable


def test_ema_uses_the_post_step_query_weights(tmp_path):
    """One step at constant m: key1 = m * key0 + (1 - m) * query1 (query1 after the optimizer step)."""
    m = 0.7
    t = make_trainer(tmp_path, momentum=m, max_steps=1)
    key0 = params(t.unwrapped.key)
    query0 = params(t.unwrapped.query)
    t.fit()
    query1, key1 = params(t.unwrapped.query), params(t.unwrapped.key)
    assert any(not torch.equal(a, b) for a, b in zip(query0, query1))
    for k0, q1, k1 in zip(key0, query1, key1):
        torch.testing.assert_close(k1, m * k0 + (1 - m) * q1, rtol=0, atol=1e-6)


def test_filter_warmup_keeps_every_negative_until_its_step(tmp_path):
    """filter_warmup_steps=3: steps 1-3 (optimizer steps 0-2) keep every filled slot (kept_fraction 1 once the
    queue has keys; distinct ids in the first epoch, so the id guard drops nothing); from step 4 on top_k=2 of >= 24
    filled slots are kept."""
    t = make_trainer(tmp_path, obj=objective(top_k=2, filter_warmup_steps=3), max_steps=5)
    t.fit()
    kept = [x["kept_fraction"] for x in rows(tmp_path)]
    assert kept[0] == 0.0  # empty queue at step 1
    assert kept[1] == kept[2] == 1.0
    assert kept[3] <= 2 / 24 + 1e-6 and kept[4] <= 2 / 32 + 1e-6


# ----------------------------------------------------------------------------------------- fp16 gradient scaler
def unfused_optimizer(monkeypatch):
    """Before make_trainer: the optimizer the trainer builds when Accelerate has an fp16 scaler (not fused)."""
    monkeypatch.setattr(trainer_module, "adamw", lambda groups, lr, fused=True: adamw(groups, lr, fused=False))


def install_cpu_scaler(t: MoCoTrainer, init_scale=2.0 ** 10):
    """What Accelerate sets up for fp16 on a GPU, on CPU: a GradScaler behind backward / clip / step (the trainer
    must have been built after ``unfused_optimizer``)."""
    assert not t.optimizer.optimizer.defaults["fused"]
    from accelerate.optimizer import patch_optimizer_step

    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1000)
    acc, opt = t.accelerator, t.optimizer
    acc.scaler = opt.scaler = scaler
    acc.unscale_gradients = lambda optimizer=None: scaler.unscale_(opt.optimizer)
    opt._accelerate_step_called = False
    opt._optimizer_original_step_method = opt.optimizer.step
    opt._optimizer_patched_step_method = patch_optimizer_step(opt, opt.optimizer.step)
    return scaler


def test_scaler_skipped_fp16_step_moves_neither_ema_nor_queue(tmp_path, monkeypatch):
    seen = []
    original = MoCoTrainer._loss

    def spy(self, batch):
        seen.append((params(self.unwrapped.query), params(self.unwrapped.key), self.queue.num_enqueued,
                     self.accelerator.scaler.get_scale()))
        return original(self, batch)

    monkeypatch.setattr(MoCoTrainer, "_loss", spy)
    unfused_optimizer(monkeypatch)
    t = make_trainer(tmp_path, encoder=bad_gradient_encoder({2}), max_steps=4, on_nonfinite="stop")
    install_cpu_scaler(t)
    t.fit()  # a scaler skip is routine under fp16: not an error even with on_nonfinite='stop'
    assert [x["skipped"] for x in rows(tmp_path)] == [False, True, False, False]
    (q_before, k_before, n_before, s_before), (q_after, k_after, n_after, s_after) = seen[1], seen[2]
    assert all(torch.equal(a, b) for a, b in zip(q_before + k_before, q_after + k_after))
    assert n_before == n_after == 8
    assert s_after == s_before / 2  # the scaler's own step ran and lowered the scale
    assert not torch.equal(seen[2][1][0], seen[3][1][0])  # the next step moved the EMA again


def test_scaler_decision_alone_holds_ema_and_queue(tmp_path, monkeypatch):
    """The fp16 scaler is the authority on whether the weights moved: a step it skips although the measured gradient
    norm was finite (its own inf check and the norm can disagree, e.g. a wrapped optimizer that reports no norm)
    moves neither EMA nor queue."""
    seen = []
    original = MoCoTrainer._loss

    def spy(self, batch):
        seen.append((params(self.unwrapped.key), self.queue.num_enqueued))
        return original(self, batch)

    monkeypatch.setattr(MoCoTrainer, "_loss", spy)
    unfused_optimizer(monkeypatch)
    t = make_trainer(tmp_path, max_steps=4)
    scaler = install_cpu_scaler(t)
    real_step, calls = scaler.step, []

    def step(optimizer, *args, **kwargs):  # the second step: the scaler skips (optimizer.step not called)
        calls.append(1)
        return None if len(calls) == 2 else real_step(optimizer, *args, **kwargs)

    monkeypatch.setattr(scaler, "step", step)
    t.fit()
    assert [x["skipped"] for x in rows(tmp_path)] == [False, True, False, False]
    (k_before, n_before), (k_after, n_after) = seen[1], seen[2]
    assert all(torch.equal(a, b) for a, b in zip(k_before, k_after)) and n_before == n_after == 8
    assert seen[3][1] == 16


def test_optimizer_is_fused_unless_a_scaler_must_see_its_skips(tmp_path, monkeypatch):
    """Without a gradient scaler the trainer's AdamW is torch's fused one and trains like the per-tensor AdamW (the
    same run, weights equal up to rounding); with a scaler (Accelerate's fp16) it is the per-tensor one, whose
    skipped step Accelerate can detect (a fused step would skip inside the kernel: EMA and queue would move)."""
    t = make_trainer(tmp_path / "fused", max_steps=4)
    assert t.optimizer.optimizer.defaults["fused"]
    t.fit()
    acc = Accelerator(cpu=True)
    acc.scaler = torch.amp.GradScaler("cpu")
    u = make_trainer(tmp_path / "scaled", max_steps=4, accelerator=acc)
    assert not u.optimizer.optimizer.defaults["fused"]
    unfused_optimizer(monkeypatch)
    ref = make_trainer(tmp_path / "plain", max_steps=4)
    assert not ref.optimizer.optimizer.defaults["fused"]
    ref.fit()
    assert [r["loss"] for r in rows(tmp_path / "fused")] == pytest.approx([r["loss"] for r in rows(tmp_path / "plain")],
                                                                          rel=1e-5)
    for a, b in zip(params(t.unwrapped), params(ref.unwrapped)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------- host reads
def test_default_training_step_reads_the_device_once(tmp_path, monkeypatch):
    """Count device-to-host reads (``Tensor.item`` / ``__bool__`` / ``tolist`` / ``nonzero``...) during optimizer
    steps with the default objective (dual view, top_k, id guard, threshold guard) and a full queue, logging off:
    exactly one per step, the finite check of the gradient norm (which also covers the step's keys). The fused
    AdamW the trainer uses keeps its ``step`` counters on the parameters' device and reads none of them (the
    per-tensor AdamW under an fp16 scaler keeps them on the CPU: no device read either)."""
    import traceback

    from torch.overrides import TorchFunctionMode

    reads = {"n": 0, "what": []}
    SYNCS = {torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__int__,
             torch.Tensor.__float__, torch.Tensor.nonzero, torch.nonzero, torch.Tensor.__index__,
             torch.Tensor.numpy, torch.masked_select, torch.Tensor.masked_select, torch.Tensor.unique,
             torch.unique, torch.Tensor.any, torch.Tensor.all}

    class Count(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in SYNCS and func not in (torch.Tensor.any, torch.Tensor.all) and not any(
                    "torch/optim/" in f.filename for f in traceback.extract_stack(limit=8)):
                reads["n"] += 1
                reads["what"].append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    obj = ObjectiveConfig(filter_warmup_steps=0, top_k=4, temperature=0.2)
    t = make_trainer(tmp_path, obj=obj, max_steps=4, queue_size=16, log_every=1000)
    t.save = lambda: None
    g = torch.Generator().manual_seed(0)
    t.queue.enqueue(torch.randn(16, DIM, generator=g), torch.arange(16) + 1000)  # full from the start
    original = MoCoTrainer._loss
    counts = []

    def counted_loss(self, batch):
        counts.append(reads["n"])
        return original(self, batch)

    monkeypatch.setattr(MoCoTrainer, "_loss", counted_loss)
    with Count():
        t.fit()
    counts.append(reads["n"])
    per_step = [b - a for a, b in zip(counts, counts[1:])]
    # the last step also writes the final metrics row (one read) and ends the loop
    assert per_step[:-1] == [1, 1, 1], (per_step, reads["what"])
