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
