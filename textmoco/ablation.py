"""The ablation harness shared by the text and vision ablation recipes: the four cells of METHOD.md (plain MoCo,
+dual-view, +hard-negative selection, both), a resumable seed loop (finished runs are kept in a JSON file), and a
markdown table of mean ± std per metric."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable, Optional, Sequence

_OFF = ["--selection", "none", "--id_guard", "false", "--guard_threshold", "none", "--guide_threshold", "none"]
_SELECT = ["--selection", "top_k", "--top_k", "512", "--id_guard", "true", "--guard_threshold", "0.9",
           "--guide_threshold", "none"]
CELLS: dict[str, list[str]] = {
    # the dual cells keep the recipe's dual_mode (text: weighted; vision: symmetric); the others switch it off
    "plain MoCo": ["--dual_mode", "weighted", "--dual_weight", "0"] + _OFF,
    "+ dual-view": ["--dual_weight", "0.5"] + _OFF,
    "+ hard-negative selection": ["--dual_mode", "weighted", "--dual_weight", "0"] + _SELECT,
    "both (full)": ["--dual_weight", "0.5"] + _SELECT,
}


# the objective the defaults search ran with (the library's defaults then); a cell's own options come after
_SEARCH_OBJECTIVE = ["--temperature", "0.05", "--selection", "top_k", "--top_k", "512", "--guard_threshold", "0.9",
                     "--guide_threshold", "none"]


def _run(corpus: str, lr: float, steps: int, max_length: int = 32, *more: str) -> list[str]:
    return [*_SEARCH_OBJECTIVE, "--corpus", corpus, "--lr", str(lr), "--max_steps", str(steps),
            "--max_length", str(max_length), "--eval_average_alphas", "0.5", *more]


_CORPORA = {"stsb": "stsb-train", "wiki": "wiki-vital", "stsb+wiki": "stsb-train+wiki-vital"}
# the search behind the text recipe's defaults (corpus, lr, steps, length, dual weight, temperature, batch)
DEFAULTS_STUDY: dict[str, list[str]] = {
    f"{short} lr {lr:g} {steps} steps": _run(corpus, lr, steps)
    for short, corpus in _CORPORA.items() for lr in (2e-5, 5e-5, 1e-4) for steps in (150, 400)}
DEFAULTS_STUDY.update({
    "wiki lr 5e-05 400 steps len 64": _run("wiki-vital", 5e-5, 400, 64),
    "stsb+wiki lr 5e-05 400 steps len 64": _run("stsb-train+wiki-vital", 5e-5, 400, 64),
    "stsb lr 5e-05 400 steps dual 1.0": _run("stsb-train", 5e-5, 400, 32, "--dual_weight", "1.0"),
    "stsb+wiki lr 5e-05 400 steps dual 1.0": _run("stsb-train+wiki-vital", 5e-5, 400, 32, "--dual_weight", "1.0"),
    "stsb+wiki lr 5e-05 400 steps tau 0.1": _run("stsb-train+wiki-vital", 5e-5, 400, 32, "--temperature", "0.1"),
    "stsb+wiki lr 5e-05 200 steps batch 128": _run("stsb-train+wiki-vital", 5e-5, 200, 32, "--batch_size", "128"),
    # second round, around the best of the first (stsb, lr 1e-4, 400 steps)
    "stsb lr 0.0001 300 steps": _run("stsb-train", 1e-4, 300),
    "stsb lr 0.0001 300 steps tau 0.1": _run("stsb-train", 1e-4, 300, 32, "--temperature", "0.1"),
    "stsb lr 0.0002 300 steps": _run("stsb-train", 2e-4, 300),
    "stsb lr 0.0002 300 steps tau 0.1": _run("stsb-train", 2e-4, 300, 32, "--temperature", "0.1"),
    "stsb lr 0.0001 400 steps tau 0.1": _run("stsb-train", 1e-4, 400, 32, "--temperature", "0.1"),
    "stsb lr 0.0001 600 steps": _run("stsb-train", 1e-4, 600),
    "stsb lr 0.0001 400 steps dual 0.75": _run("stsb-train", 1e-4, 400, 32, "--dual_weight", "0.75"),
    "stsb lr 0.0001 400 steps dual 0.25": _run("stsb-train", 1e-4, 400, 32, "--dual_weight", "0.25"),
    "stsb+wiki lr 0.0001 400 steps tau 0.1": _run("stsb-train+wiki-vital", 1e-4, 400, 32, "--temperature", "0.1"),
    "wiki lr 0.0001 400 steps tau 0.1": _run("wiki-vital", 1e-4, 400, 32, "--temperature", "0.1"),
})

_NONE = ["--selection", "none", "--id_guard", "true", "--guard_threshold", "none"]
# the selection study's base (then the best of the defaults search); each cell's options come after it
_SELECTION_BASE = ["--corpus", "stsb-train", "--lr", "1e-4", "--max_steps", "400", "--temperature", "0.05",
                   "--guide_threshold", "none"] + _NONE
# where hard-negative selection and the false-negative guards help, on top of the recipe's defaults
SELECTION_STUDY: dict[str, list[str]] = {
    "no selection, no similarity guard": _NONE,
    "top_k 512 + guard 0.9": ["--selection", "top_k", "--top_k", "512", "--guard_threshold", "0.9"],
    "top_k 128 + guard 0.9": ["--selection", "top_k", "--top_k", "128", "--guard_threshold", "0.9"],
    "top_k 2048 + guard 0.9": ["--selection", "top_k", "--top_k", "2048", "--guard_threshold", "0.9"],
    "top_fraction 0.05 + guard 0.9": ["--selection", "top_fraction", "--top_fraction", "0.05",
                                      "--guard_threshold", "0.9"],
    "min_similarity 0.3 + guard 0.9": ["--selection", "min_similarity", "--min_similarity", "0.3",
                                       "--guard_threshold", "0.9"],
    "guard 0.8 only": ["--selection", "none", "--guard_threshold", "0.8"],
    "guard 0.7 only": ["--selection", "none", "--guard_threshold", "0.7"],
    "top_k 512 + guard 0.9, no warm-up": ["--selection", "top_k", "--top_k", "512", "--guard_threshold", "0.9",
                                          "--filter_warmup_steps", "0"],
    "K 16384, no selection": ["--queue_size", "16384"] + _NONE,
    "K 16384, top_k 512 + guard 0.9, warm-up 100": ["--queue_size", "16384", "--selection", "top_k", "--top_k",
                                                    "512", "--guard_threshold", "0.9", "--filter_warmup_steps", "100"],
    "K 65536, no selection": ["--queue_size", "65536"] + _NONE,
    "K 65536, top_k 512 + guard 0.9, warm-up 100": ["--queue_size", "65536", "--selection", "top_k", "--top_k",
                                                    "512", "--guard_threshold", "0.9", "--filter_warmup_steps", "100"],
    "tau 0.1, no selection": ["--temperature", "0.1"] + _NONE,
    "tau 0.1, top_k 512 + guard 0.9": ["--temperature", "0.1", "--selection", "top_k", "--top_k", "512",
                                       "--guard_threshold", "0.9"],
    "guide 0.9 only": ["--guide_threshold", "0.9"] + _NONE,
    "guide 0.8 only": ["--guide_threshold", "0.8"] + _NONE,
    "guide 0.7 only": ["--guide_threshold", "0.7"] + _NONE,
    "guide 0.8 + top_k 512": ["--guide_threshold", "0.8", "--selection", "top_k", "--top_k", "512",
                              "--guard_threshold", "none"],
}
SELECTION_STUDY = {name: _SELECTION_BASE + options for name, options in SELECTION_STUDY.items()}
# the text ablation: METHOD.md's four cells, the guide guard alone, and the text recipe's default objective
TEXT_ABLATION = {**CELLS,
                 "+ guide guard (start model, 0.8)": ["--dual_mode", "weighted", "--dual_weight", "0"] + _NONE +
                 ["--guide_threshold", "0.8"],
                 "default (dual-view + id guard + guide 0.8)": [],
                 "default on wiki-vital (no evaluation sentence)": ["--corpus", "wiki-vital"]}
STUDIES = {"ablation": TEXT_ABLATION, "defaults": DEFAULTS_STUDY, "selection": SELECTION_STUDY}

# The retrieval (pairs) ablation of recipes/ablation_retrieval.py. Filters start at step 10: with the recipe's
# 100 steps x 32 the queue (4096) never fills, so the default warm-up ("until full") would keep them off.
_R_WARM = ["--filter_warmup_steps", "10"]
_R_ONEWAY = ["--dual_mode", "weighted", "--dual_weight", "0"]
_R_GUARDS = ["--id_guard", "true", "--guard_threshold", "0.9", "--guide_threshold", "0.8"]
_R_PAIRS_DEFAULT = ["--momentum", "0.9", "--key_encoder", "momentum_a"]  # the pairs default since the ninth session
RETRIEVAL_ABLATION: dict[str, list[str]] = {
    "plain MoCo (query enc. on descriptions, momentum enc. on articles)": _R_ONEWAY + _OFF,
    "+ dual-view (symmetric)": ["--dual_mode", "symmetric", "--dual_weight", "0.5"] + _OFF,
    "+ selection (top_k 512)": _R_ONEWAY + ["--selection", "top_k", "--top_k", "512", "--id_guard", "false",
                                            "--guard_threshold", "none", "--guide_threshold", "none"] + _R_WARM,
    "+ guards (id, similarity 0.9, guide 0.8)": _R_ONEWAY + ["--selection", "none"] + _R_GUARDS + _R_WARM,
    "full (dual-view + top_k 512 + guards)": ["--dual_mode", "symmetric", "--dual_weight", "0.5", "--selection",
                                              "top_k", "--top_k", "512"] + _R_GUARDS + _R_WARM,
    "recipe default objective, momentum 0.9 (dev: 81.98 vs 80.05 at 0.995)": ["--momentum", "0.9"],
    "crops, unsupervised (dual-view + id guard, momentum 0.995)": ["--mode", "crops"],
    "crops, unsupervised, momentum 0.9 (the pairs default)": ["--mode", "crops", "--momentum", "0.9"],
    # queue size (issue 12 item 4): at 100 steps x 32 = 3,200 keys neither 4k nor 32k fills; at 300 steps (9,600
    # keys) the 4,096-slot queue has cycled twice while the 32,768-slot one still holds every key
    "recipe default, 300 steps, queue 4096": ["--momentum", "0.9", "--max_steps", "300", "--queue_size", "4096"],
    "recipe default, 300 steps, queue 32768": ["--momentum", "0.9", "--max_steps", "300", "--queue_size", "32768"],
    # keys of the articles from the query pass (no extra pass on the long side), of the descriptions from the EMA
    # copy: a step costs 1.185x MNRL's (bench_retrieval.py, 2 threads), so 134 steps take as long as MNRL's 159
    "key_encoder momentum_a, 134 steps (= MNRL's 159 in time)": _R_PAIRS_DEFAULT + ["--max_steps", "134"],
    "crops, key_encoder momentum_a (view b's crop keys from the query pass)": ["--mode", "crops", "--key_encoder",
                                                                              "momentum_a"],
    "recipe default since the ninth session (key_encoder momentum_a, momentum 0.9, 100 steps)": _R_PAIRS_DEFAULT,
    # the longer horizon with the current default (tenth session; MNRL's equal time: --baseline_steps mnrl=330)
    "recipe default (key_encoder momentum_a), 300 steps": _R_PAIRS_DEFAULT + ["--max_steps", "300"],
    # a smaller batch, where a queue should matter most: 16 x 200 takes the time of 32 x 100 (eleventh session;
    # MNRL at the same batch: --baseline_batch_size 16 --textmoco_steps 200 --baseline_steps mnrl=220)
    "recipe default, batch 16 x 200 steps": _R_PAIRS_DEFAULT + ["--batch_size", "16", "--max_steps", "200"],
    # smaller still (sixteenth session; benchmarks/bench_retrieval.py --batch_size 8 --textmoco_steps 400: MNRL's
    # equal time --baseline_batch_size 8 --textmoco_steps 400 --baseline_steps mnrl=422)
    "recipe default, batch 8 x 400 steps": _R_PAIRS_DEFAULT + ["--batch_size", "8", "--max_steps", "400"],
    # larger (twentieth session): is MNRL better at its own larger batch in the same time? (bench_retrieval.py
    # --batch_size 64 --textmoco_steps 50 gives MNRL's --baseline_batch_size 64 --textmoco_steps 50 budget)
    "recipe default, batch 64 x 50 steps": _R_PAIRS_DEFAULT + ["--batch_size", "64", "--max_steps", "50"],
    # the same with the lr doubled with the batch (twenty-second session; DEV seed 0: textmoco 82.44 vs 81.40, MNRL
    # 82.40 vs 81.68 at 59 steps: both gain) — MNRL's cell: --baseline_batch_size 64 --baseline_lr 1e-4
    "recipe default, batch 64 x 50 steps, lr 1e-4": _R_PAIRS_DEFAULT + ["--batch_size", "64", "--max_steps", "50",
                                                                       "--lr", "1e-4"],
}
# the cells ran at momentum 0.995 (the recipe's default then; 0.9 since, chosen from this table and the DEV split)
# and with the EMA copy's keys (key_encoder momentum; the pairs default is momentum_a since the ninth session)
RETRIEVAL_ABLATION = {name: options + (["--momentum", "0.995"] if "--momentum" not in options else [])
                      + (["--key_encoder", "momentum"] if "--key_encoder" not in options else [])
                      for name, options in RETRIEVAL_ABLATION.items()}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def _check_options(run: dict, options: list[str], where: str, remedy: str) -> None:
    """The one rule of a results table: every run in it was made with the table's ``options``."""
    if run.get("options") != options:
        raise ValueError(f"{where} run with options {run.get('options')} but this table has {options}; {remedy}")


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
            _check_options(saved, options, f"{json_path} holds {name!r} seed {seed}",
                           "use another --out (or delete that file) to start a table with these options")
    for seed in seeds:
        for name in names:
            if str(seed) in scores.get(name, {}):
                continue
            scores.setdefault(name, {})[str(seed)] = {**run(name, seed), "options": options}
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(scores, indent=2))
            print(f"{name} seed {seed}: {scores[name][str(seed)]}", flush=True)
    return scores


