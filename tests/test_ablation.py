"""The ablation harness: resumable seed loop, no mixing of settings in one table, mean ± std rows."""
import json
import statistics

import pytest

from textmoco.ablation import markdown_table, merge_runs, paired_comparison, run_cells


def fake_run(calls):
    def run(name, seed):
        calls.append((name, seed))
        return {"acc": 0.5 + 0.1 * seed + (0.05 if name == "b" else 0.0)}
    return run


def test_run_cells_resumes_and_records_options(tmp_path):
    path, calls = tmp_path / "t.json", []
    run_cells(["a", "b"], [0], fake_run(calls), path, ["--max_steps", "10"])
    assert calls == [("a", 0), ("b", 0)]
    scores = run_cells(["a", "b"], [0, 1], fake_run(calls), path, ["--max_steps", "10"])
    assert calls[2:] == [("a", 1), ("b", 1)]  # only the missing seed ran
    assert json.loads(path.read_text()) == scores
    assert scores["b"]["1"] == {"acc": pytest.approx(0.65), "options": ["--max_steps", "10"]}


def test_run_cells_refuses_saved_runs_with_other_options(tmp_path):
    path, calls = tmp_path / "t.json", []
    run_cells(["a"], [0], fake_run(calls), path, ["--max_steps", "10"])
    before = path.read_text()
    with pytest.raises(ValueError, match=r"'a' seed 0 .*\['--max_steps', '10'\].*\['--max_steps', '20'\]"):
        run_cells(["a"], [0, 1], fake_run(calls), path, ["--max_steps", "20"])
    assert calls == [("a", 0)] and path.read_text() == before  # nothing ran, nothing overwritten
    with pytest.raises(ValueError, match="another --out"):  # not even for other seeds: one table, one setting
        run_cells(["a"], [1], fake_run(calls), path, ["--max_steps", "20"])
    run_cells(["a"], [0, 1], fake_run(calls), tmp_path / "other.json", ["--max_steps", "20"])
    assert calls[1:] == [("a", 0), ("a", 1)]


def test_merge_runs_keeps_one_setting_per_table(tmp_path):
    """Merging another file's runs obeys run_cells' rule: same options, and no second run of a (cell, seed)."""
    mine = run_cells(["a"], [0], fake_run([]), tmp_path / "mine.json", ["--max_steps", "10"])
    theirs = run_cells(["a", "b"], [0, 1], fake_run([]), tmp_path / "theirs.json", ["--max_steps", "10"])
    merged = merge_runs(json.loads(json.dumps(mine)), theirs, ["--max_steps", "10"])
    assert sorted(merged) == ["a", "b"] and sorted(merged["a"]) == ["0", "1"] and merged["b"]["1"] == theirs["b"]["1"]
    other = run_cells(["b"], [2], fake_run([]), tmp_path / "other.json", ["--max_steps", "20"])
    with pytest.raises(ValueError, match=r"other.json holds 'b' seed 2 .*'20'.*'10'"):
        merge_runs(mine, other, ["--max_steps", "10"], source="other.json")
    changed = {"a": {"0": {**mine["a"]["0"], "acc": 0.1}}, "b": {"5": {"acc": 0.2, "options": ["--max_steps", "10"]}}}
    with pytest.raises(ValueError, match="another 'a' seed 0 run"):
        merge_runs(mine, changed, ["--max_steps", "10"])
    assert sorted(mine) == ["a"] and sorted(mine["a"]) == ["0"]  # nothing added by a refused merge


