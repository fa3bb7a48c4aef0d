"""A catalogue of bad input, through the text recipe's command line and through the Python API.

Every CLI case must end with exit code 2 and stderr that is ONE ``error: ...`` line naming the problem and the fix
(no traceback, no usage wall), and must leave an earlier run's directory byte-identical: most cases are aimed at
an earlier run with ``--resume latest`` (the dangerous place for a failing call). A few cases also run as real
subprocesses. docs/BAD_INPUT.md is generated from CLI_CASES: ``python tests/test_bad_input.py`` rewrites it, and
``test_bad_input_doc_matches`` checks it against the messages the tests saw.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import textrun

torch.set_num_threads(1)

DOC = textrun.REPO / "docs" / "BAD_INPUT.md"
EARLIER = "earlier"  # target: the earlier run, with --resume latest (unless the case passes its own options)

# (id, what is wrong (doc), extra argv with {placeholders}, target, substrings the message must contain)
#   target: "earlier"  -> --output_dir <earlier run> --resume latest
#           "earlier-no-resume" -> --output_dir <earlier run>
#           "file"     -> --output_dir <a sentinel file>
CLI_CASES = [
    ("queue_size-negative", "`--queue_size -5`", ["--queue_size", "-5"], EARLIER,
     ["queue_size=-5 is invalid", "an integer > 0"]),
    ("top_k-zero", "`--top_k 0`", ["--top_k", "0"], EARLIER, ["top_k=0 is invalid", "an integer > 0"]),
    ("top_fraction-above-1", "`--top_fraction 1.5`", ["--top_fraction", "1.5"], EARLIER,
     ["top_fraction=1.5 is invalid", "in (0, 1]"]),
    ("temperature-zero", "`--temperature 0`", ["--temperature", "0"], EARLIER, ["temperature=0.0 is invalid", "> 0"]),
    ("dual_weight-2", "`--dual_weight 2`", ["--dual_weight", "2"], EARLIER,
     ["dual_weight=2.0 is invalid", "in [0, 1]"]),
    ("dual_weight-0-symmetric", "`--dual_mode symmetric --dual_weight 0` (no view-b term)",
     ["--dual_mode", "symmetric", "--dual_weight", "0"], EARLIER,
     ["dual_weight=0.0 is invalid", "dual_mode='symmetric'", "dual_mode='weighted' with dual_weight=0"]),
    ("lr-negative", "`--lr -1`", ["--lr", "-1"], EARLIER, ["lr=-1.0 is invalid", "> 0"]),
    ("unknown-choice-config", "`--dual_mode bogus` (a choice checked by the config)", ["--dual_mode", "bogus"],
     EARLIER, ["dual_mode='bogus' is invalid", "'weighted', 'symmetric'"]),
    ("unknown-choice-argparse", "`--pooling max` (an argparse choice)", ["--pooling", "max"], EARLIER,
     ["--pooling", "invalid choice: 'max'", "'mean', 'cls'", "see --help"]),
    ("not-a-number", "`--queue_size abc`", ["--queue_size", "abc"], EARLIER,
     ["--queue_size", "invalid int value: 'abc'", "see --help"]),
    ("unknown-option", "`--learning_rte 1` (no such option)", ["--learning_rte", "1"], EARLIER,
     ["unrecognized arguments: --learning_rte 1", "see --help"]),
    ("bool-not-a-bool", "`--progress maybe` (a boolean option)", ["--progress", "maybe"], EARLIER,
     ["argument --progress", "expected true or false, got 'maybe'", "see --help"]),
    ("train_file-missing", "`--train_file` that does not exist", ["--train_file", "{tmp}/no-such-file.txt"], EARLIER,
     ["file not found", "no-such-file.txt", "pass the path of an existing"]),
    ("train_file-empty", "`--train_file` of 0 bytes", ["--train_file", "{tmp}/empty.txt"], EARLIER,
     ["file is empty", "at least 2 sentences"]),
    ("train_file-type", "`--train_file data.pdf` (unsupported type)", ["--train_file", "{tmp}/data.pdf"], EARLIER,
     ["unsupported file type '.pdf'", ".txt", ".jsonl"]),
    ("text_column-missing", "a .csv `--train_file` without `--text_column`", ["--train_file", "{tmp}/pairs.csv"],
     EARLIER, ["has columns ['text', 'label']", "--text_column"]),
    ("text_column-wrong", "`--text_column sentence` not in the .csv", ["--train_file", "{tmp}/pairs.csv",
                                                                       "--text_column", "sentence"],
     EARLIER, ["column 'sentence' not found", "the columns are ['text', 'label']", "--text_column"]),
    ("empty-strings", "a train file with an empty line", ["--train_file", "{tmp}/blank-line.txt"], EARLIER,
     ["1 empty sentence(s), the first at line 2", "--drop_empty"]),
    ("all-duplicates", "a train file of one sentence repeated 50 times", ["--train_file", "{tmp}/duplicates.txt"],
     EARLIER, ["fewer than 2 usable sentences after removing duplicates (50 sentences, 1 unique)"]),
    ("eval_every-negative", "`--eval_every -1`", ["--eval_every", "-1"], EARLIER,
     ["--eval_every=-1 is invalid", "an integer >= 0"]),
    ("batch-larger-than-data", "`--batch_size 200` with 100 sentences", ["--batch_size", "200"], EARLIER,
     ["100 samples, fewer than one batch (batch_size=200 x 1 processes)", "lower batch_size or add data"]),
    ("output_dir-is-file", "`--output_dir` that is a file", [], "file",
     ["is a file", "pass a directory path"]),
    ("resume-missing", "`--resume` path that does not exist", ["--resume", "{tmp}/no-such-checkpoint"],
     "earlier-no-resume",
     ["resume=", "no-such-checkpoint", "does not exist", "pass 'latest' or a checkpoint directory"]),
    ("resume-not-a-checkpoint", "`--resume` a directory that is not a checkpoint",
     ["--resume", "{tmp}/not-a-checkpoint"],
     "earlier-no-resume", ["not a complete textmoco checkpoint (no trainer_state.json)", "pass 'latest'"]),
    ("resume-other-queue_size", "`--resume latest` with another `--queue_size`", ["--queue_size", "64"], EARLIER,
     ["holds a queue of 32 keys", "queue_size=64", "resume with the options of that run"]),
    ("resume-other-model", "`--resume latest` with another `--model` (2 layers)", ["--model", "{tmp}/tiny-2-layers"],
     EARLIER, ["was saved from a different model", "resume with the model options of that run"]),
    ("model-offline", "`--model no-such-org/no-such-model` with HF_HUB_OFFLINE=1",
     ["--model", "no-such-org/no-such-model"], EARLIER,
     ["model 'no-such-org/no-such-model' not found locally", "pass a local directory or connect"]),
    ("max_length-too-long", "`--max_length 1000` (model allows 512)", ["--max_length", "1000"], EARLIER,
     ["max_length=1000 exceeds the model's max_position_embeddings=512", "pass max_length <= 512"]),
    ("config-missing", "`--config` file that does not exist", ["--config", "{tmp}/no-such-config.yaml"], EARLIER,
     ["--config", "does not exist", "pass a YAML or JSON file"]),
    ("config-invalid-yaml", "`--config` with invalid YAML", ["--config", "{tmp}/invalid.yaml"], EARLIER,
     ["is not valid YAML", "line 2, column 1"]),
    ("config-invalid-json", "`--config` with invalid JSON", ["--config", "{tmp}/invalid.json"], EARLIER,
     ["is not valid JSON", "line 1 column"]),
    ("config-unknown-key", "`--config` with an unknown key", ["--config", "{tmp}/unknown-key.yaml"], EARLIER,
     ["unknown option(s) ['learning_rte']", "see --help"]),
    ("config-bad-value", "`--config` with `queue_size: abc`", ["--config", "{tmp}/bad-value.yaml"], EARLIER,
     ["queue_size='abc' is invalid: expected int"]),
    ("config-null", "`--config` with `batch_size: null`", ["--config", "{tmp}/null-value.yaml"], EARLIER,
     ["batch_size=None is invalid", "needs a value"]),
    ("push-without-id", "`--push_to_hub` without `--hub_model_id`", ["--push_to_hub"], EARLIER,
     ["--push_to_hub needs --hub_model_id"]),
    ("earlier-run", "an earlier run's output_dir without `--resume`/`--overwrite`", [], "earlier-no-resume",
     ["holds an earlier run's checkpoints", "--resume latest", "--overwrite", "another --output_dir"]),
    ("eval_split-missing", "`--eval_split` file that does not exist", ["--eval_split", "{tmp}/no-such-sts.csv"],
     EARLIER, ["file not found", "no-such-sts.csv"]),
    ("eval_split-unknown", "`--eval_split nonsense`", ["--eval_split", "nonsense"], EARLIER,
     ["unknown STS split 'nonsense'", "'test'", "sentence1, sentence2, score"]),
    ("train_file-and-dataset", "both `--train_file` and `--dataset`", ["--dataset", "some/dataset"], EARLIER,
     ["pass either --train_file or --dataset, not both"]),
]

SUBPROCESS_CASES = ["unknown-choice-argparse", "model-offline", "batch-larger-than-data"]
SEEN_MESSAGES: dict[str, str] = {}  # case id -> message with the temporary paths as {tmp}


def make_inputs(tmp: Path, text_cli) -> None:
    """The bad files the cases name, and a 2-layer tiny BERT (same width, other parameters)."""
    (tmp / "empty.txt").write_bytes(b"")
    (tmp / "data.pdf").write_text("%PDF-1.4\n")
    (tmp / "pairs.csv").write_text("text,label\nA man plays.,1\nA dog runs.,0\n")
    (tmp / "blank-line.txt").write_text("A man plays.\n\nA dog runs.\n")
    (tmp / "duplicates.txt").write_text("The same sentence.\n" * 50)
    (tmp / "not-a-checkpoint").mkdir()
    (tmp / "not-a-checkpoint" / "notes.txt").write_text("not a checkpoint\n")
    (tmp / "invalid.yaml").write_text("lr: [1, 2\n")
    (tmp / "invalid.json").write_text('{"lr": 1e-4,}')
    (tmp / "unknown-key.yaml").write_text("learning_rte: 1\n")
    (tmp / "bad-value.yaml").write_text("queue_size: abc\n")
    (tmp / "null-value.yaml").write_text("batch_size: null\n")
    (tmp / "a-file").write_text("sentinel: an output_dir that is a file\n")
    textrun.make_tiny_bert(tmp / "tiny-2-layers", num_hidden_layers=2)


def make_earlier_run(tmp: Path, text_cli) -> Path:
    """A finished earlier run (2 steps, a checkpoint per step) plus sentinel files."""
    earlier = tmp / "earlier"
    code, _, stderr = textrun.run_inprocess(text_cli.args(earlier, max_steps=2, save_every=1))
    assert code == 0, stderr[-3000:]
    (earlier / "sentinel.txt").write_text("an earlier run's file\n")
    (earlier / "checkpoints" / "sentinel.bin").write_bytes(bytes(range(256)))
    return earlier


def case_argv(case, tmp: Path, text_cli) -> list[str]:
    _, _, extra, target, _ = case
    extra = [a.replace("{tmp}", str(tmp)) for a in extra]
    out = {"file": tmp / "a-file"}.get(target, tmp / "earlier")
    argv = text_cli.args(out) + extra
    if target == EARLIER:
        argv += ["--resume", "latest"]
    return argv


def protected(tmp: Path) -> dict:
    return {name: textrun.snapshot(tmp / name) for name in ("earlier", "a-file", "not-a-checkpoint")}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, text_cli):
    tmp = tmp_path_factory.mktemp("bad-input")
    make_inputs(tmp, text_cli)
    make_earlier_run(tmp, text_cli)
    return tmp


def check_message(case, code: int, stderr: str, tmp: Path) -> str:
    case_id, _, _, _, expected = case
    assert code == 2, (case_id, code, stderr[-3000:])
    line = textrun.single_error_line(stderr)
    for text in expected:
        assert text in line, (case_id, text, line)
    return line.replace(str(tmp), "{tmp}")


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, workspace, text_cli):
    before = protected(workspace)
    code, stdout, stderr = textrun.run_inprocess(case_argv(case, workspace, text_cli))
    SEEN_MESSAGES[case[0]] = check_message(case, code, stderr, workspace)
    assert protected(workspace) == before, "a failing call changed an earlier run's files"


@pytest.fixture(scope="module")
def subprocess_results(workspace, text_cli):
    """The SUBPROCESS_CASES as real ``python recipes/train_text.py`` processes, all started at once."""
    cases = [c for c in CLI_CASES if c[0] in SUBPROCESS_CASES]
    before = protected(workspace)
    procs = [(case, textrun.popen(case_argv(case, workspace, text_cli))) for case in cases]
    results = {}
    for case, proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        results[case[0]] = (case, proc.returncode, stdout, stderr)
    assert protected(workspace) == before, "a failing process changed an earlier run's files"
    return results


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_cli_bad_input_subprocess(case_id, subprocess_results, workspace):
    case, code, stdout, stderr = subprocess_results[case_id]
    check_message(case, code, stderr, workspace)
    assert stdout == ""


# ---------------------------------------------------------------------------------------- allowed edge cases
@pytest.mark.parametrize("extra,enqueued", [(["--queue_size", "4"], 24),  # K=4 < B=8: the queue wraps
                                            (["--batch_size", "200", "--drop_last", "false",
                                              "--queue_size", "16"], 300)],
                         ids=["K-smaller-than-batch", "batch-larger-than-data-keep-last"])
def test_allowed_edge_cases_train(extra, enqueued, text_cli, tmp_path):
    """K < B is allowed (the queue keeps the newest K keys of each step); a batch larger than the data is allowed
    with --drop_last false (one short batch per epoch)."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    code, _, stderr = textrun.run_inprocess(text_cli.args(out, *extra, max_steps=3, save_every=1))
    assert code == 0, stderr[-3000:]
    checkpoint = out / "checkpoints" / "step-3"
    queue = load_file(str(checkpoint / "queue.safetensors"))
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert bool(queue["filled"].all()) and torch.isfinite(queue["keys"]).all()
    assert state["queue_num_enqueued"] == enqueued
    assert len(set(queue["ids"].tolist())) == len(queue["ids"])  # newest keys of one step: distinct samples
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["loss"] is not None for r in rows[1:])


