"""Text ablation: the same data and steps for plain MoCo, +dual-view, +hard-negative selection, both, and
sentence-transformers' in-batch MultipleNegativesRankingLoss; STS-B test Spearman x100 per seed, mean +- std,
written as a markdown table (and JSON) and printed.

    python recipes/ablation_text.py --seeds 0 1 2 --out results/ablation_text.md
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_text  # noqa: E402

from textmoco.baselines import train_in_batch_baseline  # noqa: E402
from textmoco.data.text import sts_train_sentences  # noqa: E402
from textmoco.evaluation.sts import evaluate_sts  # noqa: E402

OFF = ["--selection", "none", "--id_guard", "false", "--guard_threshold", "none"]
CELLS = {
    "plain MoCo": ["--dual_weight", "0"] + OFF,
    "+ dual-view": ["--dual_weight", "0.5"] + OFF,
    "+ hard-negative selection": ["--dual_weight", "0", "--selection", "top_k", "--top_k", "512",
                                  "--id_guard", "true", "--guard_threshold", "0.9"],
    "both (full)": [],
}


def run_cell(name: str, extra: list[str], seed: int, args) -> float:
    out = Path(args.work_dir) / f"{name.replace(' ', '_').replace('+', 'p').replace('(', '').replace(')', '')}-s{seed}"
    if name == "in-batch MNRL (sentence-transformers)":
        model = train_in_batch_baseline(train_text.default_model(), sts_train_sentences(), str(out),
                                        batch_size=64, max_steps=args.max_steps, seed=seed)
        return evaluate_sts(model, "test")["spearman"]
    argv = ["--output_dir", str(out), "--overwrite", "--seed", str(seed), "--max_steps", str(args.max_steps),
            "--no_eval_before", "--progress", "false"] + extra + args.extra
    results = train_text.main(argv)
    return results["metrics"]["sts_test_spearman"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per cell")
    parser.add_argument("--cells", nargs="+", default=None, help="subset of cells (default: all + MNRL)")
    parser.add_argument("--max_steps", type=int, default=150, help="optimizer steps per run")
    parser.add_argument("--work_dir", default="outputs/ablation_text", help="where the runs go")
    parser.add_argument("--out", default="results/ablation_text.md", help="markdown table to write")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="options passed to every textmoco run (after --)")
    args = parser.parse_args()
    args.extra = [a for a in args.extra if a != "--"]
    cells = dict(CELLS, **{"in-batch MNRL (sentence-transformers)": None})
    names = args.cells or list(cells)
    json_path = Path(args.out).with_suffix(".json")
    scores = json.loads(json_path.read_text()) if json_path.exists() else {}
    if "start" not in scores:
        scores["start"] = evaluate_sts(train_text.TextEncoder(train_text.default_model(), eval_max_length=256))["spearman"]
    for seed in args.seeds:  # seed-major: a first full row early
        for name in names:
            if str(seed) in scores.get(name, {}):
                continue  # resumable: finished runs are kept
            scores.setdefault(name, {})[str(seed)] = run_cell(name, cells[name], seed, args)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(scores, indent=2))
            print(f"{name} seed {seed}: {scores[name][str(seed)]:.2f}", flush=True)
    seeds = sorted({s for n in names for s in scores.get(n, {})}, key=int)
    lines = [f"STS-B test Spearman x100 after {args.max_steps} steps of batch 64 from all-MiniLM-L6-v2 "
             f"(start: {scores['start']:.2f}). Command: `python recipes/ablation_text.py "
             f"--seeds {' '.join(map(str, args.seeds))}`", "",
             "| cell | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for name in names:
        vals = [scores[name][s] for s in seeds if s in scores.get(name, {})]
        std = statistics.stdev(vals) if len(vals) > 1 else 0.0
        cells_txt = " | ".join(f"{scores[name][s]:.2f}" if s in scores.get(name, {}) else "" for s in seeds)
        lines.append(f"| {name} | {cells_txt} | {statistics.mean(vals):.2f} ± {std:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
