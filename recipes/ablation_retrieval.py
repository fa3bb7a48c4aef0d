"""The retrieval ablation (issue 12 item 4): textmoco's ideas on wiki-vital description -> article retrieval, TEST
split, pairs mode, plus the sentence-transformers baselines at equal wall time and the unsupervised crops run.
Every cell is recipes/train_retrieval.py with some options, run per seed; nDCG@10, MRR@10, Recall@1/10/100 as
mean ± std over seeds in a markdown table (and a resumable JSON). Options after ``--`` go to every run.

    python recipes/ablation_retrieval.py --seeds 0 1 2 --cells "plain MoCo ..." "full ..."
    python recipes/ablation_retrieval.py --seeds 0 --baseline_steps mnrl=159 cached_mnrl=106 gist=131
    python recipes/ablation_retrieval.py --seeds 0 --textmoco_steps 300 --baseline_steps mnrl=491

``--baseline_steps`` gives each sentence-transformers loss the steps that take it as long as textmoco's
``--textmoco_steps`` (100) steps
(``python benchmarks/bench_retrieval.py`` measures them side by side), so "equal wall time" does not depend on the
load of the machine during each run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_retrieval  # noqa: E402

from textmoco.ablation import RETRIEVAL_ABLATION, markdown_table, merge_runs, paired_comparison, run_cells, slug  # noqa: E402

METRICS = ["ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100"]


def baseline_cells(budget: list[str], textmoco_steps: int = 100, batch_size: int | None = None,
                   lr: str | None = None) -> dict[str, list[str]]:
    """Cells for ``NAME=STEPS`` items, named after the textmoco run they match in wall time (and the batch size and
    learning rate, where given: the recipe's 32 and 5e-5 otherwise)."""
    cells = {}
    for item in budget:
        name, _, steps = item.partition("=")
        if name not in ("mnrl", "cached_mnrl", "gist") or not steps.isdigit():
            raise SystemExit(f"error: --baseline_steps {item!r}: expected mnrl|cached_mnrl|gist=STEPS")
        options = ["--baseline", name, "--max_steps", steps]
        setting = ""
        if batch_size:
            setting, options = f", batch {batch_size}", options + ["--batch_size", str(batch_size)]
        if lr:
            setting, options = f"{setting}, lr {lr}", options + ["--lr", lr]
        cells[f"ST {name}{setting}, {steps} steps (= textmoco's {textmoco_steps} in time)"] = options
    return cells


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds per cell")
    parser.add_argument("--cells", nargs="+", default=None, help="a subset of the cells (by name)")
    parser.add_argument("--baseline_steps", nargs="*", default=[], metavar="NAME=STEPS",
                        help="add sentence-transformers baseline cells: mnrl|cached_mnrl|gist=steps")
    parser.add_argument("--textmoco_steps", type=int, default=100,
                        help="the textmoco steps whose wall time --baseline_steps matches (names the cells)")
    parser.add_argument("--baseline_batch_size", type=int, default=None,
                        help="batch size of the --baseline_steps cells (names them; default: the recipe's 32)")
    parser.add_argument("--baseline_lr", default=None,
                        help="learning rate of the --baseline_steps cells (names them; default: the recipe's 5e-5)")
    parser.add_argument("--work_dir", default="outputs/ablation_retrieval", help="where the runs go")
    parser.add_argument("--out", default="results/ablation_retrieval.md", help="markdown table; the .json beside "
                        "it keeps finished runs, so a rerun only runs what is missing")
    parser.add_argument("--merge", nargs="*", default=[], help="other JSON files of finished runs to "
                        "include (made with the same options after --; a run with other options, or another run of "
                        "the same cell and seed, is an error)")
    parser.add_argument("--compare", nargs=2, metavar=("CELL_A", "CELL_B"), default=None,
                        help="also print CELL_A against CELL_B on their common seeds: mean differences and a paired "
                        "t-test per metric")
    parser.add_argument("--table_only", action="store_true", help="run nothing: tabulate the finished runs")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="options for every run (after --)")
    args = parser.parse_args(argv)
    extra = [a for a in args.extra if a != "--"]
    baselines = baseline_cells(args.baseline_steps, args.textmoco_steps, args.baseline_batch_size,
                               args.baseline_lr)
    cells = {**RETRIEVAL_ABLATION, **baselines}
    names = args.cells or list(cells)
    unknown = sorted(set(names) - set(cells))
    if unknown:
        raise SystemExit(f"error: unknown cell(s) {unknown}; the cells are {list(cells)}")
    out = Path(args.out)
    json_path = out.with_suffix(".json")

    def run(name: str, seed: int) -> dict:
        run_dir = Path(args.work_dir) / f"{slug(name)}-s{seed}"
        results = train_retrieval.main(["--output_dir", str(run_dir), "--overwrite", "--seed", str(seed),
                                        "--no_eval_before", "--progress", "false", *cells[name], *extra])
        shutil.rmtree(run_dir, ignore_errors=True)
        return {**{m: results["after"][m] for m in METRICS}, "steps": results["steps"],
                "s_per_step": results["s_per_step"]}

    if not args.table_only:
        run_cells(names, args.seeds, run, json_path, extra)
    scores = json.loads(json_path.read_text()) if json_path.exists() else {}
    for other in args.merge:
        merge_runs(scores, json.loads(Path(other).read_text()), extra, source=other)
    json_path.write_text(json.dumps(scores, indent=2))
    start = json.loads((train_retrieval.REPO / "results" / "retrieval.json").read_text())
    header = ("wiki-vital description -> article, TEST split (1914 queries, 10,033 articles), x100, mean ± std over "
              "seeds. Command: `python recipes/ablation_retrieval.py` (see results/retrieval.md).")
    extra_rows = {row: {m: start[key][m] for m in METRICS} for row, key in
                  (("start model all-MiniLM-L6-v2", "start_model"), ("BM25", "bm25"))}
    order = [n for n in cells if n in scores] + [n for n in scores if n not in cells]
    table = markdown_table(scores, order, METRICS, header, extra_rows=extra_rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print(table)
    if args.compare:
        print(paired_comparison(scores, *args.compare, METRICS))


if __name__ == "__main__":
    main()
