"""Which queue slots each anchor keeps: the guards (unfilled slots, the id guard, the similarity threshold, the
start-model guide) and the selection rules, on detached (B, K) float32 score blocks. Shapes: B anchors, K queue
slots, k selected slots per anchor, Dg the guide's embedding size.

- ``select_hard_negatives``: guard + selection of a given (B, K) cosine matrix (the public, inspectable form).
- ``_select``: the rules on score blocks computed on demand (``block(start, stop)``), so the top-k rules walk the
  queue in blocks with a running top-k: extra memory (B, rows) + (B, 2k) whatever K is, fixed shapes, no host read
  once the queue is full.
The differentiable side (queue scores with gradient, the sparse backward) is in queue_logits.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
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
# one (B, rows) float32 score block (+ a running (B, k) top-k) whatever K is.
SCORE_CHUNK_BYTES = 8 * 2 ** 20


def _score_rows(num_anchors: int) -> int:
    return max(256, SCORE_CHUNK_BYTES // (4 * max(1, num_anchors)))


def _id_guard_block(anchor_ids: torch.Tensor, queue_ids: torch.Tensor) -> torch.Tensor:
    """(B, c) bool, True where the slot holds the anchor's own sample id: a dense compare with fixed shapes (no
    device-to-host copy; done per block of slots, so never more than a score block)."""
    return anchor_ids.unsqueeze(1) == queue_ids.unsqueeze(0)


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
