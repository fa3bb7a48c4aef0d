"""STS evaluation: Spearman / Pearson correlation (x100) between cosine similarities and gold scores.

Works with a ``SentenceTransformer``, a :class:`~textmoco.encoders.text.TextEncoder` (anything with
``encode(sentences, batch_size=...)``), or a plain callable ``list[str] -> (N, D)`` array/tensor. Correlations
come from ``scipy.stats`` (no hand-written rank correlation). Each unique sentence is encoded once.

Reference: the untouched all-MiniLM-L6-v2 scores Spearman 82.03 on the bundled STS-B test split (1379 pairs).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..data.text import load_sts_pairs


def _as_encode_fn(model_or_encode_fn: Any, batch_size: int) -> Callable[[list[str]], Any]:
    # Only an already-imported sentence_transformers can have made this object: skip the slow import otherwise.
    st_module = sys.modules.get("sentence_transformers")
    SentenceTransformer = getattr(st_module, "SentenceTransformer", None)
    if SentenceTransformer is not None and isinstance(model_or_encode_fn, SentenceTransformer):
        model = model_or_encode_fn
        return lambda s: model.encode(s, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    if hasattr(model_or_encode_fn, "encode") and callable(model_or_encode_fn.encode):
        return lambda s: model_or_encode_fn.encode(s, batch_size=batch_size)
    if callable(model_or_encode_fn):
        return model_or_encode_fn
    raise TypeError(f"evaluate_sts needs a SentenceTransformer, an object with .encode(sentences, batch_size=...), "
                    f"or a callable list[str] -> (N, D); got {type(model_or_encode_fn).__name__}")


def _to_numpy(emb: Any, n: int) -> np.ndarray:
    if isinstance(emb, torch.Tensor):
        emb = emb.detach().float().cpu().numpy()
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"the encoder returned shape {emb.shape} for {n} sentences; expected ({n}, D)")
    if not np.isfinite(emb).all():
        raise ValueError("the encoder returned NaN/inf embeddings; check the model (e.g. fp16 overflow)")
    return emb


def cosine_scores(emb1: np.ndarray, emb2: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (P, D) arrays -> (P,). Zero vectors get similarity 0."""
    n1 = np.linalg.norm(emb1, axis=1)
    n2 = np.linalg.norm(emb2, axis=1)
    return (emb1 * emb2).sum(axis=1) / np.maximum(n1 * n2, 1e-12)


def sts_correlations(sims: Sequence[float], gold: Sequence[float]) -> dict[str, float]:
    """Spearman and Pearson (x100) of predicted similarities against gold scores, plus ``n_pairs``."""
    from scipy.stats import pearsonr, spearmanr

    sims = np.asarray(sims, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.float64)
    if sims.shape != gold.shape or sims.ndim != 1 or len(sims) < 2:
        raise ValueError(f"need two 1-D arrays of the same length >= 2, got {sims.shape} and {gold.shape}")
    return {"spearman": float(spearmanr(sims, gold)[0]) * 100.0,
            "pearson": float(pearsonr(sims, gold)[0]) * 100.0,
            "n_pairs": int(len(sims))}


def evaluate_sts(model_or_encode_fn: Any, split: str | os.PathLike = "test", *,
                 batch_size: int = 64) -> dict[str, float]:
    """Evaluate sentence embeddings on STS pairs.

    Args:
        model_or_encode_fn: SentenceTransformer, TextEncoder (or any ``.encode(sentences, batch_size=)``), or a
            callable ``list[str] -> (N, D)``.
        split: ``"test"`` (default), ``"dev"``/``"validation"``, ``"train"`` of the bundled STS-B, or a path to a
            .csv/.tsv with columns sentence1, sentence2, score (see :func:`textmoco.data.text.load_sts_pairs`).
        batch_size: encoding batch size.

    Returns:
        ``{"spearman": float x100, "pearson": float x100, "n_pairs": int}``.
    """
    s1, s2, gold = load_sts_pairs(split)
    encode = _as_encode_fn(model_or_encode_fn, batch_size)
    unique = list(dict.fromkeys(s1 + s2))
    index = {s: i for i, s in enumerate(unique)}
    emb = _to_numpy(encode(unique), len(unique))
    sims = cosine_scores(emb[[index[s] for s in s1]], emb[[index[s] for s in s2]])
    return sts_correlations(sims, gold)
