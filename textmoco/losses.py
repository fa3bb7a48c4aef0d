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


# Chunking (see docs/SCALING.md "Memory"): the selection walks the queue in blocks of slots, so its extra memory is
# one (B, rows) float32 score block (+ a running (B, k) top-k) whatever K is, and a half-precision queue is upcast
# UPCAST_CHUNK_BYTES at a time, never as a whole (K, D) float32 copy.
SCORE_CHUNK_BYTES = 8 * 2 ** 20
UPCAST_CHUNK_BYTES = 2 * 2 ** 20


def _score_rows(num_anchors: int) -> int:
    return max(256, SCORE_CHUNK_BYTES // (4 * max(1, num_anchors)))


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


def _id_guard_block(anchor_ids: torch.Tensor, queue_ids: torch.Tensor) -> torch.Tensor:
    """(B, c) bool, True where the slot holds the anchor's own sample id: a dense compare with fixed shapes (no
    device-to-host copy; done per block of slots, so never more than a score block)."""
    return anchor_ids.unsqueeze(1) == queue_ids.unsqueeze(0)


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


def _guard_block_(scores: torch.Tensor, start: int, anchor_ids, queue_ids, filled, threshold, id_guard,
                  guide: Optional[tuple] = None) -> None:
    """Write -inf into a (B, c) block of scores (slots start..start+c) for unfilled, id-guarded and
    above-threshold slots, and (``guide`` = (rows (B, Dg), slot table (N, Dg), threshold)) slots whose guide
    cosine to the anchor is above the guide threshold."""
    stop = start + scores.shape[1]
    if guide is not None:
        rows, table, limit = guide
        slot_vectors = table.index_select(0, queue_ids[start:stop].clamp_min(0))  # (c, Dg); empty slots: filled
        scores.masked_fill_(rows @ slot_vectors.t() > limit, NEG_INF)
    if filled is not None:
        scores.masked_fill_(~filled[start:stop].unsqueeze(0), NEG_INF)
    if threshold is not None:
        scores.masked_fill_(scores > threshold, NEG_INF)
    if id_guard and anchor_ids is not None:
        scores.masked_fill_(_id_guard_block(anchor_ids, queue_ids[start:stop]), NEG_INF)


@torch.no_grad()
def _topk_chunked(block, B: int, K: int, k: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over K slots walked in blocks: ``block(start, stop)`` gives the guarded (B, stop - start) float32
    scores. Keeps a running (B, k) top-k (block top-k, then merge): memory (B, rows) + (B, 2k) whatever K is; fixed
    shapes, no host read."""
    rows = max(_score_rows(B), k)
    best_v = best_i = None
    for start in range(0, K, rows):
        stop = min(K, start + rows)
        values, index = torch.topk(block(start, stop), min(k, stop - start), dim=1, sorted=False)
        index += start
        if best_v is None:
            best_v, best_i = values, index
            continue
        best_v, pos = torch.topk(torch.cat([best_v, values], 1), k, dim=1, sorted=False)
        best_i = torch.cat([best_i, index], 1).gather(1, pos)
    return best_v, best_i


@torch.no_grad()
def select_hard_negatives(sims: torch.Tensor, anchor_ids: Optional[torch.Tensor], queue_ids: torch.Tensor,
                          filled: torch.Tensor, cfg: ObjectiveConfig, filter_active: bool = True,
                          generator: Optional[torch.Generator] = None, inplace: bool = False,
                          guide: Optional[tuple] = None) -> NegativeSelection:
    """Guard then select queue negatives for each anchor.

    sims: (B, K) cosine similarities anchor x queue slot (detached inside; overwritten when ``inplace``).
    anchor_ids: (B,) sample ids or None. queue_ids: (K,) ids of the slots. filled: (K,) bool, or None when every
    slot is filled. guide: optional (rows (B, Dg), slot table (N, Dg), threshold) for the guide guard.
    ``filter_active`` False (warm-up) keeps every filled, non-id-guarded slot. Rules (``cfg.selection``): 'top_k'
    keeps the k most similar, 'top_fraction' the ceil(rho * filled) most similar, 'min_similarity' all with
    s >= t; ``n_random`` adds random easy negatives. Guard: id guard (``cfg.id_guard``) and ``guard_threshold``.
    The top-k rules walk the slots in blocks (a running top-k, :func:`_topk_chunked`) and return indices, never a
    (B, k, D) tensor. No device-to-host copy once the queue is full (``filled`` None).
    """
    B, K = sims.shape
    sims = sims.detach()

    def block(start, stop):
        chunk = sims[:, start:stop]
        chunk = chunk if inplace and chunk.dtype == torch.float32 else chunk.float().clone()
        _guard_block_(chunk, start, anchor_ids, queue_ids, filled, None, cfg.id_guard, guide)
        return chunk

    return _select(block, B, K, sims.device, filled, cfg, filter_active, generator)


def _select(block, B: int, K: int, device, filled, cfg: ObjectiveConfig, filter_active: bool,
            generator: Optional[torch.Generator] = None) -> NegativeSelection:
    """The selection rules on guarded score blocks (``block(start, stop)``: (B, stop - start) float32 with -inf
    on guarded slots, computed on demand)."""
    num_filled = K if filled is None else int(filled.sum())  # None: a full queue, known without a device read
    use_topk = filter_active and cfg.selection in ("top_k", "top_fraction") and num_filled > 0
    threshold = cfg.guard_threshold if filter_active else None
    block_threshold = _with_threshold(block, threshold)
    if use_topk:
        k = int(cfg.top_k) if cfg.selection == "top_k" else math.ceil(cfg.top_fraction * num_filled)
        k = max(1, min(k, num_filled))
        if cfg.n_random == 0 or k >= num_filled:
            values, index = _topk_chunked(block_threshold, B, K, k, device)
            return NegativeSelection(index, values > NEG_INF, values)
        scores = block_threshold(0, K)  # n_random: a dense (B, K) noise draw needs the whole guarded matrix
        values, index = torch.topk(scores, k, dim=1, sorted=False)
        valid = values > NEG_INF
        noise = torch.rand(B, K, device=device, generator=generator)
        noise.masked_fill_(scores == NEG_INF, -1.0)
        noise.scatter_(1, index, -1.0)
        r_values, r_index = torch.topk(noise, min(cfg.n_random, K - k), dim=1, sorted=False)
        r_valid = r_values >= 0
        index, valid = torch.cat([index, r_index], 1), torch.cat([valid, r_valid], 1)
        values = torch.cat([values, scores.gather(1, r_index).masked_fill(~r_valid, NEG_INF)], 1)
        return NegativeSelection(index, valid, values)
    scores = block_threshold(0, K)  # dense rules: the (B, K) logits exist anyway
    valid = scores > NEG_INF
    keep = valid
    if filter_active and cfg.selection == "min_similarity" and num_filled > 0:
        keep = valid & (scores >= cfg.min_similarity)
        if cfg.n_random > 0:
            noise = torch.rand(B, K, device=device, generator=generator)
            noise.masked_fill_(keep | ~valid, -1.0)
            r_values, r_index = torch.topk(noise, min(cfg.n_random, K), dim=1, sorted=False)
            keep = keep | _scatter_or(r_index, r_values >= 0, K)
    return NegativeSelection(None, keep)


def _with_threshold(block, threshold):
    """``block`` plus the threshold guard (only while the filters are active)."""
    if threshold is None:
        return block

    def guarded(start, stop):
        scores = block(start, stop)
        return scores.masked_fill_(scores > threshold, NEG_INF)

    return guarded


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

    q: (B, D) L2-normalised queries of view a (with grad). k: (B, D) normalised keys of view b (no grad).
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
        k_all = k if k_all is None else k_all.detach()
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
        loss = 0.5 * (l_q2k.mean() + l_sym.mean())
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
