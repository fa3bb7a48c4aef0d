"""The objective as pure functions on tensors (no model inside). Shapes: B local anchors, N global batch, K queue
slots, D embedding size, k selected slots per anchor.

- ``select_hard_negatives``: guard + selection on the detached (B, K) cosine matrix, one ``torch.topk`` — never a
  (B, k, D) tensor, never a loop over anchors.
- ``info_nce``: -log softmax of the positive among [positive, negatives]; masked negatives are -inf (the logits are
  always computed in float32, so -inf is safe under fp16/bf16 autocast too).
- ``compute_loss_from_embeddings``: MoCo (q anchors) + the dual-view key-anchored term, or the symmetric variant.
All switches off (dual_weight 0, selection 'none', no guard) is exactly MoCo's InfoNCE.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from .config import ObjectiveConfig

NEG_INF = float("-inf")


@dataclass
class NegativeSelection:
    """Which queue slots each anchor keeps. Either ``index`` (B, k) slot indices with ``valid`` (B, k), or
    ``index`` None and ``valid`` a dense (B, K) mask, or both None (keep every slot)."""

    index: Optional[torch.Tensor]
    valid: Optional[torch.Tensor]

    def negatives(self, sims: torch.Tensor) -> torch.Tensor:
        """(B, K) similarities (possibly with grad) -> (B, k or K) kept similarities, dropped ones -inf."""
        if self.index is not None:
            sims = sims.gather(1, self.index)
        return sims if self.valid is None else sims.masked_fill(~self.valid, NEG_INF)

    def kept(self, num_anchors: int, num_slots: int) -> int:
        if self.valid is None:
            return num_anchors * (self.index.shape[1] if self.index is not None else num_slots)
        return int(self.valid.sum())

    def dense_mask(self, num_slots: int) -> torch.Tensor:
        """(B, K) bool keep-mask, for inspection and tests."""
        if self.index is None:
            return self.valid.clone()
        mask = torch.zeros(self.index.shape[0], num_slots, dtype=torch.bool, device=self.index.device)
        return mask.scatter_(1, self.index, self.valid if self.valid is not None else True)


@torch.no_grad()
def select_hard_negatives(sims: torch.Tensor, anchor_ids: Optional[torch.Tensor], queue_ids: torch.Tensor,
                          filled: torch.Tensor, cfg: ObjectiveConfig, filter_active: bool = True,
                          generator: Optional[torch.Generator] = None) -> NegativeSelection:
    """Guard then select queue negatives for each anchor.

    sims: (B, K) cosine similarities anchor x queue slot (detached inside). anchor_ids: (B,) sample ids or None.
    queue_ids: (K,) ids of the slots. filled: (K,) bool. ``filter_active`` False (warm-up) keeps every filled,
    non-id-guarded slot. Rules (``cfg.selection``): 'top_k' keeps the k most similar, 'top_fraction' the
    ceil(rho * filled) most similar, 'min_similarity' all with s >= t; ``n_random`` adds random easy negatives.
    """
    B, K = sims.shape
    num_filled = int(filled.sum())
    invalid = None
    if num_filled < K:
        invalid = ~filled.unsqueeze(0).expand(B, K)
    if cfg.id_guard and anchor_ids is not None:
        same = queue_ids.unsqueeze(0) == anchor_ids.unsqueeze(1)
        invalid = same if invalid is None else invalid | same
    if filter_active and cfg.guard_threshold is not None:
        too_close = sims > cfg.guard_threshold
        invalid = too_close if invalid is None else invalid | too_close
    if not filter_active or cfg.selection == "none" or num_filled == 0:
        return NegativeSelection(None, None if invalid is None else ~invalid)
    if cfg.selection == "min_similarity":
        keep = sims >= cfg.min_similarity
        return NegativeSelection(None, keep if invalid is None else keep & ~invalid)
    if cfg.selection == "top_k":
        k = min(int(cfg.top_k), num_filled)
    else:  # top_fraction
        k = max(1, min(num_filled, math.ceil(cfg.top_fraction * num_filled)))
    scores = sims.detach().float()
    if invalid is not None:
        scores = scores.masked_fill(invalid, NEG_INF)
    values, index = torch.topk(scores, k, dim=1, sorted=False)
    valid = values > NEG_INF
    if cfg.n_random > 0 and k < num_filled:
        noise = torch.rand(B, K, device=sims.device, generator=generator)
        if invalid is not None:
            noise.masked_fill_(invalid, -1.0)
        noise.scatter_(1, index, -1.0)
        r_values, r_index = torch.topk(noise, min(cfg.n_random, K - k), dim=1, sorted=False)
        index, valid = torch.cat([index, r_index], 1), torch.cat([valid, r_values >= 0], 1)
    return NegativeSelection(index, valid)


def info_nce(pos: torch.Tensor, negatives: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """Per-anchor loss (B,) = -log( e^{pos/t} / (e^{pos/t} + sum e^{neg/t}) ). pos: (B,), negatives: list of
    (B, M_j) cosine blocks with -inf for dropped entries."""
    logits = torch.cat([pos.unsqueeze(1)] + list(negatives), dim=1).float() / temperature
    return torch.logsumexp(logits, dim=1) - logits[:, 0]


@dataclass
class LossOutput:
    loss: torch.Tensor
    stats: dict = field(default_factory=dict)


def _queue_term(anchors, positives, anchor_ids, queue, cfg, filter_active, extra_negatives=None):
    """One anchored InfoNCE against the queue (+ optional extra negative block). Returns (per-anchor loss,
    kept count, sum of kept negative cosines)."""
    keys, queue_ids, filled = queue
    pos = (anchors * positives).sum(dim=1)
    negatives = [] if extra_negatives is None else [extra_negatives]
    kept, neg_sum = 0, 0.0
    if keys is not None and int(filled.sum()) > 0:
        sims = anchors.float() @ keys.float().t()
        selection = select_hard_negatives(sims.detach(), anchor_ids, queue_ids, filled, cfg, filter_active)
        chosen = selection.negatives(sims)
        negatives.append(chosen)
        with torch.no_grad():
            finite = torch.isfinite(chosen)
            kept = int(finite.sum())
            neg_sum = float(chosen.detach().masked_fill(~finite, 0.0).sum())
    # an empty queue (first step) leaves only the positive: loss 0, gradient 0 — never zero vectors as negatives
    return info_nce(pos, negatives, cfg.temperature), kept, neg_sum


def _batch_negatives(k, q_all, ids, ids_all, offset, cfg):
    """(B, N) cosines of each key anchor to the other queries of the global batch; itself and same-id -inf."""
    sims = k.float() @ q_all.float().t()
    B, N = sims.shape
    own = torch.arange(B, device=k.device) + offset
    drop = torch.zeros(B, N, dtype=torch.bool, device=k.device)
    drop[torch.arange(B, device=k.device), own] = True
    if cfg.id_guard and ids is not None:
        drop |= ids.unsqueeze(1) == ids_all.unsqueeze(0)
    return sims.masked_fill(drop, NEG_INF)


def compute_loss_from_embeddings(q: torch.Tensor, k: torch.Tensor, ids: Optional[torch.Tensor],
                                 queue: tuple, cfg: ObjectiveConfig, filter_active: bool = True,
                                 q_all: Optional[torch.Tensor] = None, ids_all: Optional[torch.Tensor] = None,
                                 offset: int = 0, q_b: Optional[torch.Tensor] = None,
                                 k_a: Optional[torch.Tensor] = None) -> LossOutput:
    """The textmoco loss of one (micro-)batch.

    q: (B, D) L2-normalised queries of view a (with grad). k: (B, D) normalised keys of view b (no grad).
    ids: (B,) sample ids (for the id guard) or None. queue: (keys (K, D), ids (K,), filled (K,)) from
    ``NegativeQueue.negatives()``. q_all / ids_all: (N, D) / (N,) queries and ids of the global batch (gathered
    with gradient; default: this process's q / ids) where this process's rows start at ``offset``.
    q_b, k_a: the swapped pair, only for ``cfg.dual_mode == 'symmetric'``.
    Returns the mean loss over local anchors and float stats (loss_q2k, loss_k2q, pos_cos, neg_cos, kept_fraction).
    """
    if k.requires_grad:
        k = k.detach()
    l_q2k, kept, neg_sum = _queue_term(q, k, ids, queue, cfg, filter_active)
    anchors = q.shape[0]
    stats = {"loss_q2k": float(l_q2k.mean().detach())}
    if cfg.dual_mode == "symmetric":
        if q_b is None or k_a is None:
            raise ValueError("dual_mode='symmetric' needs q_b and k_a (the swapped views)")
        l_sym, kept2, neg2 = _queue_term(q_b, k_a.detach(), ids, queue, cfg, filter_active)
        loss = 0.5 * (l_q2k.mean() + l_sym.mean())
        stats["loss_sym"] = float(l_sym.mean().detach())
        kept, neg_sum, anchors = kept + kept2, neg_sum + neg2, anchors * 2
    elif cfg.dual_weight > 0:
        q_all = q if q_all is None else q_all
        ids_all = ids if ids_all is None else ids_all
        batch_neg = None
        if cfg.key_negatives in ("batch+queue", "batch"):
            batch_neg = _batch_negatives(k, q_all, ids, ids_all, offset, cfg)
        key_queue = queue if cfg.key_negatives != "batch" else (None, None, None)
        q_pos = q_all[offset:offset + q.shape[0]]
        l_k2q, _, _ = _queue_term(k, q_pos, ids, key_queue, cfg, filter_active, batch_neg)
        loss = (1 - cfg.dual_weight) * l_q2k.mean() + cfg.dual_weight * l_k2q.mean()
        stats["loss_k2q"] = float(l_k2q.mean().detach())
    else:
        loss = l_q2k.mean()
    num_slots = int(queue[2].sum()) if queue[2] is not None else 0
    stats["pos_cos"] = float((q * k).sum(1).mean().detach())
    stats["neg_cos"] = neg_sum / kept if kept else float("nan")
    stats["kept_fraction"] = kept / (anchors * num_slots) if num_slots else 0.0
    stats["loss"] = float(loss.detach())
    return LossOutput(loss, stats)
