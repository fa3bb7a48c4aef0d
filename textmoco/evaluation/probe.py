"""Frozen-feature evaluation for image encoders: linear probe and weighted kNN (top-1 accuracy).

- :func:`linear_probe`: scikit-learn ``LogisticRegression`` on ``StandardScaler``-ed features.
- :func:`knn_accuracy`: the weighted kNN monitor of InstDisc / MoCo (cosine similarity, the k nearest training
  samples vote for their class with weight ``exp(sim / temperature)``), vectorised in torch and chunked over queries.
- :func:`evaluate_features`: encode train and test images with an encoder's ``encode`` and run both.
- :func:`raw_pixel_baseline`: the same two measures on flattened pixels (the bar any learned feature must clear).
- :class:`ProbeEvaluator`: one train/test split as the recipes' :class:`~textmoco.evaluation.protocol.Evaluator`.

Shapes: features (N, D) float (torch or numpy), labels (N,) ints.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch


def _as_tensor(x: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return x.detach().cpu().to(dtype) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=dtype)


def _check(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
           test_labels: torch.Tensor) -> None:
    if train_feats.dim() != 2 or test_feats.dim() != 2:
        raise ValueError(f"features must be 2-D (N, D); got train {tuple(train_feats.shape)}, "
                         f"test {tuple(test_feats.shape)}")
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"train features have D={train_feats.shape[1]} but test features D={test_feats.shape[1]}")
    if len(train_labels) != len(train_feats) or len(test_labels) != len(test_feats):
        raise ValueError(f"labels do not match features: train {len(train_labels)} labels for {len(train_feats)} "
                         f"rows, test {len(test_labels)} labels for {len(test_feats)} rows")


def linear_probe(train_feats: Any, train_labels: Any, test_feats: Any, test_labels: Any, max_iter: int = 2000,
                 C: float = 1.0, seed: int = 0) -> float:
    """Top-1 accuracy of a multinomial logistic regression trained on standardised ``train_feats``.

    ``C``: inverse L2 strength (scikit-learn's). ``max_iter`` is generous so lbfgs converges on ~1k-dim features.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, te = _as_tensor(train_feats), _as_tensor(test_feats)
    ytr, yte = _as_tensor(train_labels, torch.long), _as_tensor(test_labels, torch.long)
    _check(tr, ytr, te, yte)
    if C <= 0:
        raise ValueError(f"C={C!r} must be > 0")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C, random_state=seed))
    clf.fit(tr.double().numpy(), ytr.numpy())
    return float((clf.predict(te.double().numpy()) == yte.numpy()).mean())


