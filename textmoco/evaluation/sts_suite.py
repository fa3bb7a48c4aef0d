"""The field's STS protocol (SimCSE, ESimCSE, MoCoSE, DCLR, SNCSE ...): STS12-16 from a SentEval-style directory,
STS-B test (bundled) and any user file of scored pairs; cosine similarity, Spearman x100; for STS12-16 the "all"
setting (one Spearman over the task's concatenated subsets) is the headline, per-subset figures beside it; the
average over the tasks evaluated.

The STS12-16 files are not shipped (their licences differ per subset). Get them with SentEval's
``data/downstream/get_transfer_data.bash`` or SimCSE's ``SentEval/data/downstream/download_dataset.sh`` and pass
the directory holding ``STS12-en-test`` ... ``STS16-en-test`` (``--senteval_dir``, or ``TEXTMOCO_SENTEVAL_DIR``).

    suite = STSSuiteEvaluator(senteval_dir="SentEval/data/downstream/STS")
    scores = suite(model)          # {"sts12": 72.4, ..., "stsb": 82.0, "sts_avg": 79.2, "sts12/MSRpar": ...}

Every unique sentence of all tasks is encoded once (one progress bar); correlations come from scipy via
:func:`textmoco.evaluation.sts.sts_correlations`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..data.text import load_sts_pairs
from .sts import _as_encode_fn, _to_numpy, cosine_scores, sts_correlations

SENTEVAL_TASKS = ("STS12", "STS13", "STS14", "STS15", "STS16")
# SentEval's subsets (STS13's SMT is not redistributable and absent from SentEval's copy)
SENTEVAL_SUBSETS = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}
ENV_VAR = "TEXTMOCO_SENTEVAL_DIR"
GET_IT = ("get the STS12-16 test sets with SentEval's data/downstream/get_transfer_data.bash (or SimCSE's "
          "SentEval/data/downstream/download_dataset.sh) and pass the directory holding STS12-en-test ... "
          "STS16-en-test")

Pairs = tuple[list[str], list[str], list[float]]


def read_senteval_subset(directory: str | os.PathLike, task: str, subset: str) -> Pairs:
    """One subset: ``STS.input.<subset>.txt`` (two tab-separated sentences a line) and ``STS.gs.<subset>.txt``
    (gold score a line; an empty gold line means "no gold" and drops that pair)."""
    folder = Path(directory) / f"{task}-en-test"
    inputs, gold_file = folder / f"STS.input.{subset}.txt", folder / f"STS.gs.{subset}.txt"
    for path in (inputs, gold_file):
        if not path.is_file():
            raise ValueError(f"{path} does not exist; {GET_IT}")
    lines = inputs.read_text(encoding="utf-8").splitlines()
    golds = gold_file.read_text(encoding="utf-8").splitlines()
    if len(lines) != len(golds):
        raise ValueError(f"{inputs} has {len(lines)} lines but {gold_file} has {len(golds)}; the files must align")
    s1, s2, gold = [], [], []
    for number, (line, score) in enumerate(zip(lines, golds), 1):
        if not score.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise ValueError(f"{inputs} line {number} has no tab-separated sentence pair")
        s1.append(parts[0].strip())
        s2.append(parts[1].strip())
        gold.append(float(score))
    return s1, s2, gold


def read_senteval_task(directory: str | os.PathLike, task: str) -> dict[str, Pairs]:
    """{subset: (s1, s2, gold)} for one of ``SENTEVAL_TASKS`` (SentEval's subset list)."""
    if task not in SENTEVAL_SUBSETS:
        raise ValueError(f"task={task!r} is not one of {list(SENTEVAL_SUBSETS)}")
    return {subset: read_senteval_subset(directory, task, subset) for subset in SENTEVAL_SUBSETS[task]}


def find_senteval_dir(explicit: Optional[str | os.PathLike] = None) -> Optional[Path]:
    """The STS12-16 directory: ``explicit`` (must exist; "none" = do not evaluate STS12-16), else (None or
    "auto") ``$TEXTMOCO_SENTEVAL_DIR``, else ``../shared/data/senteval-sts`` beside the repository (this project's
    machines); None when none is found."""
    if explicit is not None and str(explicit).lower() in ("none", "off"):
        return None
    if explicit and str(explicit) != "auto":
        path = Path(explicit)
        if not (path / "STS12-en-test").is_dir():
            raise ValueError(f"senteval_dir={str(explicit)!r} holds no STS12-en-test folder; {GET_IT}")
        return path
    candidates = [os.environ.get(ENV_VAR)] + [str(Path(__file__).resolve().parents[3] / "shared/data/senteval-sts")]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "STS12-en-test").is_dir():
            return Path(candidate)
    return None


