"""Model cards of the exported models, each through its library's own card machinery: text through
sentence-transformers' ``generate_model_card`` (the loss, its citation and configuration, ``model-index`` STS
results), vision through ``huggingface_hub``'s ``ModelCard.from_template`` (linear probe and kNN as ``model-index``
results). ``hub_base_model`` names the base model by its Hub id, never by a local path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from . import DEFAULT_TEXT_MODEL_ID, default_text_model
from .export import PAPER_BIBTEX, flatten_metrics, format_metric

VISION_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

A vision backbone trained with [textmoco](https://arxiv.org/abs/2501.16360): a MoCo-style contrastive objective
(momentum encoder, negative queue) with a dual-view loss and selective hard-negative sampling{{ start }}.
It is a plain `transformers` model: the image embedding is {{ pooling_comment }}.

## Usage

```python
{{ usage }}
```

## Evaluation

Frozen features on {{ dataset_name }}: a logistic-regression linear probe and a weighted kNN classifier (k=200,
tau=0.1), top-1 accuracy on the test split.

| Metric | Value |
|---|---|
{% for name, value in metric_rows %}| {{ name }} | {{ value }} |
{% endfor %}
## Training configuration

```json
{{ train_config }}
```

## Objective

```json
{{ objective_config }}
```

## Citation

```bibtex
{{ citation }}
```
"""

# dataset option of the vision recipe -> (Hub dataset id or a name, readable name)
VISION_DATASETS = {"mnist5k": ("ylecun/mnist", "MNIST-5k (5000 MNIST digits, seeded 4000/1000 split)"),
                   "digits": ("digits", "scikit-learn's 8x8 digits (seeded 1437/360 split)")}
# metrics of the vision recipe's results.json that are model-index results: name -> readable task
VISION_EVAL_RESULTS = ("linear_probe", "knn")
VISION_EVAL_TASK = "Image classification from frozen features (linear probe, kNN)"


