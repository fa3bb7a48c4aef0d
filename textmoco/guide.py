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


def dataset_guide(encoder: Any, dataset: Any, max_length: int) -> Guide:
    """The guide of a pairs or crops dataset, encoded by ``encoder`` (a ``TextEncoder`` before training) at the
    training length ``max_length``: pairs (:class:`~textmoco.data.retrieval.PairDataset`): each sample id's anchor
    and its first positive (positives sharing an id are covered by the id guard); crops
    (:class:`~textmoco.data.retrieval.CropDataset`): the whole document stands for each of its crops. Sample ids
    must be 0..n-1 (the table is looked up by id); a streamed dataset has no finite table: ``ValueError``."""
    from .data.retrieval import PairDataset
    from .data.streaming import is_streaming

    if is_streaming(dataset):
        raise ValueError("guide_threshold (--guide_threshold) needs map-style data: a streamed corpus has no "
                         "finite table of samples to encode before training; drop --streaming or the guide")
    eval_length, encoder.eval_max_length = encoder.eval_max_length, max_length
    try:
        if isinstance(dataset, PairDataset):
            first: dict[int, int] = {}
            for row, sample_id in enumerate(dataset.ids or range(len(dataset))):
                first.setdefault(sample_id, row)
            if sorted(first) != list(range(len(first))):
                raise ValueError("guide_threshold needs sample ids 0..n-1 (ids are looked up in the guide's table); "
                                 "renumber the id column")
            rows = [first[i] for i in range(len(first))]
            return build_guide(encoder.encode, [dataset.anchors[r] for r in rows], [dataset.positives[r] for r in rows])
        return build_guide(encoder.encode, [" ".join(words) for words in dataset.words])
    finally:
        encoder.eval_max_length = eval_length
