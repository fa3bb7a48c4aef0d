"""The recipe's command line: ``--config`` YAML/JSON (the command line wins), the resolved options saved to
output_dir/textmoco_config.json (never a Hub token), ``--help`` listing every config option with its default;
observability (training_curve.png, TensorBoard when installed); security (no unsafe ``torch.load``, no remote code
by default)."""
import ast
import dataclasses
import json
import re
import struct
import zlib

import pytest
import torch

import textrun
from textmoco import cli
from textmoco.cli import ALIASES
from textmoco.config import ObjectiveConfig, QueueConfig, TrainConfig

torch.set_num_threads(1)

FAKE_TOKEN = "hf_textmocoTESTsecret0123456789"
YAML_CONFIG = """\
# options from a file; the command line given below wins where both set one
temperature: 0.1
selection: top_fraction
top_fraction: 0.25
id_guard: false
guard_threshold: null
lr: 1.0e-3            # overridden by --lr 5e-4
queue_size: 16        # overridden by --queue_size 32 (TextCLI)
momentum_schedule: constant
"""


@pytest.fixture(scope="module")
def yaml_run(tmp_path_factory, text_cli):
    """One complete in-process run with --config <yaml> plus command-line options, with a Hub token in the
    environment (it must never reach a file)."""
    tmp = tmp_path_factory.mktemp("yaml-run")
    config = tmp / "options.yaml"
    config.write_text(YAML_CONFIG)
    out = tmp / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", FAKE_TOKEN)
        code, stdout, stderr = textrun.run_inprocess(
            text_cli.args(out, "--config", str(config), "--lr", "5e-4", max_steps=3, save_every=1))
    assert code == 0, stderr[-3000:]
    return out


def test_yaml_config_with_command_line_override_is_resolved_and_saved(yaml_run):
    saved = json.loads((yaml_run / "textmoco_config.json").read_text())
    assert saved["config"].endswith("options.yaml")
    # from the file
    assert saved["temperature"] == 0.1 and saved["selection"] == "top_fraction" and saved["top_fraction"] == 0.25
    assert saved["id_guard"] is False and saved["guard_threshold"] is None
    assert saved["momentum_schedule"] == "constant"
    # the command line wins over the file
    assert saved["lr"] == 5e-4 and saved["queue_size"] == 32 and saved["max_steps"] == 3
    # and the recipe's own defaults where neither sets a value
    assert saved["batch_size"] == 8 and saved["pooling"] == "mean" and saved["dual_weight"] == 0.5
    # every option of the parser is saved
    parser = textrun.load_recipe().get_parser()
    assert set(saved) == {a.dest for a in parser._actions if a.dest != "help"}
    # what the trainer really used (checkpoint) agrees
    state = json.loads((yaml_run / "checkpoints" / "step-3" / "trainer_state.json").read_text())
    assert state["objective"]["temperature"] == 0.1 and state["objective"]["guard_threshold"] is None
    assert state["queue"]["size"] == 32 and state["train"]["lr"] == 5e-4
    assert state["train"]["momentum_schedule"] == "constant"


def test_json_config_types_and_command_line_wins(tmp_path):
    config = tmp_path / "options.json"
    config.write_text(json.dumps({"top_k": 64, "id_guard": False, "guard_threshold": None, "lr": 3e-4,
                                  "queue_dtype": "bfloat16", "report_to": None, "no_eval_before": True,
                                  "train_file": "x.txt", "save_every": 5}))
    parser = textrun.load_recipe().get_parser()
    args = cli.parse_args(parser, ["--config", str(config), "--top_k", "7", "--save_every", "none"])
    assert args.top_k == 7 and args.save_every is None  # command line wins (also setting None)
    assert args.id_guard is False and args.guard_threshold is None and args.lr == 3e-4
    assert args.queue_dtype == "bfloat16" and args.no_eval_before is True and args.train_file == "x.txt"
    objective, queue, train = cli.configs_from_args(args)
    assert objective.top_k == 7 and queue.dtype == "bfloat16" and train.lr == 3e-4


def test_yaml_and_json_give_the_same_options(tmp_path):
    values = {"temperature": 0.07, "selection": "min_similarity", "min_similarity": 0.2, "n_random": 3,
              "guard_threshold": None, "filter_warmup_steps": 10, "batch_size": 16, "drop_last": False}
    (tmp_path / "a.json").write_text(json.dumps(values))
    yml = {k: 'null' if v is None else str(v).lower() if isinstance(v, bool) else v for k, v in values.items()}
    (tmp_path / "a.yml").write_text("".join(f"{k}: {v}\n" for k, v in yml.items()))
    parse = lambda name: vars(cli.parse_args(textrun.load_recipe().get_parser(), ["--config", str(tmp_path / name)]))
    a, b = parse("a.json"), parse("a.yml")
    a.pop("config"), b.pop("config")
    assert a == b
    assert all(a[k] == v for k, v in values.items())


def _help_text(monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "250")
    code, stdout, stderr = textrun.run_inprocess(["--help"])
    assert code == 0 and stderr == ""
    return " ".join(stdout.split())  # undo line wrapping


