"""Vision ablation: the same data, model and steps for plain MoCo, +dual-view, +hard-negative selection and both;
linear-probe and kNN top-1 per seed, mean ± std, next to the random-init and raw-pixel baselines of the same split.
Options after ``--`` go to every run (e.g. ``-- --max_steps 300``).

    python recipes/ablation_vision.py --seeds 0 1 2 --out results/ablation_vision.md
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_vision  # noqa: E402

from textmoco.ablation import CELLS, markdown_table, run_cells, slug  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per cell")
    parser.add_argument("--cells", nargs="+", default=None, help=f"subset of {list(CELLS)}")
    parser.add_argument("--work_dir", default="outputs/ablation_vision", help="where the runs go")
    parser.add_argument("--out", default="results/ablation_vision.md",
                        help="markdown table to write; the .json beside it keeps finished runs, so a rerun with "
                             "the same options only runs what is missing (other options: use another --out)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="options for every run (after --)")
    args = parser.parse_args()
    extra = [a for a in args.extra if a != "--"]
    names = args.cells or list(CELLS)
    baselines = {}

    def run(name: str, seed: int) -> dict:
        argv = ["--output_dir", str(Path(args.work_dir) / f"{slug(name)}-s{seed}"), "--overwrite", "--seed",
                str(seed), "--progress", "false"] + CELLS[name] + extra
        metrics = train_vision.main(argv)["metrics"]
        baselines[f"random init (seed {seed})"] = {"linear_probe": metrics["linear_probe_before"],
                                                   "knn": metrics["knn_before"]}
        baselines[f"raw pixels (seed {seed})"] = {"linear_probe": metrics["raw_pixels_linear_probe"],
                                                  "knn": metrics["raw_pixels_knn"]}  # each seed has its own split
        return {"linear_probe": metrics["linear_probe"], "knn": metrics["knn"]}

    json_path = Path(args.out).with_suffix(".json")
    scores = run_cells(names, args.seeds, run, json_path, extra)
    base_path = json_path.with_name(json_path.stem + "_baselines.json")
    saved = json.loads(base_path.read_text()) if base_path.exists() else {}
    saved.update(baselines)
    base_path.write_text(json.dumps(saved, indent=2))
    header = ("Linear-probe and kNN top-1 on the held-out split, mean ± std over seeds. Command: "
              f"`python recipes/ablation_vision.py --seeds {' '.join(map(str, args.seeds))}"
              f"{' -- ' + ' '.join(extra) if extra else ''}`")
    table = markdown_table(scores, [n for n in CELLS if n in scores], ["linear_probe", "knn"], header, digits=3,
                           extra_rows=dict(sorted(saved.items())))
    Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
