"""Modality-agnostic export helpers: a plain model card, atomic JSON, push to the Hugging Face Hub.

The native model files are written by each encoder's ``export`` (text: a sentence-transformers directory;
vision: ``save_pretrained``); these helpers add the README and upload the folder (the text and vision cards made
with their libraries' own machinery are in model_cards.py).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional

PAPER_BIBTEX = """@misc{hoang2025momentum,
  title         = {Momentum Contrastive Learning with Enhanced Negative Sampling and Hard Negative Filtering},
  author        = {Hoang, Duy and Ngo, Huy and Pham, Khoi and Nguyen, Tri and Bao, Gia and Phan, Huy},
  year          = {2025},
  eprint        = {2501.16360},
  archivePrefix = {arXiv},
  primaryClass  = {cs.LG},
  url           = {https://arxiv.org/abs/2501.16360}
}"""

STSB_BIBTEX = """@inproceedings{cer-etal-2017-semeval,
  title     = {{S}em{E}val-2017 Task 1: Semantic Textual Similarity Multilingual and Crosslingual Focused Evaluation},
  author    = {Cer, Daniel and Diab, Mona and Agirre, Eneko and Lopez-Gazpio, I{\\~n}igo and Specia, Lucia},
  booktitle = {Proceedings of the 11th International Workshop on Semantic Evaluation (SemEval-2017)},
  year      = {2017},
  address   = {Vancouver, Canada},
  publisher = {Association for Computational Linguistics},
  pages     = {1--14},
  doi       = {10.18653/v1/S17-2001}
}"""

_MODALITY_META = {
    "text": ("sentence-transformers", ["sentence-transformers", "sentence-similarity", "feature-extraction"],
             "sentence-similarity"),
    "image": ("transformers", ["vision", "image-feature-extraction"], "image-feature-extraction"),
}
_MODALITY_META["vision"] = _MODALITY_META["image"]


def save_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> str:
    """Write ``obj`` as JSON atomically: a temp file in the same directory, fsync, then ``os.replace``.

    A crash leaves either the old file or the new one, never a truncated file. Returns the path.
    """
    path = str(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            try:
                json.dump(obj, f, indent=indent, ensure_ascii=False)
            except TypeError as e:
                raise TypeError(f"save_json({path!r}): object is not JSON-serialisable ({e}); convert it to "
                                "dict/list/str/number first") from None
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        make_readable(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(path: str | os.PathLike) -> None:
    """Give a file the mode an ordinary ``open(path, "w")`` would (0666 minus the umask): ``tempfile.mkstemp``
    creates 0600 files, which an atomic write would otherwise leave unreadable to the group/others."""
    os.chmod(path, 0o666 & ~_umask())


def flatten_metrics(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics -> one level, names joined by "/" (``{"sts": {"avg": 1}}`` -> ``{"sts/avg": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, prefix=f"{name}/"))
        else:
            out[name] = value
    return out


def format_metric(value: Any) -> str:
    """A card table cell: 2 decimals from 1 up, 4 below, ints and non-numbers as they are ("|" escaped)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value).replace("|", "\\|")
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.4f}"


def _yaml_scalar(value: str) -> str:
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid YAML scalar


def _config_block(config: Mapping[str, Any]) -> str:
    return "```json\n" + json.dumps(dict(config), indent=2, default=str, ensure_ascii=False) + "\n```"


