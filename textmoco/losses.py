"""The objective as pure functions on tensors (no model inside). Shapes: B local anchors, N global batch, K queue
slots, D embedding size, k selected slots per anchor.

- selection.py (``select_hard_negatives``): guard + selection on detached cosine blocks, a running ``torch.topk``
  — never a (B, k, D) tensor, never a loop over anchors; queue_logits.py (``queue_negatives``): the kept queue
  cosines with a sparse backward.
- ``info_nce``: -log softmax of the positive among [positive, negatives]; masked negatives are -inf (the logits are
  always computed in float32, so -inf is safe under fp16/bf16 autocast too).
- ``compute_loss_from_embeddings``: MoCo (q anchors) + the dual-view key-anchored term, or the symmetric variant.
All switches off (dual_weight 0, selection 'none', no guard) is exactly MoCo's InfoNCE.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from . import distributed
from .config import ObjectiveConfig
from .queue_logits import queue_negatives
from .selection import NEG_INF, NegativeSelection, select_hard_negatives

__all__ = ["Guide", "LossOutput", "NegativeSelection", "compute_loss_from_embeddings", "compute_moco_loss", "info_nce",
           "queue_negatives", "select_hard_negatives", "stats_to_floats"]


@dataclass
class Guide:
    """The frozen start model's ("guide") L2-normalised embeddings of the training samples, indexed by sample id
    (GISTEmbed's idea: the guide's similarity marks likely false negatives). ``anchor``: (N, Dg) of what the
    queries encode (the sentence / the anchor column); ``key``: (N, Dg) of what the keys encode (the same tensor
    for single sentences and crops; the positive column for pairs). Computed once before training."""

    anchor: torch.Tensor
    key: torch.Tensor

    def to(self, device) -> "Guide":
        return Guide(self.anchor.to(device), self.key.to(device))


def info_nce(pos: torch.Tensor, negatives: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Per-anchor loss (B,) = -log( e^{pos/t} / (e^{pos/t} + sum e^{neg/t}) ). pos: (B,), negatives: list of
    (B, M_j) cosine blocks with -inf for dropped entries."""
    logits = torch.cat([pos.unsqueeze(1)] + list(negatives), dim=1).float() / temperature
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


@dataclass
class LossOutput:
    """``loss`` (0-d, with grad) and ``stat_tensors``: 0-d detached tensors on the loss's device, so a training step
    never waits for the device; ``stats`` reads them as floats (one host sync, at the caller's choice)."""
    loss: torch.Tensor
    stat_tensors: dict = field(default_factory=dict)

    @property
    def stats(self) -> dict:
        return stats_to_floats(self.stat_tensors)


def stats_to_floats(stat_tensors: dict) -> dict:
    """{name: 0-d tensor} -> {name: float} with a single device-to-host copy."""
    if not stat_tensors:
        return {}
    values = torch.stack([v.detach().float().reshape(()) for v in stat_tensors.values()]).tolist()
    return dict(zip(stat_tensors, values))


def _anchored_loss(anchors, positives, chosen, cfg, extra_negatives=None):
    """One anchored InfoNCE against its kept queue negatives ``chosen`` ((B, M) or None) (+ optional extra (B, M')
    negative block). Returns (per-anchor loss, kept count, sum of kept negative cosines), the last two as 0-d
    float32 tensors."""
    pos = (anchors * positives).sum(dim=1)
    negatives = [] if extra_negatives is None else [extra_negatives]
    kept = neg_sum = anchors.new_zeros((), dtype=torch.float32)
    if chosen is not None:
        negatives.append(chosen)
        with torch.no_grad():  # tensors, not floats: no host sync inside the step
            finite = torch.isfinite(chosen)
            kept = finite.sum().float()
            neg_sum = chosen.detach().masked_fill(~finite, 0.0).sum().float()
    # an empty queue (first step) leaves only the positive: loss 0, gradient 0 — never zero vectors as negatives
    return info_nce(pos, negatives, cfg.temperature), kept, neg_sum


def _batch_negatives(anchors, others, ids, ids_all, offset, cfg, guide_rows=None):
    """(B, N) cosines of each anchor (B, D) to the other rows (N, D) of the global batch; itself (row
    ``offset + i``), same-id and (``guide_rows`` = the guide's (B, G) anchor and (N, G) other embeddings) pairs
    above the guide threshold -inf."""
    sims = anchors.float() @ others.float().t()
    B, N = sims.shape
    own = torch.arange(B, device=anchors.device) + offset
    drop = torch.zeros(B, N, dtype=torch.bool, device=anchors.device)
    drop[torch.arange(B, device=anchors.device), own] = True
    if cfg.id_guard and ids is not None:
        drop |= ids.unsqueeze(1) == ids_all.unsqueeze(0)
    if guide_rows is not None:
        drop |= guide_rows[0] @ guide_rows[1].t() > cfg.guide_threshold
    return sims.masked_fill(drop, NEG_INF)


