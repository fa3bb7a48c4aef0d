"""The textmoco objective as a sentence-transformers loss, for ``SentenceTransformerTrainer``.

The loss owns the momentum (key) encoder — an EMA copy of the SentenceTransformer — and the negative queue, and
computes the loss with ``losses.compute_loss_from_embeddings``. Data: one text column (SimCSE-style: the same
sentence twice, dropout makes the views) or two columns (anchor, positive: q from the anchor, k from the positive).

Differences from the Accelerate recipe, by necessity of the Trainer API: the EMA step runs at the start of each
forward (i.e. after the previous optimizer step) and the queue advances once per forward (per micro-batch under
gradient accumulation; a forward's keys enter the queue at the next forward, after its backward); sample ids for the id guard are a hash of the token ids (duplicates share an id).

Checkpoints: the Trainer saves the model, not the loss. Pass ``callbacks=[loss.checkpoint_callback()]`` and every
Trainer checkpoint also gets ``textmoco_loss.safetensors`` (queue, key encoder, step count, the keys waiting to be
enqueued); ``trainer.train(resume_from_checkpoint=...)`` then restores them, so a resumed run continues with the same
negatives and EMA teacher instead of an empty queue and a key encoder copied from the query.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .config import ObjectiveConfig
from .losses import compute_loss_from_embeddings, stats_to_floats
from .momentum import ema_update, momentum_at
from .queue import NegativeQueue

CITATION = """@article{hoang2025momentum,
  title={Momentum Contrastive Learning with Enhanced Negative Sampling and Hard Negative Filtering},
  author={Hoang, Duy and Ngo, Huy and Pham, Khoi and Nguyen, Tri and Bao, Gia and Phan, Huy},
  journal={arXiv preprint arXiv:2501.16360},
  year={2025}
}"""


def token_ids_hash(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, T) token ids -> (B,) int64 id, equal for equal token sequences (padding ignored)."""
    ids = input_ids.long()
    if attention_mask is not None:
        ids = ids * attention_mask.long()
    weights = torch.arange(1, ids.shape[1] + 1, device=ids.device, dtype=torch.long) * 1_000_003 + 7
    return ((ids + 1) * weights).sum(dim=1) % (2 ** 62)


