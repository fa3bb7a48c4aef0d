"""The ablation harness shared by the text and vision ablation recipes: the four cells of METHOD.md (plain MoCo,
+dual-view, +hard-negative selection, both), a resumable seed loop (finished runs are kept in a JSON file), and a
markdown table of mean ± std per metric."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable, Optional, Sequence

_OFF = ["--selection", "none", "--id_guard", "false", "--guard_threshold", "none"]
_SELECT = ["--selection", "top_k", "--top_k", "512", "--id_guard", "true", "--guard_threshold", "0.9"]
CELLS: dict[str, list[str]] = {
    # the dual cells keep the recipe's dual_mode (text: weighted; vision: symmetric); the others switch it off
    "plain MoCo": ["--dual_mode", "weighted", "--dual_weight", "0"] + _OFF,
    "+ dual-view": ["--dual_weight", "0.5"] + _OFF,
    "+ hard-negative selection": ["--dual_mode", "weighted", "--dual_weight", "0"] + _SELECT,
    "both (full)": ["--dual_weight", "0.5"] + _SELECT,
}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def run_cells(names: list[str], seeds: list[int], run: Callable[[str, int], dict], json_path: str | Path,
              options: Sequence[str] = ()) -> dict:
    """``run(cell, seed) -> {metric: value}`` for every (seed, cell) not yet in ``json_path`` (seed-major, so
    a first full row comes early); results are saved after each run, each with the ``options`` every run of the
    table shares. A saved run made with other options is an error (naming both), not silently reused: a table
    never mixes settings. Returns {cell: {seed: {metric: value, "options": [...]}}}."""
    json_path, options = Path(json_path), list(options)
    scores = json.loads(json_path.read_text()) if json_path.exists() else {}
    for name in names:
        for seed, saved in scores.get(name, {}).items():
            if saved.get("options") != options:
                raise ValueError(f"{json_path} holds {name!r} seed {seed} run with options {saved.get('options')} "
                                 f"but this ablation has {options}; use another --out (or delete that file) "
                                 "to start a table with these options")
    for seed in seeds:
        for name in names:
            if str(seed) in scores.get(name, {}):
                continue
            scores.setdefault(name, {})[str(seed)] = {**run(name, seed), "options": options}
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(scores, indent=2))
            print(f"{name} seed {seed}: {scores[name][str(seed)]}", flush=True)
    return scores


def markdown_table(scores: dict, names: list[str], metrics: list[str], header: str, digits: int = 2,
                   scale: float = 1.0, extra_rows: Optional[dict[str, dict[str, float]]] = None) -> str:
    """One row per cell: per-seed values of the first metric and mean ± std of every metric."""
    seeds = sorted({s for n in names for s in scores.get(n, {})}, key=int)
    cols = [f"seed {s} ({metrics[0]})" for s in seeds] + [f"{m} mean ± std" for m in metrics]
    lines = [header, "", "| cell | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    fmt = f"{{:.{digits}f}}"
    for name in names:
        runs = scores.get(name, {})
        per_seed = [fmt.format(runs[s][metrics[0]] * scale) if s in runs else "" for s in seeds]
        summary = []
        for m in metrics:
            vals = [runs[s][m] * scale for s in seeds if s in runs]
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            summary.append(f"{fmt.format(statistics.mean(vals))} ± {fmt.format(std)} (n={len(vals)})" if vals else "")
        lines.append(f"| {name} | " + " | ".join(per_seed + summary) + " |")
    for name, values in (extra_rows or {}).items():
        lines.append(f"| {name} | " + " | ".join([""] * len(seeds) + [fmt.format(values[m] * scale)
                                                                       if m in values else "" for m in metrics]) + " |")
    return "\n".join(lines) + "\n"
