"""The momentum (EMA) update of the key encoder and its schedule."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn


def momentum_at(step: int, total_steps: int, base: float, schedule: str = "cosine") -> float:
    """m at optimizer step ``step`` of ``total_steps``: constant, or raised from ``base`` to 1 by a half cosine
    (m_t = 1 - (1 - base) * (cos(pi * t / T) + 1) / 2, as in BYOL / lightly's ``cosine_schedule``)."""
    if schedule == "constant" or total_steps <= 0:
        return base
    if schedule != "cosine":
        raise ValueError(f"momentum_schedule={schedule!r} is invalid: must be 'cosine' or 'constant'")
    t = min(max(step, 0), total_steps) / total_steps
    return 1.0 - (1.0 - base) * (math.cos(math.pi * t) + 1.0) / 2.0


def _float_tensors(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    return [t for t in tensors if t.is_floating_point()]


@torch.no_grad()
def ema_update(key_module: nn.Module, query_module: nn.Module, momentum: float) -> None:
    """theta_k <- m * theta_k + (1 - m) * theta_q for every parameter and floating buffer, with one fused
    ``torch._foreach_lerp_`` (lerp(k, q, 1-m) = m*k + (1-m)*q); integer buffers are copied."""
    k_params = [p.data for p in key_module.parameters()]
    q_params = [p.data for p in query_module.parameters()]
    if len(k_params) != len(q_params):
        raise ValueError("key and query modules differ in structure; the key encoder must be a copy of the query")
    if momentum < 1.0 and k_params:
        torch._foreach_lerp_(k_params, q_params, 1.0 - momentum)
    k_bufs, q_bufs = list(key_module.buffers()), list(query_module.buffers())
    kf, qf = _float_tensors(k_bufs), _float_tensors(q_bufs)
    if momentum < 1.0 and kf:
        torch._foreach_lerp_(kf, qf, 1.0 - momentum)
    for kb, qb in zip(k_bufs, q_bufs):
        if not kb.is_floating_point():
            kb.copy_(qb)
