"""Worker for tests/test_distributed.py: train the full objective on a VectorEncoder and dump what must match.

    torchrun --nproc_per_node 2 tests/dist_worker.py --batch 4 --out A.pt --output-dir runA [--head-bn]
    python tests/dist_worker.py --batch 8 --out B.pt --output-dir runB

Two processes with batch b must reproduce one process with batch 2b: the same losses (metrics are averaged over
processes), the same queue after every step (keys of all processes all-gathered in rank order) and the same
query / EMA key parameters. Views are deterministic (noise=0) and n_random=0, so nothing depends on per-process
random draws. Rank 0 writes the result; the process group is left to the launcher.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig  # noqa: E402
from textmoco.encoders.heads import ProjectionHead  # noqa: E402
from textmoco.encoders.vector import VectorEncoder  # noqa: E402
from textmoco.model import MoCoModel  # noqa: E402
from textmoco.trainer import MoCoTrainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, required=True, help="per-process batch size")
    parser.add_argument("--out", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--queue", type=int, default=20)
    parser.add_argument("--key-negatives", default="batch+queue")
    parser.add_argument("--head-bn", action="store_true", help="a BatchNorm projection head (MoCo v2's)")
    parser.add_argument("--symmetric-batch-negatives", action="store_true",
                        help="dual_mode symmetric with batch_negatives (keys of both views gathered)")
    parser.add_argument("--key-gradient", action="store_true",
                        help="with --symmetric-batch-negatives: key_encoder momentum_a and key_gradient (view b's "
                             "keys, gathered with their gradient)")
    parser.add_argument("--no-sync-bn", action="store_true", help="leave its BatchNorm per-process")
    parser.add_argument("--check-only", action="store_true",
                        help="only build the trainer and write '<out>.<RANK>' with the world size it sees")
    args = parser.parse_args()

    torch.use_deterministic_algorithms(True)
    g = torch.Generator().manual_seed(0)
    data = list(torch.randn(args.samples, 8, generator=g))
    torch.manual_seed(1234)
    head = ProjectionHead(6, hidden_dim=12, out_dim=6, num_layers=2, batch_norm=True) if args.head_bn else None
    symmetric = args.symmetric_batch_negatives
    model = MoCoModel(VectorEncoder(8, 6, hidden=16, noise=0.0), head, symmetric=symmetric)
    objective = ObjectiveConfig(temperature=0.2, dual_weight=0.5, key_negatives=args.key_negatives,
                                selection="top_k", top_k=5, n_random=0, id_guard=True, guard_threshold=0.8,
                                dual_mode="symmetric" if symmetric else "weighted", batch_negatives=symmetric,
                                key_gradient=args.key_gradient)
    train = TrainConfig(output_dir=args.output_dir, batch_size=args.batch, max_steps=args.steps, lr=1e-2,
                        momentum=0.9, max_grad_norm=1.0, progress=False, seed=0, sync_batchnorm=not args.no_sync_bn,
                        key_encoder="momentum_a" if args.key_gradient else "momentum")
    trainer = MoCoTrainer(model, data, objective, QueueConfig(size=args.queue), train)
    if args.check_only:
        with open(f"{args.out}.{os.environ.get('RANK', '0')}", "w") as f:
            f.write(f"{trainer.accelerator.num_processes} {trainer.accelerator.process_index}\n")
        return

    snapshots = []  # queue ids / keys after every step: pins the composition and order of each global batch
    enqueue = trainer.queue.enqueue

    def recording(keys, ids, gather=True, **kwargs):
        enqueue(keys, ids, gather, **kwargs)
        snapshots.append((trainer.queue.ids.clone(), trainer.queue.keys.clone()))

    trainer.queue.enqueue = recording
    history = trainer.fit()
    unwrapped = trainer.unwrapped
    states = {name: {k: v.clone() for k, v in getattr(unwrapped, name).state_dict().items()}
              for name in ("query", "key")}
    with torch.no_grad():  # both branches on one fixed batch in training mode (every rank: same batch statistics;
        # the running statistics this updates were saved above)
        probe = torch.randn(16, 8, generator=torch.Generator().manual_seed(5))
        outputs = {f"{name}_out": getattr(unwrapped, name).train()(probe) for name in ("query", "key")}
    if trainer.accelerator.is_main_process:
        torch.save({
            "world": trainer.accelerator.num_processes,
            "losses": [r["loss"] for r in history],
            "stats": history,
            "queue_keys": trainer.queue.keys.clone(), "queue_ids": trainer.queue.ids.clone(),
            "queue_ptr": trainer.queue.ptr, "queue_filled": trainer.queue.filled.clone(),
            "snap_ids": [s[0] for s in snapshots], "snap_keys": [s[1] for s in snapshots],
            **states, **outputs,
        }, args.out)


if __name__ == "__main__":
    main()
