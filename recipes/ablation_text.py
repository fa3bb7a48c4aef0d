"""Text ablation: the same data and steps for plain MoCo, +dual-view, +hard-negative selection, both, and
sentence-transformers' in-batch MultipleNegativesRankingLoss; STS-B test Spearman x100 per seed, mean ± std,
written as a markdown table (and JSON, resumable) and printed. Options after ``--`` go to every textmoco run.

    python recipes/ablation_text.py --seeds 0 1 2 --out results/ablation_text.md [-- --top_k 128]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_text  # noqa: E402

from textmoco.ablation import CELLS, markdown_table, run_cells, slug  # noqa: E402
from textmoco.baselines import train_in_batch_baseline  # noqa: E402
from textmoco.data.text import sts_train_sentences  # noqa: E402
from textmoco.evaluation.sts import evaluate_sts  # noqa: E402

MNRL = "in-batch MNRL (sentence-transformers)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per cell")
    parser.add_argument("--cells", nargs="+", default=None, help=f"subset of {list(CELLS) + [MNRL]}")
    parser.add_argument("--max_steps", type=int, default=150, help="optimizer steps per run")
    parser.add_argument("--work_dir", default="outputs/ablation_text", help="where the runs go")
    parser.add_argument("--out", default="results/ablation_text.md",
                        help="markdown table to write; the .json beside it keeps finished runs, so a rerun with "
                             "the same options only runs what is missing (other options: use another --out)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="options for every textmoco run (after --)")
    args = parser.parse_args()
    extra = [a for a in args.extra if a != "--"]
    names = args.cells or list(CELLS) + [MNRL]
    json_path = Path(args.out).with_suffix(".json")
    saved = json.loads(json_path.read_text()) if json_path.exists() else {}
    for runs in (v for v in saved.values() if isinstance(v, dict)):  # older files stored bare floats
        runs.update({s: {"spearman": v} for s, v in runs.items() if isinstance(v, float)})
    if "start" not in saved:
        encoder = train_text.TextEncoder(train_text.default_model(), eval_max_length=256)
        saved["start"] = evaluate_sts(encoder)["spearman"]
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(saved, indent=2))

    def run(name: str, seed: int) -> dict:
        out = Path(args.work_dir) / f"{slug(name)}-s{seed}"
        if name == MNRL:
            model = train_in_batch_baseline(train_text.default_model(), sts_train_sentences(), str(out),
                                            batch_size=64, max_steps=args.max_steps, seed=seed)
            return {"spearman": evaluate_sts(model, "test")["spearman"]}
        argv = ["--output_dir", str(out), "--overwrite", "--seed", str(seed), "--max_steps", str(args.max_steps),
                "--no_eval_before", "--progress", "false"] + CELLS[name] + extra
        return {"spearman": train_text.main(argv)["metrics"]["sts_test_spearman"]}

    scores = run_cells(names, args.seeds, run, json_path, ["--max_steps", str(args.max_steps)] + extra)
    header = (f"STS-B test Spearman ×100 after {args.max_steps} steps of batch 64 from all-MiniLM-L6-v2 (start: "
              f"{scores['start']:.2f}); mean ± std over seeds. Command: `python recipes/ablation_text.py "
              f"--seeds {' '.join(map(str, args.seeds))}{' -- ' + ' '.join(extra) if extra else ''}`")
    table = markdown_table(scores, [n for n in list(CELLS) + [MNRL] if n in scores], ["spearman"], header)
    Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
