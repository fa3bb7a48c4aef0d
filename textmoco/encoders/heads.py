"""Projection heads put on top of an encoder's (B, D) embedding before the contrastive loss.

MoCo v2 uses a 2-layer MLP (Linear -> BN -> ReLU -> Linear); the head is discarded after training and evaluation
probes the backbone. ``ProjectionHead(in_dim, hidden_dim, out_dim, num_layers=1)`` is a plain linear map.
"""
from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """MLP projection head: (B, in_dim) -> (B, out_dim).

    Args:
        in_dim: the encoder's ``embedding_dim``.
        hidden_dim: width of the hidden layers (ignored when ``num_layers == 1``).
        out_dim: the contrastive embedding size (MoCo v2: 128).
        num_layers: number of Linear layers (>= 1). ``num_layers - 1`` hidden blocks Linear -> [BN] -> ReLU.
        batch_norm: BatchNorm1d after each hidden Linear (MoCo v2 style; needs batch size > 1 in training).
        last_batch_norm: an affine-free BatchNorm1d on the output (MoCo v3 style); default off.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128, num_layers: int = 2,
                 batch_norm: bool = True, last_batch_norm: bool = False) -> None:
        super().__init__()
        for name, v in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive int")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers={num_layers!r} must be an int >= 1 (1 = a single Linear layer)")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        if last_batch_norm:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.hidden_dim, self.out_dim, self.num_layers = in_dim, hidden_dim, out_dim, num_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim), un-normalised."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"ProjectionHead expects (B, {self.in_dim}); got {tuple(x.shape)}")
        return self.net(x)