# ---------------------------------------------------------------------------------------- Python API
def _vector_trainer(out, n=40, hidden=16, **train_kw):
    from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig
    from textmoco.encoders.vector import VectorEncoder
    from textmoco.model import MoCoModel
    from textmoco.trainer import MoCoTrainer

    torch.manual_seed(0)
    data = list(torch.randn(n, 8, generator=torch.Generator().manual_seed(0)))
    objective = ObjectiveConfig(**train_kw.pop("objective", {}))
    train = TrainConfig(**{**dict(output_dir=str(out), batch_size=8, max_steps=2, progress=False), **train_kw})
    return MoCoTrainer(MoCoModel(VectorEncoder(8, 6, hidden=hidden)), data, objective,
                       QueueConfig(size=16), train)


def _api_cases(tmp: Path, text_cli):
    from textmoco.checkpointing import resolve_resume
    from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig
    from textmoco.data.text import SentenceDataset, load_sts_pairs, read_sentences
    from textmoco.encoders.text import TextEncoder
    from textmoco.export import push_to_hub
    from textmoco.queue import NegativeQueue
    from textmoco.runs import prepare_output_dir

    (tmp / "no-score.csv").write_text("sentence1,sentence2\na,b\n")
    (tmp / "empty-dir").mkdir(exist_ok=True)
    earlier = tmp / "earlier"
    return [
        ("ObjectiveConfig-temperature", lambda: ObjectiveConfig(temperature=0), r"temperature=0 is invalid.*> 0"),
        ("ObjectiveConfig-top_k", lambda: ObjectiveConfig(top_k=0), r"top_k=0 is invalid.*integer > 0"),
        ("ObjectiveConfig-top_fraction", lambda: ObjectiveConfig(top_fraction=1.5), r"top_fraction=1.5 is invalid"),
        ("ObjectiveConfig-dual_weight", lambda: ObjectiveConfig(dual_weight=2), r"dual_weight=2 is invalid.*\[0, 1\]"),
        ("ObjectiveConfig-selection", lambda: ObjectiveConfig(selection="hardest"), r"selection='hardest'.*one of"),
        ("QueueConfig-size", lambda: QueueConfig(size=-1), r"queue_size=-1 is invalid"),
        ("QueueConfig-dtype", lambda: QueueConfig(dtype="int8"), r"queue_dtype='int8' is invalid"),
        ("NegativeQueue-size", lambda: NegativeQueue(0, 4), r"queue_size=0 is invalid"),
        ("TrainConfig-on_nonfinite", lambda: TrainConfig(on_nonfinite="ignore"), r"on_nonfinite='ignore'.*'skip'"),
        ("TrainConfig-unknown-key", lambda: TrainConfig.from_dict({"learning_rate": 1}),
         r"unknown TrainConfig option\(s\) \['learning_rate'\]"),
        ("read_sentences-missing", lambda: read_sentences(tmp / "no-such-file.txt"), r"file not found"),
        ("read_sentences-empty", lambda: read_sentences(tmp / "empty.txt"), r"file is empty"),
        ("read_sentences-no-column", lambda: read_sentences(tmp / "pairs.csv"), r"pass text_column="),
        ("read_sentences-empty-string", lambda: read_sentences(tmp / "blank-line.txt"), r"drop_empty=True"),
        ("read_sentences-duplicates", lambda: read_sentences(tmp / "duplicates.txt"), r"fewer than 2 usable"),
        ("SentenceDataset-one", lambda: SentenceDataset(["only one"]), r"at least 2 sentences"),
        ("SentenceDataset-not-str", lambda: SentenceDataset(["a", 3]), r"item 1 is int, not str"),
        ("load_sts_pairs-no-score", lambda: load_sts_pairs(tmp / "no-score.csv"), r"lacks column\(s\) \['score'\]"),
        ("TextEncoder-offline", lambda: TextEncoder("no-such-org/no-such-model"),
         r"not found locally and the Hub is unreachable"),
        ("TextEncoder-pooling", lambda: TextEncoder(text_cli.model, pooling="max"), r"pooling='max' is not supported"),
        ("TextEncoder-max_length", lambda: TextEncoder(text_cli.model, max_length=1),
         r"max_length=1 must be an int >= 2"),
        ("MoCoTrainer-batch-larger-than-data", lambda: _vector_trainer(tmp / "v1", n=4),
         r"4 samples, fewer than one batch"),
        ("fit-resume-missing", lambda: _vector_trainer(tmp / "v3").fit(resume_from=str(tmp / "nope")),
         r"does not exist: pass 'latest'"),
        ("fit-resume-other-model", lambda: _vector_trainer(tmp / "v4", hidden=24).fit(
            resume_from=str(tmp / "vector-run")), r"saved from a different model"),
        ("resolve_resume-missing", lambda: resolve_resume(str(tmp / "nope"), str(tmp)), r"does not exist"),
        ("prepare_output_dir-earlier", lambda: prepare_output_dir(str(earlier), None), r"earlier run's checkpoints"),
        ("prepare_output_dir-file", lambda: prepare_output_dir(str(tmp / "a-file"), None), r"is a file"),
        ("push_to_hub-empty", lambda: push_to_hub(tmp / "empty-dir", "user/name"), r"nothing to upload"),
    ]