def load_suite(senteval_dir: Optional[str | os.PathLike] = None, tasks: Sequence[str] = SENTEVAL_TASKS,
               stsb_split: Optional[str] = "test", extra: Sequence[str | os.PathLike] = ()) -> dict[str, dict]:
    """{task name: {subset: pairs}}: STS12-16 (when ``senteval_dir`` is given), STS-B ``stsb_split`` (bundled;
    None = skip) and each ``extra`` file of sentence1,sentence2,score (named after the file stem)."""
    suite: dict[str, dict] = {}
    if senteval_dir is not None:
        for task in tasks:
            suite[task.lower()] = read_senteval_task(senteval_dir, task)
    if stsb_split:
        suite["stsb" if stsb_split == "test" else f"stsb_{stsb_split}"] = {"all": load_sts_pairs(stsb_split)}
    for path in extra:
        suite[Path(path).stem] = {"all": load_sts_pairs(path)}
    if not suite:
        raise ValueError("nothing to evaluate: give senteval_dir, stsb_split or extra files")
    return suite


class STSSuiteEvaluator:
    """Call with a model (SentenceTransformer, TextEncoder, or ``list[str] -> (N, D)``); returns a flat dict:
    ``{task}`` = Spearman x100 in the "all" setting, ``{task}/{subset}`` per subset, ``{task}_pearson``,
    ``sts_avg`` = mean of the tasks' headline figures (``primary_metric``), ``sts_tasks`` = how many.
    An :class:`~textmoco.evaluation.protocol.Evaluator`."""

    name = ""  # the task names already say what they are
    primary_metric = "sts_avg"

    def __init__(self, senteval_dir: Optional[str | os.PathLike] = None, tasks: Sequence[str] = SENTEVAL_TASKS,
                 stsb_split: Optional[str] = "test", extra: Sequence[str | os.PathLike] = (),
                 batch_size: int = 64, show_progress_bar: bool = True):
        self.suite = load_suite(senteval_dir, tasks, stsb_split, extra)
        self.batch_size, self.show_progress_bar = batch_size, show_progress_bar

    @property
    def task_names(self) -> list[str]:
        return list(self.suite)

    def sentences(self) -> list[str]:
        """Every unique sentence of the suite, in first-seen order."""
        return list(dict.fromkeys(s for subsets in self.suite.values() for s1, s2, _ in subsets.values()
                                  for s in s1 + s2))

    def _embed(self, model: Any) -> dict[str, np.ndarray]:
        encode = _as_encode_fn(model, self.batch_size)
        unique = self.sentences()
        chunk = max(self.batch_size * 32, 1)
        from tqdm.auto import tqdm

        parts = []
        for start in tqdm(range(0, len(unique), chunk), desc="STS suite", disable=not self.show_progress_bar,
                          unit="chunk"):
            parts.append(_to_numpy(encode(unique[start:start + chunk]), len(unique[start:start + chunk])))
        emb = np.concatenate(parts)
        return {s: emb[i] for i, s in enumerate(unique)}

    def __call__(self, model: Any) -> dict[str, float]:
        vectors = self._embed(model)
        out: dict[str, float] = {}
        for task, subsets in self.suite.items():
            sims, golds = [], []
            for subset, (s1, s2, gold) in subsets.items():
                sim = cosine_scores(np.stack([vectors[s] for s in s1]), np.stack([vectors[s] for s in s2]))
                if len(subsets) > 1:
                    out[f"{task}/{subset}"] = sts_correlations(sim, gold)["spearman"]
                sims.append(sim)
                golds.extend(gold)
            overall = sts_correlations(np.concatenate(sims), golds)
            out[task], out[f"{task}_pearson"] = overall["spearman"], overall["pearson"]
        out["sts_avg"] = float(np.mean([out[t] for t in self.suite]))
        out["sts_tasks"] = len(self.suite)
        return out

    def headline(self, scores: dict[str, float]) -> dict[str, float]:
        return headline(scores)


def headline(scores: dict[str, float]) -> dict[str, float]:
    """Only the per-task headline figures and the average (for tables and the model card)."""
    return {k: v for k, v in scores.items() if "/" not in k and not k.endswith("_pearson") and k != "sts_tasks"}


def format_table(before: Optional[dict], after: dict) -> str:
    """A plain-text per-task table: task, before, after, change."""
    rows = [f"{'task':<10}{'start':>8}{'after':>8}{'change':>8}"]
    for task, value in headline(after).items():
        start = before.get(task) if before else None
        change = "" if start is None else f"{value - start:+8.2f}"
        rows.append(f"{task:<10}{'' if start is None else f'{start:8.2f}':>8}{value:8.2f}{change}")
    return "\n".join(rows)


def normalise(sentence: str) -> str:
    """Lower-case, whitespace- and punctuation-spacing-insensitive form, for overlap counts."""
    import re
    return re.sub(r"\s+", " ", re.sub(r"([^\w\s])", r" \1 ", sentence.lower())).strip()


def overlap(train_sentences: Sequence[str], suite: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per task: the fraction of its unique test sentences found verbatim (``exact``) and after
    :func:`normalise` (``normalised``) among ``train_sentences`` — how transductive unlabeled training on them is."""
    exact, loose = set(train_sentences), {normalise(s) for s in train_sentences}
    report = {}
    for task, subsets in suite.items():
        unique = list(dict.fromkeys(s for s1, s2, _ in subsets.values() for s in s1 + s2))
        report[task] = {"sentences": len(unique),
                        "exact": sum(s in exact for s in unique) / len(unique),
                        "normalised": sum(normalise(s) in loose for s in unique) / len(unique)}
    return report