def merge_runs(scores: dict, other: dict, options: Sequence[str] = (), source: str = "the merged file") -> dict:
    """Add ``other``'s finished runs ({cell: {seed: run}}) to ``scores`` in place, under the rule ``run_cells``
    keeps: every run must carry the table's ``options``, and a (cell, seed) both hold must be the same run. A
    mismatch is a ValueError naming the cell, the seed and ``source``; nothing is added then. Returns ``scores``."""
    options = list(options)
    for name, runs in other.items():
        for seed, run in runs.items():
            _check_options(run, options, f"{source} holds {name!r} seed {seed}", "a table never mixes settings")
            if seed in scores.get(name, {}) and scores[name][seed] != run:
                raise ValueError(f"{source} holds another {name!r} seed {seed} run than this table; "
                                 "keep one of them")
    for name, runs in other.items():
        scores.setdefault(name, {}).update(runs)
    return scores


def paired_comparison(scores: dict, a: str, b: str, metrics: Sequence[str], digits: int = 2) -> str:
    """Cell ``a`` against cell ``b`` on the seeds both ran (a seed fixes the data order and the init of both, so
    the runs pair up): per metric the two means, the mean difference a - b, on how many seeds a is ahead, and the
    paired t-test (``scipy.stats.ttest_rel``; two-sided p). A markdown table; t and p need two common seeds and
    differences that are not all the same (then the test is degenerate: "n/a")."""
    from scipy import stats

    unknown = [name for name in (a, b) if name not in scores]
    if unknown:
        raise ValueError(f"no finished runs of {unknown}; the table's cells are {sorted(scores)}")
    seeds = sorted(set(scores[a]) & set(scores[b]), key=int)
    if not seeds:
        raise ValueError(f"cells {a!r} and {b!r} share no seed; run both on the same --seeds")
    fmt = f"{{:.{digits}f}}"
    lines = [f"{a} (a) vs {b} (b), seeds {', '.join(seeds)}", "",
             "| metric | a mean | b mean | a - b | a ahead | paired t | p |", "|---|---|---|---|---|---|---|"]
    for m in metrics:
        va = [scores[a][s][m] for s in seeds]
        vb = [scores[b][s][m] for s in seeds]
        diff = [x - y for x, y in zip(va, vb)]
        if len(seeds) > 1 and max(diff) - min(diff) > 1e-9:  # scores are x100: 1e-9 is float noise
            t, p = stats.ttest_rel(va, vb)
            t_text, p_text = f"{t:.2f}", "< 0.001" if p < 0.001 else f"{p:.3f}"
        else:
            t_text = p_text = "n/a"
        lines.append(f"| {m} | {fmt.format(statistics.mean(va))} | {fmt.format(statistics.mean(vb))} | "
                     f"{statistics.mean(diff):+.{digits}f} | {sum(d > 0 for d in diff)} of {len(seeds)} | "
                     f"{t_text} | {p_text} |")
    return "\n".join(lines) + "\n"


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