@pytest.fixture(scope="module")
def api_cases(workspace, text_cli):
    trainer = _vector_trainer(workspace / "vector-run")  # a checkpoint for the mismatched-model resume
    trainer.fit()
    return {case[0]: case for case in _api_cases(workspace, text_cli)}


API_IDS = ["ObjectiveConfig-temperature", "ObjectiveConfig-top_k", "ObjectiveConfig-top_fraction",
           "ObjectiveConfig-dual_weight", "ObjectiveConfig-selection", "QueueConfig-size", "QueueConfig-dtype",
           "NegativeQueue-size", "TrainConfig-on_nonfinite", "TrainConfig-unknown-key", "read_sentences-missing",
           "read_sentences-empty", "read_sentences-no-column", "read_sentences-empty-string",
           "read_sentences-duplicates", "SentenceDataset-one", "SentenceDataset-not-str", "load_sts_pairs-no-score",
           "TextEncoder-offline", "TextEncoder-pooling", "TextEncoder-max_length",
           "MoCoTrainer-batch-larger-than-data", "fit-resume-missing",
           "fit-resume-other-model", "resolve_resume-missing", "prepare_output_dir-earlier",
           "prepare_output_dir-file", "push_to_hub-empty"]


@pytest.mark.parametrize("case_id", API_IDS)
def test_api_bad_input(case_id, api_cases, workspace):
    _, call, pattern = api_cases[case_id]
    before = protected(workspace)
    vector_before = textrun.snapshot(workspace / "vector-run" / "checkpoints")
    with pytest.raises(ValueError, match=pattern) as info:
        call()
    assert "\n" not in str(info.value)  # one line, as run_main prints it
    assert protected(workspace) == before
    assert textrun.snapshot(workspace / "vector-run" / "checkpoints") == vector_before


