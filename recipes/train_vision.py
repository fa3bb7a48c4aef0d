"""Train a vision backbone with the textmoco objective; linear-probe and kNN top-1 before and after.

Default (no option, no network): a small ViT from scratch on MNIST-5k (seeded 4000/1000 split), digit views, MLP
head; the output directory holds the backbone (``AutoModel.from_pretrained(dir)``), its image processor, a model
card, results.json, metrics.jsonl, training_curve.png and checkpoints/.

    accelerate launch recipes/train_vision.py [options]        (or: python recipes/train_vision.py)
"""
from __future__ import annotations

import sys
from pathlib import Path

from accelerate.utils import set_seed

from textmoco import MoCoModel
from textmoco.cli import add_bool_argument, add_run_arguments, build_parser, parse_args, run_main
from textmoco.data.images import ImageDataset, channel_stats, load_digits_split, load_image_dataset, load_mnist_5k
from textmoco.encoders.heads import ProjectionHead
from textmoco.encoders.vision import VisionEncoder
from textmoco.evaluation.probe import ProbeEvaluator
from textmoco.evaluation.protocol import curve_metrics, periodic_evaluation, run_metrics
from textmoco.runs import confirm_run, evaluate_before_training, finish_run, process_state, start_run
from textmoco.trainer import MoCoTrainer

# found on MNIST-5k (docs/VISION.md): symmetric dual-view, fast EMA (0.95 -> 1), digit views without crops, lr 2e-3
# (kNN 0.918 vs 0.882 at 1e-3, seed 1; 3e-3 no better)
VISION_DEFAULTS = {"temperature": 0.2, "momentum": 0.95, "lr": 2e-3, "weight_decay": 0.05, "batch_size": 128,
                   "max_steps": 1200, "queue_size": 4096, "dual_mode": "symmetric", "selection": "none",
                   "guard_threshold": None, "output_dir": "outputs/vision"}
DIGIT_VIEW_STRENGTH = 0.6  # weaker digit views: kNN 0.838 vs 0.820, probe 0.926 vs 0.909 at 600 steps (seed 0)


def get_parser():
    parser = build_parser(__doc__, VISION_DEFAULTS)
    g = parser.add_argument_group("vision")
    g.add_argument("--dataset", default="mnist5k",
                   help="mnist5k | digits (offline) | a datasets name (e.g. uoft-cs/cifar10) | an imagefolder path")
    g.add_argument("--train_split", default="train", help="split of --dataset for training and the probe's fit")
    g.add_argument("--test_split", default="test", help="split of --dataset for the probe's evaluation")
    g.add_argument("--image_column", default="image", help="image column of --dataset")
    g.add_argument("--label_column", default="label", help="label column of --dataset (evaluation only)")
    g.add_argument("--image_size", type=int, default=None, help="resize all images to this side (mixed sizes)")
    g.add_argument("--model", default=None,
                   help="Hub id or directory of a pretrained backbone (default: a ViT from scratch)")
    g.add_argument("--patch_size", type=int, default=4, help="scratch ViT: patch size")
    g.add_argument("--hidden_size", type=int, default=64, help="scratch ViT: width")
    g.add_argument("--num_layers", type=int, default=4, help="scratch ViT: depth")
    g.add_argument("--heads", type=int, default=4, help="scratch ViT: attention heads")
    g.add_argument("--pooling", default="mean", choices=["mean", "cls", "pooler", "auto"], help="feature pooling")
    g.add_argument("--views", default=None, choices=["digits", "rgb", "none"],
                   help="view preset (default: digits for 1-channel data, rgb otherwise)")
    g.add_argument("--view_strength", type=float, default=None,
                   help="scales all augmentation magnitudes (default: 0.6 for the digits views, measured best on "
                        "MNIST-5k, docs/VISION.md; 1.0 otherwise)")
    g.add_argument("--crop_min_scale", type=float, default=None, help="smallest random-resized-crop area fraction")
    g.add_argument("--head_hidden", type=int, default=512, help="MLP head hidden width")
    g.add_argument("--head_dim", type=int, default=128, help="MLP head output size (0 = no head)")
    add_bool_argument(g, "--head_last_bn", default=True,
                      help="affine-free BatchNorm on the head output (MoCo v3 style)")
    g.add_argument("--knn_every", type=int, default=0,
                   help="kNN monitor on the held-out split every N steps, into metrics.jsonl and the plot (0 = off)")
    add_run_arguments(parser)
    return parser


