"""Faults on the real text recipe (tiny random BERT, CPU, deterministic).

(a) A training process SIGKILLed mid-run and resumed with ``--resume latest`` ends bit-identical to an uninterrupted
run: the final queue, the EMA key encoder (and the query encoder), the queue position and the whole loss trajectory;
for text without and with word augmentation (``--token_augment delete``), and for vision (tiny ViT, kornia views).
While it runs, the ``checkpoints/latest`` pointer never names a missing or partial directory.
(b) A non-finite loss through the CLI's ``--on_nonfinite``: ``skip`` drops the step and leaves the queue untouched
(no NaN ever enters it); ``stop`` ends with one error line, the last checkpoint intact and resumable. The NaN is
injected deterministically by patching ``MoCoModel.forward`` for one optimizer step (q and k become NaN, as after an
overflow in the encoder).
"""
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import textrun
from textmoco.model import MoCoModel, MoCoOutput

torch.set_num_threads(1)

CHECKPOINT_FILES = ("trainer_state.json", "queue.safetensors", "model.safetensors", "optimizer.bin",
                    "random_states_0.pkl")
STEPS = 16  # 12 batches of 8 per epoch (100 sentences, drop_last): the run crosses an epoch boundary


def pointer(out: Path) -> Path:
    return out / "checkpoints" / "latest"


def is_complete(directory: Path) -> bool:
    return directory.is_dir() and all((directory / name).is_file() for name in CHECKPOINT_FILES)


def metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        row.pop("elapsed_s")  # wall time: the only field that may differ
    return rows


def last_checkpoint(out: Path) -> Path:
    return out / "checkpoints" / pointer(out).read_text().strip()


def finish(proc, timeout=300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, (out[-2000:], err[-4000:])
    return out


# ------------------------------------------------------------------------------------------- (a) SIGKILL + resume
def vision_popen(out: Path, *extra: str, max_steps: int) -> subprocess.Popen:
    """The vision recipe (offline digits, tiny ViT, the default 'digits' kornia views) as a subprocess."""
    cmd = [sys.executable, str(textrun.REPO / "recipes" / "train_vision.py"), "--dataset", "digits",
           "--max_steps", str(max_steps), "--batch_size", "16", "--queue_size", "32", "--hidden_size", "16",
           "--num_layers", "1", "--heads", "2", "--head_hidden", "16", "--head_dim", "8", "--progress", "false",
           "--output_dir", str(out), "--save_every", "1", "--save_final_checkpoint", "true", *extra]
    return subprocess.Popen(cmd, cwd=textrun.REPO, env=textrun.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def kill_resume_and_compare(start, ref_dir: Path, run_dir: Path, steps: int, crosses_epoch: bool) -> None:
    """``start(out, *extra)`` -> Popen of a run with a checkpoint every step. One run goes uninterrupted; the other
    is SIGKILLed once a checkpoint for step >= 2 is complete, then resumed with ``--resume latest``; both must end
    bit-identical (queue, both encoders, trainer state, every logged metric)."""
    ref = start(ref_dir)
    run = start(run_dir)
    try:
        seen, deadline = [], time.time() + 240
        while True:
            assert run.poll() is None, f"the run ended before it could be killed: {run.communicate()}"
            assert time.time() < deadline, "no checkpoint for step >= 2 appeared"
            if pointer(run_dir).exists():
                name = pointer(run_dir).read_text().strip()
                if not is_complete(run_dir / "checkpoints" / name):
                    # only legitimate if the pointer has moved on and the old checkpoint was pruned meanwhile
                    assert pointer(run_dir).read_text().strip() != name, f"latest names a partial/missing {name}"
                    continue
                if not seen or seen[-1] != name:
                    seen.append(name)
                if int(name.split("-")[1]) >= 2:
                    run.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.005)
        run.communicate(timeout=60)
        assert run.returncode == -signal.SIGKILL
    finally:
        if run.poll() is None:
            run.kill()
    killed_at = last_checkpoint(run_dir)
    assert is_complete(killed_at), "after SIGKILL, latest names a partial checkpoint"
    assert int(killed_at.name.split("-")[1]) < steps and not (run_dir / "results.json").exists()  # really mid-run
    assert [int(n.split("-")[1]) for n in seen] == sorted(int(n.split("-")[1]) for n in seen)

    finish(start(run_dir, "--resume", "latest"))
    finish(ref)

    a, b = last_checkpoint(ref_dir), last_checkpoint(run_dir)
    assert a.name == b.name == f"step-{steps}"
    queue_a, queue_b = load_file(str(a / "queue.safetensors")), load_file(str(b / "queue.safetensors"))
    for name in ("keys", "ids", "filled"):
        assert torch.equal(queue_a[name], queue_b[name]), name
    assert bool(queue_a["filled"].all()) and torch.isfinite(queue_a["keys"]).all()
    state_a, state_b = (json.loads((d / "trainer_state.json").read_text()) for d in (a, b))
    for key in ("step", "epoch", "batches_in_epoch", "queue_ptr", "queue_num_enqueued"):
        assert state_a[key] == state_b[key], key
    if crosses_epoch:
        assert state_a["epoch"] == 1  # the epoch boundary was crossed
    model_a, model_b = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    ema = [k for k in model_a if k.startswith("key.")]
    assert ema and set(model_a) == set(model_b)
    for name in model_a:  # the EMA key encoder (key.*) and the query encoder
        assert torch.equal(model_a[name], model_b[name]), name
    rows_a, rows_b = metrics(ref_dir), metrics(run_dir)
    assert [r["step"] for r in rows_b] == list(range(1, steps + 1))
    assert rows_a == rows_b  # loss trajectory (and every other logged value) identical
    assert all(r["loss"] is not None and math.isfinite(r["loss"]) for r in rows_a)


@pytest.mark.slow
@pytest.mark.parametrize("augment", [(), ("--token_augment", "delete", "--augment_rate", "0.3")],
                         ids=["dropout-only", "token-augment-delete"])
def test_sigkill_then_resume_equals_uninterrupted_run(text_cli, tmp_path, augment):
    """Text; with word augmentation the collator draws one batch ahead of the step (Accelerate prefetches), so
    only per-sample generators seeded by (seed, epoch, sample id) make the resumed run equal."""
    def start(out, *extra):
        return textrun.popen(text_cli.args(out, *augment, *extra, max_steps=STEPS, save_every=1))

    kill_resume_and_compare(start, tmp_path / "uninterrupted", tmp_path / "killed", STEPS, crosses_epoch=True)


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run_vision(tmp_path):
    """Vision: tiny ViT on the offline digits with the default kornia views (affine, elastic, blur, erasing)."""
    kill_resume_and_compare(lambda out, *extra: vision_popen(out, *extra, max_steps=6), tmp_path / "uninterrupted",
                            tmp_path / "killed", 6, crosses_epoch=False)


# ------------------------------------------------------------------------------------------- (b) non-finite loss
@pytest.fixture
def nan_at_step_2(monkeypatch):
    """q and k are NaN in the forward pass of optimizer step 2 (one forward per step: no accumulation, not
    symmetric), as if the encoder had overflowed."""
    real_forward = MoCoModel.forward
    calls = {"n": 0}

    def forward(self, inputs):
        out = real_forward(self, inputs)
        calls["n"] += 1
        if calls["n"] == 2:
            return MoCoOutput(out.q * float("nan"), out.k * float("nan"))
        return out

    monkeypatch.setattr(MoCoModel, "forward", forward)
    return calls


def test_nonfinite_skip_drops_the_step_and_keeps_nan_out_of_the_queue(text_cli, tmp_path, nan_at_step_2):
    out = tmp_path / "skip"
    code, stdout, stderr = textrun.run_inprocess(text_cli.args(out, "--on_nonfinite", "skip", max_steps=4))
    assert code == 0, stderr[-3000:]
    assert "non-finite gradient at optimizer step 2: step skipped; weights, key encoder and queue untouched" in stdout
    rows = metrics(out)
    assert [r["skipped"] for r in rows] == [False, True, False, False]
    assert rows[1]["loss"] is None  # NaN is logged as null (strict JSON)
    assert [r["queue_filled"] for r in rows] == [8, 8, 16, 24]  # step 2 enqueued nothing
    checkpoint = last_checkpoint(out)
    queue = load_file(str(checkpoint / "queue.safetensors"))
    assert torch.isfinite(queue["keys"]).all() and int(queue["filled"].sum()) == 24
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["queue_num_enqueued"] == 24
    assert all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "model.safetensors")).values())
    assert (out / "model.safetensors").exists()  # the run finished and exported


