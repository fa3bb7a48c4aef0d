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
    """Which queue slots each anchor keeps. Either ``index`` (B, k) slot indices with ``valid`` (B, k) (and the
    selected similarities ``values``), or ``index`` None and ``valid`` a dense (B, K) mask, or both None (keep all)."""

    index: Optional[torch.Tensor]
    valid: Optional[torch.Tensor]
    values: Optional[torch.Tensor] = None

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
        valid = self.valid if self.valid is not None else torch.ones_like(self.index, dtype=torch.bool)
        return _scatter_or(self.index, valid, num_slots)


def _scatter_or(index: torch.Tensor, flags: torch.Tensor, num_slots: int) -> torch.Tensor:
    """(B, K) mask, True where some (row, index[row, j]) has flags[row, j] (duplicate indices OR, not overwrite)."""
    counts = torch.zeros(index.shape[0], num_slots, dtype=torch.int32, device=index.device)
    return counts.scatter_add_(1, index, flags.to(torch.int32)) > 0


def _id_collisions(anchor_ids: torch.Tensor, queue_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, slots) where a queue slot holds the anchor's own sample id. A binary search of the K slot ids in the
    B sorted anchor ids makes this O(K log B + B*c) (c = the few colliding slots), instead of a dense (B, K)
    comparison or a sort of the queue (``torch.isin``)."""
    sorted_ids = anchor_ids.sort().values
    position = torch.searchsorted(sorted_ids, queue_ids).clamp(max=sorted_ids.numel() - 1)
    slots = (sorted_ids[position] == queue_ids).nonzero().squeeze(1)
    rows, cols = (queue_ids[slots].unsqueeze(0) == anchor_ids.unsqueeze(1)).nonzero(as_tuple=True)
    return rows, slots[cols]


@torch.no_grad()
def select_hard_negatives(sims: torch.Tensor, anchor_ids: Optional[torch.Tensor], queue_ids: torch.Tensor,
                          filled: torch.Tensor, cfg: ObjectiveConfig, filter_active: bool = True,
                          generator: Optional[torch.Generator] = None, inplace: bool = False) -> NegativeSelection:
    """Guard then select queue negatives for each anchor.

    sims: (B, K) cosine similarities anchor x queue slot (detached inside; overwritten when ``inplace``).
    anchor_ids: (B,) sample ids or None. queue_ids: (K,) ids of the slots. filled: (K,) bool, or None when every
    slot is filled.
    ``filter_active`` False (warm-up) keeps every filled, non-id-guarded slot. Rules (``cfg.selection``): 'top_k'
    keeps the k most similar, 'top_fraction' the ceil(rho * filled) most similar, 'min_similarity' all with
    s >= t; ``n_random`` adds random easy negatives. Guard: id guard (``cfg.id_guard``) and ``guard_threshold``.
    The top-k rules cost one ``torch.topk`` on the (B, K) matrix and return indices, never a (B, k, D) tensor.
    """
    B, K = sims.shape
    num_filled = K if filled is None else int(filled.sum())  # None: a full queue, known without a device read
    use_topk = filter_active and cfg.selection in ("top_k", "top_fraction") and num_filled > 0
    threshold = cfg.guard_threshold if filter_active else None
    if use_topk:  # guard by writing -inf into the score matrix, then one topk
        scores = sims.detach() if inplace else sims.detach().float().clone()
        if num_filled < K:
            scores.masked_fill_(~filled.unsqueeze(0), NEG_INF)
        if threshold is not None:
            scores.masked_fill_(scores > threshold, NEG_INF)
        if cfg.id_guard and anchor_ids is not None:
            scores[_id_collisions(anchor_ids, queue_ids)] = NEG_INF
        k = int(cfg.top_k) if cfg.selection == "top_k" else math.ceil(cfg.top_fraction * num_filled)
        values, index = torch.topk(scores, max(1, min(k, num_filled)), dim=1, sorted=False)
        valid = values > NEG_INF
        if cfg.n_random > 0 and k < num_filled:
            noise = torch.rand(B, K, device=sims.device, generator=generator)
            noise.masked_fill_(scores == NEG_INF, -1.0)
            noise.scatter_(1, index, -1.0)
            r_values, r_index = torch.topk(noise, min(cfg.n_random, K - k), dim=1, sorted=False)
            r_valid = r_values >= 0
            index, valid = torch.cat([index, r_index], 1), torch.cat([valid, r_valid], 1)
            values = torch.cat([values, sims.detach().gather(1, r_index).masked_fill(~r_valid, NEG_INF)], 1)
        return NegativeSelection(index, valid, values)
    valid = None  # the guards: filled, threshold, id
    if threshold is not None:
        valid = sims.detach() <= threshold
    if num_filled < K:
        valid = filled.unsqueeze(0).expand(B, K).clone() if valid is None else valid & filled.unsqueeze(0)
    if cfg.id_guard and anchor_ids is not None:
        rows, slots = _id_collisions(anchor_ids, queue_ids)
        if rows.numel():
            valid = torch.ones(B, K, dtype=torch.bool, device=sims.device) if valid is None else valid
            valid[rows, slots] = False
    keep = valid
    if filter_active and cfg.selection == "min_similarity" and num_filled > 0:
        chosen = sims.detach() >= cfg.min_similarity
        keep = chosen if valid is None else chosen & valid
        if cfg.n_random > 0:
            noise = torch.rand(B, K, device=sims.device, generator=generator)
            noise.masked_fill_(keep if valid is None else keep | ~valid, -1.0)
            r_values, r_index = torch.topk(noise, min(cfg.n_random, K), dim=1, sorted=False)
            keep = keep | _scatter_or(r_index, r_values >= 0, K)
    return NegativeSelection(None, keep)


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


def queue_negatives(anchors: torch.Tensor, anchor_ids: Optional[torch.Tensor], queue: tuple,
                    cfg: ObjectiveConfig, filter_active: bool = True) -> Optional[torch.Tensor]:
    """(B, M) cosines of each anchor to its kept queue slots, -inf where dropped; differentiable through
    ``anchors`` when it requires grad. None when the queue is empty.

    Top-k rules: the (B, K) scores are computed once without gradient, guarded in place and reduced by one topk;
    the selected (B, k) values carry the gradient through ``_SelectedLogits`` (sparse backward), so neither a
    second (B, K) product nor a (B, K) softmax is needed. Other rules: one dense (B, K) product with a keep-mask.
    """
    keys, queue_ids, filled = queue
    if keys is None or (filled is not None and not bool(filled.any())):
        return None
    keys = keys if keys.dtype == torch.float32 else keys.float()
    anchors = anchors.float()
    if not (filter_active and cfg.selection in ("top_k", "top_fraction")):
        sims = anchors @ keys.t()
        return select_hard_negatives(sims, anchor_ids, queue_ids, filled, cfg, filter_active).negatives(sims)
    with torch.no_grad():
        scores = anchors.detach() @ keys.t()
    sel = select_hard_negatives(scores, anchor_ids, queue_ids, filled, cfg, filter_active, inplace=True)
    values = sel.values
    if anchors.requires_grad:
        values = _SelectedLogits.apply(anchors, values, sel.index, keys)
    return values.masked_fill(~sel.valid, NEG_INF)


class _SelectedLogits(torch.autograd.Function):
    """Re-attach gradient to selected similarities taken from the no-grad score matrix: forward returns
    ``values`` (B, k) = anchors . keys[index]; backward is one sparse (B, K) x (K, D) product,
    d anchors = sum_j g_ij keys[index_ij], without materialising (B, k, D) or a dense (B, K) gradient."""

    @staticmethod
    def forward(ctx, anchors, values, index, keys):  # type: ignore[override]
        ctx.save_for_backward(index, keys)
        return values.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        index, keys = ctx.saved_tensors
        B, k = index.shape
        rows = torch.arange(B, device=index.device).repeat_interleave(k)
        sparse = torch.sparse_coo_tensor(torch.stack([rows, index.reshape(-1)]), grad.reshape(-1).to(keys.dtype),
                                         (B, keys.shape[0]), check_invariants=False)
        return torch.sparse.mm(sparse, keys), None, None, None


def _anchored_loss(anchors, positives, anchor_ids, queue, cfg, filter_active, extra_negatives=None):
    """One anchored InfoNCE against the queue (+ optional extra (B, M) negative block). Returns (per-anchor loss,
    kept count, sum of kept negative cosines), the last two as 0-d float32 tensors."""
    pos = (anchors * positives).sum(dim=1)
    negatives = [] if extra_negatives is None else [extra_negatives]
    kept = neg_sum = anchors.new_zeros((), dtype=torch.float32)
    chosen = queue_negatives(anchors, anchor_ids, queue, cfg, filter_active)
    if chosen is not None:
        negatives.append(chosen)
        with torch.no_grad():  # tensors, not floats: no host sync inside the step
            finite = torch.isfinite(chosen)
            kept = finite.sum().float()
            neg_sum = chosen.detach().masked_fill(~finite, 0.0).sum().float()
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
    ids: (B,) sample ids (for the id guard) or None. queue: (keys (K, D), ids (K,), filled (K,) or None = all
    filled) from ``NegativeQueue.negatives()``. q_all / ids_all: (N, D) / (N,) queries and ids of the global batch
    (gathered with gradient; default: this process's q / ids) where this process's rows start at ``offset``.
    q_b, k_a: the swapped pair, only for ``cfg.dual_mode == 'symmetric'``.
    Returns the mean loss over local anchors and stats (loss_q2k, loss_k2q / loss_sym, pos_cos, neg_cos,
    kept_fraction) as 0-d tensors (``.stat_tensors``; ``.stats`` gives floats).
    """
    if k.requires_grad:
        k = k.detach()
    l_q2k, kept, neg_sum = _anchored_loss(q, k, ids, queue, cfg, filter_active)
    anchors = q.shape[0]
    stats = {"loss_q2k": l_q2k.mean().detach()}
    if cfg.dual_mode == "symmetric":
        if q_b is None or k_a is None:
            raise ValueError("dual_mode='symmetric' needs q_b and k_a (the swapped views)")
        l_sym, kept2, neg2 = _anchored_loss(q_b, k_a.detach(), ids, queue, cfg, filter_active)
        loss = 0.5 * (l_q2k.mean() + l_sym.mean())
        stats["loss_sym"] = l_sym.mean().detach()
        kept, neg_sum, anchors = kept + kept2, neg_sum + neg2, anchors * 2
    elif cfg.dual_weight > 0:
        q_all = q if q_all is None else q_all
        ids_all = ids if ids_all is None else ids_all
        batch_neg = None
        if cfg.key_negatives in ("batch+queue", "batch"):
            batch_neg = _batch_negatives(k, q_all, ids, ids_all, offset, cfg)
        key_queue = queue if cfg.key_negatives != "batch" else (None, None, None)
        q_pos = q_all[offset:offset + q.shape[0]]
        l_k2q, _, _ = _anchored_loss(k, q_pos, ids, key_queue, cfg, filter_active, batch_neg)
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