def _blocks(*blocks):
    """Negative blocks (B, M_i) side by side; None when there is none."""
    blocks = [b for b in blocks if b is not None]
    return torch.cat(blocks, dim=1) if blocks else None


def compute_loss_from_embeddings(q: torch.Tensor, k: torch.Tensor, ids: Optional[torch.Tensor],
                                 queue: tuple, cfg: ObjectiveConfig, filter_active: bool = True,
                                 q_all: Optional[torch.Tensor] = None, ids_all: Optional[torch.Tensor] = None,
                                 offset: int = 0, q_b: Optional[torch.Tensor] = None,
                                 k_a: Optional[torch.Tensor] = None,
                                 extra_key_negatives: Optional[torch.Tensor] = None,
                                 guide: Optional[Guide] = None, k_all: Optional[torch.Tensor] = None,
                                 k_a_all: Optional[torch.Tensor] = None) -> LossOutput:
    """The textmoco loss of one (micro-)batch.

    q: (B, D) L2-normalised queries of view a (with grad). k: (B, D) normalised keys of view b (no grad; with
    ``cfg.key_gradient`` the caller passes view b's query pass and its gradient is kept, here and in ``k_all``).
    ids: (B,) sample ids (for the id guard) or None. queue: (keys (K, D), ids (K,), filled (K,) or None = all
    filled) from ``NegativeQueue.negatives()``. q_all / ids_all: (N, D) / (N,) queries and ids of the global batch
    (gathered with gradient; default: this process's q / ids) where this process's rows start at ``offset``.
    q_b, k_a: the swapped pair, only for ``cfg.dual_mode == 'symmetric'``.
    extra_key_negatives: (B, M, D) normalised keys of explicit hard negatives (pairs' ``negative`` columns, from the
    momentum encoder, no grad): row i's M keys join anchor q_i's negatives as an extra block (never filtered).
    guide: the start model's embeddings of the samples (:class:`Guide`), used with ``cfg.guide_threshold``.
    k_all / k_a_all: (N, D) keys of view b / view a of the global batch (gathered, no grad; default: this process's
    k / k_a), the extra negatives of ``cfg.batch_negatives`` (rows ordered like ``ids_all``).
    Returns the mean loss over local anchors and stats (loss_q2k, loss_k2q / loss_sym, pos_cos, neg_cos,
    kept_fraction) as 0-d tensors (``.stat_tensors``; ``.stats`` gives floats).
    """
    f32 = [None if t is None else t.float() for t in (q, k, q_all, q_b, k_a, extra_key_negatives, k_all, k_a_all)]
    with torch.autocast(q.device.type, enabled=False):  # float32 even inside a caller's autocast
        return _loss_float32(f32[0], f32[1], ids, queue, cfg, filter_active, f32[2], ids_all, offset, f32[3],
                             f32[4], f32[5], guide, f32[6], f32[7])


def compute_moco_loss(out, ids: Optional[torch.Tensor], queue: tuple, cfg: ObjectiveConfig,
                      filter_active: bool = True, guide: Optional[Guide] = None, gather: bool = True) -> LossOutput:
    """The loss of one micro-batch under any number of processes, from the model's output ``out`` (a
    :class:`~textmoco.model.MoCoOutput`: ``q``, ``k``, and ``q_b``, ``k_a``, ``k_neg`` or None). The loss
    owns its gather (as sentence-transformers' MNRL does): what ``cfg`` needs from the other processes — their
    queries (with gradient) for the weighted key term's batch negatives, their keys for ``batch_negatives`` — is
    all-gathered here (``gather=False``: this process's batch only; one process: nothing to gather); then
    :func:`compute_loss_from_embeddings`. With ``cfg.key_gradient`` view b's keys are its query pass ``out.q_b``."""
    q_b, k_a, k_neg = out.q_b, out.k_a, out.k_neg
    k = q_b if cfg.key_gradient else out.k
    ids_all, offset, q_all, (k_all, k_a_all) = distributed.gather_batch(
        ids, out.q if gather and cfg.batch_queries_needed else None,
        (k, k_a) if gather and cfg.batch_negatives else (None, None))
    return compute_loss_from_embeddings(out.q, k, ids, queue, cfg, filter_active, q_all, ids_all, offset, q_b, k_a,
                                        extra_key_negatives=k_neg, guide=guide, k_all=k_all, k_a_all=k_a_all)


def _stacked_queue_negatives(anchor_sets: list, ids, queue, cfg, filter_active, guide_sets=None,
                             guide_table=None) -> list:
    """``queue_negatives`` of several (B, D) anchor sets in one pass over the queue (stacked along B; the selection
    is per row, so this equals separate calls): the queue is read, and a half-precision one upcast, once per step
    for both anchored terms. Returns one (B, M) block (or None) per set."""
    guide = None if guide_sets is None else (torch.cat(guide_sets), guide_table, cfg.guide_threshold)
    if len(anchor_sets) == 1:
        return [queue_negatives(anchor_sets[0], ids, queue, cfg, filter_active, guide)]
    stacked_ids = None if ids is None else ids.repeat(len(anchor_sets))
    chosen = queue_negatives(torch.cat(anchor_sets), stacked_ids, queue, cfg, filter_active, guide)
    return [None] * len(anchor_sets) if chosen is None else list(chosen.split(anchor_sets[0].shape[0]))


