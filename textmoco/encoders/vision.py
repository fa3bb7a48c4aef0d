"""Vision encoder adapter: a Hugging Face backbone (ViT, DeiT, DINOv2, ConvNeXt, ... or a ViT from scratch) plus
kornia views.

Data flow (B = batch, C = channels, S = image side, D = ``embedding_dim``):
``collate``: list of uint8 (C, H, W) images -> uint8 (B, C, H, W) on CPU;
``make_views``: uint8 (B, C, H, W) on device -> two independently augmented, normalised float (B, C, S, S) views;
``forward``: float view -> backbone -> pooled (B, D), un-normalised;
``encode``: uint8 images (N, C, H, W) -> (N, D) features in eval mode, no augmentation (for probes / kNN);
``export``: ``save_pretrained`` of the backbone (reload with ``AutoModel.from_pretrained(dir)``) + a
``ViTImageProcessor`` config with the right size/mean/std + ``textmoco_vision.json`` (pooling).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence

import torch
from torch import nn

from .base import EncoderAdapter
from .views import ImageViews
from .vision_export import image_processor, jsonable, save_with_pooler

POOLINGS = ("auto", "cls", "mean", "pooler")
_PREFIX_TOKENS = {"deit": 2}  # CLS + distillation token; others: 1 (+ register tokens if any)
_INFO_FILE = "textmoco_vision.json"


def _size_from_processor(proc: dict, config: Any) -> int:
    """Square input side from an image processor's config (crop_size, then size) or the model config."""
    for attr in ("crop_size", "size"):
        size = proc.get(attr)
        if size is None:
            continue
        if isinstance(size, dict):  # JSON: {"height", "width"} or {"shortest_edge"}
            for key in ("height", "shortest_edge"):
                if size.get(key):
                    return int(size[key])
        elif isinstance(size, int):
            return size
    return int(getattr(config, "image_size", 224))


