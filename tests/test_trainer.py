"""MoCoTrainer end to end on CPU with the small VectorEncoder: resume exactness, gradient accumulation, the EMA key
encoder, data checks, metrics, non-finite steps and the checkpoint directory."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from textmoco import checkpointing
from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig
from textmoco.encoders.vector import VectorEncoder
from textmoco.model import MoCoModel
from textmoco.momentum import momentum_at
from textmoco.trainer import MoCoTrainer
from vectorrun import DIM, IN_DIM, data

torch.set_num_threads(1)


def full_objective(**kw):
    base = dict(temperature=0.2, dual_weight=0.5, key_negatives="batch+queue", selection="top_k", top_k=6,
                n_random=2, id_guard=True, guard_threshold=0.9)
    base.update(kw)
    return ObjectiveConfig(**base)


def make_trainer(out, n=40, encoder=None, objective=None, queue_size=20, seed=0, **train_kw):
    torch.manual_seed(1234)  # model init
    enc = encoder if encoder is not None else VectorEncoder(IN_DIM, DIM, hidden=16, noise=0.1)
    model = MoCoModel(enc)
    train = dict(output_dir=str(out), batch_size=8, max_steps=12, lr=1e-2, warmup_ratio=0.1, momentum=0.9,
                 progress=False, seed=seed)
    train.update(train_kw)
    return MoCoTrainer(model, data(n), objective or full_objective(), QueueConfig(size=queue_size),
                       TrainConfig(**train))


def read_metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if line]


def assert_same_state(a: MoCoTrainer, b: MoCoTrainer):
    assert torch.equal(a.queue.keys, b.queue.keys)
    assert torch.equal(a.queue.ids, b.queue.ids)
    assert torch.equal(a.queue.filled, b.queue.filled)
    assert (a.queue.ptr, a.queue.num_enqueued) == (b.queue.ptr, b.queue.num_enqueued)
    for (name, x), y in zip(a.unwrapped.state_dict().items(), b.unwrapped.state_dict().values()):
        assert torch.equal(x, y), name  # query and EMA key encoder


# ------------------------------------------------------------------------------------------------------ (a) resume
@pytest.mark.parametrize("stop,accum", [(7, 1), (5, 1), (4, 2)], ids=["mid-epoch", "epoch-boundary", "accum2"])
def test_resume_is_exact(tmp_path, stop, accum):
    kw = dict(gradient_accumulation_steps=accum, batch_size=8 // accum if accum > 1 else 8)
    if accum > 1:
        kw["max_steps"] = 9
    ref = make_trainer(tmp_path / "ref", **kw)
    ref.fit()
    first = make_trainer(tmp_path / "run", stop_after=stop, **kw)
    first.fit()
    assert checkpointing.resolve_resume("latest", str(tmp_path / "run")).name == f"step-{stop}"
    assert len(read_metrics(tmp_path / "run")) == stop
    second = make_trainer(tmp_path / "run", **kw)
    second.fit(resume_from="latest")

    a, b = read_metrics(tmp_path / "ref"), read_metrics(tmp_path / "run")
    assert [r["step"] for r in b] == list(range(1, ref.total_steps + 1))
    for ra, rb in zip(a, b):
        for key in ("loss", "loss_q2k", "loss_k2q", "lr", "momentum", "queue_filled", "kept_fraction", "neg_cos"):
            assert ra[key] == rb[key] or (ra[key] != ra[key] and rb[key] != rb[key]), (ra["step"], key)
    assert_same_state(ref, second)
    # the selection really was active in the compared stretch (queue full -> filters on)
    assert any(r["kept_fraction"] < 0.9 for r in a[stop:])


def test_resume_from_explicit_checkpoint_dir(tmp_path):
    ref = make_trainer(tmp_path / "ref", max_steps=6)
    ref.fit()
    run = make_trainer(tmp_path / "run", max_steps=6, save_every=2, keep_checkpoints=5)
    run.fit()
    again = make_trainer(tmp_path / "run", max_steps=6)
    again.fit(resume_from=str(tmp_path / "run" / "checkpoints" / "step-2"))
    assert [r["loss"] for r in read_metrics(tmp_path / "run")] == [r["loss"] for r in read_metrics(tmp_path / "ref")]
    assert_same_state(ref, again)


def test_resume_from_missing_path_is_clear(tmp_path):
    t = make_trainer(tmp_path / "run", max_steps=2)
    with pytest.raises(ValueError, match="does not exist"):
        t.fit(resume_from=str(tmp_path / "nowhere"))


# ------------------------------------------------------------------------------------ (b) gradient accumulation
def test_gradient_accumulation_advances_queue_and_ema_once_per_step(tmp_path, monkeypatch):
    calls = []
    original = MoCoModel.momentum_update

    def counting(self, m):
        calls.append(m)
        return original(self, m)

    monkeypatch.setattr(MoCoModel, "momentum_update", counting)
    accum, B = 3, 4
    t = make_trainer(tmp_path, n=48, batch_size=B, gradient_accumulation_steps=accum, max_steps=4, queue_size=100)
    t.fit()
    rows = read_metrics(tmp_path)
    assert [r["queue_filled"] for r in rows] == [accum * B * s for s in range(1, 5)]
    assert len(calls) == 4
    assert calls == [momentum_at(s, 4, 0.9) for s in range(4)]
    assert t.queue.num_enqueued == 4 * accum * B
    # every optimizer step consumed accum micro-batches: ids in the queue are 48 distinct samples
    assert len(set(t.queue.ids[t.queue.filled].tolist())) == 48
    opt_state = t.optimizer.optimizer.state if hasattr(t.optimizer, "optimizer") else t.optimizer.state
    assert {int(s["step"]) for s in opt_state.values()} == {4}


def test_accumulation_with_short_last_window_counts_epochs_right(tmp_path):
    """5 micro-batches per epoch with accumulation 2: Accelerate steps at micro-batches 2, 4 and at the end of the
    data (5), i.e. 3 optimizer steps per epoch. epochs=2 must see all the data twice (6 steps, 40 keys)."""
    t = make_trainer(tmp_path, n=20, batch_size=4, gradient_accumulation_steps=2, max_steps=None, epochs=2,
                     queue_size=100)
    t.fit()
    assert t.queue.num_enqueued == 2 * 20, "epochs=2 did not go through the data twice"
    assert t.total_steps == len(read_metrics(tmp_path)) == 6


# --------------------------------------------------------------------------------------------- (c) key encoder
def test_key_encoder_never_gets_gradients(tmp_path, monkeypatch):
    seen = []
    original = MoCoTrainer._loss

    def checking(self, batch):
        out = original(self, batch)
        seen.append([p.grad is not None for p in self.unwrapped.key.parameters()])
        return out

    monkeypatch.setattr(MoCoTrainer, "_loss", checking)
    t = make_trainer(tmp_path, max_steps=6)
    key_before = [p.detach().clone() for p in t.unwrapped.key.parameters()]
    query_before = [p.detach().clone() for p in t.unwrapped.query.parameters()]
    t.fit()
    model = t.unwrapped
    assert seen and not any(any(s) for s in seen)
    assert all(p.grad is None and not p.requires_grad for p in model.key.parameters())
    assert all(torch.equal(a, b) for a, b in zip(key_before, query_before))  # a copy at the start
    moved_q = any(not torch.equal(a, p) for a, p in zip(query_before, model.query.parameters()))
    moved_k = any(not torch.equal(a, p) for a, p in zip(key_before, model.key.parameters()))
    differs = any(not torch.allclose(a, b) for a, b in zip(model.key.parameters(), model.query.parameters()))
    assert moved_q and moved_k and differs
    # the key encoder is not in the optimizer
    opt = t.optimizer.optimizer if hasattr(t.optimizer, "optimizer") else t.optimizer
    opt_ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not opt_ids & {id(p) for p in model.key.parameters()}
    assert opt_ids == {id(p) for p in model.query.parameters()}


def test_key_is_ema_of_query_with_constant_momentum_one(tmp_path):
    """momentum 1 (constant) freezes the key encoder exactly at its initial copy."""
    t = make_trainer(tmp_path, max_steps=4, momentum=1.0, momentum_schedule="constant")
    before = [p.detach().clone() for p in t.unwrapped.key.parameters()]
    t.fit()
    assert all(torch.equal(a, p) for a, p in zip(before, t.unwrapped.key.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(before, t.unwrapped.query.parameters()))


# ------------------------------------------------------------------------------------------------ (d) data checks
def test_dataset_smaller_than_a_batch(tmp_path):
    with pytest.raises(ValueError, match="batch_size") as e:
        make_trainer(tmp_path, n=5, batch_size=8)
    assert "5" in str(e.value)


@pytest.mark.parametrize("dual_mode", ["symmetric", "weighted"])
def test_trainer_sets_symmetric_from_the_objective(tmp_path, dual_mode):
    """The swapped pair is computed exactly when the objective's dual_mode uses it, whatever the model was built
    with."""
    t = make_trainer(tmp_path, objective=full_objective(dual_mode=dual_mode))
    assert t.unwrapped.symmetric is (dual_mode == "symmetric")
    out = t.model(next(iter(t.loader))["inputs"])
    assert (out.q_b is not None) is (dual_mode == "symmetric")


def test_symmetric_mode_trains(tmp_path):
    torch.manual_seed(0)
    model = MoCoModel(VectorEncoder(IN_DIM, DIM, hidden=16, noise=0.1))  # the trainer makes it symmetric
    t = MoCoTrainer(model, data(), full_objective(dual_mode="symmetric"), QueueConfig(size=20),
                    TrainConfig(output_dir=str(tmp_path), batch_size=8, max_steps=4, progress=False))
    t.fit()
    rows = read_metrics(tmp_path)
    assert len(rows) == 4 and all(math.isfinite(r["loss"]) and "loss_sym" in r for r in rows)


# ------------------------------------------------------------------------------------------------------ (e) metrics
def test_metrics_rows(tmp_path):
    t = make_trainer(tmp_path, max_steps=10, lr_schedule="constant", warmup_ratio=0.0, queue_size=20)
    history = t.fit()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert json.dumps(history) == json.dumps(rows)  # (NaN-safe comparison)
    for r in rows:
        for key in ("loss", "lr", "momentum", "pos_cos", "neg_cos", "kept_fraction", "queue_filled", "skipped"):
            assert key in r, key
        assert r["lr"] == pytest.approx(1e-2)
        assert r["momentum"] == pytest.approx(momentum_at(r["step"] - 1, 10, 0.9))
        assert r["queue_filled"] == min(8 * r["step"], 20)
        assert -1 <= r["pos_cos"] <= 1
        assert 0 <= r["kept_fraction"] <= 1
        assert not r["skipped"]
        assert math.isfinite(r["loss"])
    # first step: empty queue -> nothing kept; later steps use negatives
    assert rows[0]["kept_fraction"] == 0.0
    assert all(math.isfinite(r["neg_cos"]) for r in rows[1:])
    # with the queue full the top-6 (+2 random) of 20 filled slots are kept
    assert rows[-1]["kept_fraction"] <= 8 / 20 + 1e-6  # float32 stats


def test_metrics_jsonl_is_strict_json(tmp_path):
    """metrics.jsonl is JSON Lines: no NaN/Infinity tokens (invalid JSON; jq, JavaScript, strict parsers reject
    them). neg_cos on the first step (empty queue) must be written as null, not NaN."""
    make_trainer(tmp_path, max_steps=2).fit()

    def reject(token):
        raise ValueError(f"non-JSON token {token}")

    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=reject)


def test_log_every(tmp_path):
    make_trainer(tmp_path, max_steps=7, log_every=3).fit()
    assert [r["step"] for r in read_metrics(tmp_path)] == [3, 6, 7]


# --------------------------------------------------------------------------------------------- (f) non-finite loss
def flaky_encoder(poison_steps):
    class Flaky(VectorEncoder):
        calls = 0  # class-level: shared by the query encoder and its deep-copied key encoder

        def forward(self, view):
            out = super().forward(view)
            if torch.is_grad_enabled():  # the query forward; the key forward follows in the same step
                type(self).calls += 1
            if type(self).calls in poison_steps:
                out = out * float("nan")
            return out

    return Flaky(IN_DIM, DIM, hidden=16, noise=0.1)


def test_nonfinite_step_skipped(tmp_path):
    t = make_trainer(tmp_path, encoder=flaky_encoder({3}), max_steps=6, queue_size=100, on_nonfinite="skip")
    t.fit()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert [r["skipped"] for r in rows] == [False, False, True, False, False, False]
    assert [r["queue_filled"] for r in rows] == [8, 16, 16, 24, 32, 40]  # the skipped step enqueued nothing
    assert torch.isfinite(t.queue.keys).all()
    assert all(math.isfinite(r["loss"]) for i, r in enumerate(rows) if i != 2)
    assert all(torch.isfinite(p).all() for p in t.unwrapped.parameters())
    assert all(torch.isfinite(p).all() for p in t.unwrapped.key.parameters())


def test_nonfinite_skip_leaves_parameters_untouched(tmp_path, monkeypatch):
    snapshots = []
    original = MoCoTrainer._loss

    def snap(self, batch):
        snapshots.append([p.detach().clone() for p in self.unwrapped.parameters()])
        return original(self, batch)

    monkeypatch.setattr(MoCoTrainer, "_loss", snap)
    t = make_trainer(tmp_path, encoder=flaky_encoder({2}), max_steps=3, queue_size=100)
    t.fit()
    # parameters before step 3 == before step 2 (query, key: no optimizer step, no EMA)
    assert all(torch.equal(a, b) for a, b in zip(snapshots[1], snapshots[2]))
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[0], snapshots[1]))


def test_nonfinite_stop_raises_naming_step(tmp_path):
    t = make_trainer(tmp_path, encoder=flaky_encoder({4}), max_steps=6, on_nonfinite="stop", save_every=2)
    with pytest.raises(FloatingPointError, match="step 4"):
        t.fit()
    assert torch.isfinite(t.queue.keys).all()
    # the last good checkpoint is intact and named by latest
    assert checkpointing.resolve_resume("latest", str(tmp_path)).name == "step-2"


# ------------------------------------------------------------------------------------------- (g) checkpoint dir
def test_checkpoint_directory(tmp_path):
    root = tmp_path / "checkpoints"
    (root / ".tmp-step-99").mkdir(parents=True)  # leftover of a crashed save
    (root / ".tmp-step-99" / "junk").write_text("x")
    t = make_trainer(tmp_path, max_steps=8, save_every=2, keep_checkpoints=2)
    t.fit()
    latest = (root / "latest").read_text().strip()
    assert latest == "step-8"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-6", "step-8"]
    for name in ("trainer_state.json", "queue.safetensors", "model.safetensors"):
        assert (root / latest / name).exists(), name
    state = json.loads((root / latest / "trainer_state.json").read_text())
    assert state["step"] == 8 and state["queue_num_enqueued"] == 64
    assert checkpointing.resolve_resume("latest", str(tmp_path)) == root / "step-8"
    assert checkpointing.resolve_resume(str(tmp_path), str(tmp_path)) == root / "step-8"
    assert not any(p.name.startswith(".tmp-step") and p.name != ".tmp-step-99" for p in root.iterdir())


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    t = make_trainer(tmp_path, max_steps=6, save_every=2, keep_checkpoints=3)
    calls = []
    original = MoCoTrainer._write_queue_and_state

    def failing(self, directory):
        calls.append(directory)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(self, directory)

    monkeypatch.setattr(MoCoTrainer, "_write_queue_and_state", failing)
    with pytest.raises(OSError, match="disk full"):
        t.fit()
    root = tmp_path / "checkpoints"
    assert (root / "latest").read_text().strip() == "step-2"
    assert (root / ".tmp-step-4").exists() and not (root / "step-4").exists()
    # resuming from latest picks the complete one and finishes the run, overwriting the partial leftover
    monkeypatch.setattr(MoCoTrainer, "_write_queue_and_state", original)
    again = make_trainer(tmp_path, max_steps=6, save_every=2, keep_checkpoints=3)
    again.fit(resume_from="latest")
    assert (root / "latest").read_text().strip() == "step-6"
    assert [r["step"] for r in read_metrics(tmp_path)] == list(range(1, 7))
    assert not (root / ".tmp-step-4").exists()


def test_fresh_run_clears_old_metrics(tmp_path):
    make_trainer(tmp_path, max_steps=3).fit()
    make_trainer(tmp_path, max_steps=2).fit()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


# ---------------------------------------------------------------------------------- key_encoder='query' (fast path)
def test_query_keys_equal_a_momentum_zero_run(tmp_path):
    """key_encoder='query' reuses the symmetric query passes as keys: with deterministic encoder passes (the
    VectorEncoder's noise is in the views) it must equal the four-pass run with momentum held at 0 — losses,
    weights and queue — while the key copy is never run."""
    def run(out, calls=None, **kw):
        torch.manual_seed(0)
        model = MoCoModel(VectorEncoder(IN_DIM, DIM, hidden=16, noise=0.1), symmetric=True)
        if calls is not None:
            model.key.register_forward_hook(lambda *a: calls.append(1))
        t = MoCoTrainer(model, data(), full_objective(dual_mode="symmetric"), QueueConfig(size=20),
                        TrainConfig(output_dir=str(out), batch_size=8, max_steps=6, lr=1e-2, progress=False, **kw))
        t.fit()
        return t, [r["loss"] for r in read_metrics(out)]

    calls = []
    a, loss_a = run(tmp_path / "a", key_encoder="momentum", momentum=0.0, momentum_schedule="constant")
    b, loss_b = run(tmp_path / "b", calls, key_encoder="query", momentum=0.99)  # momentum ignored
    assert calls == [] and a.unwrapped.key_source == "momentum" and b.unwrapped.key_source == "query"
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert torch.allclose(a.queue.keys, b.queue.keys, atol=1e-5) and torch.equal(a.queue.ids, b.queue.ids)
    for x, y in zip(a.unwrapped.state_dict().values(), b.unwrapped.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-5)
    assert all(r["momentum"] == 0.0 for r in read_metrics(tmp_path / "b"))
    # ... and differs from the EMA run it replaces
    c, loss_c = run(tmp_path / "c", key_encoder="momentum", momentum=0.99)
    assert not torch.allclose(c.queue.keys, b.queue.keys, atol=1e-3)


def test_query_keys_are_detached_query_outputs():
    torch.manual_seed(0)
    model = MoCoModel(VectorEncoder(IN_DIM, DIM, hidden=16, noise=0.1), symmetric=True, key_source="query")
    out = model(torch.stack(data(4)))
    assert out.q.requires_grad and out.q_b.requires_grad and not out.k.requires_grad and not out.k_a.requires_grad
    assert torch.equal(out.k, out.q_b.detach()) and torch.equal(out.k_a, out.q.detach())


def test_key_encoder_choice_is_checked():
    with pytest.raises(ValueError, match="key_encoder='ema'.*'momentum', 'query', 'momentum_a'"):
        TrainConfig(key_encoder="ema")


def test_unknown_key_source_is_named():
    with pytest.raises(ValueError, match=r"key_source='ema'; expected one of momentum, query, momentum_a"):
        MoCoModel(VectorEncoder(IN_DIM, DIM, hidden=16), symmetric=True, key_source="ema")


# ---------------------------------------------------------------------------------- key_encoder='momentum_a'
def test_momentum_a_keys_view_a_with_the_copy_and_view_b_with_the_query_pass():
    """k (view b, queued) = the query pass of view b, detached; k_a = the EMA copy's pass of the same view a the
    queries saw (the copy made different here, so the two sources cannot be confused); one key pass only."""
    torch.manual_seed(0)
    model = MoCoModel(VectorEncoder(IN_DIM, DIM, hidden=16, noise=0.1), symmetric=True, key_source="momentum_a")
    with torch.no_grad():
        for p in model.key.parameters():
            p.add_(0.3 * torch.randn_like(p))
    seen = []
    model.key.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    out = model(torch.stack(data(4)))
    assert len(seen) == 1 and not out.k.requires_grad and not out.k_a.requires_grad and out.q_b.requires_grad
    assert torch.equal(out.k, out.q_b.detach())
    with torch.no_grad():
        assert torch.equal(out.k_a, model.key(seen[0]))
        assert torch.allclose(out.q, model.query(seen[0]))  # the same view a
        assert not torch.allclose(out.k_a, out.q, atol=1e-2)


def test_momentum_a_run_equals_query_keys_at_momentum_zero_and_keeps_its_momentum(tmp_path):
    """With the EMA held at 0 the copy equals the query encoder, so 'momentum_a' must equal 'query' (losses,
    queue, weights); with momentum 0.99 the copy lags (the configured momentum is used, not 0) and the queue holds
    the query passes of view b, not the copy's keys of the 'momentum' run."""
    def run(out, **kw):
        torch.manual_seed(0)
        model, calls = MoCoModel(VectorEncoder(IN_DIM, DIM, hidden=16, noise=0.1), symmetric=True), []
        model.key.register_forward_hook(lambda *a: calls.append(1))
        t = MoCoTrainer(model, data(), full_objective(dual_mode="symmetric"), QueueConfig(size=20),
                        TrainConfig(output_dir=str(out), batch_size=8, max_steps=6, lr=1e-2, progress=False, **kw))
        t.fit()
        return t, [r["loss"] for r in read_metrics(out)], calls

    a, loss_a, _ = run(tmp_path / "a", key_encoder="query")
    b, loss_b, calls = run(tmp_path / "b", key_encoder="momentum_a", momentum=0.0, momentum_schedule="constant")
    assert b.unwrapped.key_source == "momentum_a" and len(calls) == 6
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert torch.allclose(a.queue.keys, b.queue.keys, atol=1e-5) and torch.equal(a.queue.ids, b.queue.ids)
    for x, y in zip(a.unwrapped.query.state_dict().values(), b.unwrapped.query.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-5)
    c, _, _ = run(tmp_path / "c", key_encoder="momentum_a", momentum=0.99, momentum_schedule="constant")
    assert all(r["momentum"] == 0.99 for r in read_metrics(tmp_path / "c"))
    query, key = c.unwrapped.query.state_dict(), c.unwrapped.key.state_dict()
    assert any(not torch.allclose(query[n], key[n], atol=1e-3) for n in query)
    d, _, _ = run(tmp_path / "d", key_encoder="momentum", momentum=0.99, momentum_schedule="constant")
    assert not torch.allclose(c.queue.keys, d.queue.keys, atol=1e-3)


def test_momentum_a_needs_the_symmetric_mode(tmp_path):
    from textmoco.cli import build_parser, configs_from_args, parse_args

    parser = build_parser("test")
    with pytest.raises(ValueError, match="key_encoder='momentum_a'.*dual_mode='weighted'.*--dual_mode symmetric"):
        make_trainer(tmp_path, max_steps=1, key_encoder="momentum_a")
    with pytest.raises(ValueError, match="key_encoder='momentum_a'.*dual_mode='weighted'"):
        configs_from_args(parse_args(parser, ["--key_encoder", "momentum_a", "--dual_mode", "weighted"]))
    configs_from_args(parse_args(parser, ["--key_encoder", "momentum_a", "--dual_mode", "symmetric"]))


# ---------------------------------------------------------------------------------- key_mode='eval'
def dropout_model(**kw):
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Dropout(0.5), torch.nn.Linear(DIM, DIM))
    return MoCoModel(VectorEncoder(IN_DIM, DIM, hidden=16), head=head, symmetric=True, **kw)


