"""MomentumContrast: the one owner of the MoCo state shared by both training paths.

It holds the negative queue, a reference to the query and key (EMA) encoders, the optimizer-step count, the
momentum schedule and the filter warm-up rule, and does what happens once per optimizer step
(:meth:`after_optimizer_step`: EMA update with the scheduled momentum, then enqueue the step's keys — gathered
from every process). :class:`~textmoco.trainer.MoCoTrainer` (the Accelerate loop) and
:class:`~textmoco.st_loss.TextMoCoLoss` (sentence-transformers' Trainer) both drive one of these, so the two paths
cannot drift apart. :meth:`save` / :meth:`load` write and read queue, counters and (optionally) the key encoder.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import torch
from torch import nn

from .momentum import ema_update, momentum_at
from .queue import NegativeQueue

STATE_FILE = "textmoco_state.safetensors"


class MomentumContrast:
    """Queue + key encoder + step state.

    Args:
        query: the trained encoder (its parameters are the EMA target).
        key: the EMA copy (same structure as ``query``; gradients never reach it).
        queue: the :class:`~textmoco.queue.NegativeQueue`.
        momentum: m at step 0, in [0, 1].
        momentum_schedule: ``"cosine"`` (m raised to 1 over ``total_steps``) or ``"constant"``.
        filter_warmup_steps: optimizer steps with no hard-negative selection / threshold guard; ``None`` = until
            the queue has been full once.
        ema: ``ema(m)`` performs the EMA step (default: :func:`~textmoco.momentum.ema_update` of ``key`` towards
            ``query``); ``MoCoTrainer`` passes its model's ``momentum_update``.
    """

    def __init__(self, query: nn.Module, key: nn.Module, queue: NegativeQueue, momentum: float = 0.995,
                 momentum_schedule: str = "cosine", filter_warmup_steps: Optional[int] = None,
                 ema: Optional[Callable[[float], None]] = None):
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum={momentum!r} is invalid: momentum must be in [0, 1]")
        if momentum_schedule not in ("cosine", "constant"):
            raise ValueError(f"momentum_schedule={momentum_schedule!r} is invalid: must be 'cosine' or 'constant'")
        self.query, self.key, self.queue = query, key, queue
        self.momentum, self.momentum_schedule = float(momentum), momentum_schedule
        self.filter_warmup_steps = filter_warmup_steps
        self._ema = ema
        self.step = 0  # optimizer steps done
        self.last_momentum: Optional[float] = None

    def momentum_at(self, step: int, total_steps: int) -> float:
        return momentum_at(step, total_steps, self.momentum, self.momentum_schedule)

    def filter_active(self, step: Optional[int] = None) -> bool:
        """Selection and threshold guard on? After ``filter_warmup_steps`` steps, or once the queue was full."""
        step = self.step if step is None else step
        if self.filter_warmup_steps is None:
            return self.queue.is_full
        return step >= self.filter_warmup_steps

    @torch.no_grad()
    def after_optimizer_step(self, keys: Optional[torch.Tensor], ids: Optional[torch.Tensor], total_steps: int,
                             ok: bool = True, step: Optional[int] = None, gather: bool = True,
                             keys_finite: Optional[bool] = None) -> float:
        """Once per optimizer step, after ``optimizer.step()``: EMA update of the key encoder with m of optimizer
        step ``step`` (default: the own count) of ``total_steps``, then enqueue the step's keys and ids (all its
        micro-batches; ``gather``: all-gathered from every process in rank order). ``ok=False`` (a skipped,
        non-finite step) leaves key encoder and queue untouched. Returns m."""
        step = self.step if step is None else int(step)
        m = self.momentum_at(step, total_steps)
        if ok:
            if self._ema is not None:
                self._ema(m)
            else:
                ema_update(self.key, self.query, m)
            if keys is not None and keys.numel():
                self.queue.enqueue(keys, ids, gather=gather, all_finite=keys_finite)  # True: checked by the caller
        self.step = step + 1
        self.last_momentum = m
        return m

    # ------------------------------------------------------------------ state
    def state_tensors(self, include_key: bool = True) -> dict[str, torch.Tensor]:
        tensors = {f"queue.{k}": v for k, v in self.queue.storage_tensors().items()}
        tensors["counters"] = torch.tensor([self.queue.ptr, self.queue.num_enqueued, self.step])
        if include_key:
            tensors.update({f"key.{k}": v.detach().cpu().contiguous() for k, v in self.key.state_dict().items()})
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        ptr, num_enqueued, step = (int(v) for v in tensors["counters"])
        self.queue.load_state_dict({"keys": tensors["queue.keys"], "ids": tensors["queue.ids"],
                                    "filled": tensors["queue.filled"], "ptr": ptr, "num_enqueued": num_enqueued})
        key_state = {k[4:]: v for k, v in tensors.items() if k.startswith("key.")}
        if key_state:
            device = next(self.key.parameters()).device
            self.key.load_state_dict(key_state)
            self.key.to(device)
        self.step = step

    def save(self, directory: str | os.PathLike, include_key: bool = True, name: str = STATE_FILE) -> str:
        """Write queue, counters and (``include_key``) the key encoder to ``directory/name`` (safetensors)."""
        from safetensors.torch import save_file

        os.makedirs(directory, exist_ok=True)
        path = os.path.join(str(directory), name)
        tmp = path + f".tmp-{os.getpid()}"
        save_file(self.state_tensors(include_key), tmp)
        os.replace(tmp, path)
        return path

    def load(self, directory: str | os.PathLike, name: str = STATE_FILE) -> None:
        from safetensors.torch import load_file

        path = os.path.join(str(directory), name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist: no textmoco queue/key-encoder state in {directory}")
        self.load_state_tensors(load_file(path))

    def __repr__(self) -> str:
        return (f"MomentumContrast(step={self.step}, momentum={self.momentum}, schedule={self.momentum_schedule!r}, "
                f"{self.queue!r})")
