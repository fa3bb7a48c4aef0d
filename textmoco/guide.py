"""The guide for ``guide_threshold`` (GISTEmbed's idea, Solatorio 2024): the frozen start model's embeddings of
every training sample, computed once before training and looked up by sample id, so the guard costs one
(B, Dg) x (Dg, c) product per block of queue slots and no extra forward pass per step. Memory: N x Dg float32
(10k sentences x 384: 16 MB). Not for streaming corpora (no finite table of samples)."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from .losses import Guide


@torch.no_grad()
def build_guide(encode: Callable[[list[str]], Any], anchors: Sequence[str],
                keys: Optional[Sequence[str]] = None, batch_size: int = 256) -> Guide:
    """``encode``: the start model's ``list[str] -> (n, Dg)`` (e.g. ``TextEncoder.encode`` before training).
    ``anchors``: the text each sample id's query encodes; ``keys``: the text its key encodes (default: the same,
    single sentences and crops of a document). Returns L2-normalised float32 tables on the CPU."""
    def table(texts: Sequence[str]) -> torch.Tensor:
        parts = [torch.as_tensor(encode(list(texts[i:i + batch_size]))).float()
                 for i in range(0, len(texts), batch_size)]
        return F.normalize(torch.cat(parts), dim=1)

    anchor = table(anchors)
    return Guide(anchor, anchor if keys is None else table(keys))
