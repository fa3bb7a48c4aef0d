"""Configuration: one dataclass per concern, validated on creation.

Every impossible value raises ``ValueError`` naming the option, the value and the allowed range, before any
training starts. ``to_dict`` / ``from_dict`` round-trip through JSON/YAML for the recipes and the model card.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

KEY_NEGATIVES = ("batch+queue", "queue", "batch")
DUAL_MODES = ("weighted", "symmetric")
SELECTIONS = ("none", "top_k", "top_fraction", "min_similarity")
QUEUE_DTYPES = ("float32", "float16", "bfloat16")
MOMENTUM_SCHEDULES = ("cosine", "constant")
KEY_ENCODERS = ("momentum", "query", "momentum_a")
KEY_MODES = ("train", "eval")
MIXED_PRECISIONS = ("no", "fp16", "bf16")
NONFINITE_POLICIES = ("skip", "stop")


def _opt(default: Any, help: str) -> Any:
    """A dataclass field with a help text (used by the CLI's --help)."""
    return field(default=default, metadata={"help": help})


def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{name}={value!r} is invalid: {name} must be {allowed}")


def _choice(name: str, value: Any, choices: tuple) -> None:
    _check(value in choices, name, value, "one of " + ", ".join(repr(c) for c in choices))


class _Config:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "_Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; known options: {sorted(names)}")
        return cls(**values)


