"""Image data loaders (textmoco.data.images)."""
import numpy as np
import pytest
import torch

from textmoco.data.images import (ImageDataset, channel_stats, images_to_tensor, load_digits_split, load_image_dataset,
                                  load_mnist_5k)


def test_mnist_5k_split_sizes_and_determinism():
    a = load_mnist_5k(seed=0, n_test=1000)
    b = load_mnist_5k(seed=0, n_test=1000)
    xtr, ytr, xte, yte = a
    assert xtr.shape == (4000, 1, 28, 28) and xte.shape == (1000, 1, 28, 28)
    assert xtr.dtype == torch.uint8 and ytr.dtype == torch.long and ytr.shape == (4000,)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert torch.bincount(yte).tolist() == [100] * 10  # stratified
    c = load_mnist_5k(seed=1, n_test=1000)
    assert not torch.equal(a[2], c[2])


def test_digits_split_scaled_to_uint8():
    xtr, ytr, xte, yte = load_digits_split(seed=0, n_test=360)
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert xtr.dtype == torch.uint8 and int(xtr.max()) == 255
    with pytest.raises(ValueError, match="n_test=5000"):
        load_digits_split(n_test=5000)


def test_images_to_tensor_modes_and_mixed_sizes():
    from PIL import Image

    grey = Image.fromarray(np.full((5, 6), 7, np.uint8))
    rgb = Image.fromarray(np.full((5, 6, 3), 9, np.uint8))
    assert images_to_tensor([grey, grey]).shape == (2, 1, 5, 6)
    assert images_to_tensor([grey, rgb]).shape == (2, 3, 5, 6)  # mixed -> RGB
    big = Image.fromarray(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="mixed sizes"):
        images_to_tensor([grey, big])
    assert images_to_tensor([grey, big], image_size=8).shape == (2, 1, 8, 8)


def test_load_image_dataset_from_imagefolder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    images, labels = load_image_dataset(str(tmp_path), split="train", image_size=4)
    assert images.shape == (6, 3, 4, 4) and images.dtype == torch.uint8
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="columns are"):
        load_image_dataset(str(tmp_path), image_column="img")
    with pytest.raises(ValueError, match="needs labels"):
        load_image_dataset(str(tmp_path), label_column="target", require_labels=True)
    images, labels = load_image_dataset(str(tmp_path), label_column="target")
    assert labels is None


def test_image_dataset_items():
    x = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    y = torch.tensor([0, 1, 2])
    assert ImageDataset(x)[1].shape == (1, 4, 4)
    img, label, idx = ImageDataset(x, y, return_index=True, return_label=True)[2]
    assert (label, idx) == (2, 2)
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(x.float())


def test_channel_stats():
    x = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    x[:, 1] = 255
    x[:2, 2] = 255
    mean, std = channel_stats(x)
    assert mean == (0.0, 1.0, 0.5) and max(std[:2]) <= 1e-6 and min(std[:2]) > 0 and abs(std[2] - 0.5164) < 1e-3
