"""Worker for tests/test_st_distributed.py: TextMoCoLoss in SentenceTransformerTrainer, dumped for comparison.

    torchrun --nproc_per_node 2 tests/st_dist_worker.py --batch 4 --out two.pt --output-dir two
    python tests/st_dist_worker.py --batch 8 --out one.pt --output-dir one

Dropout is off so that no per-process random draw matters; rank 0 writes the queue, the momenta and the weights.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, \
        SentenceTransformerTrainingArguments

    import textmoco

    torch.manual_seed(0)
    model = SentenceTransformer(textmoco.default_text_model(), device="cpu")
    model.max_seq_length = 16
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    # batch_negatives: the keys are gathered for the query-anchored term too
    loss = textmoco.TextMoCoLoss(model, top_k=8, queue_size=64, momentum=0.9, filter_warmup_steps=1,
                                 batch_negatives=True)
    momenta = []
    step = loss.moco.after_optimizer_step
    loss.moco.after_optimizer_step = lambda *a, **kw: momenta.append(step(*a, **kw)) or momenta[-1]
    sentences = [f"sentence number {i} about topic {i % 7}" for i in range(48)]
    targs = SentenceTransformerTrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=args.batch, max_steps=args.steps,
        learning_rate=1e-4, seed=0, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None)
    trainer = SentenceTransformerTrainer(model=model, args=targs, loss=loss,
                                         train_dataset=Dataset.from_dict({"text": sentences}))
    trainer.train()
    if trainer.is_world_process_zero():
        name = next(k for k in model.state_dict() if k.endswith("query.weight"))
        torch.save({"world": trainer.args.world_size, "momenta": momenta, "steps": loss.steps,
                    "queue_ids": loss.queue.ids.cpu(), "queue_keys": loss.queue.keys.cpu(),
                    "queue_ptr": loss.queue.ptr, "query": model.state_dict()[name].cpu(),
                    "key": loss.key_model.state_dict()[name].cpu()}, args.out)


if __name__ == "__main__":
    main()
