"""First-run behaviour of the recipes: mixed precision from the launcher when the option is unset, models and
data loaded under main_process_first, the final checkpoint deleted after a successful export unless
--save_final_checkpoint, one option name across recipes (aliases kept), strict booleans, readable output files,
rounded results.json, TrainingArguments-style aliases, no deprecated TrainingArguments argument."""
from __future__ import annotations

import contextlib
import json
import os
import stat
import warnings

import pytest
import torch

import textrun

REPO = textrun.REPO


def _default_argv(text_cli, out, *extra, **kw):
    """The test CLI without its --save_final_checkpoint true (tests/textrun.py adds it): the recipe's default."""
    argv = text_cli.args(out, **kw)
    i = argv.index("--save_final_checkpoint")
    return argv[:i] + argv[i + 2:] + list(extra)


def _recipe(name):
    import textrun

    return textrun.import_recipe(name, f"first_run_{name}")


# ------------------------------------------------------------------------------------------ one default run
@pytest.fixture(scope="module")
def default_run(tmp_path_factory, text_cli):
    """One finished text run with the defaults (save_every=1, 2 steps) under umask 022, recording the order of
    main_process_first and model loading."""
    from accelerate import PartialState

    recipe = textrun.load_recipe()
    events = []
    inner = PartialState.main_process_first

    @contextlib.contextmanager
    def recording(self):
        events.append("enter")
        with inner(self):
            yield
        events.append("exit")

    encoder_cls = recipe.TextEncoder

    def encoder(*a, **k):
        events.append("model")
        return encoder_cls(*a, **k)

    out = tmp_path_factory.mktemp("first-run") / "run"
    old_umask = os.umask(0o022)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(PartialState, "main_process_first", recording)
            mp.setattr(recipe, "TextEncoder", encoder)
            code, stdout, stderr = textrun.run_inprocess(_default_argv(text_cli, out, max_steps=2, save_every=1))
    finally:
        os.umask(old_umask)
    assert code == 0, stderr[-3000:]
    return out, stdout, events


def test_model_and_data_load_inside_main_process_first(default_run):
    _, _, events = default_run
    assert events[:3] == ["enter", "model", "exit"], events


def test_final_checkpoint_deleted_after_export_by_default(default_run, text_cli):
    out, stdout, _ = default_run
    root = out / "checkpoints"
    assert not (root / "step-2").exists()  # the finished run's final state (optimizer included) is gone
    assert (root / "latest").read_text().strip() == "step-1"  # an intermediate --save_every one stays, resumable
    assert (root / "step-1" / "trainer_state.json").is_file()
    assert (out / "model.safetensors").is_file() and (out / "results.json").is_file()
    assert "deleted the final checkpoint step-2" in stdout and "--save_final_checkpoint true" in stdout


def test_save_final_checkpoint_true_keeps_it(text_cli, tmp_path):
    out = tmp_path / "run"
    code, _, stderr = textrun.run_inprocess(_default_argv(text_cli, out, "--save_final_checkpoint", "true",
                                                          max_steps=2))
    assert code == 0, stderr[-3000:]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-2"
    assert (out / "checkpoints" / "step-2" / "trainer_state.json").is_file()


def test_finished_run_without_checkpoints_is_not_overwritten_silently(text_cli, tmp_path):
    out = tmp_path / "run"
    code, _, stderr = textrun.run_inprocess(_default_argv(text_cli, out, max_steps=1))
    assert code == 0, stderr[-3000:]
    assert not (out / "checkpoints").exists()  # no --save_every: nothing left but the model and results
    before = textrun.snapshot(out)
    code, _, stderr = textrun.run_inprocess(_default_argv(text_cli, out, max_steps=1))
    assert code == 2 and "holds a finished run" in textrun.single_error_line(stderr) and "--overwrite" in stderr
    assert textrun.snapshot(out) == before


def test_output_files_are_readable(default_run):
    out, _, _ = default_run
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    private = [str(p.relative_to(out)) for p in files if not p.stat().st_mode & stat.S_IROTH]
    assert private == [], private  # umask 022: every file 0644, as an ordinary open() would make it


