"""Outside baselines run through sentence-transformers itself: MultipleNegativesRankingLoss, its cached
(GradCache) variant and GISTEmbedLoss on (anchor, positive) pairs (the retrieval recipe's ``--baseline``), and the
in-batch SimCSE-style form with each sentence paired with itself (dropout makes the views; the text studies)."""
from __future__ import annotations

from typing import Optional, Sequence


def _losses():
    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers import losses
    return losses


def warmup_arguments(ratio: float) -> dict:
    """The LR warm-up as a fraction of the steps, for (SentenceTransformer)TrainingArguments without a deprecated
    argument: transformers >= 5 takes the fraction as a float ``warmup_steps`` (``warmup_ratio`` is deprecated
    there); older versions take ``warmup_ratio``."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"warmup_steps": float(ratio)}
    return {"warmup_ratio": float(ratio)}


def train_pairs_baseline(loss_name: str, model_path: str, anchors: Sequence[str], positives: Sequence[str],
                         output_dir: str, *, batch_size: int = 64, max_steps: int = 150, lr: float = 2e-5,
                         seed: int = 0, max_length: int = 32, eval_max_length: int = 256, temperature: float = 0.05,
                         mini_batch_size: int = 16, warmup_ratio: float = 0.1, max_time_s: float = 0.0,
                         no_duplicates: bool = False, negatives: Optional[Sequence[Sequence[str]]] = None,
                         callbacks: Optional[list] = None):
    """Fine-tune ``model_path`` with sentence-transformers' own trainer and loss on (anchor, positive) pairs:
    ``loss_name`` 'mnrl' (MultipleNegativesRankingLoss, scale = 1/temperature), 'cached_mnrl' (its GradCache
    variant, ``mini_batch_size``) or 'gist' (GISTEmbedLoss, guide = the start model). Stops after ``max_steps``
    or ``max_time_s`` seconds of training (0 = no time limit); ``no_duplicates``: ST's batch sampler that keeps
    repeated texts out of one batch; ``negatives``: per pair its explicit negatives (columns ``negative_1`` ...,
    which the losses add to the in-batch ones). Returns (model with ``max_seq_length`` = ``eval_max_length``,
    steps, train seconds)."""
    import time

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, \
        SentenceTransformerTrainingArguments
    from transformers import TrainerCallback

    from .runs import st_device

    if loss_name not in ("mnrl", "cached_mnrl", "gist"):
        raise ValueError(f"baseline loss {loss_name!r} is invalid: use 'mnrl', 'cached_mnrl' or 'gist'")

    class TimeBudget(TrainerCallback):
        def __init__(self):
            self.start, self.steps = time.time(), 0

        def on_train_begin(self, *a, **k):
            self.start = time.time()

        def on_step_end(self, a, state, control, **k):
            self.steps = state.global_step
            if max_time_s and time.time() - self.start >= max_time_s:
                control.should_training_stop = True

    device = st_device()  # where Accelerate puts textmoco's runs
    model = SentenceTransformer(model_path, device=device)
    model.max_seq_length = max_length
    losses = _losses()
    if loss_name == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model, scale=1 / temperature)
    elif loss_name == "cached_mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(model, scale=1 / temperature, mini_batch_size=mini_batch_size)
    else:
        loss = losses.GISTEmbedLoss(model, SentenceTransformer(model_path, device=device), temperature=temperature)
    columns = {"anchor": list(anchors), "positive": list(positives)}
    for j, column in enumerate(zip(*negatives) if negatives else []):
        columns[f"negative_{j + 1}"] = list(column)
    data = Dataset.from_dict(columns)
    budget = TimeBudget()
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=batch_size, max_steps=max_steps, learning_rate=lr,
        **warmup_arguments(warmup_ratio), seed=seed, data_seed=seed, save_strategy="no", report_to="none",
        logging_steps=max(1, min(10, max_steps // 10)), dataloader_drop_last=True, use_cpu=device == "cpu",
        disable_tqdm=True, **({"batch_sampler": "no_duplicates"} if no_duplicates else {}))
    SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss,
                               callbacks=[budget, *(callbacks or [])]).train()
    model.max_seq_length = eval_max_length
    return model, budget.steps, time.time() - budget.start


def train_in_batch_baseline(model_path: str, sentences: Sequence[str], output_dir: str, *, cached: bool = False,
                            **kwargs):
    """SimCSE-style: (Cached)MultipleNegativesRankingLoss on (s, s) pairs, dropout makes the views (options as
    :func:`train_pairs_baseline`); returns the model."""
    return train_pairs_baseline("cached_mnrl" if cached else "mnrl", model_path, sentences, sentences, output_dir,
                                **kwargs)[0]