def load_data(args, seed: int):
    """(train_images, train_labels, test_images, test_labels); images uint8 (N, C, H, W)."""
    if args.dataset == "mnist5k":
        return load_mnist_5k(seed=seed)
    if args.dataset == "digits":
        return load_digits_split(seed=seed)
    kw = dict(image_column=args.image_column, label_column=args.label_column, image_size=args.image_size)
    x_tr, y_tr = load_image_dataset(args.dataset, split=args.train_split, **kw)
    x_te, y_te = load_image_dataset(args.dataset, split=args.test_split, require_labels=True, **kw)
    if y_tr is None:
        raise ValueError(f"--label_column {args.label_column!r} is missing from {args.dataset!r} "
                         f"({args.train_split}); the linear probe needs labels on the training split")
    return x_tr, y_tr, x_te, y_te


def build_encoder(args, train_images, seed: int) -> VisionEncoder:
    """A Hub/dir backbone (normalisation from its image processor) or a scratch ViT normalised with the training
    images' own per-channel statistics (on MNIST-5k better than a generic 0.5/0.5: random-init kNN 0.39 vs 0.33)."""
    channels, size = train_images.shape[1], train_images.shape[-1]
    views = args.views or ("digits" if channels == 1 else "rgb")
    strength = args.view_strength if args.view_strength is not None else DIGIT_VIEW_STRENGTH if views == "digits" \
        else 1.0
    options = {"strength": strength}
    if args.crop_min_scale is not None:
        options["crop_scale"] = (args.crop_min_scale, 1.0)
    if args.model:
        return VisionEncoder.from_pretrained(args.model, pooling=args.pooling, views=views, **options)
    mean, std = channel_stats(train_images)
    return VisionEncoder.from_scratch(image_size=size, patch_size=args.patch_size, num_channels=channels,
                                      mean=mean, std=std,
                                      hidden_size=args.hidden_size, num_layers=args.num_layers, heads=args.heads,
                                      pooling=args.pooling if args.pooling in ("mean", "cls") else "mean",
                                      views=views, seed=seed, **options)


def main(argv=None) -> dict:
    args = parse_args(get_parser(), argv)
    objective, queue, train, checkpoint = start_run(args, save_config=False)
    state = process_state()
    with state.main_process_first():  # the main process downloads/caches data and model; the others then read them
        x_tr, y_tr, x_te, y_te = load_data(args, train.seed)
        set_seed(train.seed)
        encoder = build_encoder(args, x_tr, train.seed)
    head = (ProjectionHead(encoder.embedding_dim, args.head_hidden, args.head_dim, last_batch_norm=args.head_last_bn)
            if args.head_dim else None)
    out = Path(train.output_dir)
    evaluator = ProbeEvaluator((x_tr, y_tr), (x_te, y_te))
    knn_monitor = periodic_evaluation(evaluator, args.knn_every, "--knn_every", probe=False)  # kNN: cheap to repeat
    before = evaluate_before_training(out, checkpoint,
                                      lambda: {**evaluator(encoder), "raw_pixels": evaluator.raw_pixels()})

    model = MoCoModel(encoder, head)
    trainer = MoCoTrainer(model, ImageDataset(x_tr), objective, queue, train, callbacks=[knn_monitor])
    confirm_run(trainer, checkpoint, args)  # a mismatched resume fails before the earlier run's files change
    state.print(f"training on {len(x_tr)} images for {trainer.total_steps} steps -> {out}")
    trainer.fit(resume_from=checkpoint)
    results = {"dataset": args.dataset, "train_images": len(x_tr), "test_images": len(x_te),
               "steps": trainer.state["step"]}
    if trainer.state["step"] < trainer.total_steps:
        state.print(f"stopped after step {trainer.state['step']}; continue with --resume latest")
        return results
    if state.is_main_process:
        after = evaluator(trainer.unwrapped.encoder)
        results["metrics"] = run_metrics(evaluator, after, before, baselines={"raw_pixels": before["raw_pixels"]})
        m = results["metrics"]
        print(f"linear probe top-1: random init {m['linear_probe_before']:.4f} -> trained {m['linear_probe']:.4f} "
              f"(raw pixels {m['raw_pixels_linear_probe']:.4f})")
        print(f"kNN top-1:          random init {m['knn_before']:.4f} -> trained {m['knn']:.4f} "
              f"(raw pixels {m['raw_pixels_knn']:.4f})")
    trained = trainer.unwrapped.encoder
    model_id = args.hub_model_id or str(out)
    _, pooling_comment = trained.pooling_expression()
    finish_run(trainer, train.output_dir, results,
               dict(title=f"textmoco vision backbone ({args.model or 'ViT from scratch'}, {args.dataset})",
                    base_model=args.model, modality="image",
                    vision_card=dict(dataset=args.dataset, usage_snippet=trained.usage_snippet(model_id),
                                     pooling_comment=pooling_comment, test_split=args.test_split),
                    curve_metrics=curve_metrics(evaluator, ["knn"])),
               push_to_hub=args.hub_model_id if args.push_to_hub else None, hub_private=args.hub_private)
    return results


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
