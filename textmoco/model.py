"""MoCoModel: query encoder (+ optional projection head) and its EMA key copy. ``forward`` gives (q, k).

The key branch is a deep copy that gradients never reach (``requires_grad=False``); the trainer updates it with
``momentum.ema_update`` after each optimizer step. It lives inside this module so ``save_state`` checkpoints it, but
it is excluded from DDP's gradient sync (no trainable parameters). The queue is *not* in here (see queue.py).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import KEY_ENCODERS
from .encoders.base import EncoderAdapter
from .momentum import ema_update


@dataclass
class MoCoOutput:
    """q: (B, D') normalised queries of view a (grad); k: (B, D') normalised keys of view b (no grad);
    q_b / k_a: the swapped pair when ``symmetric`` (else None); k_neg: (B, M, D') normalised keys of explicit
    negatives (pairs with a ``negative`` column; from the key encoder, no grad) or None."""

    q: torch.Tensor
    k: torch.Tensor
    q_b: Optional[torch.Tensor] = None
    k_a: Optional[torch.Tensor] = None
    k_neg: Optional[torch.Tensor] = None


class QueryBranch(nn.Module):
    """encoder -> head. ``forward_features`` is the backbone embedding (what is exported and evaluated),
    ``forward_head`` the projection the loss sees."""

    def __init__(self, encoder: EncoderAdapter, head: Optional[nn.Module] = None):
        super().__init__()
        self.encoder = encoder
        self.head = head if head is not None else nn.Identity()

    def forward_features(self, view: Any) -> torch.Tensor:
        return self.encoder(view)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, view: Any) -> torch.Tensor:
        return F.normalize(self.forward_head(self.forward_features(view)).float(), dim=-1)


class MoCoModel(nn.Module):
    """The whole method's model side. encoder: any ``EncoderAdapter`` producing (B, D); head: optional module
    (B, D) -> (B, D'). ``symmetric=True`` also computes the swapped pair (q of view b, k of view a); the trainer
    sets it from ``ObjectiveConfig.dual_mode``.

    ``key_source`` (one of ``config.KEY_ENCODERS``; the trainer sets it from ``TrainConfig.key_encoder``):
    ``'momentum'`` (MoCo): every key from the EMA copy. ``'query'`` (the trainer holds the momentum at 0, so the
    copy always equals the query encoder): with ``symmetric`` the keys are the two query passes, detached
    (k = q_b, k_a = q), so a step costs two encoder passes instead of four; they differ from a separate key pass
    only in the dropout mask. Without ``symmetric`` the key pass still runs (on the copy). ``'momentum_a'`` (needs
    ``symmetric``): only view b's keys come from the query pass of view b, detached (k = q_b); view a's keys come
    from the EMA copy as in MoCo. A step runs three encoder passes, the no-grad one on view a — for pairs the
    anchors, typically short queries, while the long positives get no extra pass.

    ``key_train_mode=False`` (``TrainConfig.key_mode='eval'``, set by the trainer): the key passes run in eval mode
    (no dropout, BatchNorm running statistics) while the model trains."""

    def __init__(self, encoder: EncoderAdapter, head: Optional[nn.Module] = None, symmetric: bool = False,
                 key_source: str = "momentum", key_train_mode: bool = True):
        super().__init__()
        self.query = QueryBranch(encoder, head)
        self.key = copy.deepcopy(self.query)
        for p in self.key.parameters():
            p.requires_grad_(False)
        self.symmetric = symmetric
        self.key_source = key_source
        self.key_train_mode = key_train_mode

    @property
    def key_source(self) -> str:
        return self._key_source

    @key_source.setter
    def key_source(self, value: str) -> None:  # checked once, where it is set (the constructor or the trainer)
        if value not in KEY_ENCODERS:
            raise ValueError(f"key_source={value!r}; expected one of {', '.join(KEY_ENCODERS)}")
        self._key_source = value

    @property
    def encoder(self) -> EncoderAdapter:
        return self.query.encoder

    def forward(self, inputs: Any) -> MoCoOutput:
        view_a, view_b = self.query.encoder.make_views(inputs)
        explicit = getattr(self.query.encoder, "explicit_negatives", None)
        neg_view = explicit(inputs) if explicit is not None else None
        q = self.query(view_a)
        k_neg = None
        reuse = self.symmetric and self.key_source != "momentum"  # view b's keys = its query pass
        q_b = self.query(view_b) if reuse else None
        with torch.no_grad():
            self.key.train(self.training and self.key_train_mode)
            k = q_b.detach() if reuse else self.key(view_b)
            if neg_view is not None:
                k_neg = self.key(neg_view).view(k.shape[0], -1, k.shape[-1])
            if reuse:
                k_a = q.detach() if self.key_source == "query" else self.key(view_a)
        if reuse:
            return MoCoOutput(q, k, q_b, k_a, k_neg)
        if not self.symmetric:
            return MoCoOutput(q, k, k_neg=k_neg)
        q_b = self.query(view_b)
        with torch.no_grad():
            k_a = self.key(view_a)
        return MoCoOutput(q, k, q_b, k_a, k_neg)

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        ema_update(self.key, self.query, momentum)

    @property
    def output_dim(self) -> int:
        head = self.query.head
        for module in reversed(list(head.modules())):
            if isinstance(module, nn.Linear):
                return module.out_features
        return self.query.encoder.embedding_dim