def _loss_float32(q, k, ids, queue, cfg, filter_active, q_all, ids_all, offset, q_b, k_a,
                  extra_key_negatives, guide=None, k_all=None, k_a_all=None) -> LossOutput:
    if not cfg.key_gradient:
        k = k.detach()
    symmetric = cfg.dual_mode == "symmetric"
    if symmetric and (q_b is None or k_a is None):
        raise ValueError("dual_mode='symmetric' needs q_b and k_a (the swapped views)")
    extra = None
    if extra_key_negatives is not None:  # (B, M): each anchor against its own explicit negatives
        extra = torch.einsum("bd,bmd->bm", q, extra_key_negatives.detach())
    guide = guide if cfg.guide_threshold is not None else None
    if guide is not None and ids is None:
        raise ValueError("guide_threshold needs sample ids (the guide's embeddings are looked up by id)")
    if cfg.batch_negatives:  # the global batch's other keys, same guards as the batch negatives of the key term
        ids_all = ids if ids_all is None else ids_all
        k_all = k if k_all is None else (k_all if cfg.key_gradient else k_all.detach())
        rows = None if guide is None else (guide.anchor[ids], guide.key[ids_all])
        extra = _blocks(extra, _batch_negatives(q, k_all, ids, ids_all, offset, cfg, rows))
    key_term = not symmetric and cfg.dual_weight > 0
    sets = [q] + ([q_b] if symmetric else []) + ([k] if key_term and cfg.key_negatives != "batch" else [])
    guide_sets = None
    if guide is not None:
        g_anchor, g_key = guide.anchor[ids], guide.key[ids]
        guide_sets = [g_anchor] + ([g_key] if symmetric else []) + ([g_key] if len(sets) > 1 + symmetric else [])
    chosen = _stacked_queue_negatives(sets, ids, queue, cfg, filter_active, guide_sets,
                                      None if guide is None else guide.key)
    l_q2k, kept, neg_sum = _anchored_loss(q, k, chosen[0], cfg, extra)
    anchors = q.shape[0]
    stats = {"loss_q2k": l_q2k.mean().detach()}
    if symmetric:
        sym_batch = None
        if cfg.batch_negatives:  # view b anchors against the batch's other view-a keys (pairs: other anchors)
            k_a_all = k_a if k_a_all is None else k_a_all
            rows = None if guide is None else (guide.key[ids], guide.anchor[ids_all])
            sym_batch = _batch_negatives(q_b, k_a_all.detach(), ids, ids_all, offset, cfg, rows)
        l_sym, kept2, neg2 = _anchored_loss(q_b, k_a.detach(), chosen[1], cfg, sym_batch)
        loss = (1 - cfg.dual_weight) * l_q2k.mean() + cfg.dual_weight * l_sym.mean()  # 0.5: the plain average
        stats["loss_sym"] = l_sym.mean().detach()
        kept, neg_sum, anchors = kept + kept2, neg_sum + neg2, anchors * 2
    elif cfg.dual_weight > 0:
        if q_all is None:  # this process's queries only (ids_all / offset may still describe gathered keys)
            q_all, ids_all, offset = q, ids, 0
        batch_neg = None
        if cfg.key_negatives in ("batch+queue", "batch"):
            rows = None if guide is None else (guide.key[ids], guide.anchor[ids_all])
            batch_neg = _batch_negatives(k, q_all, ids, ids_all, offset, cfg, rows)
        key_chosen = chosen[1] if cfg.key_negatives != "batch" else None
        q_pos = q_all[offset:offset + q.shape[0]]
        l_k2q, _, _ = _anchored_loss(k, q_pos, key_chosen, cfg, batch_neg)
        loss = (1 - cfg.dual_weight) * l_q2k.mean() + cfg.dual_weight * l_k2q.mean()
        stats["loss_k2q"] = l_k2q.mean().detach()
    else:
        loss = l_q2k.mean()
    keys, filled = queue[0], queue[2]
    if keys is None:
        stats["kept_fraction"] = torch.zeros_like(kept)
    elif filled is None:  # full queue: the slot count is a Python number, no host-to-device copy
        stats["kept_fraction"] = kept / (anchors * keys.shape[0])
    else:  # no filled slot -> nothing kept -> 0 / 1
        stats["kept_fraction"] = kept / (anchors * filled.sum().float()).clamp_min(1)
    stats["pos_cos"] = (q * k).sum(1).mean().detach()
    stats["neg_cos"] = neg_sum / kept  # 0 / 0 = nan while nothing is kept (empty queue)
    stats["loss"] = loss.detach()
    return LossOutput(loss, stats)
