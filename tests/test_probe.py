"""Linear probe and weighted kNN (textmoco.evaluation.probe)."""
import math

import numpy as np
import pytest
import torch

from textmoco.evaluation.probe import knn_accuracy, knn_predict, linear_probe, raw_pixel_baseline


def slow_knn(train, ytr, test, k, tau, num_classes):
    """Reference: explicit loops over test rows and neighbours."""
    preds = []
    for x in test:
        sims = []
        for j, t in enumerate(train):
            cos = float(np.dot(x, t) / (np.linalg.norm(x) * np.linalg.norm(t)))
            sims.append((cos, j))
        sims.sort(key=lambda s: -s[0])
        scores = [0.0] * num_classes
        for cos, j in sims[:k]:
            scores[int(ytr[j])] += math.exp(cos / tau)
        preds.append(int(np.argmax(scores)))
    return preds


@pytest.mark.parametrize("k,tau", [(1, 0.1), (5, 0.1), (7, 0.5), (200, 0.1)])
def test_knn_matches_slow_reference(k, tau):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 6))
    test = rng.normal(size=(15, 6))
    ytr = rng.integers(0, 4, size=40)
    fast = knn_predict(torch.tensor(train), torch.tensor(ytr), torch.tensor(test), k=k, temperature=tau,
                       num_classes=4, chunk_size=4)
    assert fast.tolist() == slow_knn(train, ytr, test, min(k, 40), tau, 4)


def test_knn_accuracy_perfect_on_clusters():
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(3, 8)) * 10
    y = np.repeat(np.arange(3), 20)
    x = centers[y] + rng.normal(size=(60, 8)) * 0.1
    assert knn_accuracy(x[::2], y[::2], x[1::2], y[1::2], k=5) == 1.0
    assert linear_probe(x[::2], y[::2], x[1::2], y[1::2]) == 1.0


def test_probe_errors_name_the_problem():
    x, y = torch.randn(10, 4), torch.arange(10) % 2
    with pytest.raises(ValueError, match="D=4"):
        knn_accuracy(x, y, torch.randn(5, 3), y[:5])
    with pytest.raises(ValueError, match="labels do not match"):
        linear_probe(x, y[:9], x, y)
    with pytest.raises(ValueError, match="k=0"):
        knn_predict(x, y, x, k=0)
    with pytest.raises(ValueError, match="temperature"):
        knn_predict(x, y, x, temperature=0)


def test_raw_pixel_baseline_on_uint8():
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(2), 30)
    imgs = np.zeros((60, 1, 4, 4), dtype=np.uint8)
    imgs[y == 0, :, :2] = 255
    imgs[y == 1, :, 2:] = 255
    imgs = np.clip(imgs.astype(int) + rng.integers(-20, 20, imgs.shape), 0, 255).astype(np.uint8)
    t = torch.from_numpy(imgs)
    res = raw_pixel_baseline(t[::2], torch.from_numpy(y[::2]), t[1::2], torch.from_numpy(y[1::2]), k=5)
    assert res == {"linear_probe": 1.0, "knn": 1.0}
