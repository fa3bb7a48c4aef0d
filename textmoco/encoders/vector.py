"""VectorEncoder: an MLP over fixed-size feature vectors (precomputed embeddings, tabular data, tests).

Views: Gaussian feature noise of std ``noise`` (0 = both views identical; the EMA key encoder still differs).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import EncoderAdapter


class VectorEncoder(EncoderAdapter):
    """(B, in_dim) float vectors -> (B, dim). ``hidden`` 0 gives a single linear layer."""

    def __init__(self, in_dim: int, dim: int, hidden: int = 0, noise: float = 0.0):
        super().__init__()
        if noise < 0:
            raise ValueError(f"noise={noise!r} is invalid: noise must be >= 0")
        self.embedding_dim, self.noise = dim, noise
        self.net = nn.Linear(in_dim, dim) if not hidden else nn.Sequential(
            nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def collate(self, samples: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack([torch.as_tensor(s, dtype=torch.float32) for s in samples])

    def make_views(self, inputs: torch.Tensor):
        if self.noise == 0:
            return inputs, inputs
        return (inputs + self.noise * torch.randn_like(inputs), inputs + self.noise * torch.randn_like(inputs))

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        return self.net(view)

    def export(self, output_dir: str, **info) -> None:
        from pathlib import Path

        from safetensors.torch import save_file
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(Path(output_dir) / "model.safetensors"))