def test_help_lists_every_config_option_with_its_default(monkeypatch):
    text = _help_text(monkeypatch)
    defaults = textrun.load_recipe().TEXT_DEFAULTS
    checked = 0
    for cls, prefix in ((ObjectiveConfig, ""), (QueueConfig, "queue_"), (TrainConfig, "")):
        for f in dataclasses.fields(cls):
            name = prefix + f.name
            value = r"\[\{true,false\}\]" if f.type == "bool" else f.name.upper()  # booleans: --flag [{true,false}]
            aliases = ALIASES.get(name, ())
            names = ", ".join(f"--{n} {value}" for n in (name, *aliases))
            match = re.search(rf"{names} (.*?)\(default: (.*?)\)", text)
            assert match, f"--help does not list --{name}"
            alias_note = " (alias: " + ", ".join(f"--{a}" for a in aliases) + ")" if aliases else ""
            assert match.group(1).strip() == f.metadata["help"] + alias_note, name
            assert match.group(2) == str(defaults.get(name, f.default)), name
            checked += 1
    assert checked == len(dataclasses.fields(ObjectiveConfig)) + 2 + len(dataclasses.fields(TrainConfig))
    for name in ("--config", "--model", "--train_file", "--resume", "--overwrite", "--push_to_hub"):
        assert name in text


# ------------------------------------------------------------------------------------------------- secrets
def test_hub_token_is_never_saved(yaml_run, tmp_path):
    saved = json.loads((yaml_run / "textmoco_config.json").read_text())
    assert "token" not in saved and "hub_token" not in saved
    for path in yaml_run.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    # options named like a token are dropped by the saver ...
    from textmoco.runs import save_resolved_config
    written = json.loads(save_resolved_config(str(tmp_path), {"lr": 1.0, "hub_token": "x", "token": "y"}).read_text())
    assert written == {"lr": 1.0}
    # ... and a token in a --config file is refused (the recipes have no such option) without echoing it
    (tmp_path / "t.yaml").write_text(f"hub_token: {FAKE_TOKEN}\n")
    code, _, stderr = textrun.run_inprocess(["--config", str(tmp_path / "t.yaml")])
    assert code == 2 and "unknown option(s) ['hub_token']" in textrun.single_error_line(stderr)
    assert FAKE_TOKEN not in stderr


# ------------------------------------------------------------------------------------------------- observability
def test_training_curve_is_a_valid_png(yaml_run):
    data = (yaml_run / "training_curve.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 400 and height >= 300
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29])  # IHDR checksum
    assert data[-8:-4] == b"IEND"
    from PIL import Image

    with Image.open(yaml_run / "training_curve.png") as image:
        image.verify()


def test_metrics_rows_are_strict_json(yaml_run):
    rows = [json.loads(line) for line in (yaml_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert {"loss", "lr", "momentum", "queue_filled", "skipped", "elapsed_s"} <= set(rows[0])


def test_report_to_tensorboard_writes_events(text_cli, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "tb"
    code, _, stderr = textrun.run_inprocess(text_cli.args(out, "--report_to", "tensorboard", max_steps=2))
    assert code == 0, stderr[-3000:]
    events = list(out.rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)


# ------------------------------------------------------------------------------------------------- security
def _python_files():
    return sorted((textrun.REPO / "textmoco").rglob("*.py")) + sorted((textrun.REPO / "recipes").glob("*.py"))


def test_torch_load_is_always_weights_only():
    """No ``torch.load`` (or ``from torch import load``) without ``weights_only=True``; no pickle loads."""
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        load_aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                        and node.module == "torch" for a in node.names if a.name == "load"}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            is_torch_load = (isinstance(func, ast.Attribute) and func.attr == "load"
                             and isinstance(func.value, ast.Name) and func.value.id == "torch") \
                or (isinstance(func, ast.Name) and func.id in load_aliases)
            is_pickle = (isinstance(func, ast.Attribute) and func.attr in ("load", "loads")
                         and isinstance(func.value, ast.Name) and func.value.id in ("pickle", "cPickle", "dill"))
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if (is_torch_load and not safe) or is_pickle:
                offenders.append(f"{path.relative_to(textrun.REPO)}:{node.lineno}")
    assert not offenders, offenders
    # the checkpoints are safetensors + Accelerate's own files; nothing custom is pickled into them
    trainer_source = (textrun.REPO / "textmoco" / "trainer.py").read_text()
    assert "register_for_checkpointing" not in trainer_source


def test_trust_remote_code_is_off_by_default(text_cli, monkeypatch):
    import inspect

    import transformers

    from textmoco.encoders.text import TextEncoder

    assert inspect.signature(TextEncoder.__init__).parameters["trust_remote_code"].default is False
    assert inspect.signature(TextEncoder.from_sentence_transformer).parameters["trust_remote_code"].default is False
    args = cli.parse_args(textrun.load_recipe().get_parser(), [])
    assert args.trust_remote_code is False
    seen = []
    for cls in (transformers.AutoModel, transformers.AutoTokenizer):
        real = cls.from_pretrained.__func__

        def spy(klass, *a, _real=real, **kw):
            seen.append(kw.get("trust_remote_code", False))
            return _real(klass, *a, **kw)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    encoder = TextEncoder(text_cli.model)
    assert seen == [False, False] and encoder.trust_remote_code is False


def test_options_doc_lists_every_option_as_the_config_says():
    """docs/OPTIONS.md is generated (python -m textmoco.cli > docs/OPTIONS.md) and must match the dataclasses."""
    import dataclasses
    from pathlib import Path

    from textmoco.cli import options_markdown
    from textmoco.config import TrainConfig

    doc = (Path(__file__).resolve().parents[1] / "docs" / "OPTIONS.md").read_text()
    assert doc == options_markdown() + "\n", "docs/OPTIONS.md is stale: python -m textmoco.cli > docs/OPTIONS.md"
    assert all(f"`--{f.name}`" in doc for f in dataclasses.fields(TrainConfig))
