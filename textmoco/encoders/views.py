"""Image view pipelines (kornia) that run on batched tensors on the batch's device.

:class:`ImageViews` maps a batch of images (B, C, H, W) - uint8 0-255 or float 0-1 - to one randomly augmented,
normalised float view (B, C, S, S), S = ``image_size``. Each call draws fresh, per-sample random parameters, so
calling it twice on the same batch gives the two independent views the contrastive objective needs.

Presets (every value can be overridden by keyword):

- ``"digits"`` (small centred greyscale digits, MNIST-like): small random affine about the centre (+-10 degrees,
  scale 0.9-1.1, shear 5, no translation, p 0.8), elastic deformation (p 0.7; ``elastic_alpha`` scales the smoothed
  displacement field, ``elastic_sigma`` its smoothness in pixels: sigma 4 / alpha 3 moves pixels ~1.4 px on average
  at 28x28), Gaussian blur (p 0.3), random erasing of a small patch (p 0.25). No flips (a flipped digit is another
  symbol). No random resized crop and no translation by default: on MNIST-5k a ViT trained with crops/shifts learned
  position-agnostic patch statistics (probe below random init); opt in with ``crop_scale=(lo, hi)`` /
  ``translate=t``.
- ``"rgb"`` (natural images, MoCo v2): random resized crop scale (0.2, 1); horizontal flip; colour jitter
  0.4/0.4/0.4/0.1 with p 0.8; grayscale p 0.2; Gaussian blur p 0.5.
- ``"none"``: only resize and normalise (useful for debugging and for evaluation).

``strength`` (default 1) scales all geometric/photometric magnitudes at once (0 = no augmentation).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

PRESETS: dict[str, dict[str, Any]] = {
    "digits": dict(crop_scale=None, crop_ratio=(0.8, 1.25), degrees=10.0, translate=0.0,
                   affine_scale=(0.9, 1.1), shear=5.0, affine_p=0.8, flip_p=0.0, jitter=0.0, jitter_p=0.0,
                   grayscale_p=0.0, blur_p=0.3, blur_sigma=(0.1, 1.0), erase_p=0.25, erase_scale=(0.02, 0.1),
                   elastic_p=0.7, elastic_alpha=3.0, elastic_sigma=4.0),
    "rgb": dict(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), degrees=0.0, translate=0.0, affine_scale=None,
                shear=0.0, affine_p=0.0, flip_p=0.5, jitter=0.4, jitter_p=0.8, grayscale_p=0.2, blur_p=0.5,
                blur_sigma=(0.1, 2.0), erase_p=0.0, erase_scale=(0.02, 0.2), elastic_p=0.0, elastic_alpha=3.0,
                elastic_sigma=4.0),
    "none": dict(crop_scale=None, crop_ratio=(1.0, 1.0), degrees=0.0, translate=0.0, affine_scale=None, shear=0.0,
                 affine_p=0.0, flip_p=0.0, jitter=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0,
                 blur_sigma=(0.1, 1.0), erase_p=0.0, erase_scale=(0.02, 0.1), elastic_p=0.0, elastic_alpha=3.0,
                 elastic_sigma=4.0),
}


def _check_prob(name: str, p: float) -> None:
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name}={p!r} must be a probability in [0, 1]")


def _check_range(name: str, r: Optional[Sequence[float]], lo: float, hi: float) -> None:
    if r is None:
        return
    if len(r) != 2 or not lo <= r[0] <= r[1] <= hi:
        raise ValueError(f"{name}={tuple(r)!r} must be (low, high) with {lo} <= low <= high <= {hi}")


class ImageViews(nn.Module):
    """One augmented + normalised view of an image batch.

    Args:
        preset: ``"digits"``, ``"rgb"`` or ``"none"`` (see the module docstring).
        image_size: side S of the square output; default: the input's height.
        mean, std: per-channel normalisation (length 1 or C), applied after augmentation to values in [0, 1].
        strength: multiplies rotation/translation/shear/jitter magnitudes and crop zoom (0 disables them).
        **overrides: any key of the preset (``crop_scale``, ``degrees``, ``erase_p``, ...).

    ``forward(images)``: (B, C, H, W) uint8 or float in [0, 1] -> float32 (B, C, S, S), on the input's device.
    ``normalize(images)``: the same without augmentation (resize if needed + normalise): use it for evaluation.
    """

    def __init__(self, preset: str = "digits", image_size: Optional[int] = None,
                 mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,), strength: float = 1.0,
                 **overrides: Any) -> None:
        super().__init__()
        import kornia.augmentation as K

        if preset not in PRESETS:
            raise ValueError(f"preset={preset!r} is not known; allowed: {sorted(PRESETS)}")
        unknown = sorted(set(overrides) - set(PRESETS[preset]))
        if unknown:
            raise ValueError(f"unknown view option(s) {unknown}; allowed: {sorted(PRESETS[preset])}")
        if strength < 0:
            raise ValueError(f"strength={strength!r} must be >= 0")
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean={tuple(mean)} and std={tuple(std)} must have the same length and std > 0")
        cfg = {**PRESETS[preset], **overrides}
        for key in ("affine_p", "flip_p", "jitter_p", "grayscale_p", "blur_p", "erase_p", "elastic_p"):
            _check_prob(key, cfg[key])
        _check_range("crop_scale", cfg["crop_scale"], 1e-3, 1.0)
        _check_range("erase_scale", cfg["erase_scale"], 1e-4, 1.0)
        self.preset, self.image_size, self.strength, self.config = preset, image_size, float(strength), cfg
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), False)
        s = self.strength
        self._size = image_size
        self._crop_cfg = cfg["crop_scale"]
        ops: list[nn.Module] = []
        if cfg["affine_p"] > 0 and s > 0 and (cfg["degrees"] or cfg["translate"] or cfg["shear"]
                                              or cfg["affine_scale"]):
            t = cfg["translate"] * s
            sc = cfg["affine_scale"]
            sc = None if sc is None else (1 - (1 - sc[0]) * s, 1 + (sc[1] - 1) * s)
            ops.append(K.RandomAffine(degrees=cfg["degrees"] * s, translate=(t, t) if t > 0 else None, scale=sc,
                                      shear=cfg["shear"] * s if cfg["shear"] else None, p=cfg["affine_p"]))
        if cfg["elastic_p"] > 0 and cfg["elastic_alpha"] > 0 and s > 0:
            if cfg["elastic_sigma"] <= 0:
                raise ValueError(f"elastic_sigma={cfg['elastic_sigma']!r} must be > 0 (pixels)")
            ks = int(4 * cfg["elastic_sigma"]) | 1
            a = float(cfg["elastic_alpha"]) * s
            ops.append(K.RandomElasticTransform(kernel_size=(ks, ks), sigma=(float(cfg["elastic_sigma"]),) * 2,
                                                alpha=(a, a), p=cfg["elastic_p"]))
        if cfg["flip_p"] > 0:
            ops.append(K.RandomHorizontalFlip(p=cfg["flip_p"]))
        if cfg["jitter"] > 0 and cfg["jitter_p"] > 0 and s > 0:
            j = cfg["jitter"] * s
            ops.append(K.ColorJitter(j, j, j, min(0.5, j / 4), p=cfg["jitter_p"]))
        if cfg["grayscale_p"] > 0:
            ops.append(K.RandomGrayscale(p=cfg["grayscale_p"]))
        self._blur = cfg["blur_p"] > 0
        self._erase = K.RandomErasing(scale=tuple(cfg["erase_scale"]), p=cfg["erase_p"]) if cfg["erase_p"] > 0 \
            else None
        self.ops = nn.Sequential(*ops)
        self._crop: Optional[nn.Module] = None
        self._crop_built_for: Optional[int] = None

    def _crop_for(self, size: int, device: torch.device) -> Optional[nn.Module]:
        """Random resized crop to ``size`` (built lazily: the output size may come from the first batch)."""
        import kornia.augmentation as K

        if self._crop_cfg is None or self.strength == 0:
            return None
        if self._crop_built_for != size:
            lo = 1 - (1 - self._crop_cfg[0]) * min(self.strength, 1.0)
            self._crop = K.RandomResizedCrop((size, size), scale=(lo, self._crop_cfg[1]),
                                             ratio=tuple(self.config["crop_ratio"]))
            self._crop_built_for = size
        return self._crop

    def _to_float(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"images must be a batch (B, C, H, W); got shape {tuple(images.shape)}")
        if images.shape[1] != self.mean.shape[1] and self.mean.shape[1] != 1:
            raise ValueError(f"images have {images.shape[1]} channels but mean/std have {self.mean.shape[1]}")
        x = images.float()
        return x / 255.0 if images.dtype == torch.uint8 else x

    def _resize(self, x: torch.Tensor, size: int) -> torch.Tensor:
        if x.shape[-2:] == (size, size):
            return x
        return nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                         antialias=True)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """No augmentation: (B, C, H, W) -> float (B, C, S, S) resized and normalised (evaluation path)."""
        x = self._to_float(images)
        return self._norm(self._resize(x, self._size or x.shape[-2]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) uint8 / float in [0, 1] -> one augmented, normalised float view (B, C, S, S)."""
        import kornia.filters as KF

        x = self._to_float(images)
        size = self._size or x.shape[-2]
        crop = self._crop_for(size, x.device)
        x = crop(x) if crop is not None else self._resize(x, size)
        if len(self.ops):
            x = self.ops(x)
        if self._blur and self.strength > 0:
            x = self._random_blur(x, KF)
        if self._erase is not None:
            x = self._erase(x)
        return self._norm(x.clamp_(0.0, 1.0))

    def _random_blur(self, x: torch.Tensor, KF: Any) -> torch.Tensor:
        """Gaussian blur with a per-sample sigma on a random subset (probability ``blur_p``)."""
        b = x.shape[0]
        apply = torch.rand(b, device=x.device) < self.config["blur_p"]
        if not bool(apply.any()):
            return x
        lo, hi = self.config["blur_sigma"]
        sigma = torch.empty(int(apply.sum()), device=x.device).uniform_(lo, hi * self.strength)
        ks = max(3, 2 * int(round(2 * hi)) + 1)
        ks = min(ks, (x.shape[-1] // 2) * 2 - 1) if x.shape[-1] > 3 else 3
        blurred = KF.gaussian_blur2d(x[apply], (ks, ks), torch.stack([sigma, sigma], dim=-1))
        out = x.clone()
        out[apply] = blurred
        return out

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, image_size={self.image_size}, strength={self.strength}"
