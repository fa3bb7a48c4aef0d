"""The contract every encoder adapter (text, vision, your own) fulfils.

The core (model, trainer, losses) only talks to an encoder through these four methods, so a new modality is one
adapter file. Shapes: B = batch size, D = ``embedding_dim``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn


class EncoderAdapter(nn.Module):
    """Base class: wraps a backbone and maps one *view* of a batch to a (B, D) embedding.

    Subclasses implement:
      - ``collate(samples)``: CPU side, inside the DataLoader. Turns a list of raw samples (str, image tensor, ...)
        into the model inputs of one batch (a tensor, a dict of tensors, or a tuple of those). Must be picklable.
      - ``make_views(inputs)``: on the device, inside the training step. Returns two views (view_a, view_b) of the
        batch. Text: the same tokens twice (dropout makes the noise); vision: two kornia augmentations.
      - ``forward(view)``: a (B, D) un-normalised embedding (the core normalises after the head).
      - ``export(output_dir, **info)``: save the trained backbone in its native format (optional).
    """

    embedding_dim: int

    def collate(self, samples: Sequence[Any]) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def make_views(self, inputs: Any) -> tuple[Any, Any]:
        """Default: both views are the inputs themselves (noise comes from dropout)."""
        return inputs, inputs

    def forward(self, view: Any) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def export(self, output_dir: str, **info: Any) -> None:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} has no export; save its state_dict instead")


def move_to_device(inputs: Any, device: torch.device) -> Any:
    """Recursively move tensors in dicts/lists/tuples (and HF BatchEncoding) to ``device``."""
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device, non_blocking=True)
    if isinstance(inputs, dict) or hasattr(inputs, "items"):
        return {k: move_to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(move_to_device(v, device) for v in inputs)
    return inputs
