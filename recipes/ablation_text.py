"""Text ablations and studies on the field's STS protocol (STS12-16 "all" + STS-B test, Spearman x100, and their
average): every cell is the text recipe with some options, run per seed; mean ± std per task, written as a
markdown table (and JSON, resumable) and printed. Options after ``--`` go to every textmoco run.

    python recipes/ablation_text.py --seeds 0 1 2                       # METHOD.md's cells + in-batch MNRL
    python recipes/ablation_text.py --study selection --seeds 0         # where selection / the guards help
    python recipes/ablation_text.py --study defaults --seeds 0          # the search behind the recipe defaults

STS12-16 come from ``--senteval_dir`` (SentEval layout; default: found automatically, see train_text.py --help).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_text  # noqa: E402

from textmoco.ablation import STUDIES, markdown_table, run_cells, slug  # noqa: E402
from textmoco.baselines import train_in_batch_baseline  # noqa: E402
from textmoco.evaluation.sts_suite import headline  # noqa: E402

MNRL = "in-batch MNRL (sentence-transformers)"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="ablation", choices=sorted(STUDIES), help="which set of cells")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds per cell")
    parser.add_argument("--cells", nargs="+", default=None, help="a subset of the study's cells (by name)")
    parser.add_argument("--work_dir", default="outputs/ablation_text", help="where the runs go")
    parser.add_argument("--keep_runs", action="store_true", help="keep each run's directory (default: delete)")
    parser.add_argument("--out", default=None, help="markdown table to write (default results/<study>_text.md); "
                        "the .json beside it keeps finished runs, so a rerun only runs what is missing")
    parser.add_argument("--table_only", action="store_true",
                        help="run nothing: write the table of the runs already in the JSON (cells/seeds that exist)")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="options for every textmoco run (after --)")
    args = parser.parse_args(argv)
    extra = [a for a in args.extra if a != "--"]
    cells = dict(STUDIES[args.study])
    if args.study == "ablation":
        cells[MNRL] = None
    names = args.cells or list(cells)
    unknown = sorted(set(names) - set(cells))
    if unknown:
        raise SystemExit(f"error: unknown cell(s) {unknown}; the {args.study} study has {list(cells)}")
    out = Path(args.out or f"results/{args.study}_text.md")
    json_path = out.with_suffix(".json")

    def run(name: str, seed: int) -> dict:
        import shutil

        run_dir = Path(args.work_dir) / args.study / f"{slug(name)}-s{seed}"
        base = ["--output_dir", str(run_dir), "--overwrite", "--seed", str(seed), "--no_eval_before",
                "--progress", "false"]
        if cells[name] is None:  # the sentence-transformers baseline, on the same corpus and budget
            opts = train_text.parse_args(train_text.get_parser(), base + extra)
            model = train_in_batch_baseline(train_text.default_model(), train_text.load_sentences(opts), str(run_dir),
                                            batch_size=opts.batch_size, max_steps=opts.max_steps, lr=opts.lr,
                                            seed=seed, max_length=opts.max_length, temperature=opts.temperature)
            evaluator = train_text.build_evaluator(opts)
            scores = evaluator.headline(evaluator(model))
        else:
            results = train_text.main(base + cells[name] + extra)
            scores = {k: v for k, v in results["metrics"].items() if k in headline(results["metrics"])}
            scores.update({f"{k}/{t}": v for k, r in results.items() if k.startswith("average_with_start_")
                           for t, v in r.items() if t == "sts_avg"})
        if not args.keep_runs:
            shutil.rmtree(run_dir, ignore_errors=True)
        return scores

    if args.table_only:
        scores = json.loads(json_path.read_text()) if json_path.exists() else {}
        if "start" not in scores:
            raise SystemExit(f"error: {json_path} holds no finished runs (and no start-model scores)")
    else:
        scores = run_cells(names, args.seeds, run, json_path, extra)
    if "start" not in scores:
        opts = train_text.parse_args(train_text.get_parser(), extra)
        import torch

        encoder = train_text.TextEncoder(opts.model or train_text.default_model(), eval_max_length=256)
        encoder.to("cuda" if torch.cuda.is_available() else "cpu")
        evaluator = train_text.build_evaluator(opts)
        scores["start"] = evaluator.headline(evaluator(encoder))
        json_path.write_text(json.dumps(scores, indent=2))
    metrics = list(scores["start"])
    header = (f"Spearman x100 (cosine; STS12-16 in the 'all' setting), mean ± std over seeds; start model "
              f"{json.dumps({k: round(v, 2) for k, v in scores['start'].items()})}. Command: `python "
              f"recipes/ablation_text.py --study {args.study} --seeds {' '.join(map(str, args.seeds))}"
              f"{' -- ' + ' '.join(extra) if extra else ''}`")
    table = markdown_table(scores, [n for n in cells if n in scores], ["sts_avg"] + [m for m in metrics
                                                                                    if m != "sts_avg"], header,
                           extra_rows={"start model": scores["start"]})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