def test_nonfinite_stop_keeps_the_last_checkpoint_and_can_resume(text_cli, tmp_path, nan_at_step_2, monkeypatch):
    out = tmp_path / "stop"
    code, stdout, stderr = textrun.run_inprocess(text_cli.args(out, "--on_nonfinite", "stop", max_steps=4,
                                                               save_every=1))
    assert code == 2
    line = textrun.single_error_line(stderr)
    assert line.startswith("error: non-finite gradient at optimizer step 2; stopped (on_nonfinite='stop')")
    assert "lower the lr" in line
    checkpoint = last_checkpoint(out)
    assert checkpoint.name == "step-1" and is_complete(checkpoint)
    assert not (out / "checkpoints" / "step-2").exists() and not (out / "model.safetensors").exists()
    assert torch.isfinite(load_file(str(checkpoint / "queue.safetensors"))["keys"]).all()
    assert [r["step"] for r in metrics(out)] == [1]

    monkeypatch.undo()  # the cause is gone: resume from step 1 and finish
    code, _, stderr = textrun.run_inprocess(text_cli.args(out, "--on_nonfinite", "stop", "--resume", "latest",
                                                          max_steps=4, save_every=1))
    assert code == 0, stderr[-3000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and not any(r["skipped"] for r in rows)


def test_overwrite_deletes_the_earlier_runs_checkpoints_only_after_validation(text_cli, tmp_path):
    """--overwrite: a fresh run must not inherit the earlier run's higher-numbered checkpoints (they outlived
    pruning and `--resume latest` after a crash could pick the old run's state); a bad option must leave them."""
    out = tmp_path / "run"
    code, _, stderr = textrun.run_inprocess(text_cli.args(out, max_steps=6, save_every=2))
    assert code == 0, stderr
    old = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert "step-6" in old, old
    code, _, stderr = textrun.run_inprocess(text_cli.args(out, "--overwrite", "--temperature", "-1", max_steps=2))
    assert code == 2 and "temperature" in stderr
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == old  # invalid run: nothing deleted
    code, _, stderr = textrun.run_inprocess(text_cli.args(out, "--overwrite", max_steps=2))
    assert code == 0, stderr
    steps = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert steps == ["step-2"], steps
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
