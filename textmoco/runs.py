"""What every recipe does around training: check the output directory before anything is written, save the
resolved configuration, write results.json and the training-curve plot."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Optional

from .checkpointing import LATEST, atomic_write_json, checkpoint_root, make_tree_readable, resolve_resume

SECRET_OPTIONS = ("hub_token", "token")


def prepare_output_dir(output_dir: str, resume: Optional[str], overwrite: bool = False) -> Optional[Path]:
    """Validate ``output_dir`` before any file is written; returns the checkpoint to resume from (or None).

    Refuses to start a fresh run over an earlier run's checkpoints (pass --resume latest or --overwrite), a path
    that is a file, and a --resume path that does not exist."""
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"output_dir {output_dir!r} is a file; pass a directory path (it will be created)")
    checkpoint = resolve_resume(resume, output_dir)
    if resume not in (None, LATEST) and checkpoint is None:
        raise ValueError(f"resume={resume!r} does not exist")
    if checkpoint is not None and not (checkpoint / "trainer_state.json").is_file():
        raise ValueError(f"resume={resume!r} names {str(checkpoint)!r}, which is not a complete textmoco checkpoint "
                         f"(no trainer_state.json); pass 'latest' or a directory such as "
                         f"{checkpoint_root(path) / 'step-100'}")
    earlier = (checkpoint_root(path) / LATEST).exists()
    if checkpoint is None and earlier and not overwrite:
        raise ValueError(f"output_dir {output_dir!r} holds an earlier run's checkpoints; pass --resume latest to "
                         "continue it, --overwrite to start over in it, or another --output_dir")
    if checkpoint is None and (path / "results.json").is_file() and not overwrite:
        # a finished run whose final checkpoint was deleted (--save_final_checkpoint false): nothing to resume, and
        # a fresh run would replace its exported model
        raise ValueError(f"output_dir {output_dir!r} holds a finished run (results.json, no checkpoint left to "
                         "resume); pass --overwrite to start over in it, or another --output_dir")
    path.mkdir(parents=True, exist_ok=True)
    return checkpoint


def process_state():
    """Accelerate's process state, initialised the way :class:`~textmoco.trainer.MoCoTrainer`'s ``Accelerator``
    will see it. It is a per-process singleton: a plain ``PartialState()`` created first in a CPU ``torchrun`` job
    (even with ACCELERATE_USE_CPU=1, which only ``Accelerator`` reads) fixes the state to one process, and the
    trainer then refuses the launch. So the recipes create it here, with ``cpu=True`` for such a job."""
    import os

    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (not torch.cuda.is_available()
                                                        and int(os.environ.get("WORLD_SIZE", "1")) > 1)
    return PartialState(cpu=cpu)


def st_device() -> str:
    """Where a sentence-transformers model of this process runs (the in-batch baselines, a model evaluated by path):
    the device of :func:`process_state`, the one :class:`~textmoco.trainer.MoCoTrainer`'s ``Accelerator`` trains
    on — the GPU whenever there is one, the CPU under ``ACCELERATE_USE_CPU`` — so a side-by-side timing compares
    the same device."""
    return str(process_state().device)


def start_run(args: argparse.Namespace, save_config: bool = True):
    """Validate everything before any file is written: the configs (ValueError on bad values), the Hub options and
    the output directory. Returns (objective, queue, train, checkpoint to resume or None); the main process saves
    the resolved options to ``output_dir/textmoco_config.json`` (``save_config=False``: the recipe saves them
    itself with :func:`save_resolved_config` once the data, model and checkpoint are validated too, so that a
    failing resume leaves the earlier run's config untouched)."""
    from .cli import configs_from_args

    state = process_state()  # first, before anything creates a plain PartialState()
    objective, queue, train = configs_from_args(args)
    if getattr(args, "push_to_hub", False) and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (user/name)")
    checkpoint = prepare_output_dir(train.output_dir, args.resume, args.overwrite)
    if save_config and state.is_main_process:
        save_resolved_config(train.output_dir, args)
    return objective, queue, train, checkpoint


def confirm_run(trainer, checkpoint: Optional[Path], args: argparse.Namespace) -> None:
    """Once the trainer is built: check a resume checkpoint matches it, then save the resolved options — so a
    failing resume leaves the earlier run's files untouched. A fresh run with ``--overwrite`` deletes the earlier
    run's checkpoints and results here, after every setting has been validated (not before: a typo in an option
    must not cost the earlier run)."""
    if checkpoint is not None:
        trainer.check_checkpoint(checkpoint)
    # read by finish_run: whether the final checkpoint outlives a successful export (--save_final_checkpoint)
    trainer.save_final_checkpoint = bool(getattr(args, "save_final_checkpoint", True))
    if trainer.accelerator.is_main_process:
        if checkpoint is None and getattr(args, "overwrite", False):
            clear_earlier_run(trainer.cfg.output_dir)
        save_resolved_config(trainer.cfg.output_dir, args)


EARLIER_RUN_FILES = ("results.json", "metrics.jsonl", "training_curve.png")


def clear_earlier_run(output_dir: str) -> None:
    """Delete an earlier run's ``checkpoints/`` and results (``--overwrite``): otherwise its higher-numbered
    checkpoints would outlive the new run's pruning and could be mistaken for the new run's. The exported model
    files are left to be replaced by the new export."""
    import shutil

    root = checkpoint_root(Path(output_dir))
    if root.is_dir():
        shutil.rmtree(root)
    for name in EARLIER_RUN_FILES:
        (Path(output_dir) / name).unlink(missing_ok=True)


def quiet_progress_bars() -> None:
    """No model-loading / shard-writing bars from transformers and huggingface_hub (``--progress false``)."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


def evaluate_before_training(output_dir: str, checkpoint: Optional[Path], evaluate: Callable[[], dict],
                             enabled: bool = True) -> Optional[dict]:
    """The starting model's scores, on the main process (None elsewhere or when not ``enabled``): ``evaluate()``
    on a fresh run, written to ``eval_before.json``; a resumed run reuses that file (its model is no longer the
    starting one), and evaluates afresh only when the file is missing."""
    if not process_state().is_main_process:
        return None
    path = Path(output_dir) / "eval_before.json"
    if checkpoint is not None and path.exists():
        return json.loads(path.read_text())
    if not enabled:
        return None
    scores = evaluate()
    atomic_write_json(path, scores)
    return scores


def public_options(args: argparse.Namespace | dict) -> dict:
    """The resolved options without secrets (Hub tokens are never saved or printed) and without absolute local
    paths (the file is uploaded with the model): an absolute path becomes its last component."""
    import os

    values = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args)
    return {k: (os.path.basename(os.path.normpath(v)) if isinstance(v, str) and os.path.isabs(v) else v)
            for k, v in values.items() if k not in SECRET_OPTIONS}


def save_resolved_config(output_dir: str, args: argparse.Namespace | dict, name: str = "textmoco_config.json") -> Path:
    path = Path(output_dir) / name
    atomic_write_json(path, public_options(args))
    return path


RESULTS_DECIMALS = 4


def rounded(value: Any, decimals: int = RESULTS_DECIMALS) -> Any:
    """``value`` with every float rounded to ``decimals`` places (nested dicts/lists too; non-finite floats and
    everything else unchanged) — results.json holds scores, not 17-digit noise."""
    import math

    if isinstance(value, float):
        return round(value, decimals) if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v, decimals) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, decimals) for v in value]
    return value


def write_results(output_dir: str, results: dict[str, Any]) -> Path:
    """``output_dir/results.json`` with floats rounded to 4 decimals (:func:`rounded`)."""
    path = Path(output_dir) / "results.json"
    atomic_write_json(path, rounded(results))
    return path


def drop_final_checkpoint(output_dir: str) -> Optional[Path]:
    """After a successful export: delete the checkpoint ``latest`` names (the finished run's final state with its
    optimizer — several times the exported model's size) and point ``latest`` at the newest remaining complete
    checkpoint (a ``--save_every`` one), or remove the pointer when none is left. Returns the deleted directory."""
    import shutil

    from .checkpointing import atomic_write_text

    root = checkpoint_root(Path(output_dir))
    final = resolve_resume(LATEST, output_dir)
    if final is None or not final.is_dir():
        return None
    shutil.rmtree(final)
    left = sorted((p for p in root.glob("step-*") if (p / "trainer_state.json").is_file()),
                  key=lambda p: int(p.name.split("-")[1]))
    if left:
        atomic_write_text(root / LATEST, left[-1].name + "\n")
    else:
        (root / LATEST).unlink(missing_ok=True)
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
    return final


def finish_run(trainer, output_dir: str, results: dict[str, Any], card: dict[str, Any],
               push_to_hub: Optional[str] = None, hub_private: bool = False,
               save_final_checkpoint: Optional[bool] = None) -> None:
    """After training (main process only): export the encoder into ``output_dir``, write the model card,
    results.json and training_curve.png (``card["curve_metrics"]``: the metrics.jsonl names of an evaluation during
    training, plotted in their own panel), and optionally upload the directory (checkpoints excluded). Then, unless
    ``save_final_checkpoint`` (default: the ``--save_final_checkpoint`` option :func:`confirm_run` saw, else
    False), delete the final checkpoint (:func:`drop_final_checkpoint`)."""
    from .export import push_to_hub as upload
    from .export import write_model_card
    from .model_cards import hub_base_model, write_text_model_card, write_vision_model_card
    from .plotting import plot_training_curve

    if save_final_checkpoint is None:
        save_final_checkpoint = getattr(trainer, "save_final_checkpoint", False)
    card = dict(card)
    text_card = card.pop("text_card", None)  # text: sentence-transformers' own model card (see write_text_model_card)
    vision_card = card.pop("vision_card", None)  # image: huggingface_hub's ModelCardData (write_vision_model_card)
    curve_metrics = card.pop("curve_metrics", ())  # metrics.jsonl names of the evaluation during training
    card["base_model"] = hub_base_model(card.get("base_model"), card.pop("hub_base_model", None))
    trainer.export(output_dir, results=results)
    if not trainer.accelerator.is_main_process:
        return
    if card.get("modality") == "text" and text_card is not None:
        objective = {k: v for k, v in trainer.objective.to_dict().items() if k != "dual_mode"}
        loss_kwargs = {**objective, "queue_size": trainer.queue_cfg.size, "queue_dtype": trainer.queue_cfg.dtype,
                       "momentum": trainer.cfg.momentum, "momentum_schedule": trainer.cfg.momentum_schedule}
        write_text_model_card(output_dir, title=card["title"], base_model=card["base_model"],
                              loss_kwargs=loss_kwargs, datasets=card.get("datasets"), model_id=push_to_hub,
                              license=card.get("license") or "apache-2.0", **text_card)
    else:
        configs = dict(train_config=public_options(trainer.cfg.to_dict()),
                       objective_config={**trainer.objective.to_dict(), **{f"queue_{k}": v for k, v in
                                                                           trainer.queue_cfg.to_dict().items()}})
        if vision_card is not None:
            write_vision_model_card(output_dir, title=card["title"], base_model=card["base_model"],
                                    metrics=rounded(results.get("metrics", {})), license=card.get("license") or
                                    "apache-2.0", **configs, **vision_card)
        else:
            write_model_card(output_dir, metrics=results.get("metrics", {}), **configs, **card)
    write_results(output_dir, results)
    plot_training_curve(trainer.metrics_path, Path(output_dir) / "training_curve.png", title=card.get("title", ""),
                        eval_metrics=curve_metrics)
    make_tree_readable(output_dir)  # no 0600 files (safetensors and atomic writers create them through mkstemp)
    if push_to_hub:
        url = upload(output_dir, push_to_hub, private=hub_private)
        print(f"pushed to {url}")
    if not save_final_checkpoint:
        dropped = drop_final_checkpoint(output_dir)
        if dropped is not None:
            print(f"deleted the final checkpoint {dropped.name} (the exported model is complete; keep it with "
                  "--save_final_checkpoint true)")
