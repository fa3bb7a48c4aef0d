"""What a vision export writes besides the backbone's own ``save_pretrained``: the backbone with an identity
pooler when it was trained without one (so plain ``AutoModel.from_pretrained`` warns about nothing), a ViT image
processor with the training size / mean / std, and JSON-safe metadata.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn


def save_with_pooler(backbone: nn.Module, output_dir: str) -> bool:
    """``save_pretrained`` of ``backbone``; one built without its pooler layer (``add_pooling_layer=False``) is
    saved as the full architecture with an identity pooler, so that ``AutoModel.from_pretrained`` (which builds the
    pooler) finds every weight and warns about nothing. Returns whether a pooler was added."""
    if getattr(backbone, "pooler", "absent") is not None:
        backbone.save_pretrained(output_dir)
        return False
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            full = type(backbone)(backbone.config).to(next(backbone.parameters()).device)
    except TypeError:  # an architecture without the add_pooling_layer switch: save as is
        backbone.save_pretrained(output_dir)
        return False
    missing, unexpected = full.load_state_dict(backbone.state_dict(), strict=False)
    dense = getattr(getattr(full, "pooler", None), "dense", None)
    if unexpected or any(not k.startswith("pooler.") for k in missing) or full.pooler is None:
        backbone.save_pretrained(output_dir)
        return False
    if isinstance(dense, nn.Linear) and dense.weight.shape[0] == dense.weight.shape[1]:
        with torch.no_grad():
            dense.weight.copy_(torch.eye(dense.weight.shape[0], dtype=dense.weight.dtype))
            dense.bias.zero_()
    full.save_pretrained(output_dir)
    return True


def image_processor(size: int, mean: Sequence[float], std: Sequence[float]) -> Any:
    """A ViT image processor (PIL backend when torchvision is missing) with the given size and normalisation."""
    from transformers.utils import is_torchvision_available

    cls = None
    if not is_torchvision_available():
        try:
            from transformers import ViTImageProcessorPil as cls  # transformers >= 5.2x
        except ImportError:
            cls = None
    if cls is None:
        from transformers import ViTImageProcessor as cls
    return cls(do_resize=True, size={"height": size, "width": size}, do_rescale=True, rescale_factor=1 / 255,
               do_normalize=True, image_mean=list(mean), image_std=list(std))


def jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return str(v)