def test_save_json_respects_the_umask(tmp_path):
    from textmoco.export import save_json

    old = os.umask(0o027)
    try:
        save_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640


def test_results_json_floats_are_rounded(default_run):
    out, _, _ = default_run
    text = (out / "results.json").read_text()

    def floats(v):
        if isinstance(v, float):
            yield v
        elif isinstance(v, dict):
            for x in v.values():
                yield from floats(x)
        elif isinstance(v, list):
            for x in v:
                yield from floats(x)

    values = list(floats(json.loads(text)))
    assert values, text
    assert all(round(v, 4) == v for v in values), text


def test_rounded_keeps_ints_strings_and_non_finite():
    from textmoco.runs import rounded

    assert rounded({"a": [0.123456789, 2, "x"], "b": {"c": float("nan")}, "d": True})["a"] == [0.1235, 2, "x"]
    assert rounded(float("inf")) == float("inf") and rounded(True) is True


# ------------------------------------------------------------------------------------------ mixed precision
@pytest.fixture
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _vector_trainer(tmp_path, **train_kw):
    from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig
    from textmoco.encoders.vector import VectorEncoder
    from textmoco.model import MoCoModel
    from textmoco.trainer import MoCoTrainer

    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    data = list(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)))
    train = TrainConfig(output_dir=str(tmp_path), batch_size=8, max_steps=1, progress=False, **train_kw)
    return MoCoTrainer(MoCoModel(VectorEncoder(8, 6, hidden=16)), data, ObjectiveConfig(), QueueConfig(size=16), train)


def test_mixed_precision_unset_follows_the_launcher(tmp_path, monkeypatch, fresh_accelerate_state):
    """`accelerate launch --mixed_precision bf16` sets ACCELERATE_MIXED_PRECISION; the option unset honours it."""
    from textmoco.cli import build_parser, configs_from_args, parse_args
    from textmoco.config import TrainConfig

    assert TrainConfig().mixed_precision is None
    assert configs_from_args(parse_args(build_parser("x"), []))[2].mixed_precision is None
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert _vector_trainer(tmp_path).accelerator.mixed_precision == "bf16"


def test_explicit_mixed_precision_wins_over_the_launcher(tmp_path, monkeypatch, fresh_accelerate_state):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert _vector_trainer(tmp_path, mixed_precision="no").accelerator.mixed_precision == "no"
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert _vector_trainer(tmp_path).accelerator.mixed_precision == "no"  # nothing set anywhere: full precision


# ------------------------------------------------------------------------------------------ option names
def test_eval_split_is_the_name_in_every_recipe_and_split_an_alias():
    for name in ("train_text", "train_retrieval", "eval_sts"):
        parser = _recipe(name).get_parser()
        assert parser.parse_args(["--eval_split", "dev"]).eval_split in ("dev", ["dev"]), name
        assert parser.parse_args(["--split", "dev"]).eval_split in ("dev", ["dev"]), name


def test_training_arguments_aliases():
    from textmoco.cli import add_run_arguments, build_parser, parse_args

    parser = build_parser("x")
    add_run_arguments(parser)
    args = parse_args(parser, ["--learning_rate", "1e-3", "--per_device_train_batch_size", "3",
                               "--num_train_epochs", "2", "--logging_steps", "5", "--save_steps", "7",
                               "--save_total_limit", "4", "--warmup_ratio", "0.2"])
    assert (args.lr, args.batch_size, args.epochs, args.log_every, args.save_every, args.keep_checkpoints,
            args.warmup_ratio) == (1e-3, 3, 2, 5, 7, 4, 0.2)
    assert "--learning_rate" in parser.format_help()


def test_training_arguments_aliases_in_a_config_file(tmp_path):
    from textmoco.cli import build_parser, parse_args

    (tmp_path / "c.yaml").write_text("learning_rate: 0.001\nper_device_train_batch_size: 5\n")
    args = parse_args(build_parser("x"), ["--config", str(tmp_path / "c.yaml")])
    assert args.lr == 1e-3 and args.batch_size == 5
    (tmp_path / "both.yaml").write_text("learning_rate: 0.001\nlr: 0.002\n")
    with pytest.raises(ValueError, match="sets both 'learning_rate' and its alias 'lr'"):
        parse_args(build_parser("x"), ["--config", str(tmp_path / "both.yaml")])


