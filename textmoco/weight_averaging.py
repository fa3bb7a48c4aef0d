"""Weight-space averaging with the start model (WiSE-FT, Wortsman et al. 2022): theta = theta_start +
alpha * (theta_trained - theta_start). alpha = 1 keeps the trained weights, 0 the start model; in between keeps
the model near where it started, which protects tasks outside the training corpus at no training cost.

    start = snapshot(encoder)            # before training
    ...train...
    interpolate_(encoder, start, 0.5)    # in place, before evaluation / export
"""
from __future__ import annotations

import torch
from torch import nn


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module``'s floating-point state (the start point)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items() if v.is_floating_point()}


@torch.no_grad()
def interpolate_(module: nn.Module, start: dict[str, torch.Tensor], alpha: float) -> nn.Module:
    """Move every floating-point tensor of ``module`` to start + alpha * (current - start), in place.

    ``alpha`` in [0, 1]; names missing from ``start`` (or of another shape) are an error: the snapshot must come
    from the same architecture."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"average_with_start={alpha!r} is invalid: it must be in [0, 1] (1 = trained weights only)")
    state = module.state_dict()
    missing = sorted(k for k, v in state.items() if v.is_floating_point() and
                     (k not in start or start[k].shape != v.shape))
    if missing:
        raise ValueError(f"the start snapshot does not match the model ({len(missing)} tensor(s), e.g. {missing[0]!r})")
    if alpha == 1.0:
        return module
    for name, value in state.items():
        if value.is_floating_point():
            value.copy_(torch.lerp(start[name].to(value.device, value.dtype), value, alpha))
    return module
