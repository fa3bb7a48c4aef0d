"""MoCoTrainer: one Accelerate loop for every modality.

One optimizer step: for each micro-batch (inside ``accelerator.accumulate``) the model gives q, k; losses.py gives
the loss; backward. At the optimizer step: clip, step, LR schedule, EMA update of the key encoder, all-gather the
window's keys and ids and enqueue them, one metrics row. Nothing of the loss lives here.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.utils import gather_object, set_seed
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from transformers import get_scheduler

from . import checkpointing, distributed
from .config import ObjectiveConfig, QueueConfig, TrainConfig, check_together
from .encoders.base import move_to_device
from .finite_steps import check_finite_state, clip_and_step, on_skipped_step
from .losses import Guide, compute_moco_loss
from .model import MoCoModel
from .momentum_contrast import MomentumContrast
from .data.loader import (build_train_loader, check_dataset_size, load_loader_state,  # noqa: F401 (re-export)
                          loader_state, set_loader_epoch)
from .data.streaming import is_streaming
from .queue import NegativeQueue

QUEUE_FILE, STATE_FILE = checkpointing.QUEUE_FILE, checkpointing.STATE_FILE


def _finite_or_none(row: dict) -> dict:
    """Strict JSON: NaN/inf (e.g. neg_cos while the queue is empty) become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def adamw(param_groups: list[dict], lr: float, fused: bool = True) -> torch.optim.AdamW:
    """AdamW, by default with torch's fused kernel (one kernel for all parameters: on a 2-core CPU 0.013 s per step
    for MiniLM-L6 against 0.081 s for the per-tensor loop, the same update up to rounding), falling back to the
    per-tensor loop where the parameters' device has no fused kernel. The trainer passes ``fused=False`` under an
    fp16 gradient scaler: a fused step skips an overflow inside the kernel, so Accelerate's ``step_was_skipped``
    would not see it and the EMA and queue would move on a skipped step."""
    if fused:
        try:
            return torch.optim.AdamW(param_groups, lr=lr, fused=True)
        except (RuntimeError, ValueError):
            pass
    return torch.optim.AdamW(param_groups, lr=lr)


@dataclass
class _Window:
    """One accumulation window: its micro-batches' keys (B, D) and ids (B,), their stats (0-d device tensors), and
    what the optimizer step found (stepped, skipped by the fp16 scaler, keys all finite or None = not checked)."""
    keys: list = field(default_factory=list)
    ids: list = field(default_factory=list)
    stats: list = field(default_factory=list)
    ok: bool = True
    scaler_skip: bool = False
    keys_finite: Optional[bool] = None


@dataclass
class _FitClock:
    """What one ``fit`` call carries across optimizer steps: when it started (``elapsed_s``) and how many steps in
    a row were skipped (the ``max_consecutive_skips`` policy)."""
    started: float = field(default_factory=time.time)
    consecutive_skips: int = 0


