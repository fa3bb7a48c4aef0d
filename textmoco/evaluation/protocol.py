"""The one evaluation protocol every recipe uses (the shape of sentence-transformers' ``BaseEvaluator``).

An evaluator is called with a model and returns a flat ``{metric name: value}`` dict; ``primary_metric`` names its
headline figure and ``headline(scores)`` keeps the figures that tables and model cards show (per-subset or
bookkeeping entries dropped). Three implement it:

- :class:`~textmoco.evaluation.sts_suite.STSSuiteEvaluator`: STS12-16 + STS-B, Spearman x100 (``sts_avg``);
- :class:`~textmoco.evaluation.retrieval.RetrievalEvaluator`: nDCG@10, MRR@10, Recall@1/10/100 x100 (``ndcg@10``);
- :class:`~textmoco.evaluation.probe.ProbeEvaluator`: linear probe and kNN top-1 on frozen features
  (``linear_probe``).

:func:`run_metrics` turns one evaluator's scores before and after training (and any baselines) into the
``metrics`` record of results.json and the model card, named the same way by every recipe::

    metrics = run_metrics(evaluator, after, before, baselines={"bm25": bm25_scores})
    # {"<prefix>ndcg@10": ..., "<prefix>ndcg@10_before": ..., "bm25_<prefix>ndcg@10": ..., ...}

where ``<prefix>`` is ``evaluator.name + "_"`` when the evaluator has a name (the retrieval split), else empty.
The same names serve the evaluation during training (:func:`periodic_evaluation`, the recipes' ``--eval_every``)
and sentence-transformers' trainer (:func:`as_sentence_evaluator`).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Protocol, runtime_checkable


@runtime_checkable
class Evaluator(Protocol):
    """``evaluator(model) -> {metric: value}``; ``primary_metric`` is one of the keys; ``headline(scores)`` the
    subset to tabulate; ``name`` (may be empty) prefixes the names in :func:`run_metrics`."""

    name: str
    primary_metric: str

    def __call__(self, model: Any) -> dict[str, float]: ...

    def headline(self, scores: Mapping[str, Any]) -> dict[str, float]: ...


def _prefixed(evaluator: Evaluator, scores: Mapping[str, Any], suffix: str = "", prefix: str = "") -> dict:
    name = f"{evaluator.name}_" if evaluator.name else ""
    return {f"{prefix}{name}{k}{suffix}": v for k, v in scores.items()}


def run_metrics(evaluator: Evaluator, after: Optional[Mapping[str, Any]], before: Optional[Mapping[str, Any]] = None,
                baselines: Optional[Mapping[str, Optional[Mapping[str, Any]]]] = None) -> dict[str, Any]:
    """The run's metrics record: each baseline's headline figures as ``{baseline}_{metric}``, the start model's
    headline figures as ``{metric}_before``, then every figure after training as ``{metric}`` (names prefixed by
    ``evaluator.name``). Missing parts (None) are left out."""
    out: dict[str, Any] = {}
    for label, scores in (baselines or {}).items():
        if scores:
            out.update(_prefixed(evaluator, evaluator.headline(scores), prefix=f"{label}_"))
    if before:
        out.update(_prefixed(evaluator, evaluator.headline(before), suffix="_before"))
    if after:
        out.update(_prefixed(evaluator, after))
    return out


def periodic_evaluation(evaluator: Evaluator, every: int, option: str = "every", **call_kwargs: Any):
    """A :class:`~textmoco.trainer.MoCoTrainer` callback that evaluates the query encoder every ``every`` optimizer
    steps (0 = never) on the main process and adds the evaluator's headline figures to that step's metrics row
    (metrics.jsonl, the training-curve plot), named as in :func:`run_metrics`. The global RNG state is restored
    afterwards, so a run evaluated along the way trains exactly as one that is not (and resumes exactly).
    ``option`` names ``every`` in the error for a bad value (the recipe's option). ``callback.scores_at(step)``
    gives the full scores of the evaluation at ``step`` if it was the last one (None otherwise), so a recipe can
    reuse the final step's evaluation instead of repeating it."""
    import torch

    if not isinstance(every, int) or every < 0:
        raise ValueError(f"{option}={every!r} is invalid: it must be an integer >= 0 (0 = no evaluation during "
                         "training)")

    last: dict = {}  # the latest evaluation: {"step", "scores"}

    def callback(trainer, step: int) -> Optional[dict]:
        if not every or step % every or not trainer.accelerator.is_main_process:
            return None
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            scores = evaluator(trainer.unwrapped.encoder, **call_kwargs)
        last.update(step=step, scores=scores)
        return _prefixed(evaluator, evaluator.headline(scores))

    callback.scores_at = lambda step: last["scores"] if last.get("step") == step else None
    callback.logs_step = lambda step: bool(every) and step % every == 0  # the trainer logs these steps too
    return callback


def curve_metrics(evaluator: Evaluator, metrics: Optional[list[str]] = None) -> list[str]:
    """The metrics-row names (as :func:`periodic_evaluation` writes them) of ``metrics`` (default: the primary
    metric), for the training-curve plot's evaluation panel."""
    return list(_prefixed(evaluator, dict.fromkeys(metrics or [evaluator.primary_metric])))


def _st_base_evaluator():
    try:  # sentence-transformers >= 6
        from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.evaluation import SentenceEvaluator as BaseEvaluator
    return BaseEvaluator


def as_sentence_evaluator(evaluator: Evaluator, scale: float = 0.01):
    """``evaluator`` as a sentence-transformers evaluator, for ``SentenceTransformerTrainer(evaluator=...)`` (e.g.
    with :class:`textmoco.TextMoCoLoss`): called with the SentenceTransformer being trained, it returns the
    headline figures named as in :func:`run_metrics` (the trainer adds ``eval_``) times ``scale`` (default 0.01:
    the STS and retrieval figures are x100, sentence-transformers' own evaluators report fractions), its
    ``primary_metric`` is the evaluator's, and the figures reach the model card's evaluation results.

        trainer = SentenceTransformerTrainer(model=model, loss=TextMoCoLoss(model), train_dataset=data,
                                             evaluator=as_sentence_evaluator(STSSuiteEvaluator(senteval_dir)))
    """
    base = _st_base_evaluator()

    class TextMoCoEvaluator(base):
        def __init__(self):
            super().__init__()
            self.evaluator = evaluator
            self.name = evaluator.name
            self.primary_metric = curve_metrics(evaluator)[0]

        def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
            scores = evaluator.headline(evaluator(model))
            metrics = {k: float(v) * scale for k, v in _prefixed(evaluator, scores).items()}
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

        @property
        def description(self) -> str:
            return type(evaluator).__name__

    return TextMoCoEvaluator()