@torch.no_grad()
def knn_predict(train_feats: Any, train_labels: Any, test_feats: Any, k: int = 200, temperature: float = 0.1,
                num_classes: Optional[int] = None, chunk_size: int = 1024) -> torch.Tensor:
    """Weighted-kNN class predictions (N_test,) as in the InstDisc/MoCo monitor.

    For each test row: cosine similarities to all train rows, keep the top ``k``, add ``exp(sim / temperature)``
    to the score of each neighbour's class, predict the argmax (ties -> lowest class index).
    """
    tr = torch.nn.functional.normalize(_as_tensor(train_feats), dim=1)
    te = torch.nn.functional.normalize(_as_tensor(test_feats), dim=1)
    ytr = _as_tensor(train_labels, torch.long)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive int")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature!r} must be > 0")
    if ytr.numel() and int(ytr.min()) < 0:
        raise ValueError("train labels must be non-negative class indices")
    c = int(num_classes) if num_classes is not None else int(ytr.max()) + 1
    k = min(k, tr.shape[0])
    preds = []
    for start in range(0, te.shape[0], chunk_size):
        sim = te[start:start + chunk_size] @ tr.T  # (n, N_train)
        top_sim, top_idx = sim.topk(k, dim=1)  # (n, k)
        weights = (top_sim / temperature).exp()
        scores = torch.zeros(sim.shape[0], c).scatter_add_(1, ytr[top_idx], weights)  # (n, C)
        preds.append(scores.argmax(dim=1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def knn_accuracy(train_feats: Any, train_labels: Any, test_feats: Any, test_labels: Any, k: int = 200,
                 temperature: float = 0.1, chunk_size: int = 1024) -> float:
    """Top-1 accuracy of :func:`knn_predict` (cosine, k=200, weights exp(sim/0.1) by default)."""
    tr, te = _as_tensor(train_feats), _as_tensor(test_feats)
    ytr, yte = _as_tensor(train_labels, torch.long), _as_tensor(test_labels, torch.long)
    _check(tr, ytr, te, yte)
    num_classes = int(torch.cat([ytr, yte]).max()) + 1
    pred = knn_predict(tr, ytr, te, k=k, temperature=temperature, num_classes=num_classes, chunk_size=chunk_size)
    return float((pred == yte).float().mean())


def evaluate_features(encoder: Any, train: Sequence[Any], test: Sequence[Any], batch_size: int = 256,
                      k: int = 200, temperature: float = 0.1, probe: bool = True) -> dict[str, float]:
    """Encode ``train = (images, labels)`` and ``test = (images, labels)`` with ``encoder.encode`` (eval mode, no
    augmentation) and return ``{"linear_probe": top1, "knn": top1}`` (``linear_probe`` omitted if ``probe=False``).
    """
    if not hasattr(encoder, "encode"):
        raise ValueError(f"{type(encoder).__name__} has no encode(images, batch_size); use a VisionEncoder or "
                         "pass features to linear_probe / knn_accuracy directly")
    (x_tr, y_tr), (x_te, y_te) = train, test
    if y_tr is None or y_te is None:
        raise ValueError("evaluation needs labels for both train and test (got None)")
    f_tr = encoder.encode(x_tr, batch_size=batch_size)
    f_te = encoder.encode(x_te, batch_size=batch_size)
    out = {"knn": knn_accuracy(f_tr, y_tr, f_te, y_te, k=k, temperature=temperature)}
    if probe:
        out["linear_probe"] = linear_probe(f_tr, y_tr, f_te, y_te)
    return out


def raw_pixel_baseline(train_images: Any, train_labels: Any, test_images: Any, test_labels: Any,
                       k: int = 200, temperature: float = 0.1) -> dict[str, float]:
    """Linear probe and kNN on flattened pixels (uint8 scaled to [0, 1]): ``{"linear_probe": ..., "knn": ...}``."""
    def flat(x: Any) -> torch.Tensor:
        is_uint8 = (x.dtype == torch.uint8) if isinstance(x, torch.Tensor) else np.asarray(x).dtype == np.uint8
        t = _as_tensor(x).flatten(1)
        return t / 255.0 if is_uint8 else t

    tr, te = flat(train_images), flat(test_images)
    return {"linear_probe": linear_probe(tr, train_labels, te, test_labels),
            "knn": knn_accuracy(tr, train_labels, te, test_labels, k=k, temperature=temperature)}


class ProbeEvaluator:
    """A labelled train/test split as an :class:`~textmoco.evaluation.protocol.Evaluator`: ``evaluator(encoder)``
    -> :func:`evaluate_features` (``{"knn", "linear_probe"}``; ``probe=False``: kNN only, the training monitor),
    ``evaluator.raw_pixels()`` -> :func:`raw_pixel_baseline` on the same split."""

    name = ""
    primary_metric = "linear_probe"

    def __init__(self, train: Sequence[Any], test: Sequence[Any], batch_size: int = 256, k: int = 200,
                 temperature: float = 0.1):
        self.train, self.test = train, test
        self.options = dict(batch_size=batch_size, k=k, temperature=temperature)

    def __call__(self, encoder: Any, probe: bool = True) -> dict[str, float]:
        return evaluate_features(encoder, self.train, self.test, probe=probe, **self.options)

    def raw_pixels(self) -> dict[str, float]:
        (x_tr, y_tr), (x_te, y_te) = self.train, self.test
        return raw_pixel_baseline(x_tr, y_tr, x_te, y_te, k=self.options["k"],
                                  temperature=self.options["temperature"])

    def headline(self, scores: dict[str, Any]) -> dict[str, float]:
        return {k: scores[k] for k in ("linear_probe", "knn") if k in scores}