def write_model_card(output_dir: str | os.PathLike, *, title: str, base_model: Optional[str],
                     metrics: Mapping[str, Any], train_config: Mapping[str, Any],
                     objective_config: Mapping[str, Any], modality: str, usage_snippet: str,
                     license: Optional[str] = None, datasets: Optional[list[str]] = None,
                     library_name: Optional[str] = None) -> str:
    """Write ``output_dir/README.md`` (Hub model card) and return its path.

    Contents: YAML header (library_name, tags incl. ``textmoco``, base_model, pipeline_tag, optional license and
    datasets), a metrics table (nested dicts are flattened as ``a/b``), the training and objective
    configurations, a usage snippet, and the BibTeX of arXiv 2501.16360 - plus the STS Benchmark citation
    (Cer et al., 2017) when a metric name mentions STS or Spearman.

    Args:
        modality: ``"text"`` or ``"image"`` (alias ``"vision"``); picks library_name, tags and pipeline_tag.
        usage_snippet: Python code showing how to load and use the model (rendered as a code block).
        library_name: overrides the modality default (``sentence-transformers`` / ``transformers``).
    """
    if modality not in _MODALITY_META:
        raise ValueError(f"modality={modality!r} is not supported; use one of {sorted(_MODALITY_META)}")
    default_library, modality_tags, pipeline_tag = _MODALITY_META[modality]
    flat_metrics = flatten_metrics(metrics)
    has_sts = any("sts" in k.lower() or "spearman" in k.lower() for k in flat_metrics)

    tags = ["textmoco", "moco", "contrastive-learning", *modality_tags]
    header = ["---", f"library_name: {_yaml_scalar(library_name or default_library)}",
              f"pipeline_tag: {_yaml_scalar(pipeline_tag)}", "tags:"]
    header += [f"- {_yaml_scalar(t)}" for t in tags]
    if base_model:
        header.append(f"base_model: {_yaml_scalar(base_model)}")
    if license:
        header.append(f"license: {_yaml_scalar(license)}")
    if datasets:
        header.append("datasets:")
        header += [f"- {_yaml_scalar(d)}" for d in datasets]
    header.append("---")

    parts = ["\n".join(header), f"# {title}",
             f"A {modality} embedding model trained with [textmoco](https://arxiv.org/abs/2501.16360): a MoCo-style "
             "contrastive objective (momentum encoder, negative queue) with a dual-view loss and selective "
             "hard-negative sampling" + (f", starting from `{base_model}`." if base_model else ".")]
    parts.append("## Usage\n\n```python\n" + usage_snippet.strip("\n") + "\n```")
    if flat_metrics:
        rows = "\n".join(f"| {k} | {format_metric(v)} |" for k, v in flat_metrics.items())
        parts.append("## Evaluation\n\n| Metric | Value |\n|---|---|\n" + rows)
        if has_sts:
            parts.append("STS metrics are Spearman / Pearson correlations (x100) between cosine similarities and "
                         "gold scores on the STS Benchmark (scores: CC BY-SA 4.0; each text source keeps its own "
                         "terms).")
    parts.append("## Training configuration\n\n" + _config_block(train_config))
    parts.append("## Objective\n\n" + _config_block(objective_config))
    citation = "## Citation\n\n```bibtex\n" + PAPER_BIBTEX + "\n```"
    if has_sts:
        citation += "\n\nSTS Benchmark:\n\n```bibtex\n" + STSB_BIBTEX + "\n```"
    parts.append(citation)

    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(str(output_dir), "README.md")
    Path(path).write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path


def push_to_hub(output_dir: str | os.PathLike, repo_id: str, private: bool = False, token: Optional[str] = None,
                commit_message: str = "Upload textmoco model") -> str:
    """Create ``repo_id`` on the Hub if needed (``exist_ok=True``) and upload ``output_dir``; returns the repo URL.

    ``token=None`` uses the cached login / ``HF_TOKEN``. The token is never printed, logged or written.
    """
    output_dir = str(output_dir)
    if not os.path.isdir(output_dir) or not os.listdir(output_dir):
        raise ValueError(f"nothing to upload: {output_dir!r} is not a non-empty directory; export the model first")
    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"repo_id={repo_id!r} is not valid; use 'name' or 'user_or_org/name'")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    # training artefacts (checkpoints with optimizer state, temp files) stay local
    api.upload_folder(folder_path=output_dir, repo_id=repo_id, repo_type="model", commit_message=commit_message,
                      ignore_patterns=["checkpoints/*", "checkpoints/**", ".tmp-*", "*.tmp-*"])
    return str(repo_url)
