"""Seconds per optimizer step of the retrieval recipe's textmoco objective and of sentence-transformers' MNRL,
CachedMNRL and GISTEmbedLoss on the same wiki-vital (description, article) pairs, measured side by side in one run,
and the equal-time step budgets that follow: ``equal_time_steps_<name>`` = textmoco's steps x (its s/step / the
baseline's); the textmoco run uses ``--key_encoder`` (default: the recipe's pairs default, ``momentum_a``) and
``--key_mode`` as given, and the other key encoders and the other key mode are timed beside it
(``s_per_step_textmoco_key_encoder_<other>``, ``s_per_step_textmoco_key_mode_<other>``). The ablation of
results/ablation_retrieval.md gives each baseline that many steps, so the comparison at equal wall time does not
depend on how loaded the machine was while each run trained.

Any option of recipes/train_retrieval.py passes through (batch size, lengths, objective), e.g.

    python benchmarks/bench_retrieval.py --steps 6 [--textmoco_steps 100] [--batch_size 32] [--max_length 128]

Prints ``name=value`` lines. Run it alone: two cores under load read several times slower.
"""
from __future__ import annotations

import copy
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "recipes"))
sys.path.insert(0, str(REPO / "benchmarks"))
import train_retrieval as recipe  # noqa: E402
from bench_text import median_interval, step_clock  # noqa: E402

from textmoco.cli import configs_from_args  # noqa: E402
from textmoco.config import KEY_ENCODERS  # noqa: E402
from textmoco.data.wiki_vital import read_articles, retrieval_splits  # noqa: E402

BASELINES = ("mnrl", "cached_mnrl", "gist")


def textmoco_step_s(args, pairs, out: str, **train_options) -> float:
    objective, queue, train = configs_from_args(args)
    train = dataclasses.replace(train, output_dir=out, max_steps=args.steps + 1, progress=False, save_every=None,
                                **train_options)
    torch.manual_seed(0)
    trainer = recipe.build_trainer(args, objective, queue, train, pairs, recipe.load_encoder(args))
    trainer.save = lambda: None
    return median_interval([row["elapsed_s"] for row in trainer.fit()])


def st_step_s(args, pairs, out: str, baseline: str) -> float:
    clock, stamps = step_clock()
    args = copy.copy(args)  # the caller's options stay as parsed
    args.baseline, args.max_steps, args.max_time_s = baseline, args.steps + 1, 0.0
    recipe.train_st_baseline(args, pairs, Path(out), recipe.default_model(), seed=0, callbacks=[clock])
    return median_interval(stamps)


def main(argv=None) -> None:
    parser = recipe.get_parser()
    parser.description = __doc__
    g = parser.add_argument_group("benchmark")
    g.add_argument("--steps", type=int, default=6, help="timed steps per method (median of the step intervals)")
    g.add_argument("--textmoco_steps", type=int, default=100, help="steps of the textmoco run to match in time")
    args = parser.parse_args(argv)
    articles = read_articles(recipe.articles_path(args))
    args.mode = "pairs"
    recipe.apply_mode_defaults(args)
    pairs = recipe.training_data(args, articles, retrieval_splits(articles)["train"], seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        steps = {"textmoco": textmoco_step_s(args, pairs, f"{tmp}/tm")}
        for other in [name for name in KEY_ENCODERS if name != args.key_encoder]:
            steps[f"textmoco_key_encoder_{other}"] = textmoco_step_s(args, pairs, f"{tmp}/tm-{other}",
                                                                     key_encoder=other)
        other = "eval" if args.key_mode == "train" else "train"
        steps[f"textmoco_key_mode_{other}"] = textmoco_step_s(args, pairs, f"{tmp}/tm-{other}", key_mode=other)
        for name in BASELINES:
            steps[name] = st_step_s(args, pairs, f"{tmp}/{name}", name)
    print(f"threads={torch.get_num_threads()} batch_size={args.batch_size} max_length={args.max_length} "
          f"key_encoder={args.key_encoder} key_mode={args.key_mode}")
    for name, step in steps.items():
        print(f"s_per_step_{name}={step:.3f}")
    for name in [n for n in steps if n != "textmoco"]:
        print(f"step_time_ratio_{name}_vs_textmoco={steps[name] / steps['textmoco']:.3f}")
        print(f"equal_time_steps_{name}={round(args.textmoco_steps * steps['textmoco'] / steps[name])}")


if __name__ == "__main__":
    main()
