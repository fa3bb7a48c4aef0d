"""Kornia view pipelines (textmoco.encoders.views)."""
import pytest
import torch

from textmoco.encoders.views import ImageViews


@pytest.mark.parametrize("preset,channels", [("digits", 1), ("rgb", 3)])
def test_views_keep_shape_dtype_device_and_differ(preset, channels):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (8, channels, 28, 28), dtype=torch.uint8)
    views = ImageViews(preset, mean=(0.5,) * channels, std=(0.5,) * channels)
    a, b = views(x), views(x)
    assert a.shape == b.shape == (8, channels, 28, 28)
    assert a.dtype == torch.float32 and a.device == x.device
    assert not torch.allclose(a, b)


def test_resize_and_normalize_path():
    x = torch.full((2, 1, 8, 8), 255, dtype=torch.uint8)
    views = ImageViews("digits", image_size=16, mean=(0.5,), std=(0.25,))
    assert views(x).shape == (2, 1, 16, 16)
    n = views.normalize(x)
    assert n.shape == (2, 1, 16, 16) and torch.allclose(n, torch.full_like(n, 2.0))
    none = ImageViews("none")
    assert torch.equal(none(x), none(x))  # no augmentation -> deterministic


def test_strength_zero_is_identity():
    x = torch.randint(0, 256, (4, 1, 12, 12), dtype=torch.uint8)
    v = ImageViews("digits", strength=0.0, blur_p=0.0, erase_p=0.0)
    assert torch.allclose(v(x), v.normalize(x))


def test_view_option_errors():
    with pytest.raises(ValueError, match="preset='cifar'"):
        ImageViews("cifar")
    with pytest.raises(ValueError, match="unknown view option"):
        ImageViews("digits", crop=0.5)
    with pytest.raises(ValueError, match="erase_p=1.5"):
        ImageViews("digits", erase_p=1.5)
    with pytest.raises(ValueError, match="crop_scale"):
        ImageViews("digits", crop_scale=(0.9, 0.1))
