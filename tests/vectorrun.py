"""The toy vector setting the trainer tests share: 8-d random inputs, a 6-d VectorEncoder embedding."""
import torch

IN_DIM, DIM = 8, 6


def data(n=40, seed=0):
    """``n`` seeded random (IN_DIM,) samples."""
    g = torch.Generator().manual_seed(seed)
    return list(torch.randn(n, IN_DIM, generator=g))