def test_paired_comparison_against_the_closed_form():
    """t = mean(d) / (sd(d) / sqrt(n)) over the common seeds' differences; a seed only one cell ran is left out."""
    a = {"0": {"m": 80.9}, "1": {"m": 80.2}, "2": {"m": 80.2}, "3": {"m": 80.7}, "7": {"m": 99.0}}
    b = {"0": {"m": 80.5}, "1": {"m": 80.4}, "2": {"m": 79.8}, "3": {"m": 79.3}}
    diffs = [0.4, -0.2, 0.4, 1.4]
    t = statistics.mean(diffs) / (statistics.stdev(diffs) / len(diffs) ** 0.5)
    row = next(line for line in paired_comparison({"a": a, "b": b}, "a", "b", ["m"]).splitlines()
               if line.startswith("| m |")).split(" | ")
    assert row[1:6] == ["80.50", "80.00", f"{statistics.mean(diffs):+.2f}", "3 of 4", f"{t:.2f}"]
    assert row[6].rstrip(" |") == "0.229"  # two-sided p of t = 1.5076 at 3 degrees of freedom (t tables: 0.2288)
    with pytest.raises(ValueError, match="share no seed"):
        paired_comparison({"a": {"0": {"m": 1.0}}, "b": {"1": {"m": 1.0}}}, "a", "b", ["m"])
    with pytest.raises(ValueError, match=r"no finished runs of \['c'\]"):
        paired_comparison({"a": a}, "a", "c", ["m"])


def test_paired_comparison_says_n_a_when_the_test_is_degenerate():
    """Every seed's difference the same (up to float noise: 99.01 - 98.80 vs 99.21 - 99.00) or one common seed:
    no t-test (scipy would print a huge t and p < 0.001), but the means and the difference still."""
    a = {"0": {"m": 99.01}, "1": {"m": 99.21}}
    b = {"0": {"m": 98.80}, "1": {"m": 99.00}}
    row = next(line for line in paired_comparison({"a": a, "b": b}, "a", "b", ["m"]).splitlines()
               if line.startswith("| m |")).split(" | ")
    assert row[3:7] == ["+0.21", "2 of 2", "n/a", "n/a |"]
    one = paired_comparison({"a": {"0": {"m": 2.0}}, "b": {"0": {"m": 1.0}}}, "a", "b", ["m"])
    assert "| m | 2.00 | 1.00 | +1.00 | 1 of 1 | n/a | n/a |" in one


def test_markdown_table_mean_and_std(tmp_path):
    scores = run_cells(["a", "b"], [0, 1, 2], fake_run([]), tmp_path / "t.json")
    table = markdown_table(scores, ["a", "b"], ["acc"], "header", digits=3, extra_rows={"raw": {"acc": 0.4}})
    row_b = next(line for line in table.splitlines() if line.startswith("| b |"))
    vals = [0.55, 0.65, 0.75]
    assert f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f} (n=3)" in row_b
    assert row_b.split(" | ")[1:4] == ["0.550", "0.650", "0.750"]
    assert "| raw |  |  |  | 0.400 |" in table


def test_text_ablation_table_only_runs_nothing(tmp_path, monkeypatch):
    """`ablation_text.py --table_only` writes the table of the saved runs (other seeds per cell allowed) and trains
    nothing; with no saved runs it is one clear error."""
    import textrun

    ablation_text = textrun.import_recipe("ablation_text")

    monkeypatch.setattr(ablation_text, "run_cells", lambda *a, **k: pytest.fail("--table_only trained"))
    scores = {"start": {"sts_avg": 79.0, "stsb": 82.0},
              "plain MoCo": {str(s): {"sts_avg": 77.0 + s, "stsb": 78.0, "options": []} for s in (0, 1, 2)},
              "+ dual-view": {"0": {"sts_avg": 80.5, "stsb": 83.0, "options": []}}}
    (tmp_path / "t.json").write_text(json.dumps(scores))
    ablation_text.main(["--table_only", "--out", str(tmp_path / "t.md")])
    table = (tmp_path / "t.md").read_text()
    assert "| plain MoCo | 77.00 | 78.00 | 79.00 | 78.00 ± 1.00 (n=3) |" in table
    assert "| + dual-view | 80.50 |  |  | 80.50 ± 0.00 (n=1) |" in table
    with pytest.raises(SystemExit, match="no finished runs"):
        ablation_text.main(["--table_only", "--out", str(tmp_path / "none.md")])