class MoCoTrainer:
    def __init__(self, model: MoCoModel, train_dataset: Dataset, objective: ObjectiveConfig,
                 queue: QueueConfig, train: TrainConfig, accelerator: Optional[Accelerator] = None,
                 callbacks: Optional[list[Callable[["MoCoTrainer", int], Optional[dict]]]] = None,
                 guide: Optional[Guide] = None):
        """``callbacks``: called as ``cb(trainer, step)`` on every process after each optimizer step that is
        logged; a returned dict is merged into the metrics row (e.g. an evaluation during training). A callback with
        a ``logs_step(step) -> bool`` attribute (the same answer on every process) also has the steps it names
        logged (:func:`textmoco.evaluation.protocol.periodic_evaluation` does this). ``guide``: the start model's
        embeddings of the training samples by sample id (:func:`textmoco.guide.build_guide`), needed by
        ``objective.guide_threshold``."""
        if objective.guide_threshold is not None and guide is None:
            raise ValueError(f"guide_threshold={objective.guide_threshold} needs the guide's embeddings of the "
                             "training data: pass guide=textmoco.guide.build_guide(...) (the recipes do)")
        check_together(objective, train)
        self.objective, self.queue_cfg, self.cfg = objective, queue, train
        self.accelerator = accelerator or Accelerator(
            # a CPU torchrun job is only recognised as distributed with cpu=True
            cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1,
            mixed_precision=train.mixed_precision,
            gradient_accumulation_steps=train.gradient_accumulation_steps,
            log_with=train.report_to.split(",") if train.report_to else None,
            project_dir=train.output_dir,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=train.seed),
            # encoders may hold parameters the loss never uses (a BERT/ViT pooler under mean or cls pooling);
            # without this DDP stops at the second step. No effect on one process.
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        set_seed(train.seed)
        world = self.accelerator.num_processes
        if world != int(os.environ.get("WORLD_SIZE", world)):
            raise RuntimeError(f"launched with WORLD_SIZE={os.environ['WORLD_SIZE']} but Accelerate sees {world} "
                               "process(es); launch with torchrun or accelerate launch (--multi_gpu / "
                               "ACCELERATE_USE_CPU=true on CPU)")
        # map-style or streaming data, sample ids, size checks: all in data/loader.py
        loader = build_train_loader(train_dataset, model.encoder.collate, train, world, self.accelerator.process_index)
        self.streaming = is_streaming(loader.dataset)
        self.guide = None if guide is None or objective.guide_threshold is None else guide.to(self.accelerator.device)
        # key_encoder='query': momentum held at 0 (the copy = the query encoder); symmetric steps reuse the query passes
        # ('momentum_a': only view b's keys come from its query pass; view a's from the EMA copy)
        model.key_source = train.key_encoder
        model.symmetric = objective.dual_mode == "symmetric"  # the swapped pair is computed only when the loss uses it
        model.key_train_mode = train.key_mode == "train"
        momentum, momentum_schedule = (0.0, "constant") if train.key_encoder == "query" else \
            (train.momentum, train.momentum_schedule)
        if world > 1 and train.sync_batchnorm:  # before prepare/MomentumContrast: both branches, state kept
            distributed.convert_sync_batchnorm(model)
        decay = [p for p in model.query.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in model.query.parameters() if p.requires_grad and p.ndim <= 1]
        optimizer = adamw([{"params": decay, "weight_decay": train.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}], train.lr, fused=self.accelerator.scaler is None)
        if self.streaming:  # already sharded, read in order; not prepared (no prefetch: exact saved position)
            (self.model, self.optimizer), self.loader = self.accelerator.prepare(model, optimizer), loader
        else:
            self.model, self.optimizer, self.loader = self.accelerator.prepare(model, optimizer, loader)
        # Accelerate also steps at the end of the data, so a short last window is a step of its own
        self.steps_per_epoch = None if self.streaming else \
            max(1, math.ceil(len(self.loader) / train.gradient_accumulation_steps))
        self.total_steps = train.max_steps or train.epochs * self.steps_per_epoch
        self.scheduler = get_scheduler(train.lr_schedule if train.lr_schedule != "constant" else
                                       "constant_with_warmup", optimizer,
                                       num_warmup_steps=int(train.warmup_ratio * self.total_steps),
                                       num_training_steps=self.total_steps)
        # queue, key encoder, momentum schedule, filter warm-up: the object TextMoCoLoss (st_loss.py) uses too
        self.moco = MomentumContrast(self.unwrapped.query, self.unwrapped.key,
                                     NegativeQueue(queue.size, model.output_dim, queue.dtype, self.accelerator.device),
                                     momentum, momentum_schedule, objective.filter_warmup_steps,
                                     ema=lambda m: self.unwrapped.momentum_update(m))
        self.state = {"step": 0, "epoch": 0, "batches_in_epoch": 0}
        self.output_dir = Path(train.output_dir)
        self.metrics_path = self.output_dir / "metrics.jsonl"
        self.history: list[dict] = []
        self.callbacks = list(callbacks or [])
        if train.report_to:
            self.accelerator.init_trackers("textmoco", config={**objective.to_dict(), **train.to_dict(),
                                                               "queue_size": queue.size})

    # ------------------------------------------------------------------ helpers
    @property
    def unwrapped(self) -> MoCoModel:
        return self.accelerator.unwrap_model(self.model)

    @property
    def queue(self) -> NegativeQueue:
        return self.moco.queue

    def _filter_active(self) -> bool:
        return self.moco.filter_active(self.state["step"])

    def save(self) -> Path:
        """Write a complete checkpoint (atomic) of the current optimizer step; returns its directory."""
        check_finite_state(self.unwrapped, self.queue.keys, self.state["step"])
        # streaming: every process's position in its shard (None for map-style data: the sampler + batch count)
        self._data_state = gather_object([loader_state(self.loader)]) if self.streaming else None
        return checkpointing.save_checkpoint(self.accelerator, str(self.output_dir), self.state["step"],
                                             self.cfg.keep_checkpoints, self._write_queue_and_state)

    def _write_queue_and_state(self, directory: Path) -> None:
        checkpointing.write_trainer_files(directory, self.queue.storage_tensors(), {
            **self.state, "queue_ptr": self.queue.ptr, "queue_num_enqueued": self.queue.num_enqueued,
            "scheduler": {k: v for k, v in self.scheduler.state_dict().items() if k != "lr_lambdas"},
            "objective": self.objective.to_dict(), "queue": self.queue_cfg.to_dict(), "train": self.cfg.to_dict(),
            "data_state": getattr(self, "_data_state", None)})

    def check_checkpoint(self, path: str | Path) -> None:
        """``ValueError`` (before anything is loaded) unless ``path`` is a textmoco checkpoint that fits this run:
        same queue size and dimension, same model parameter names and shapes."""
        checkpointing.check_fits(Path(path), (self.queue.size, self.queue.dim), self.unwrapped.state_dict(),
                                 self.output_dir)

    def load(self, path: str | Path) -> None:
        """Restore model (incl. EMA encoder), optimizer, scheduler, RNG, queue and position from a checkpoint."""
        path = Path(path)
        self.check_checkpoint(path)
        self.accelerator.load_state(str(path))
        tensors, state = checkpointing.read_trainer_files(path)
        self.queue.load_state_dict({**tensors, "ptr": state["queue_ptr"], "num_enqueued": state["queue_num_enqueued"]})
        self.state = {k: int(state[k]) for k in ("step", "epoch", "batches_in_epoch")}
        self.moco.step = self.state["step"]
        if self.streaming and state.get("data_state"):
            load_loader_state(self.loader, state["data_state"][self.accelerator.process_index])
        self.scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(self.scheduler.lr_lambdas)})
        if self.accelerator.is_main_process:  # drop rows after the checkpoint
            checkpointing.truncate_metrics(self.metrics_path, self.state["step"])

    def _log(self, row: dict) -> None:
        row = _finite_or_none(row)
        self.history.append(row)
        if self.cfg.report_to:
            self.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=row["step"])
        if self.accelerator.is_main_process:
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, allow_nan=False) + "\n")

    # ------------------------------------------------------------------ loop
    def _loss(self, batch: dict):
        out = self.model(move_to_device(batch["inputs"], self.accelerator.device))
        ids = batch["ids"].to(self.accelerator.device)
        result = compute_moco_loss(out, ids, self.queue.negatives(), self.objective, self._filter_active(),
                                   guide=self.guide)
        return result, out.k.detach(), ids

    def fit(self, resume_from: Optional[str] = None) -> list[dict]:
        """Train for ``total_steps`` optimizer steps; resumes from a checkpoint path or 'latest'."""
        acc, cfg = self.accelerator, self.cfg
        self.output_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = checkpointing.resolve_resume(resume_from, str(self.output_dir))
        if checkpoint is not None:
            self.load(checkpoint)
        elif acc.is_main_process and self.metrics_path.exists():
            self.metrics_path.unlink()
        bar = tqdm(total=self.total_steps, initial=self.state["step"], desc="textmoco",
                   disable=not (cfg.progress and acc.is_main_process), dynamic_ncols=True)
        self.model.train()
        window, clock = _Window(), _FitClock()
        for batch in ([] if self._done() else self._micro_batches()):
            with acc.accumulate(self.model):
                result, keys, ids = self._loss(batch)
                acc.backward(result.loss)  # a NaN/inf loss gives a non-finite gradient: caught at the step
                if acc.sync_gradients:
                    window.ok, window.scaler_skip, window.keys_finite = clip_and_step(
                        acc, self.model, self.optimizer, cfg.max_grad_norm, window.keys + [keys])
                self.optimizer.zero_grad(set_to_none=True)  # a no-op inside an accumulation window
            window.keys.append(keys)
            window.ids.append(ids)
            window.stats.append(result.stat_tensors)  # device tensors: no sync here
            self.state["batches_in_epoch"] += 1
            if acc.sync_gradients:
                self._end_of_optimizer_step(window, clock, bar)
                window = _Window()
                if self._done():
                    break
        bar.close()
        self.save()
        if self.cfg.report_to:  # not accelerator.end_training(): it destroys the process group (teardown aborts)
            for tracker in self.accelerator.trackers:
                tracker.finish()
        return self.history

    def _done(self) -> bool:
        return self.state["step"] >= self.total_steps or self.state["step"] == self.cfg.stop_after

    def _micro_batches(self):
        """Every micro-batch from the current position on, epoch after epoch: the sampler and the dataset (crops)
        are seeded by the epoch; a resumed epoch skips what it had done (map-style data: ``skip_first_batches``;
        streaming data: the position ``load`` restored)."""
        while True:
            set_loader_epoch(self.loader, self.state["epoch"])
            loader = self.loader
            if self.state["batches_in_epoch"] and not self.streaming:
                loader = self.accelerator.skip_first_batches(self.loader, self.state["batches_in_epoch"])
            yield from loader
            self.state["epoch"] += 1
            self.state["batches_in_epoch"] = 0

    def _end_of_optimizer_step(self, window: _Window, clock: _FitClock, bar) -> None:
        """After the optimizer step (taken or skipped) of an accumulation window: the skip policy, EMA + enqueue of
        the window's keys (all processes; a skipped step moves neither), LR schedule, metrics row, checkpoint."""
        cfg, step = self.cfg, self.state["step"]
        clock.consecutive_skips = 0 if window.ok else clock.consecutive_skips + 1
        if not window.ok:
            on_skipped_step(self.accelerator, cfg, step + 1, clock.consecutive_skips, window.scaler_skip)
        m = self.moco.after_optimizer_step(torch.cat(window.keys), torch.cat(window.ids), self.total_steps,
                                           ok=window.ok, step=step, keys_finite=window.keys_finite)
        self.scheduler.step()
        self.state["step"] = step = step + 1
        if step % cfg.log_every == 0 or step == self.total_steps or any(
                getattr(callback, "logs_step", lambda _: False)(step) for callback in self.callbacks):
            row = self._metrics_row(step, m, window.stats, window.ok, clock.started)
            for callback in self.callbacks:
                row.update(callback(self, step) or {})
            self._log(row)
        bar.update(1)
        if self.history and self.history[-1].get("loss") is not None:
            bar.set_postfix(loss=f"{self.history[-1]['loss']:.4f}")
        if cfg.save_every and step % cfg.save_every == 0 and step < self.total_steps:
            self.save()

    def _metrics_row(self, step: int, m: float, window_stats: list, ok: bool, started: float) -> dict:
        names = sorted({k for s in window_stats for k in s})
        device = self.accelerator.device
        zero = torch.zeros((), device=device)
        local = torch.stack([sum((s.get(n, zero).float() for s in window_stats), zero) / len(window_stats)
                             for n in names]) if names else zero.reshape(0)
        mean = self.accelerator.reduce(local, reduction="mean") if distributed.is_distributed() else local
        row = dict(zip(names, mean.tolist()))  # the step's only device-to-host copy of the stats
        row.update(step=step, epoch=self.state["epoch"], lr=self.scheduler.get_last_lr()[0], momentum=m,
                   queue_filled=self.queue.num_filled, skipped=not ok, elapsed_s=round(time.time() - started, 3))
        return row

    def export(self, output_dir: str | Path, **info: Any) -> None:
        """Save the trained query encoder in its native format (the adapter's ``export``), main process only."""
        check_finite_state(self.unwrapped, self.queue.keys, self.state["step"])
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.unwrapped.encoder.export(str(output_dir), **info)
