"""The textmoco objective as a sentence-transformers loss, for ``SentenceTransformerTrainer``.

Queue, key (EMA) encoder, step count, momentum schedule and filter warm-up live in one
:class:`~textmoco.momentum_contrast.MomentumContrast`, the same object the Accelerate loop (``MoCoTrainer``) uses.
The loss attaches itself to the Trainer that calls it (at its first training forward) and from then on:

- only a *training* forward (gradients enabled and the model in training mode) adds keys to the step's pending
  keys; evaluation forwards compute the loss against the queue and touch nothing;
- at the end of each optimizer step (``TrainerCallback.on_step_end``: once per step whatever
  ``gradient_accumulation_steps``) the key encoder takes its EMA step with the momentum of
  ``state.global_step`` of ``state.max_steps`` and the step's keys/ids (all micro-batches, all processes) enter the
  queue;
- every Trainer checkpoint also holds ``textmoco_state.safetensors`` (queue, key encoder, step count) and
  ``trainer.train(resume_from_checkpoint=...)`` restores it; a resumed run without that file is an error, not a
  silent restart with an empty queue.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import KEY_MODES, ObjectiveConfig
from .export import PAPER_BIBTEX
from .losses import compute_moco_loss, stats_to_floats
from .model import MoCoOutput
from .momentum_contrast import STATE_FILE, MomentumContrast
from .queue import NegativeQueue
from .st_trainer_glue import calling_resume_path, calling_trainer, callback_class, token_ids_hash

LOSS_STATE_FILE = STATE_FILE  # the file each Trainer checkpoint gets


def _embedding_dim(model: nn.Module) -> int:
    get = getattr(model, "get_embedding_dimension", None) or getattr(model, "get_sentence_embedding_dimension")
    return int(get())


class TextMoCoLoss(nn.Module):
    def __init__(self, model: nn.Module, temperature: float = 0.05, dual_weight: float = 0.5,
                 key_negatives: str = "batch+queue", selection: str = "top_k", top_k: int = 512,
                 top_fraction: float = 0.125, min_similarity: float = 0.3, n_random: int = 0,
                 id_guard: bool = True, guard_threshold: Optional[float] = 0.9,
                 filter_warmup_steps: Optional[int] = None, queue_size: int = 4096, queue_dtype: str = "float32",
                 momentum: float = 0.995, momentum_schedule: str = "cosine", gather_across_devices: bool = True,
                 dual_mode: str = "weighted", batch_negatives: bool = False, key_mode: str = "train"):
        """
        Momentum contrast with a dual-view loss and selective hard negatives (arXiv 2501.16360): the query
        encoder is the trained ``model``; keys come from an EMA copy of it (the key encoder) and past keys are
        kept in a queue of ``queue_size`` negatives. The loss is ``(1 - dual_weight) * L_q2k + dual_weight *
        L_k2q``: InfoNCE of each query against its key and the queue, plus the key-anchored term (each key
        against its query, the other queries of the global batch and the queue). Once the queue has been full
        (or after ``filter_warmup_steps``) only the hardest queue negatives are kept (``selection``) and
        probable false negatives (cosine above ``guard_threshold``, or the anchor's own sentence) are dropped.

        The loss attaches a callback to the ``SentenceTransformerTrainer`` that runs it: EMA update and enqueue
        happen once per optimizer step with the momentum schedule read from the Trainer's state, and queue and
        key encoder are saved into / restored from the Trainer's checkpoints. Evaluation never changes them.

        Args:
            model: the SentenceTransformer to train (query encoder).
            temperature: softmax temperature (> 0).
            dual_weight: weight of the key-anchored term in [0, 1]; 0 is plain MoCo.
            key_negatives: negatives of the key-anchored term: ``"batch+queue"``, ``"queue"`` or ``"batch"``.
            selection: hard-negative rule on queue slots: ``"none"``, ``"top_k"``, ``"top_fraction"`` or
                ``"min_similarity"``; ``top_k`` / ``top_fraction`` / ``min_similarity`` are its parameter.
            n_random: random easy negatives added back per anchor.
            id_guard: drop queue slots holding the anchor's own sentence (same token ids).
            guard_threshold: drop queue slots with cosine above this as probable false negatives (None = off).
            filter_warmup_steps: optimizer steps without selection / threshold guard (None = until the queue
                has been full once).
            queue_size: number of past keys kept as negatives.
            queue_dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
            momentum: EMA momentum of the key encoder at step 0, in [0, 1].
            momentum_schedule: ``"cosine"`` (raised to 1 over the Trainer's ``max_steps``) or ``"constant"``.
            gather_across_devices: under several processes, gather the other processes' queries for the
                key-anchored term's batch negatives (keys and ids for the queue are always gathered, so every
                process holds the same queue).
            batch_negatives: the (gathered) batch's other keys join each query's negatives besides the queue
                (MoCo: the queue only).
            key_mode: ``"train"`` (the key encoder's passes with dropout, like the query's: MoCo) or ``"eval"``
                (no dropout: deterministic keys, a cheaper pass; for pairs, whose two texts differ anyway).
            dual_mode: only ``"weighted"``; the symmetric variant of the Accelerate recipes needs a second query
                forward of swapped views and is rejected here.

        References:
            - Momentum Contrastive Learning with Enhanced Negative Sampling and Hard Negative Filtering:
              https://arxiv.org/abs/2501.16360
            - MoCo, Momentum Contrast for Unsupervised Visual Representation Learning: https://arxiv.org/abs/1911.05722

        Requirements:
            1. Single sentences (SimCSE-style: dropout makes the two views) or (anchor, positive) pairs.
            2. Use it with ``SentenceTransformerTrainer`` (the EMA and queue advance at its optimizer steps).

        Inputs:
            +---------------------------------------+--------+
            | Texts                                 | Labels |
            +=======================================+========+
            | (text) single sentences               | none   |
            +---------------------------------------+--------+
            | (anchor, positive) pairs              | none   |
            +---------------------------------------+--------+

        Relations:
            - :class:`~sentence_transformers.sentence_transformer.losses.MultipleNegativesRankingLoss` uses only the
              current (global) batch as negatives; this loss adds a queue of past keys from a slowly moving key
              encoder, so the number of negatives does not depend on the batch size.
            - :class:`~sentence_transformers.sentence_transformer.losses.CachedMultipleNegativesRankingLoss` gets
              many negatives by a large batch with gradient caching; the queue gets them at the cost of a
              forward of the key encoder only.
            - :class:`~sentence_transformers.sentence_transformer.losses.GISTEmbedLoss` drops false negatives with
              a guide model; this loss drops them with the key encoder's similarity (``guard_threshold``) and the
              sentence identity (``id_guard``).

        Example:
            ::

                from datasets import Dataset
                from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
                import textmoco

                model = SentenceTransformer(textmoco.default_text_model())
                train_dataset = Dataset.from_dict({"text": ["It's nice weather outside today.", "He drove to work."]})
                loss = textmoco.TextMoCoLoss(model, queue_size=1024)
                trainer = SentenceTransformerTrainer(model=model, train_dataset=train_dataset, loss=loss)
                trainer.train()
        """
        super().__init__()
        if dual_mode != "weighted":
            raise ValueError(f"dual_mode={dual_mode!r} is not supported by TextMoCoLoss (only 'weighted'); "
                             "use the Accelerate recipe (recipes/train_text.py --dual_mode symmetric) for it")
        self.objective = ObjectiveConfig(temperature=temperature, dual_weight=dual_weight, dual_mode="weighted",
                                         key_negatives=key_negatives, selection=selection, top_k=top_k,
                                         top_fraction=top_fraction, min_similarity=min_similarity,
                                         n_random=n_random, id_guard=id_guard, guard_threshold=guard_threshold,
                                         filter_warmup_steps=filter_warmup_steps, batch_negatives=batch_negatives)
        if key_mode not in KEY_MODES:  # the same choices as TrainConfig.key_mode
            raise ValueError(f"key_mode={key_mode!r} is invalid: must be one of {', '.join(map(repr, KEY_MODES))}")
        self.key_mode = key_mode
        self.model = model
        self.key_model = copy.deepcopy(model)
        for p in self.key_model.parameters():
            p.requires_grad_(False)
        self.gather_across_devices = bool(gather_across_devices)
        self.moco = MomentumContrast(model, self.key_model, NegativeQueue(queue_size, _embedding_dim(model),
                                                                          queue_dtype),
                                     momentum, momentum_schedule, filter_warmup_steps)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # this step's (keys, ids, ok)
        self._trainer: Any = None
        self._callback: Any = None
        self._last_stats: dict = {}

    # ------------------------------------------------------------------ the state, for users and tests
    @property
    def queue(self) -> NegativeQueue:
        return self.moco.queue

    @property
    def steps(self) -> int:
        """Optimizer steps the key encoder and queue have taken."""
        return self.moco.step

    @property
    def last_stats(self) -> dict:
        """Floats of the last forward's stats (loss, loss_q2k, loss_k2q, pos_cos, neg_cos, kept_fraction)."""
        return stats_to_floats(self._last_stats)

    # ------------------------------------------------------------------ forward
    def _embed(self, module: nn.Module, features: dict) -> torch.Tensor:
        return F.normalize(module(dict(features))["sentence_embedding"].float(), dim=-1)

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]],
                labels: Any = None) -> dict[str, torch.Tensor]:
        features = list(sentence_features)
        anchor, positive = features[0], features[1] if len(features) > 1 else features[0]
        training = torch.is_grad_enabled() and self.model.training
        if training and self._trainer is None:
            self._attach(calling_trainer())
        if self.queue.device != anchor["input_ids"].device:
            self.queue.to(anchor["input_ids"].device)
        ids = token_ids_hash(anchor["input_ids"], anchor.get("attention_mask"))
        q = self._embed(self.model, anchor)
        with torch.no_grad():
            self.key_model.train(self.model.training and self.key_mode == "train")
            k = self._embed(self.key_model, positive)
        out = compute_moco_loss(MoCoOutput(q, k), ids, self.queue.negatives(), self.objective,
                                self.moco.filter_active(), gather=training and self.gather_across_devices)
        if training:  # enqueued at the end of the optimizer step, after every micro-batch's backward
            self._pending.append((k.detach(), ids, torch.isfinite(out.loss.detach())))
        self._last_stats = out.stat_tensors
        # components for the Trainer's logs; they sum to the loss (the second carries the whole gradient)
        if "loss_k2q" in out.stat_tensors:
            q2k = (1.0 - self.objective.dual_weight) * out.stat_tensors["loss_q2k"]
            return {"loss_q2k": q2k, "loss_k2q": out.loss - q2k}
        return {"loss_q2k": out.loss}

    # ------------------------------------------------------------------ the Trainer side
    def _attach(self, trainer: Any) -> None:
        if trainer is None:
            raise RuntimeError("TextMoCoLoss is training outside a transformers Trainer: the queue and the key "
                               "encoder advance at the Trainer's optimizer steps. Use SentenceTransformerTrainer, or "
                               "call loss.on_optimizer_step(global_step, max_steps) after each optimizer step")
        self._trainer = trainer
        if not any(isinstance(cb, callback_class()) and cb.loss is self for cb in trainer.callback_handler.callbacks):
            trainer.add_callback(self.checkpoint_callback())
        state = trainer.state
        if state.global_step > 0 and self.moco.step != state.global_step:
            self._resume(trainer.args.output_dir, state.global_step, calling_resume_path(trainer))

    def _resume(self, output_dir: str, global_step: int, checkpoint: Optional[str]) -> None:
        directory = checkpoint or os.path.join(output_dir, f"checkpoint-{global_step}")
        if not os.path.isfile(os.path.join(directory, LOSS_STATE_FILE)):
            raise FileNotFoundError(
                f"resuming at step {global_step} but {os.path.join(directory, LOSS_STATE_FILE)} does not exist: the "
                "checkpoint holds no TextMoCoLoss queue and key encoder, and training on would restart them "
                "silently. Resume from a checkpoint saved by a run that used this loss")
        self.moco.load(directory)
        device = next(self.model.parameters()).device
        self.key_model.to(device)
        self.queue.to(device)
        self._pending = []

    def on_optimizer_step(self, global_step: int, max_steps: int) -> float:
        """After optimizer step ``global_step`` (1-based) of ``max_steps``: EMA with its momentum, then enqueue the
        step's keys. The attached callback calls it; returns the momentum used."""
        pending, self._pending = self._pending, []
        ok = all(bool(p[2]) for p in pending)
        keys = torch.cat([p[0] for p in pending]) if pending else None
        ids = torch.cat([p[1] for p in pending]) if pending else None
        return self.moco.after_optimizer_step(keys, ids, max_steps, ok=ok, step=global_step - 1)

    def save_state(self, directory: str) -> str:
        """Write queue, key encoder and step count to ``directory/textmoco_state.safetensors``."""
        return self.moco.save(directory, include_key=True)

    def load_state(self, directory: str) -> None:
        self._resume("", 0, directory)

    def checkpoint_callback(self):
        """The ``TrainerCallback`` this loss attaches to its Trainer itself (passing it in ``callbacks`` is
        allowed and changes nothing): EMA + enqueue at ``on_step_end``, state into each checkpoint at ``on_save``."""
        if self._callback is None:
            self._callback = callback_class()(self)
        return self._callback

    # ------------------------------------------------------------------ sentence-transformers conventions
    def get_config_dict(self) -> dict[str, Any]:
        config = {k: v for k, v in self.objective.to_dict().items() if k != "dual_mode"}
        return {**config, "queue_size": self.queue.size, "queue_dtype": self.queue.dtype_name,
                "momentum": self.moco.momentum, "momentum_schedule": self.moco.momentum_schedule,
                "gather_across_devices": self.gather_across_devices, "key_mode": self.key_mode}

    @property
    def citation(self) -> str:
        return PAPER_BIBTEX
