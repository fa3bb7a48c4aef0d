"""Atomic checkpoints with a ``latest`` pointer that never names a partial checkpoint.

Layout: ``<output_dir>/checkpoints/step-<N>/`` (Accelerate ``save_state``: model incl. the EMA key encoder,
optimizer, scheduler, RNG states, queue, trainer state) and ``<output_dir>/checkpoints/latest`` (a text file with the
directory name). A checkpoint is written to ``.tmp-step-<N>`` and renamed once complete; the pointer is written to a
temporary file and ``os.replace``d. A crash at any moment leaves the previous good checkpoint and pointer intact.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable, Optional

from safetensors import safe_open
from safetensors.torch import load_file, save_file

LATEST = "latest"


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def make_tree_readable(path: str | os.PathLike) -> None:
    """Give every file under ``path`` (or ``path`` itself) the mode an ordinary ``open(f, "w")`` would: 0666 minus
    the umask. Writers that go through ``mkstemp`` (safetensors' ``save_file``, atomic writers) leave 0600 files,
    which other users of a shared run directory or a serving process could not read."""
    mask = os.umask(0o022)
    os.umask(mask)
    mode = 0o666 & ~mask
    path = Path(path)
    files = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    for f in files:
        current = f.stat().st_mode & 0o777
        if current & mode != mode:
            os.chmod(f, current | mode)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_checkpoint(accelerator, output_dir: str, step: int, keep: int,
                    write_extra: Optional[Callable[[Path], None]] = None) -> Path:
    """``accelerator.save_state`` into a temporary directory, ``write_extra(tmp_dir)`` on the main process (queue,
    trainer state), rename, move the pointer, prune old ones. Call on every process (per-process RNG files)."""
    root = checkpoint_root(output_dir)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if write_extra is not None:
            write_extra(tmp)
        make_tree_readable(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(root / LATEST, final.name + "\n")
        done = sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resolve_resume(resume: Optional[str], output_dir: str) -> Optional[Path]:
    """``None`` -> no resume; ``'latest'`` -> the checkpoint the pointer names in ``output_dir`` (None when the
    run has no checkpoint yet); a path -> that checkpoint directory (or a run directory: its latest)."""
    if resume is None or resume is False:
        return None
    if str(resume) == LATEST:
        pointer = checkpoint_root(output_dir) / LATEST
        if not pointer.exists():
            return None
        return checkpoint_root(output_dir) / pointer.read_text().strip()
    path = Path(resume)
    if (path / "checkpoints" / LATEST).exists():
        return path / "checkpoints" / (path / "checkpoints" / LATEST).read_text().strip()
    if (path / LATEST).exists() and not (path / "trainer_state.json").exists():
        return path / (path / LATEST).read_text().strip()
    if not path.is_dir():
        raise ValueError(f"resume={str(resume)!r} does not exist: pass 'latest' or a checkpoint directory such as "
                         f"{checkpoint_root(output_dir) / 'step-100'}")
    return path


# ---------------------------------------------------------------- the trainer's own files in a checkpoint
QUEUE_FILE, STATE_FILE = "queue.safetensors", "trainer_state.json"


def write_trainer_files(directory: Path, queue_tensors: dict, state: dict) -> None:
    """The queue (vectors, ids, filled flags) and the trainer's JSON state, next to Accelerate's files."""
    save_file(queue_tensors, str(directory / QUEUE_FILE))
    atomic_write_json(directory / STATE_FILE, state)


def read_trainer_files(path: Path) -> tuple[dict, dict]:
    """(queue tensors, trainer state) as :func:`write_trainer_files` wrote them."""
    return load_file(str(path / QUEUE_FILE)), json.loads((path / STATE_FILE).read_text())


def check_fits(path: Path, queue_shape: tuple[int, int], model_state: dict, output_dir: str | os.PathLike) -> None:
    """``ValueError`` (before anything is loaded) unless ``path`` is a textmoco checkpoint that fits this run: a
    queue of ``queue_shape`` (K, D), the parameter names and shapes of ``model_state`` (tied parameters are saved
    once by safetensors, so a name missing from the file is only a difference if it is not shared)."""
    if not (path / STATE_FILE).exists():
        raise ValueError(f"{path} is not a textmoco checkpoint (no {STATE_FILE}); pass 'latest' or a "
                         f"directory under {checkpoint_root(output_dir)}")
    with safe_open(str(path / QUEUE_FILE), "pt") as f:
        saved = tuple(f.get_slice("keys").get_shape())
    if saved != tuple(queue_shape):
        raise ValueError(f"checkpoint {path} holds a queue of {saved[0]} keys of dimension {saved[1]} but this "
                         f"run has queue_size={queue_shape[0]}, dimension {queue_shape[1]}; resume with the "
                         "options of that run (its textmoco_config.json)")
    model_file = path / "model.safetensors"
    if not model_file.exists():
        return
    with safe_open(str(model_file), "pt") as f:
        saved_shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    ours = {k: tuple(v.shape) for k, v in model_state.items()}
    storages = [v.untyped_storage().data_ptr() for v in model_state.values()]
    shared = {k for k, v in model_state.items() if storages.count(v.untyped_storage().data_ptr()) > 1}
    diff = sorted(k for k in set(saved_shapes) | set(ours) if saved_shapes.get(k) != ours.get(k)
                  and not (k not in saved_shapes and k in shared))
    if diff:
        shape = {k: ("absent" if v is None else f"shape {list(v)}")
                 for k, v in (("saved", saved_shapes.get(diff[0])), ("ours", ours.get(diff[0])))}
        raise ValueError(f"checkpoint {path} was saved from a different model ({len(diff)} parameter(s) "
                         f"differ, e.g. {diff[0]!r}: {shape['saved']} in the checkpoint, {shape['ours']} "
                         "here); resume with the model options of that run (its textmoco_config.json)")


def truncate_metrics(metrics_path: Path, step: int) -> None:
    """Drop the metrics.jsonl rows logged after ``step`` (a resumed run logs them again)."""
    if metrics_path.exists():
        rows = [r for r in metrics_path.read_text().splitlines() if r and json.loads(r)["step"] <= step]
        atomic_write_text(metrics_path, "".join(r + "\n" for r in rows))
