"""Glue between :class:`~textmoco.st_loss.TextMoCoLoss` and the transformers ``Trainer`` that runs it: the sample
id of a tokenized sentence, the callback that advances the loss at each optimizer step and saves its state into each
checkpoint, and how the loss finds its Trainer (and the checkpoint it resumes from) on the call stack."""
from __future__ import annotations

import inspect
import os
from typing import Any, Optional

import torch


def token_ids_hash(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, T) token ids -> (B,) int64 id, equal for equal token sequences (padding ignored)."""
    ids = input_ids.long()
    if attention_mask is not None:
        ids = ids * attention_mask.long()
    weights = torch.arange(1, ids.shape[1] + 1, device=ids.device, dtype=torch.long) * 1_000_003 + 7
    return ((ids + 1) * weights).sum(dim=1) % (2 ** 62)


_CALLBACK_CLASS = None


def callback_class():
    """The ``TrainerCallback`` subclass (built lazily: transformers is imported only when a Trainer is used)."""
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is None:
        from transformers import TrainerCallback

        class TextMoCoCallback(TrainerCallback):
            def __init__(self, loss):
                self.loss = loss

            def on_step_end(self, args, state, control, **kwargs):
                self.loss.on_optimizer_step(state.global_step, state.max_steps)

            def on_save(self, args, state, control, **kwargs):
                if state.is_world_process_zero:
                    self.loss.save_state(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))

        _CALLBACK_CLASS = TextMoCoCallback
    return _CALLBACK_CLASS


def calling_trainer() -> Any:
    """The transformers ``Trainer`` whose ``compute_loss`` runs this forward (found on the call stack)."""
    from transformers import Trainer

    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Trainer):
            return candidate
        frame = frame.f_back
    return None


def calling_resume_path(trainer: Any) -> Optional[str]:
    """The ``resume_from_checkpoint`` directory of the ``trainer.train`` call on the stack (None when not found)."""
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_locals.get("self") is trainer:
            value = frame.f_locals.get("resume_from_checkpoint")
            if isinstance(value, (str, os.PathLike)):
                return str(value)
        frame = frame.f_back
    return None
