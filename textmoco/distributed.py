"""Gather helpers that are no-ops on one process.

``gather_no_grad`` concatenates a tensor from every process (rank order) without gradient, for keys and ids before
they enter the queue. ``gather_with_grad`` does the same but lets gradient flow back to the process that owns each
slice: its backward sums the incoming gradients over all processes (all-reduce) and keeps the local slice, so that
N processes with batch b compute exactly the gradient of one process with batch N*b (DDP then averages).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """(b, ...) on each process -> (world*b, ...) identical on all processes. Equal b on all ranks required."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.batch = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.batch
        return grad[start:start + ctx.batch]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """(b, D) on each process -> (world*b, D), differentiable with respect to the local slice."""
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


class GatheredBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` on (b, C) whose training statistics are those of the *global* batch: the (b, C) inputs of
    all processes are all-gathered (with gradient, :func:`gather_with_grad`), normalised together (running stats
    updated once, with the global batch) and each process keeps its own rows. So N processes with batch b compute
    exactly what one process with batch N*b does, on any backend (gloo on CPU too, which ``torch.nn.SyncBatchNorm``
    does not support). On one process, or in eval mode, it is plain BatchNorm1d. Equal b on all ranks required."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        b = x.shape[0]
        start = dist.get_rank() * b
        return super().forward(gather_with_grad(x))[start:start + b]


def gather_batch(ids: torch.Tensor, queries: torch.Tensor | None = None, keys: tuple = ()) -> tuple:
    """The global batch for the loss's batch negatives: (ids_all, offset, q_all, keys_all) = every process's ids in
    rank order, this process's first row in them, ``queries`` gathered with gradient (None if not given) and each
    of ``keys`` gathered without (None stays None; a key tensor that requires grad, ``key_gradient``, with). On
    one process, or with nothing to gather, (None, 0, None, [None, ...]): the loss then uses its local tensors."""
    if not is_distributed() or (queries is None and all(k is None for k in keys)):
        return None, 0, None, [None] * len(keys)
    return (gather_no_grad(ids), rank() * ids.shape[0], None if queries is None else gather_with_grad(queries),
            [None if k is None else (gather_with_grad if k.requires_grad else gather_no_grad)(k) for k in keys])


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Make every BatchNorm in ``module`` use the global batch's statistics under several processes (MoCo v3's
    SyncBN; the fix for the per-process-statistics shortcut of MoCo's BatchNorm): ``nn.BatchNorm1d`` becomes
    :class:`GatheredBatchNorm1d` in place (parameters and running stats kept); other BatchNorm kinds (2d/3d, in a CNN
    backbone) go through ``torch.nn.SyncBatchNorm`` under NCCL and raise otherwise (gloo/CPU). Returns the module."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            child.__class__ = GatheredBatchNorm1d
        elif isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, (GatheredBatchNorm1d,
                                                                                          nn.SyncBatchNorm)):
            if not (dist.is_initialized() and dist.get_backend() == "nccl"):  # gloo / CPU processes
                raise ValueError(f"cannot synchronise {type(child).__name__} '{name}' across CPU processes "
                                 "(torch.nn.SyncBatchNorm needs GPUs); use BatchNorm1d heads or sync_batchnorm=False")
            setattr(module, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
        else:
            convert_sync_batchnorm(child)
    return module


def all_true(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is True on every process (used to agree on skipping a non-finite step)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)