@dataclass
class ObjectiveConfig(_Config):
    """The loss (METHOD.md). All switches off (``dual_weight=0``, ``selection='none'``, no guard) is MoCo.

    temperature: softmax temperature tau (> 0). Text 0.05, images 0.2.
    dual_weight: lambda in (1-lambda)*L_q2k + lambda*L_k2q, in [0, 1]; 0 = MoCo. In symmetric mode lambda weighs
        the view-b-anchored term: (1-lambda)*L_a + lambda*L_b, so 0.5 is symmetric MoCo's plain average (0 is refused
        there: it would drop the view-b term).
    dual_mode: 'weighted' (key-anchored term, METHOD.md idea 1) or 'symmetric' (swap views, both views anchor with
        the other's keys, as in symmetric MoCo; costs a second query forward).
    key_negatives: negatives of the key-anchored term: 'batch+queue', 'queue' or 'batch'.
    batch_negatives: the other keys of the global batch are negatives of q (and, symmetric, the other view-a keys
        of q_b) besides the queue, as in MoCo v3 / in-batch losses; MoCo's default (False) uses the queue only. For
        pairs the symmetric term then ranks each positive's anchor against other *anchors*, not only against the
        queue of positives.
    key_gradient: keys of view b from the query pass (``TrainConfig.key_encoder`` 'query' or 'momentum_a', dual_mode
        'symmetric') keep their gradient in the view-a-anchored term — its positive and, with ``batch_negatives``,
        the batch's other keys — as in-batch losses (MNRL) do; queue slots stay constants. False (MoCo): keys are
        constants. Pairs: the articles then learn from the descriptions' side of the loss as well.
    selection: hard-negative rule on queue slots: 'none', 'top_k', 'top_fraction' or 'min_similarity'.
    top_k / top_fraction / min_similarity: the parameter of the chosen rule.
    n_random: random easy negatives added back per anchor (from the unselected, unguarded slots).
    id_guard: drop queue slots (and batch negatives) holding the anchor's own sample id.
    guard_threshold: drop slots with cosine > threshold as probable false negatives (None = off).
    guide_threshold: GISTEmbed-style guard judged by the frozen start model (the guide): drop queue slots and batch
        negatives whose guide cosine to the anchor exceeds this (None = off). Always active, like the id guard.
    filter_warmup_steps: keep all negatives (no selection, no threshold guard) for this many optimizer steps;
        None = until the queue has been full once. The id guard is always on when ``id_guard``.
    """

    temperature: float = _opt(0.05, "softmax temperature tau (> 0); text 0.05, images 0.2")
    dual_weight: float = _opt(0.5, "lambda of (1-lambda)*L_q2k + lambda*L_k2q in [0, 1]; 0 = plain MoCo; symmetric: "
                              "the weight of the view-b (pairs: positive) anchored term, 0.5 = average")
    dual_mode: str = _opt("weighted", "'weighted' (key-anchored term) or 'symmetric' (swap views, both anchor; 2nd "
                          "query forward)")
    key_negatives: str = _opt("batch+queue", "negatives of the key-anchored term: batch+queue, queue or batch")
    batch_negatives: bool = _opt(False, "the global batch's other keys join the queue as negatives of the "
                                 "query-anchored terms (symmetric: view b anchors get the other view-a keys; pairs: "
                                 "other anchors)")
    key_gradient: bool = _opt(False, "view b's keys, when they are its query pass (key_encoder query or momentum_a, "
                              "dual_mode symmetric), keep their gradient in the view-a term: the positive and the "
                              "batch negatives (as MNRL); queue slots stay constants")
    selection: str = _opt("top_k", "hard-negative rule on queue slots: none, top_k, top_fraction or min_similarity")
    top_k: int = _opt(512, "slots kept per anchor with selection=top_k (> 0; more than filled = all)")
    top_fraction: float = _opt(0.125, "fraction of filled slots kept with selection=top_fraction, in (0, 1]")
    min_similarity: float = _opt(0.3, "cosine threshold with selection=min_similarity, in [-1, 1]")
    n_random: int = _opt(0, "random easy negatives added back per anchor (>= 0)")
    id_guard: bool = _opt(True, "drop queue slots (and batch negatives) holding the anchor's own sample id")
    guard_threshold: Optional[float] = _opt(0.9, "drop slots with cosine above this as false negatives (None = off)")
    guide_threshold: Optional[float] = _opt(None, "drop negatives whose cosine under the frozen start model (the "
                                            "guide) is above this (GISTEmbed-style false-negative guard; None = off)")
    filter_warmup_steps: Optional[int] = _opt(None, "steps with no selection/threshold guard (None = until the queue "
                                              "is full once)")

    def __post_init__(self) -> None:
        _check(self.temperature > 0, "temperature", self.temperature, "> 0")
        _check(0.0 <= self.dual_weight <= 1.0, "dual_weight", self.dual_weight, "in [0, 1]")
        _choice("dual_mode", self.dual_mode, DUAL_MODES)
        if self.dual_mode == "symmetric":  # 0 would drop the view-b term and waste its query pass
            _check(self.dual_weight > 0, "dual_weight", self.dual_weight,
                   "> 0 with dual_mode='symmetric' (plain MoCo is dual_mode='weighted' with dual_weight=0)")
        _choice("key_negatives", self.key_negatives, KEY_NEGATIVES)
        _choice("selection", self.selection, SELECTIONS)
        _check(isinstance(self.top_k, int) and not isinstance(self.top_k, bool) and self.top_k > 0, "top_k",
               self.top_k, "an integer > 0")
        _check(0.0 < self.top_fraction <= 1.0, "top_fraction", self.top_fraction, "in (0, 1]")
        _check(-1.0 <= self.min_similarity <= 1.0, "min_similarity", self.min_similarity, "in [-1, 1]")
        _check(isinstance(self.n_random, int) and self.n_random >= 0, "n_random", self.n_random, "an integer >= 0")
        if self.guard_threshold is not None:
            _check(-1.0 < self.guard_threshold <= 1.0, "guard_threshold", self.guard_threshold,
                   "in (-1, 1] or None (off)")
        if self.guide_threshold is not None:
            _check(-1.0 < self.guide_threshold <= 1.0, "guide_threshold", self.guide_threshold,
                   "in (-1, 1] or None (off)")
        if self.filter_warmup_steps is not None:
            _check(self.filter_warmup_steps >= 0, "filter_warmup_steps", self.filter_warmup_steps,
                   "an integer >= 0 or None (= until the queue is full once)")

    @classmethod
    def moco(cls, temperature: float = 0.05) -> "ObjectiveConfig":
        """Plain MoCo: no dual term, no selection, no guard."""
        return cls(temperature=temperature, dual_weight=0.0, selection="none", id_guard=False,
                   guard_threshold=None)

    @property
    def filters(self) -> bool:
        return self.selection != "none" or self.guard_threshold is not None or self.n_random > 0

    @property
    def batch_queries_needed(self) -> bool:
        """Does the loss read the global batch's queries (the weighted key term's batch negatives)?"""
        return self.dual_weight > 0 and self.dual_mode == "weighted" and self.key_negatives != "queue"