# ------------------------------------------------------------------------------------------ strict booleans
def _bool_actions(parser):
    return [a for a in parser._actions if a.option_strings and a.dest != "help"
            and (isinstance(a.default, bool) or a.const is True)]


@pytest.mark.parametrize("recipe", ["train_text", "train_retrieval", "train_vision", "eval_sts", "eval_linear_probe"])
def test_every_boolean_option_is_strict(recipe, capsys):
    module = _recipe(recipe)
    parser = module.get_parser() if hasattr(module, "get_parser") else None
    if parser is None:  # eval_linear_probe builds its parser in main: parse through main
        with pytest.raises(SystemExit) as exit_:
            module.main(["--model", "m", "--raw_pixels", "maybe"])
        assert exit_.value.code == 2
        line = capsys.readouterr().err.strip()
        assert line.startswith("error: argument --raw_pixels: expected true or false, got 'maybe'"), line
        return
    flags = _bool_actions(parser)
    assert flags, recipe
    for action in flags:
        option = action.option_strings[0]
        for text, value in (("true", True), ("false", False), ("1", True), ("no", False)):
            assert getattr(parser.parse_args([option, text]), action.dest) is value, (recipe, option, text)
        assert getattr(parser.parse_args([option]), action.dest) is True, (recipe, option)
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([option, "maybe"])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and f"argument {option}" in lines[0] and "expected true or false" in lines[0], err


def test_progress_maybe_is_one_error_line(text_cli, tmp_path):
    code, _, stderr = textrun.run_inprocess(text_cli.args(tmp_path / "run", "--progress", "maybe"))
    assert code == 2
    line = textrun.single_error_line(stderr)
    assert "--progress" in line and "expected true or false, got 'maybe'" in line
    assert not (tmp_path / "run").exists()


def test_vision_head_last_bn_is_strict(capsys):
    parser = _recipe("train_vision").get_parser()
    assert parser.parse_args(["--head_last_bn", "false"]).head_last_bn is False
    with pytest.raises(SystemExit):
        parser.parse_args(["--head_last_bn", "maybe"])  # was silently False
    assert "expected true or false" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ deprecations
def test_baseline_training_arguments_use_no_deprecated_argument(tmp_path):
    from sentence_transformers import SentenceTransformerTrainingArguments

    from textmoco.baselines import warmup_arguments

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                                    **warmup_arguments(0.1))
    assert args.get_warmup_steps(100) == 10
    for path in (REPO / "textmoco" / "baselines.py", *sorted((REPO / "examples").glob("*.py"))):
        source = path.read_text()
        assert "warmup_ratio=" not in source.replace("warmup_ratio=warmup_ratio", "").replace(
            "warmup_arguments(", ""), path
    assert "TrainingArguments(" not in (REPO / "recipes" / "train_retrieval.py").read_text()  # baselines.py builds them


def test_sentence_transformers_models_run_on_the_trainers_device(monkeypatch):
    """The side-by-side benchmarks compare textmoco (Accelerate's device) with the sentence-transformers baselines:
    those must run where Accelerate puts textmoco — not pinned to the CPU (a GPU run of bench_text.py once timed MNRL
    on the CPU), and not on the GPU when Accelerate was told to use the CPU (``ACCELERATE_USE_CPU``)."""
    import torch
    from accelerate import Accelerator

    from textmoco import runs

    assert runs.st_device() == str(Accelerator().device)  # this machine: the CPU
    for device in (torch.device("cuda", 1), torch.device("cpu")):  # whatever the process state says, not cuda's
        monkeypatch.setattr(runs, "process_state", lambda d=device: type("State", (), {"device": d})())
        assert runs.st_device() == str(device)
    for path in (REPO / "textmoco" / "baselines.py", REPO / "recipes" / "train_retrieval.py"):
        source = path.read_text()
        assert "use_cpu=True" not in source and 'device="cpu"' not in source, path
    assert "st_device()" in (REPO / "textmoco" / "baselines.py").read_text()  # where every ST baseline is built
