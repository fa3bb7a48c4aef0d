"""Config validation: every impossible value raises ValueError naming the option and the allowed range."""
import json

import pytest

from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig

BAD = [
    # (class, option, value, words the message must contain besides the option name)
    (QueueConfig, "size", -1, ["> 0"]),
    (QueueConfig, "size", 0, ["> 0"]),
    (QueueConfig, "size", 10.5, ["integer"]),
    (QueueConfig, "dtype", "fp16", ["float16", "bfloat16", "float32"]),
    (ObjectiveConfig, "top_k", 0, ["> 0"]),
    (ObjectiveConfig, "top_k", -3, ["> 0"]),
    (ObjectiveConfig, "top_k", 2.5, ["integer"]),
    (ObjectiveConfig, "top_fraction", 0.0, ["(0, 1]"]),
    (ObjectiveConfig, "top_fraction", 1.5, ["(0, 1]"]),
    (ObjectiveConfig, "top_fraction", -0.1, ["(0, 1]"]),
    (ObjectiveConfig, "top_fraction", float("nan"), ["(0, 1]"]),
    (ObjectiveConfig, "temperature", 0.0, ["> 0"]),
    (ObjectiveConfig, "temperature", -0.05, ["> 0"]),
    (ObjectiveConfig, "temperature", float("nan"), ["> 0"]),
    (ObjectiveConfig, "dual_weight", -0.1, ["[0, 1]"]),
    (ObjectiveConfig, "dual_weight", 1.01, ["[0, 1]"]),
    (ObjectiveConfig, "dual_weight", float("nan"), ["[0, 1]"]),
    (ObjectiveConfig, "min_similarity", 1.5, ["[-1, 1]"]),
    (ObjectiveConfig, "guard_threshold", 1.2, ["(-1, 1]"]),
    (ObjectiveConfig, "guard_threshold", -1.0, ["(-1, 1]"]),
    (ObjectiveConfig, "n_random", -1, [">= 0"]),
    (ObjectiveConfig, "filter_warmup_steps", -1, [">= 0"]),
    (ObjectiveConfig, "dual_mode", "both", ["weighted", "symmetric"]),
    (ObjectiveConfig, "key_negatives", "queue+batch", ["batch+queue", "queue", "batch"]),
    (ObjectiveConfig, "selection", "topk", ["none", "top_k", "top_fraction", "min_similarity"]),
    (TrainConfig, "batch_size", 0, [">= 1"]),
    (TrainConfig, "max_steps", 0, [">= 1"]),
    (TrainConfig, "epochs", 0, [">= 1"]),
    (TrainConfig, "lr", 0.0, ["> 0"]),
    (TrainConfig, "lr", -1e-3, ["> 0"]),
    (TrainConfig, "weight_decay", -0.1, [">= 0"]),
    (TrainConfig, "warmup_ratio", 1.0, ["[0, 1)"]),
    (TrainConfig, "momentum", 1.5, ["[0, 1]"]),
    (TrainConfig, "momentum", -0.1, ["[0, 1]"]),
    (TrainConfig, "momentum_schedule", "linear", ["cosine", "constant"]),
    (TrainConfig, "lr_schedule", "step", ["cosine", "linear", "constant"]),
    (TrainConfig, "gradient_accumulation_steps", 0, [">= 1"]),
    (TrainConfig, "max_grad_norm", 0.0, ["> 0"]),
    (TrainConfig, "mixed_precision", "fp8", ["no", "fp16", "bf16"]),
    (TrainConfig, "log_every", 0, [">= 1"]),
    (TrainConfig, "save_every", 0, [">= 1"]),
    (TrainConfig, "stop_after", 0, [">= 1"]),
    (TrainConfig, "keep_checkpoints", 0, [">= 1"]),
    (TrainConfig, "on_nonfinite", "ignore", ["skip", "stop"]),
    (TrainConfig, "num_workers", -1, [">= 0"]),
]


@pytest.mark.parametrize("cls,option,value,words", BAD, ids=[f"{c.__name__}.{o}={v!r}" for c, o, v, _ in BAD])
def test_impossible_values_raise_named_errors(cls, option, value, words):
    with pytest.raises(ValueError) as e:
        cls(**{option: value})
    msg = str(e.value)
    assert option in msg, msg  # QueueConfig names them queue_size / queue_dtype, which contain the field name
    assert repr(value) in msg or str(value) in msg, msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("cls,values", [
    (ObjectiveConfig, dict(temperature=0.2, dual_weight=0.0, selection="min_similarity", min_similarity=-0.5,
                           guard_threshold=None, n_random=3, filter_warmup_steps=0, key_negatives="queue")),
    (ObjectiveConfig, dict(dual_mode="symmetric", top_fraction=1.0, guard_threshold=1.0, dual_weight=1.0)),
    (QueueConfig, dict(size=1, dtype="bfloat16")),
    (TrainConfig, dict(batch_size=1, max_steps=1, warmup_ratio=0.0, momentum=1.0, momentum_schedule="constant",
                       max_grad_norm=None, mixed_precision="bf16", stop_after=3, save_every=5)),
])
def test_edge_values_accepted_and_round_trip(cls, values):
    cfg = cls(**values)
    d = cfg.to_dict()
    for k, v in values.items():
        assert d[k] == v
    again = cls.from_dict(json.loads(json.dumps(d)))
    assert again == cfg
    assert again.to_dict() == d


@pytest.mark.parametrize("cls", [ObjectiveConfig, QueueConfig, TrainConfig])
def test_defaults_round_trip(cls):
    cfg = cls()
    assert cls.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("cls", [ObjectiveConfig, QueueConfig, TrainConfig])
def test_unknown_key(cls):
    with pytest.raises(ValueError, match="unknown") as e:
        cls.from_dict({"definitely_not_an_option": 1})
    assert "definitely_not_an_option" in str(e.value)
    assert "known options" in str(e.value)


def test_from_dict_validates():
    with pytest.raises(ValueError, match="temperature"):
        ObjectiveConfig.from_dict({"temperature": -1})


def test_moco_preset_has_all_switches_off():
    cfg = ObjectiveConfig.moco(0.2)
    assert cfg.temperature == 0.2 and cfg.dual_weight == 0.0 and cfg.selection == "none"
    assert not cfg.id_guard and cfg.guard_threshold is None and not cfg.filters
    assert ObjectiveConfig().filters
