"""Outside baselines run through sentence-transformers itself: in-batch MultipleNegativesRankingLoss (SimCSE-style,
each sentence paired with itself, dropout makes the views) and its cached (GradCache) variant."""
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


def train_in_batch_baseline(model_path: str, sentences: Sequence[str], output_dir: str, *, batch_size: int = 64,
                            max_steps: int = 150, lr: float = 2e-5, seed: int = 0, max_length: int = 32,
                            eval_max_length: int = 256, temperature: float = 0.05, cached: bool = False,
                            mini_batch_size: int = 16, warmup_ratio: float = 0.1, callbacks: Optional[list] = None):
    """Fine-tune ``model_path`` with (Cached)MultipleNegativesRankingLoss on (s, s) pairs; returns the model
    (``max_seq_length`` set back to ``eval_max_length`` for evaluation). ``temperature`` sets scale = 1/t."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, \
        SentenceTransformerTrainingArguments

    from .runs import st_device

    device = st_device()
    model = SentenceTransformer(model_path, device=device)
    model.max_seq_length = max_length
    losses = _losses()
    loss = (losses.CachedMultipleNegativesRankingLoss(model, scale=1 / temperature, mini_batch_size=mini_batch_size)
            if cached else losses.MultipleNegativesRankingLoss(model, scale=1 / temperature))
    data = Dataset.from_dict({"anchor": list(sentences), "positive": list(sentences)})
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=batch_size, max_steps=max_steps, learning_rate=lr,
        **warmup_arguments(warmup_ratio), seed=seed, data_seed=seed, save_strategy="no", report_to="none",
        logging_steps=max(1, max_steps // 10), dataloader_drop_last=True,
        use_cpu=device == "cpu", disable_tqdm=True)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss,
                               callbacks=callbacks).train()
    model.max_seq_length = eval_max_length
    return model