@pytest.mark.parametrize("key_train_mode", [True, False])
def test_key_mode_eval_gives_the_dropout_free_keys(key_train_mode):
    """key_train_mode=False: while the model trains, the key passes equal an explicit eval-mode pass of the copy
    (no dropout) and the queries still get dropout; True (MoCo): the keys get dropout too."""
    model = dropout_model(key_train_mode=key_train_mode).train()
    x = torch.stack(data(16))
    out = model(x)
    model.key.eval()
    with torch.no_grad():
        clean_key, clean_query = model.key(x), F.normalize(model.query.head.eval()(model.query.encoder(x)), dim=-1)
    assert torch.equal(out.k, clean_key) is (not key_train_mode)
    assert torch.equal(out.k_a, clean_key) is (not key_train_mode)
    assert not torch.allclose(out.q, clean_query) and not torch.allclose(out.q_b, clean_query)


def test_trainer_runs_the_key_passes_in_the_configured_mode(tmp_path):
    for mode in ("train", "eval"):
        model, seen = dropout_model(), []
        model.key.register_forward_pre_hook(lambda module, args: seen.append(module.training))
        t = MoCoTrainer(model, data(), full_objective(dual_mode="symmetric"), QueueConfig(size=20),
                        TrainConfig(output_dir=str(tmp_path / mode), batch_size=8, max_steps=2, progress=False,
                                    key_mode=mode))
        t.fit()
        assert t.unwrapped.key_train_mode is (mode == "train") and t.unwrapped.training
        assert len(seen) == 4 and set(seen) == {mode == "train"}
    with pytest.raises(ValueError, match="key_mode='test'.*'train', 'eval'"):
        TrainConfig(key_mode="test")


def test_key_gradient_changes_training_not_the_loss_value(tmp_path):
    """key_gradient through the trainer: the same first-step loss (same values), different weights after it (view
    b's keys now pass gradient), and the queue still holds constants."""
    def run(out, key_gradient):
        torch.manual_seed(0)
        model = MoCoModel(VectorEncoder(IN_DIM, DIM, hidden=16, noise=0.1), symmetric=True)
        t = MoCoTrainer(model, data(), full_objective(dual_mode="symmetric", batch_negatives=True,
                                                      key_gradient=key_gradient), QueueConfig(size=20),
                        TrainConfig(output_dir=str(out), batch_size=8, max_steps=3, lr=1e-2, progress=False,
                                    key_encoder="momentum_a", momentum=0.9))
        t.fit()
        return t, [r["loss"] for r in read_metrics(out)]

    a, loss_a = run(tmp_path / "a", True)
    b, loss_b = run(tmp_path / "b", False)
    assert loss_a[0] == pytest.approx(loss_b[0], rel=1e-6)
    query_a, query_b = a.unwrapped.query.state_dict(), b.unwrapped.query.state_dict()
    assert max((query_a[n] - query_b[n]).abs().max().item() for n in query_a) > 1e-4
    assert not a.queue.keys.requires_grad