def write_vision_model_card(output_dir: str | os.PathLike, *, title: str, base_model: Optional[str],
                            metrics: Mapping[str, Any], dataset: str, usage_snippet: str, pooling_comment: str,
                            train_config: Mapping[str, Any], objective_config: Mapping[str, Any],
                            license: Optional[str] = "apache-2.0", test_split: str = "test") -> str:
    """``output_dir/README.md`` of an exported vision backbone through ``huggingface_hub``'s own card machinery
    (:class:`~huggingface_hub.ModelCardData` + :meth:`~huggingface_hub.ModelCard.from_template`): the linear-probe
    and kNN top-1 of ``metrics`` as ``model-index`` eval results, ``base_model`` (a Hub id or None — never a local
    path), license, tags, pipeline tag; the body shows how to embed an image (``usage_snippet``) and every metric.
    ``dataset``: the recipe's ``--dataset`` (mnist5k, digits, a Hub id; a local directory is named by its last
    component)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    if dataset in VISION_DATASETS:
        dataset_id, dataset_name = VISION_DATASETS[dataset]
    else:
        local = os.path.exists(dataset) or os.path.isabs(dataset)
        dataset_id = os.path.basename(os.path.normpath(dataset)) if local else dataset
        dataset_name = dataset_id
    hub_dataset = dataset_id.count("/") == 1 and not os.path.exists(dataset)
    results = [EvalResult(task_type="image-classification", task_name=VISION_EVAL_TASK, dataset_type=dataset_id,
                          dataset_name=dataset_name, dataset_split=test_split, metric_type="accuracy",
                          metric_name=f"{key.replace('_', ' ')} top-1", metric_value=round(float(metrics[key]), 4))
               for key in VISION_EVAL_RESULTS if isinstance(metrics.get(key), (int, float))]
    data = ModelCardData(model_name=title, base_model=base_model or None, license=license,
                         library_name="transformers", pipeline_tag="image-feature-extraction",
                         tags=["textmoco", "moco", "contrastive-learning", "vision", "image-feature-extraction"],
                         datasets=[dataset_id] if hub_dataset else None, eval_results=results or None)
    rows = [(k, format_metric(v)) for k, v in flatten_metrics(metrics).items()]
    card = ModelCard.from_template(
        data, template_str=VISION_CARD_TEMPLATE, model_name=title, usage=usage_snippet.strip("\n"),
        start=f", starting from `{base_model}`" if base_model else " (from scratch or a local backbone)",
        pooling_comment=pooling_comment, dataset_name=dataset_name, metric_rows=rows,
        train_config=json.dumps(dict(train_config), indent=2, default=str, ensure_ascii=False),
        objective_config=json.dumps(dict(objective_config), indent=2, default=str, ensure_ascii=False),
        citation=PAPER_BIBTEX)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(str(output_dir), "README.md")
    card.save(path)
    return path


def hub_base_model(name_or_path: Optional[str], override: Optional[str] = None) -> Optional[str]:
    """The Hub id for a card's ``base_model``, never a local path: ``override`` if given; the embedded default
    model -> ``sentence-transformers/all-MiniLM-L6-v2``; a name that is no local path (a Hub id) as is; any other
    local directory -> None (the card then names no base model)."""
    if override:
        return override
    if not name_or_path:
        return None
    try:
        default = os.path.realpath(default_text_model())
    except ImportError:
        default = None
    if os.path.exists(str(name_or_path)):
        return DEFAULT_TEXT_MODEL_ID if os.path.realpath(str(name_or_path)) == default else None
    return str(name_or_path)


def write_text_model_card(output_dir: str | os.PathLike, *, title: str, base_model: Optional[str],
                          loss_kwargs: Mapping[str, Any], sts_metrics: Optional[Mapping[str, float]] = None,
                          sts_name: str = "sts-test", sts_pairs: Optional[tuple] = None,
                          train_sentences: Optional[list[str]] = None, datasets: Optional[list[str]] = None,
                          license: str = "apache-2.0", language: Optional[str] = "en",
                          model_id: Optional[str] = None) -> str:
    """``output_dir/README.md`` generated by sentence-transformers' own model-card machinery for the exported text
    model in ``output_dir``: the evaluation as ``model-index`` (``sts_metrics``: ``{"pearson_cosine": x,
    "spearman_cosine": y}`` in [0, 1]), the loss (:class:`~textmoco.st_loss.TextMoCoLoss` with ``loss_kwargs``)
    with its citation and configuration, ``base_model`` (a Hub id or None), datasets, license, language."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.model_card import generate_model_card
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    from .st_loss import TextMoCoLoss

    output_dir = str(output_dir)
    model = SentenceTransformer(output_dir, device="cpu", local_files_only=True)
    data = model.model_card_data
    data.local_files_only = True  # no Hub look-ups while writing the card
    data.base_model = base_model
    data.set_license(license)
    if language:
        data.set_language(language)
    data.model_name = title
    if model_id:
        data.set_model_id(model_id)
    data.add_tags(["textmoco", "moco", "contrastive-learning"])
    import inspect

    accepted = inspect.signature(TextMoCoLoss.__init__).parameters  # options of the Accelerate path only (e.g.
    loss = TextMoCoLoss(model, **{k: v for k, v in dict(loss_kwargs).items() if k in accepted})  # guide) are left out
    data.set_losses([loss])
    if train_sentences:
        from datasets import Dataset

        meta = [{"name": d.split("/")[-1], "id": d} for d in (datasets or [])][:1]
        data.train_datasets = data.extract_dataset_metadata(Dataset.from_dict({"text": list(train_sentences)}),
                                                            meta, loss, "train")
    if datasets:
        data.datasets = list(datasets)
    if sts_metrics:
        s1, s2, scores = sts_pairs or (["a"], ["b"], [1.0])
        evaluator = EmbeddingSimilarityEvaluator(list(s1), list(s2), [float(x) for x in scores], name=sts_name)
        data.set_evaluation_metrics(evaluator, {f"{sts_name}_{k}": float(v) for k, v in sts_metrics.items()})
    data.save_dir = output_dir
    path = os.path.join(output_dir, "README.md")
    Path(path).write_text(generate_model_card(model), encoding="utf-8")
    return path