class TextMoCoLoss(nn.Module):
    """sentence-transformers loss: ``TextMoCoLoss(model, objective=ObjectiveConfig(), queue_size=4096, ...)``.

    Args:
        model: the SentenceTransformer being trained (query encoder).
        objective: the loss settings (temperature, dual-view, selection, guard); defaults as the recipes.
        queue_size / queue_dtype: the negative queue.
        momentum / momentum_schedule / total_steps: EMA of the key encoder; with ``momentum_schedule='cosine'``
            ``total_steps`` (the Trainer's max_steps) is required to raise m to 1.
    """

    def __init__(self, model: nn.Module, objective: Optional[ObjectiveConfig] = None, queue_size: int = 4096,
                 queue_dtype: str = "float32", momentum: float = 0.995, momentum_schedule: str = "constant",
                 total_steps: Optional[int] = None):
        super().__init__()
        if momentum_schedule == "cosine" and not total_steps:
            raise ValueError("momentum_schedule='cosine' needs total_steps (the Trainer's max_steps)")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum={momentum!r} is invalid: momentum must be in [0, 1]")
        self.model = model
        self.objective = objective or ObjectiveConfig()
        self.key_model = copy.deepcopy(model)
        for p in self.key_model.parameters():
            p.requires_grad_(False)
        dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") \
            else model.get_sentence_embedding_dimension()  # sentence-transformers < 6 name
        self.queue = NegativeQueue(queue_size, dim, queue_dtype)
        self.momentum, self.momentum_schedule, self.total_steps = momentum, momentum_schedule, total_steps
        self.steps = 0
        self._pending: Optional[tuple] = None  # (keys, ids, finite flag as a device tensor)
        self._last_stats: dict = {}

    def _embed(self, module: nn.Module, features: dict) -> torch.Tensor:
        return F.normalize(module(dict(features))["sentence_embedding"].float(), dim=-1)

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: Any = None) -> torch.Tensor:
        features = list(sentence_features)
        anchor, positive = features[0], features[1] if len(features) > 1 else features[0]
        if self.queue.device != anchor["input_ids"].device:
            self.queue.to(anchor["input_ids"].device)
        if self.training and self.steps > 0:  # the previous step's backward is done: EMA, then enqueue its keys
            m = momentum_at(self.steps, self.total_steps or 0, self.momentum, self.momentum_schedule)
            ema_update(self.key_model, self.model, m)
            if self._pending is not None and bool(self._pending[2]):  # the previous step is done: no stall
                self.queue.enqueue(*self._pending[:2])
            self._pending = None
        ids = token_ids_hash(anchor["input_ids"], anchor.get("attention_mask"))
        q = self._embed(self.model, anchor)
        with torch.no_grad():
            self.key_model.train(self.model.training)
            k = self._embed(self.key_model, positive)
        filter_active = self.queue.is_full if self.objective.filter_warmup_steps is None \
            else self.steps >= self.objective.filter_warmup_steps
        out = compute_loss_from_embeddings(q, k, ids, self.queue.negatives(), self.objective, filter_active)
        if self.training:  # enqueued at the next forward: the queue tensors are needed by this backward
            self._pending = (k, ids, torch.isfinite(out.loss.detach()))  # read at the next step, not now
            self.steps += 1
        self._last_stats = out.stat_tensors
        return out.loss

    @property
    def last_stats(self) -> dict:
        """Floats of the last forward's stats (loss, loss_q2k, pos_cos, neg_cos, kept_fraction, ...)."""
        return stats_to_floats(self._last_stats)

    # ------------------------------------------------------------------ checkpoints
    def save_state(self, directory: str) -> str:
        """Write queue, key encoder, step count and pending keys to ``directory/textmoco_loss.safetensors``."""
        from safetensors.torch import save_file

        tensors = {f"queue.{k}": v for k, v in self.queue.storage_tensors().items()}
        tensors["queue.counters"] = torch.tensor([self.queue.ptr, self.queue.num_enqueued, self.steps])
        tensors.update({f"key_model.{k}": v.detach().cpu().contiguous()
                        for k, v in self.key_model.state_dict().items()})
        if self._pending is not None and bool(self._pending[2]):
            tensors["pending.keys"] = self._pending[0].detach().float().cpu().contiguous()
            tensors["pending.ids"] = self._pending[1].detach().cpu()
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, LOSS_STATE_FILE)
        save_file(tensors, path)
        return path

    def load_state(self, directory: str) -> None:
        """Restore what :meth:`save_state` wrote (same queue_size and model)."""
        from safetensors.torch import load_file

        path = os.path.join(directory, LOSS_STATE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist: the checkpoint was saved without "
                                    "callbacks=[loss.checkpoint_callback()]")
        t = load_file(path)
        ptr, num_enqueued, steps = (int(v) for v in t["queue.counters"])
        self.queue.load_state_dict({"keys": t["queue.keys"], "ids": t["queue.ids"], "filled": t["queue.filled"],
                                    "ptr": ptr, "num_enqueued": num_enqueued})
        prefix = "key_model."
        self.key_model.load_state_dict({k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)})
        device = next(self.model.parameters()).device
        self.key_model.to(device)
        self.steps = steps
        self._pending = ((t["pending.keys"].to(device), t["pending.ids"].to(device), torch.tensor(True))
                         if "pending.keys" in t else None)

    def checkpoint_callback(self):
        """A ``transformers.TrainerCallback`` that saves this loss's state into every Trainer checkpoint and loads
        it back when training resumes from one (``trainer.train(resume_from_checkpoint=...)``)."""
        return _make_checkpoint_callback(self)

    def get_config_dict(self) -> dict:
        return {**self.objective.to_dict(), "queue_size": self.queue.size, "queue_dtype": self.queue.dtype_name,
                "momentum": self.momentum, "momentum_schedule": self.momentum_schedule}

    @property
    def citation(self) -> str:
        return CITATION


LOSS_STATE_FILE = "textmoco_loss.safetensors"


def _checkpoint_dir(args: Any, state: Any) -> str:
    return os.path.join(args.output_dir, f"checkpoint-{state.global_step}")


def _make_checkpoint_callback(loss: "TextMoCoLoss"):
    """See :meth:`TextMoCoLoss.checkpoint_callback`. The Trainer tells callbacks neither the checkpoint it resumed
    from nor where it saves, but both are ``output_dir/checkpoint-{global_step}``; a resume from elsewhere (a
    ``resume_from_checkpoint`` outside ``output_dir``) is reported by an error instead of silently starting over."""
    from transformers import TrainerCallback

    class TextMoCoCheckpointCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.global_step > 0 and loss.steps == 0:  # resumed: the Trainer restored global_step
                directory = _checkpoint_dir(args, state)
                if not os.path.isfile(os.path.join(directory, LOSS_STATE_FILE)):
                    raise FileNotFoundError(
                        f"resuming at step {state.global_step} but {directory}/{LOSS_STATE_FILE} does not exist "
                        "(resume from a checkpoint in output_dir saved with loss.checkpoint_callback())")
                loss.load_state(directory)

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                loss.save_state(_checkpoint_dir(args, state))

    return TextMoCoCheckpointCallback()
