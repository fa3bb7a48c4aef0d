"""Queue scores in float32 and their gradient, for a queue that may be stored in half precision. Shapes: B anchors,
K queue slots, D embedding size, M kept slots per anchor (k for the top-k rules, K for the dense ones).

``queue_negatives`` is the one entry point: (B, M) cosines of each anchor to its kept slots (the guards and rules of
selection.py), differentiable through the anchors. A half-precision queue is upcast UPCAST_CHUNK_BYTES at a time,
never as a whole (K, D) float32 copy, and nothing K-sized is kept for backward beyond the queue itself.
"""
from __future__ import annotations

from typing import Optional

import torch

from .config import ObjectiveConfig
from .selection import NEG_INF, _guard_block_, _select

UPCAST_CHUNK_BYTES = 2 * 2 ** 20


def _upcast_rows(dim: int) -> int:
    return max(64, UPCAST_CHUNK_BYTES // (4 * max(1, dim)))


def _queue_scores(anchors: torch.Tensor, keys: torch.Tensor, start: int = 0, stop: Optional[int] = None,
                  out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, stop - start) float32 = anchors (B, D) float32 @ keys[start:stop].T; a half-precision ``keys`` is upcast
    ``_upcast_rows`` rows at a time (no (K, D) float32 copy)."""
    stop = keys.shape[0] if stop is None else stop
    if keys.dtype == torch.float32:
        return torch.matmul(anchors, keys[start:stop].t(), out=out) if out is not None else \
            anchors @ keys[start:stop].t()
    out = anchors.new_empty(anchors.shape[0], stop - start) if out is None else out
    step = _upcast_rows(keys.shape[1])
    for a in range(start, stop, step):
        b = min(stop, a + step)
        torch.matmul(anchors, keys[a:b].float().t(), out=out[:, a - start:b - start])
    return out


def queue_negatives(anchors: torch.Tensor, anchor_ids: Optional[torch.Tensor], queue: tuple,
                    cfg: ObjectiveConfig, filter_active: bool = True,
                    guide: Optional[tuple] = None) -> Optional[torch.Tensor]:
    """(B, M) cosines of each anchor to its kept queue slots, -inf where dropped; differentiable through
    ``anchors`` when it requires grad. None when the queue is empty. Always float32 (a half-precision queue is
    upcast block by block, see :func:`_queue_scores`).

    Top-k rules: the scores are computed without gradient block by block, guarded and reduced by a running top-k;
    the selected (B, k) values carry the gradient through ``_SelectedLogits`` (sparse backward), so neither a
    second (B, K) product nor a (B, K) softmax is needed. Other rules: one dense (B, K) product with a keep-mask.
    Several anchor sets that share the queue (both anchored terms) go through one call stacked along B, so the
    queue is read (and upcast) once per step.
    """
    keys, queue_ids, filled = queue
    if keys is None or (filled is not None and not bool(filled.any())):
        return None
    anchors = anchors.float()
    B, K = anchors.shape[0], keys.shape[0]
    if not (filter_active and cfg.selection in ("top_k", "top_fraction")):
        sims = _QueueLogits.apply(anchors, keys) if anchors.requires_grad else _queue_scores(anchors.detach(), keys)
        guarded = sims.detach()

        def dense_block(start, stop):
            chunk = guarded[:, start:stop].clone()
            _guard_block_(chunk, start, anchor_ids, queue_ids, filled, None, cfg.id_guard, guide)
            return chunk

        return _select(dense_block, B, K, anchors.device, filled, cfg, filter_active).negatives(sims)
    detached = anchors.detach()

    def block(start, stop):
        scores = _queue_scores(detached, keys, start, stop)
        _guard_block_(scores, start, anchor_ids, queue_ids, filled, None, cfg.id_guard, guide)
        return scores

    with torch.no_grad():
        sel = _select(block, B, K, anchors.device, filled, cfg, filter_active)
    values = sel.values
    if anchors.requires_grad:
        values = _SelectedLogits.apply(anchors, values, sel.index, keys)
    return values.masked_fill(~sel.valid, NEG_INF)


class _QueueLogits(torch.autograd.Function):
    """(B, K) float32 logits anchors @ keys.T for a dense rule. Saves ``keys`` by reference (its storage dtype):
    a half-precision queue is upcast block by block in forward and backward, never kept as a float32 copy."""

    @staticmethod
    def forward(ctx, anchors, keys):  # type: ignore[override]
        ctx.save_for_backward(keys)
        return _queue_scores(anchors.detach(), keys)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (keys,) = ctx.saved_tensors
        if keys.dtype == torch.float32:
            return grad @ keys, None
        out = grad.new_zeros(grad.shape[0], keys.shape[1])
        step = _upcast_rows(keys.shape[1])
        for a in range(0, keys.shape[0], step):
            out.addmm_(grad[:, a:a + step], keys[a:a + step].float())
        return out, None


class _SelectedLogits(torch.autograd.Function):
    """Re-attach gradient to selected similarities taken from the no-grad score matrix: forward returns
    ``values`` (B, k) = anchors . keys[index]; backward is one sparse (B, K) x (K, D) product,
    d anchors = sum_j g_ij keys[index_ij], without materialising (B, k, D) or a dense (B, K) gradient. A
    half-precision queue is gathered a few anchors at a time (float32 accumulation, bounded memory)."""

    @staticmethod
    def forward(ctx, anchors, values, index, keys):  # type: ignore[override]
        ctx.save_for_backward(index, keys)
        return values.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        index, keys = ctx.saved_tensors
        B, k = index.shape
        grad = grad.float()
        if keys.dtype != torch.float32:
            out = grad.new_empty(B, keys.shape[1])
            rows = max(1, UPCAST_CHUNK_BYTES // (4 * k * keys.shape[1]))
            for a in range(0, B, rows):
                picked = keys.index_select(0, index[a:a + rows].reshape(-1)).float().view(-1, k, keys.shape[1])
                out[a:a + rows] = torch.bmm(grad[a:a + rows].unsqueeze(1), picked).squeeze(1)
            return out, None, None, None
        rows = torch.arange(B, device=index.device).repeat_interleave(k)
        sparse = torch.sparse_coo_tensor(torch.stack([rows, index.reshape(-1)]), grad.reshape(-1),
                                         (B, keys.shape[0]), check_invariants=False)
        return torch.sparse.mm(sparse, keys), None, None, None