def test_api_case_list_is_complete(api_cases):
    assert sorted(api_cases) == sorted(API_IDS)


# ---------------------------------------------------------------------------------------- docs/BAD_INPUT.md
def doc_table(messages: dict[str, str]) -> str:
    lines = ["| input | message (stderr, one line) | exit code |", "|---|---|---|"]
    for case_id, what, *_ in CLI_CASES:
        message = messages[case_id].replace("|", "\\|")
        lines.append(f"| {what} | `{message}` | 2 |")
    return "\n".join(lines)


def test_bad_input_doc_matches():
    """Every CLI case is in docs/BAD_INPUT.md with the message the tests saw (paths shown as {tmp})."""
    text = DOC.read_text(encoding="utf-8")
    for case_id, what, *_ in CLI_CASES:
        row = next((line for line in text.splitlines() if line.startswith(f"| {what} |")), None)
        assert row is not None, f"docs/BAD_INPUT.md has no row for {what}; run python tests/test_bad_input.py"
        if case_id in SEEN_MESSAGES and case_id != "model-offline":  # the Hub's own wording may change
            assert SEEN_MESSAGES[case_id].replace("|", "\\|") in row, (case_id, row)


DOC_HEADER = """# Bad input: what textmoco says

Generated by `python tests/test_bad_input.py` from the cases of `tests/test_bad_input.py` (which checks every row):
`recipes/train_text.py` with a tiny model, aimed at an earlier run's directory (`--output_dir <earlier run>
--resume latest` unless the input is about the output directory or `--resume` itself). Every case exits with code
2 and prints exactly one `error: ...` line on stderr (no traceback, no usage text), before any file of the earlier
run is touched: the tests compare every file of that run byte for byte before and after. `{tmp}` stands for the
test's temporary directory. `recipes/train_vision.py` shares the option parsing, `--config` handling and output
directory checks.

Allowed, not errors: a queue smaller than the batch (`--queue_size 4 --batch_size 8`: the queue keeps the newest K
keys of each step), a batch larger than the data with `--drop_last false` (one short batch per epoch), and
`--resume latest` in a directory without checkpoints (a fresh start).

The Python API raises `ValueError` with the same messages (the config dataclasses, the readers, `TextEncoder`,
`MoCoTrainer`); `tests/test_bad_input.py::test_api_bad_input` lists 29 cases.

"""


def main() -> None:
    """Regenerate docs/BAD_INPUT.md by running every CLI case in a temporary directory."""
    import tempfile

    from textrun import TextCLI, make_tiny_bert, write_text_data

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        train, sts = write_text_data(tmp / "data")
        cli = TextCLI(make_tiny_bert(tmp / "tiny"), train, sts)
        make_inputs(tmp, cli)
        make_earlier_run(tmp, cli)
        messages = {}
        for case in CLI_CASES:
            code, _, stderr = textrun.run_inprocess(case_argv(case, tmp, cli))
            messages[case[0]] = check_message(case, code, stderr, tmp)
        DOC.write_text(DOC_HEADER + doc_table(messages) + "\n", encoding="utf-8")
    print(f"wrote {DOC}")


if __name__ == "__main__":
    for _name, _value in textrun.QUIET_ENV.items():  # offline before huggingface_hub is imported
        os.environ.setdefault(_name, _value)
    torch.set_num_threads(1)
    main()