@dataclass
class QueueConfig(_Config):
    """size: K, number of past keys (any positive integer; no divisibility by the batch needed).
    dtype: storage dtype of the keys ('float32', 'float16' or 'bfloat16'; half types halve memory)."""

    size: int = _opt(4096, "K, number of past keys kept as negatives (any integer > 0)")
    dtype: str = _opt("float32", "storage dtype of the queue: float32, float16 or bfloat16 (half the memory)")

    def __post_init__(self) -> None:
        _check(int(self.size) == self.size and self.size > 0, "queue_size", self.size, "an integer > 0")
        _choice("queue_dtype", self.dtype, QUEUE_DTYPES)


@dataclass
class TrainConfig(_Config):
    """The optimisation loop. ``max_steps`` counts optimizer steps; when None, ``epochs`` decides.
    ``save_every``: checkpoint every N optimizer steps (and always at the end). ``stop_after``: end this invocation
    after optimizer step N with a checkpoint (schedules still follow ``max_steps``); resume later with
    ``resume_from='latest'`` — for pre-emptible / time-limited jobs."""

    output_dir: str = _opt("outputs/run", "run directory: checkpoints, metrics.jsonl, plot, results, exported model")
    batch_size: int = _opt(64, "samples per process per micro-batch")
    max_steps: Optional[int] = _opt(None, "optimizer steps (None = epochs x steps per epoch)")
    epochs: int = _opt(1, "passes over the data when max_steps is None")
    lr: float = _opt(2e-5, "peak AdamW learning rate")
    weight_decay: float = _opt(0.01, "AdamW weight decay (not on biases/norms)")
    warmup_ratio: float = _opt(0.1, "fraction of steps of linear LR warm-up, in [0, 1)")
    lr_schedule: str = _opt("cosine", "LR decay after warm-up: cosine, linear or constant")
    momentum: float = _opt(0.995, "EMA momentum m of the key encoder at step 0, in [0, 1]")
    momentum_schedule: str = _opt("cosine", "cosine (m raised to 1 over training) or constant")
    key_encoder: str = _opt("momentum", "keys from the EMA copy (momentum: MoCo) or from the query encoder itself "
                            "(query: momentum held at 0, so the queue is a memory of past embeddings; with "
                            "dual_mode symmetric the two query passes are reused as keys, halving a step's passes); "
                            "momentum_a (dual_mode symmetric only): view a's keys (pairs: the anchors) from the EMA "
                            "copy, view b's (pairs: the positives, which are queued) from the query pass of view b, "
                            "detached: 3 passes a step instead of 4, and none extra on the long positives")
    key_mode: str = _opt("train", "the key encoder's passes in train mode (dropout and batch statistics, like the "
                         "query encoder: MoCo) or eval mode (no dropout, BatchNorm running statistics: "
                         "deterministic keys and a cheaper pass; for pairs and crops, whose views differ anyway)")
    gradient_accumulation_steps: int = _opt(1, "micro-batches per optimizer step (queue/EMA advance once per step)")
    max_grad_norm: Optional[float] = _opt(1.0, "gradient clipping norm (None = off)")
    mixed_precision: Optional[str] = _opt(None, "no, fp16 or bf16 (Accelerate autocast; loss logits stay float32); "
                                          "None = what the launcher/config says (accelerate launch "
                                          "--mixed_precision, ACCELERATE_MIXED_PRECISION), else no")
    seed: int = _opt(0, "random seed (model init, data order, dropout, augmentation)")
    drop_last: bool = _opt(True, "drop the short last batch of an epoch (False: keep it)")
    log_every: int = _opt(1, "write a metrics.jsonl row every N optimizer steps")
    save_every: Optional[int] = _opt(None, "checkpoint every N optimizer steps (always at the end)")
    stop_after: Optional[int] = _opt(None, "end this invocation after step N with a checkpoint; resume later")
    keep_checkpoints: int = _opt(2, "how many recent checkpoints to keep")
    on_nonfinite: str = _opt("skip", "on a NaN/inf gradient: skip the step (weights, EMA, queue untouched) or stop")
    max_consecutive_skips: Optional[int] = _opt(20, "stop after this many consecutive skipped steps (None = never)")
    sync_batchnorm: bool = _opt(True, "under several processes, BatchNorm layers (vision heads) normalise with the "
                                "global batch's statistics, so N processes equal one with the N-fold batch")
    num_workers: int = _opt(0, "DataLoader worker processes")
    progress: bool = _opt(True, "show a progress bar")
    report_to: Optional[str] = _opt(None, "Accelerate tracker(s), comma-separated: tensorboard, wandb, ... "
                                    "(None = off)")

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        if self.max_steps is not None:
            _check(self.max_steps >= 1, "max_steps", self.max_steps, "an integer >= 1 or None")
        _check(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        _check(self.lr > 0, "lr", self.lr, "> 0")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        _check(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", self.warmup_ratio, "in [0, 1)")
        _choice("lr_schedule", self.lr_schedule, ("cosine", "linear", "constant"))
        _check(0.0 <= self.momentum <= 1.0, "momentum", self.momentum, "in [0, 1]")
        _choice("momentum_schedule", self.momentum_schedule, MOMENTUM_SCHEDULES)
        _choice("key_encoder", self.key_encoder, KEY_ENCODERS)
        _choice("key_mode", self.key_mode, KEY_MODES)
        _check(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps",
               self.gradient_accumulation_steps, "an integer >= 1")
        if self.max_grad_norm is not None:
            _check(self.max_grad_norm > 0, "max_grad_norm", self.max_grad_norm, "> 0 or None (no clipping)")
        if self.mixed_precision is not None:
            _choice("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        _check(self.log_every >= 1, "log_every", self.log_every, "an integer >= 1")
        if self.save_every is not None:
            _check(self.save_every >= 1, "save_every", self.save_every, "an integer >= 1 or None (only at the end)")
        if self.stop_after is not None:
            _check(self.stop_after >= 1, "stop_after", self.stop_after, "an integer >= 1 or None")
        _check(self.keep_checkpoints >= 1, "keep_checkpoints", self.keep_checkpoints, "an integer >= 1")
        _choice("on_nonfinite", self.on_nonfinite, NONFINITE_POLICIES)
        if self.max_consecutive_skips is not None:
            _check(self.max_consecutive_skips >= 1, "max_consecutive_skips", self.max_consecutive_skips,
                   "an integer >= 1 or None (never stop)")
        _check(self.num_workers >= 0, "num_workers", self.num_workers, "an integer >= 0")


def check_together(objective: ObjectiveConfig, train: TrainConfig) -> None:
    """Options valid alone but not together (ValueError naming both)."""
    if train.key_encoder == "momentum_a" and objective.dual_mode != "symmetric":
        raise ValueError(f"key_encoder='momentum_a' takes view b's keys from the query pass of view b, which only "
                         f"dual_mode='symmetric' runs (got dual_mode={objective.dual_mode!r}); use --dual_mode "
                         "symmetric or another key_encoder ('momentum', 'query')")
    if objective.key_gradient and (train.key_encoder == "momentum" or objective.dual_mode != "symmetric"):
        raise ValueError(f"key_gradient=True needs keys that are the query encoder's own pass of view b, i.e. "
                         f"key_encoder 'query' or 'momentum_a' with dual_mode 'symmetric' (got key_encoder="
                         f"{train.key_encoder!r}, dual_mode={objective.dual_mode!r})")