class VisionEncoder(EncoderAdapter):
    """Wraps an image backbone ``model(pixel_values=...)`` and pools its output to (B, D).

    Args:
        backbone: a ``transformers`` vision model (``AutoModel``).
        pooling: ``"cls"`` (first token), ``"mean"`` (mean of patch tokens, or global average for CNN feature maps),
            ``"pooler"`` (the model's ``pooler_output``), ``"auto"`` (CLS for ViT/DeiT, whose pooler is an extra
            dense+tanh layer; otherwise ``pooler_output`` (DINOv2, ConvNeXt, ...), or CLS/mean when there is none).
        image_size: side S the views are resized/cropped to.
        mean, std: per-channel normalisation of [0, 1] pixels (from the image processor for Hub models).
        views: ``"digits"``, ``"rgb"``, ``"none"`` or an :class:`ImageViews` instance.
        **view_options: passed to :class:`ImageViews` (``crop_scale``, ``strength``, ...).
    """

    def __init__(self, backbone: nn.Module, pooling: str = "auto", image_size: Optional[int] = None,
                 mean: Sequence[float] = (0.5,), std: Sequence[float] = (0.5,), views: Any = "rgb",
                 **view_options: Any) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is not supported; allowed: {POOLINGS}")
        config = backbone.config
        self.backbone = backbone
        self.model_type = getattr(config, "model_type", "")
        self.num_channels = int(getattr(config, "num_channels", 3))
        auto = pooling == "auto"
        if auto:
            pooling = "cls" if self.model_type in ("vit", "deit") else "pooler"
        self.pooling = pooling
        self.image_size = int(image_size or getattr(config, "image_size", 224))
        if len(mean) not in (1, self.num_channels) or len(std) != len(mean):
            raise ValueError(f"mean={tuple(mean)} / std={tuple(std)} must both have 1 or {self.num_channels} "
                             "entries (the model's channels)")
        self.mean, self.std = [float(v) for v in mean], [float(v) for v in std]
        if isinstance(views, ImageViews):
            if view_options:
                raise ValueError(f"view options {sorted(view_options)} cannot be combined with an ImageViews "
                                 "instance; set them on the instance")
            self.views = views
        else:
            self.views = ImageViews(views, image_size=self.image_size, mean=self.mean, std=self.std, **view_options)
        self.embedding_dim = self._infer_dim(auto)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(cls, name_or_path: str, pooling: str = "auto", views: Any = "rgb",
                        image_size: Optional[int] = None, **view_options: Any) -> "VisionEncoder":
        """Backbone from the Hub or a directory (``AutoModel``), normalisation and size from its image processor's
        config (``preprocessor_config.json``, read as a dict: no processor class is built, so torchvision is never
        needed — transformers < 5.2x's ``AutoImageProcessor`` asks for it).

        A directory written by :meth:`export` also restores the pooling it was trained with (unless given).
        """
        from transformers import AutoModel
        from transformers.image_processing_utils import ImageProcessingMixin

        info: dict[str, Any] = {}
        info_path = os.path.join(name_or_path, _INFO_FILE)
        if os.path.isfile(info_path):
            with open(info_path) as fh:
                info = json.load(fh)
            if pooling == "auto":
                pooling = info.get("pooling", "auto")
        # an export written without its pooler layer (before pooler_saved) loads without one, not newly initialised
        kwargs = {"add_pooling_layer": False} if info.get("has_pooler") is False and not info.get("pooler_saved") \
            else {}
        backbone = AutoModel.from_pretrained(name_or_path, **kwargs)
        try:
            proc = ImageProcessingMixin.get_image_processor_dict(name_or_path)[0]
        except (OSError, ValueError):
            proc = {}
        channels = int(getattr(backbone.config, "num_channels", 3))
        mean = list(proc.get("image_mean") or info.get("mean") or [0.5] * channels)
        std = list(proc.get("image_std") or info.get("std") or [0.5] * channels)
        size = image_size or (_size_from_processor(proc, backbone.config) if proc else info.get("image_size"))
        return cls(backbone, pooling=pooling, image_size=size, mean=mean, std=std, views=views, **view_options)

    @classmethod
    def from_scratch(cls, image_size: int = 28, patch_size: int = 4, num_channels: int = 1, hidden_size: int = 128,
                     num_layers: int = 4, heads: int = 4, mlp_ratio: float = 4.0, pooling: str = "mean",
                     views: Any = "digits", mean: Optional[Sequence[float]] = None,
                     std: Optional[Sequence[float]] = None, dropout: float = 0.0, seed: Optional[int] = None,
                     **view_options: Any) -> "VisionEncoder":
        """A randomly initialised ``ViTModel`` (no pooler layer) built from a ``ViTConfig``.

        Defaults are the MNIST-sized ViT of the vision recipe (patch 4 -> 49 patches + CLS, 4 x 128).
        ``mean``/``std`` default to (0.5,) * num_channels. ``seed`` makes the initialisation reproducible.
        """
        from transformers import ViTConfig, ViTModel

        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling={pooling!r} is not available for a scratch ViT; allowed: ('cls', 'mean')")
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} must be divisible by patch_size={patch_size}")
        if hidden_size % heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by heads={heads}")
        config = ViTConfig(image_size=image_size, patch_size=patch_size, num_channels=num_channels,
                           hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=heads,
                           intermediate_size=int(hidden_size * mlp_ratio), hidden_dropout_prob=dropout,
                           attention_probs_dropout_prob=dropout)
        if seed is not None:
            torch.manual_seed(seed)
        backbone = ViTModel(config, add_pooling_layer=False)
        mean = tuple(mean) if mean is not None else (0.5,) * num_channels
        std = tuple(std) if std is not None else (0.5,) * num_channels
        return cls(backbone, pooling=pooling, image_size=image_size, mean=mean, std=std, views=views,
                   **view_options)

    # ---------------------------------------------------------------- the adapter contract
    def collate(self, samples: Sequence[Any]) -> torch.Tensor:
        """List of images (uint8 tensors (C, H, W), HxW[xC] arrays or PIL images) -> uint8 (B, C, H, W)."""
        if len(samples) == 0:
            raise ValueError("collate got an empty list of samples")
        out = []
        for s in samples:
            if isinstance(s, torch.Tensor):
                t = s if s.dim() == 3 else s.unsqueeze(0) if s.dim() == 2 else None
            else:
                from ..data.images import pil_to_tensor

                t = pil_to_tensor(s, "L" if self.num_channels == 1 else "RGB")
            if t is None or t.dtype != torch.uint8:
                raise ValueError(f"samples must be uint8 (C, H, W) images; got {type(s).__name__} "
                                 f"{tuple(getattr(s, 'shape', ()))} {getattr(s, 'dtype', '')}")
            out.append(t)
        sizes = {tuple(t.shape) for t in out}
        if len(sizes) > 1:
            raise ValueError(f"images in one batch have different shapes {sorted(sizes)}; resize them when loading "
                             "(load_image_dataset(..., image_size=S))")
        return torch.stack(out)

    def _match_channels(self, images: torch.Tensor) -> torch.Tensor:
        c = images.shape[1]
        if c == self.num_channels:
            return images
        if c == 1:
            return images.expand(-1, self.num_channels, -1, -1)
        raise ValueError(f"images have {c} channels but the model takes {self.num_channels}; convert them "
                         "(load_image_dataset(mode='RGB' or 'L'))")

    def make_views(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, C, H, W) on device -> two independent augmented views, float (B, C, S, S)."""
        x = self._match_channels(inputs)
        return self.views(x), self.views(x)

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        """Normalised float (B, C, S, S) -> pooled (B, D), un-normalised."""
        out = self.backbone(pixel_values=view)
        return self._pool(out)

    def _pool(self, out: Any) -> torch.Tensor:
        if self.pooling == "pooler":
            pooled = getattr(out, "pooler_output", None)
            if pooled is None:
                raise ValueError(f"pooling='pooler' but {type(self.backbone).__name__} returns no pooler_output; "
                                 "use 'cls' or 'mean'")
            return pooled.flatten(1)
        h = out.last_hidden_state
        if h.dim() == 4:  # CNN feature map (B, C, h, w)
            if self.pooling == "cls":
                raise ValueError(f"pooling='cls' needs a token sequence; {self.model_type} gives a feature map. "
                                 "Use 'mean' or 'pooler'")
            return h.mean(dim=(2, 3))
        if self.pooling == "cls":
            return h[:, 0]
        prefix = _PREFIX_TOKENS.get(self.model_type, 1) + int(getattr(self.backbone.config, "num_register_tokens", 0)
                                                              or 0)
        return h[:, prefix:].mean(dim=1)

    def _infer_dim(self, auto: bool = False) -> int:
        """Run one dummy batch to get D; with ``pooling='auto'`` fall back from a missing pooler to CLS/mean."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                x = torch.zeros(2, self.num_channels, self.image_size, self.image_size,
                                device=next(self.backbone.parameters()).device)
                out = self.backbone(pixel_values=x)
                if auto and self.pooling == "pooler" and getattr(out, "pooler_output", None) is None:
                    self.pooling = "mean" if out.last_hidden_state.dim() == 4 else "cls"
                dim = int(self._pool(out).shape[-1])
        finally:
            self.train(was)
        return dim

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float (N, D) on CPU, eval mode, no augmentation (resize + normalise only)."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1")
        if not isinstance(images, torch.Tensor):
            images = self.collate(list(images))
        device = next(self.backbone.parameters()).device
        was = self.training
        self.eval()
        try:
            feats = [self.forward(self.views.normalize(self._match_channels(images[i:i + batch_size].to(device))))
                     .float().cpu() for i in range(0, len(images), batch_size)]
        finally:
            self.train(was)
        return torch.cat(feats) if feats else torch.empty(0, self.embedding_dim)

    def pooling_expression(self, outputs: str = "outputs") -> tuple[str, str]:
        """(Python expression of the trained embedding from ``outputs = model(**inputs)``, a comment saying what it
        is) — the pooling this encoder uses, for the model card's usage snippet."""
        if self.pooling == "pooler":
            return f"{outputs}.pooler_output.flatten(1)", "the model's pooler output, as trained"
        if self.pooling == "mean" and self._is_feature_map():
            return f"{outputs}.last_hidden_state.mean(dim=(2, 3))", "global average of the feature map, as trained"
        if self.pooling == "cls":
            return f"{outputs}.last_hidden_state[:, 0]", "the CLS token, as trained"
        prefix = _PREFIX_TOKENS.get(self.model_type, 1) + int(getattr(self.backbone.config, "num_register_tokens", 0)
                                                              or 0)
        left_out = "the CLS token" if prefix == 1 else f"the first {prefix} tokens: CLS, distillation/register"
        return (f"{outputs}.last_hidden_state[:, {prefix}:].mean(dim=1)",
                f"mean of the patch tokens ({left_out} left out), as trained")

    def _is_feature_map(self) -> bool:
        """Whether the backbone's last_hidden_state is a CNN feature map (B, C, h, w) (one dummy forward)."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                x = torch.zeros(1, self.num_channels, self.image_size, self.image_size,
                                device=next(self.backbone.parameters()).device)
                return self.backbone(pixel_values=x).last_hidden_state.dim() == 4
        finally:
            self.train(was)

    def usage_snippet(self, model_id: str) -> str:
        """Python code that embeds one image with plain ``transformers`` (AutoImageProcessor + AutoModel + the
        pooling this encoder was trained with) — what the exported model's card shows."""
        expression, comment = self.pooling_expression()
        mode = "L" if self.num_channels == 1 else "RGB"
        return (f"import torch\nfrom PIL import Image\nfrom transformers import AutoImageProcessor, AutoModel\n\n"
                f"processor = AutoImageProcessor.from_pretrained({model_id!r})\n"
                f"model = AutoModel.from_pretrained({model_id!r}).eval()\n\n"
                f"image = Image.open(\"image.png\").convert({mode!r})\n"
                f"inputs = processor(images=image, return_tensors=\"pt\")\n"
                f"with torch.no_grad():\n    outputs = model(**inputs)\n"
                f"embedding = {expression}  # {comment}; shape (1, {self.embedding_dim})\n"
                f"embedding = torch.nn.functional.normalize(embedding, dim=-1)  # for cosine similarity / kNN\n")

    def export(self, output_dir: str, **info: Any) -> None:
        """``save_pretrained`` of the backbone + image processor + ``textmoco_vision.json`` (pooling, size, info).

        ``AutoModel.from_pretrained(output_dir)`` reloads the backbone without warnings: a backbone trained without
        its pooler layer (the scratch ViT) is saved with one (identity dense layer, so ``pooler_output`` is
        ``tanh(CLS)``; the trained embedding is the pooling in ``textmoco_vision.json``, see :meth:`embedding_code`),
        so plain ``AutoModel`` finds every weight it creates. ``VisionEncoder.from_pretrained(output_dir)`` reloads
        it and restores the pooling.
        """
        os.makedirs(output_dir, exist_ok=True)
        pooler_saved = save_with_pooler(self.backbone, output_dir)
        mean = self.mean * (self.num_channels // len(self.mean))
        std = self.std * (self.num_channels // len(self.std))
        image_processor(self.image_size, mean, std).save_pretrained(output_dir)
        meta = {"pooling": self.pooling, "image_size": self.image_size, "mean": mean, "std": std,
                "has_pooler": getattr(self.backbone, "pooler", True) is not None, "pooler_saved": pooler_saved,
                "embedding_dim": self.embedding_dim, **{k: jsonable(v) for k, v in info.items()}}
        from ..export import save_json  # atomic: a crash never leaves a truncated file

        save_json(os.path.join(output_dir, _INFO_FILE), meta)
