"""Non-finite gradients and weights: the trainer's optimizer step, its skip rule, and the check before any save.

One host read per optimizer step (whether the clipped gradient norm is finite); a non-finite norm skips the step
without touching the weights, and the trainer then moves neither the key encoder nor the queue. Nothing non-finite
is ever saved or exported (:func:`check_finite_state`).
"""
from __future__ import annotations

from typing import Optional

import torch
from accelerate import Accelerator

from . import distributed
from .config import TrainConfig


def clip_and_step(accelerator: Accelerator, model: torch.nn.Module, optimizer, max_grad_norm: Optional[float],
                  window_keys: list[torch.Tensor]) -> tuple[bool, bool, Optional[bool]]:
    """Clip, check and take the optimizer step at the end of an accumulation window. The one host read of a
    step: whether the gradient norm is finite (DDP has already averaged the gradients, so every process sees
    the same norm and decides alike, without an all-reduce). On one process the same read also says whether
    the window's keys (``window_keys``, each (B, D)) are all finite, so the enqueue needs no read of its own.
    Returns (stepped, skipped by the fp16 scaler, keys all finite or None = not checked).

    A non-finite norm skips the step: the weights stay as they were. Under fp16 the scaler's own step is still
    called (it skips the update and lowers the scale; without it the scale never recovers)."""
    params = [p for p in model.parameters() if p.requires_grad]
    # clip_grad_norm_ unscales fp16 gradients first; max_norm inf only measures (coefficient clamped to 1)
    norm = accelerator.clip_grad_norm_(params, max_grad_norm or float("inf"))
    keys_finite = None
    if norm is None:
        finite = True
    elif distributed.is_distributed():  # other processes' keys are checked by the enqueue after its gather
        finite = bool(torch.isfinite(norm))
    else:
        finite, keys_finite = torch.stack([torch.isfinite(norm).all(),
                                           torch.isfinite(torch.cat(window_keys)).all()]).tolist()
    scaler = getattr(accelerator, "scaler", None) is not None
    if finite or scaler:
        optimizer.step()
    scaler_skip = scaler and bool(getattr(optimizer, "step_was_skipped", False))
    return finite and not scaler_skip, scaler_skip, keys_finite


def on_skipped_step(accelerator: Accelerator, cfg: TrainConfig, step: int, consecutive: int,
                    scaler_skip: bool) -> None:
    """Print that optimizer step ``step`` was skipped, or raise ``FloatingPointError`` under
    ``on_nonfinite='stop'`` or after ``max_consecutive_skips`` skips in a row."""
    msg = f"non-finite gradient at optimizer step {step}"
    if cfg.on_nonfinite == "stop" and not scaler_skip:
        raise FloatingPointError(msg + "; stopped (on_nonfinite='stop'). The last checkpoint is intact: lower "
                                 "the lr or use on_nonfinite='skip'")
    limit = cfg.max_consecutive_skips
    if limit is not None and consecutive >= limit:
        raise FloatingPointError(f"{consecutive} consecutive optimizer steps skipped for non-finite gradients "
                                 f"(last at step {step}); stopped (max_consecutive_skips={limit}). The last "
                                 "checkpoint is intact: lower the lr, use mixed_precision bf16 or no, or check "
                                 "the data")
    how = "fp16 gradient scaler skipped the step" if scaler_skip else "step skipped"
    accelerator.print(f"{msg}: {how}; weights, key encoder and queue untouched (on_nonfinite='skip')")


def check_finite_state(model: torch.nn.Module, queue_keys: torch.Tensor, step: int) -> None:
    """``FloatingPointError`` when a weight, floating buffer or queue key is not finite: nothing non-finite is
    ever saved or exported (one host read per save)."""
    named = [(n, t) for n, t in model.state_dict().items() if t.is_floating_point()] + [("queue.keys", queue_keys)]
    flags = torch.stack([torch.isfinite(t).all() for _, t in named])
    if not bool(flags.all()):
        bad = [n for (n, _), ok in zip(named, flags.tolist()) if not ok]
        raise FloatingPointError(f"refusing to save or export a model with non-finite values (e.g. {bad[0]!r},"
                                 f" {len(bad)} tensor(s)) at step {step}; the last checkpoint is intact")
