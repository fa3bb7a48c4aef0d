"""Evaluate a vision backbone with frozen features: logistic-regression linear probe and weighted kNN (k=200,
tau=0.1) top-1, on MNIST-5k (default), digits or any datasets image dataset.

    python recipes/eval_linear_probe.py --model PATH_OR_HUB_ID [--dataset mnist5k|digits|NAME|DIR]
"""
from __future__ import annotations

import json
import sys
from argparse import RawDescriptionHelpFormatter

from textmoco.cli import OneLineErrorParser, add_bool_argument, run_main
from textmoco.encoders.vision import VisionEncoder
from textmoco.evaluation.probe import ProbeEvaluator
from textmoco.runs import rounded


def main(argv=None) -> dict:
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from train_vision import load_data

    parser = OneLineErrorParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="backbone directory (e.g. a train_vision.py output) or Hub id")
    parser.add_argument("--dataset", default="mnist5k", help="mnist5k | digits | datasets name | imagefolder path")
    parser.add_argument("--train_split", default="train")
    parser.add_argument("--test_split", default="test")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--image_size", type=int, default=None, help="resize images to this side")
    parser.add_argument("--pooling", default="auto", help="auto (as trained) | cls | mean | pooler")
    parser.add_argument("--seed", type=int, default=0, help="split seed of mnist5k/digits")
    add_bool_argument(parser, "--raw_pixels", help="also report the raw-pixel baseline")
    args = parser.parse_args(argv)
    x_tr, y_tr, x_te, y_te = load_data(args, args.seed)
    try:
        encoder = VisionEncoder.from_pretrained(args.model, pooling=args.pooling, views="none")
    except OSError as err:
        raise ValueError(f"model {args.model!r} could not be loaded ({str(err).splitlines()[0]}); pass a "
                         "directory written by train_vision.py / save_pretrained or a reachable Hub id") from err
    evaluator = ProbeEvaluator((x_tr, y_tr), (x_te, y_te))
    results = evaluator(encoder)
    if args.raw_pixels:
        results["raw_pixels"] = evaluator.raw_pixels()
    print(json.dumps(rounded(results)))
    return results


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
