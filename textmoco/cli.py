"""Command-line plumbing shared by the recipes: options generated from the config dataclasses (so ``--help``
always lists every option with its default), a ``--config`` YAML/JSON file (the command line wins), and one clear
error line instead of a traceback for bad input.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Optional

from .config import ObjectiveConfig, QueueConfig, TrainConfig, check_together

# dataclass -> prefix of its CLI names (queue fields become --queue_size / --queue_dtype)
SECTIONS = ((ObjectiveConfig, "", "objective (METHOD.md)"), (QueueConfig, "queue_", "negative queue"),
            (TrainConfig, "", "training"))


def _none_or(cast: Callable) -> Callable:
    def parse(text: str):
        return None if text.lower() in ("none", "null", "off") else cast(text)
    parse.__name__ = cast.__name__
    parse.optional = True  # type: ignore[attr-defined]
    return parse


def parse_bool(text: str) -> bool:
    """The one way every boolean option is read: true/false (also 1/0, yes/no, on/off, any case); anything else
    is an error, never a silent False."""
    value = str(text).lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_bool = parse_bool
parse_bool.__name__ = "true/false"  # argparse names the type in its messages

BOOL_METAVAR = "{true,false}"


def add_bool_argument(group, *names: str, default: bool = False, help: str = "", **kwargs: Any) -> argparse.Action:
    """A boolean option in the one form all recipes use: ``--flag`` alone means true, ``--flag true|false`` sets
    it explicitly (so a config file, a script or ``--flag false`` can turn it off), anything else is an error."""
    return group.add_argument(*names, type=parse_bool, nargs="?", const=True, default=default,
                              metavar=BOOL_METAVAR, help=help, **kwargs)


# TrainingArguments-style names accepted as aliases of the config fields (same meaning, same values)
ALIASES = {"lr": ("learning_rate",), "batch_size": ("per_device_train_batch_size",), "epochs": ("num_train_epochs",),
           "log_every": ("logging_steps",), "save_every": ("save_steps",), "keep_checkpoints": ("save_total_limit",)}


def _caster(annotation: Any) -> Callable:
    hint = annotation if not isinstance(annotation, str) else eval(annotation, vars(typing))  # noqa: S307
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    cast = {bool: _bool, int: int, float: float, str: str}.get(base, str)
    return _none_or(cast) if optional else cast


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors (unknown option, invalid choice, a value of the wrong type) are one
    ``error: ...`` line on stderr and exit code 2, like every other bad input, instead of the whole usage text."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message}; see --help\n")


def build_parser(description: str, defaults: Optional[dict] = None) -> argparse.ArgumentParser:
    """A parser with ``--config`` and one option per config field; ``defaults`` overrides dataclass defaults
    (e.g. the image recipe's temperature 0.2)."""
    defaults = defaults or {}
    parser = OneLineErrorParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=None,
                        help="YAML or JSON file of options (same names as below); command-line options win")
    for cls, prefix, title in SECTIONS:
        group = parser.add_argument_group(title)
        for f in dataclasses.fields(cls):
            name = prefix + f.name
            default = defaults.get(name, f.default)
            names = [f"--{name}"] + [f"--{alias}" for alias in ALIASES.get(name, ())]
            help = f.metadata.get("help", "")
            if names[1:]:
                help += " (alias: " + ", ".join(names[1:]) + ")"
            if _caster(f.type) is parse_bool:
                add_bool_argument(group, *names, dest=name, default=default, help=help)
            else:
                group.add_argument(*names, dest=name, type=_caster(f.type), default=default,
                                   metavar=f.name.upper(), help=help)
    return parser


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training recipe has: resume/overwrite and the Hub upload."""
    g = parser.add_argument_group("run")
    g.add_argument("--resume", default=None, help="'latest' or a checkpoint directory to continue from")
    add_bool_argument(g, "--overwrite",
                      help="start over in an output_dir that has an earlier run (its checkpoints and results are "
                           "deleted once the new settings are validated)")
    add_bool_argument(g, "--save_final_checkpoint",
                      help="keep the last checkpoint (weights, EMA key encoder, optimizer state, queue: several "
                           "times the model's size) after a successful export. Default false: a finished run keeps "
                           "the exported model and results, and the final checkpoint is deleted (earlier "
                           "--save_every checkpoints, which a crash would resume from, stay)")
    add_bool_argument(g, "--push_to_hub", help="upload the exported model to the Hub")
    g.add_argument("--hub_model_id", default=None, help="repo id for --push_to_hub (user/name)")
    add_bool_argument(g, "--hub_private", help="create the Hub repo as private")


def load_config_file(path: str) -> dict:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--config {path!r} does not exist; pass a YAML or JSON file of options")
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix.lower() in (".yaml", ".yml"):
            import yaml
            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as err:  # noqa: BLE001 - report the parser's message, on one line
        mark = getattr(err, "problem_mark", None)  # yaml.MarkedYAMLError
        detail = getattr(err, "problem", None) or str(err)
        if mark is not None:
            detail += f" (line {mark.line + 1}, column {mark.column + 1})"
        detail = " ".join(str(detail).split())
        kind = "YAML" if file.suffix.lower() in (".yaml", ".yml") else "JSON"
        raise ValueError(f"--config {path!r} is not valid {kind}: {detail}") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config {path!r} must hold a mapping of option: value, got {type(values).__name__}")
    return values


def _config_value(action: argparse.Action, value: Any, path: str) -> Any:
    """A value from a --config file, converted and checked exactly like the same option on the command line."""
    where = f"--config {path!r}: {action.dest}={value!r} is invalid"
    if isinstance(value, (list, dict)):
        raise ValueError(f"{where}: give a single value, as on the command line")
    flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
    cast = _bool if flag else (action.type or str)
    if value is None:
        if action.default is None or getattr(cast, "optional", False):
            return None
        raise ValueError(f"{where}: {action.dest} needs a value (it has no 'none' setting)")
    try:
        value = cast(str(value))
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise ValueError(f"{where}: expected {'true/false' if cast is _bool else cast.__name__}") from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{where}: choose from {list(action.choices)}")
    return value


def parse_args(parser: argparse.ArgumentParser, argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Parse with the config file (if any) as defaults, so that options given on the command line win. Values in
    the file are converted and checked like the same options on the command line."""
    first, _ = parser.parse_known_args(argv)
    if first.config:
        values = load_config_file(first.config)
        actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
        aliases = {o.lstrip("-"): a.dest for a in actions.values() for o in a.option_strings
                   if o.startswith("--") and o.lstrip("-") != a.dest}
        both = sorted(k for k in values if k in aliases and aliases[k] in values)
        if both:
            raise ValueError(f"--config {first.config!r} sets both {both[0]!r} and its alias {aliases[both[0]]!r}; "
                             "keep one")
        values = {aliases.get(k, k): v for k, v in values.items()}
        unknown = sorted(set(values) - set(actions))
        if unknown:
            raise ValueError(f"--config {first.config!r} has unknown option(s) {unknown}; see --help for the names")
        parser.set_defaults(**{name: _config_value(actions[name], value, first.config)
                               for name, value in values.items()})
    return parser.parse_args(argv)


def configs_from_args(args: argparse.Namespace) -> tuple[ObjectiveConfig, QueueConfig, TrainConfig]:
    """Build (and so validate) the three configs from parsed options."""
    values = vars(args)
    out = []
    for cls, prefix, _ in SECTIONS:
        out.append(cls(**{f.name: values[prefix + f.name] for f in dataclasses.fields(cls)}))
    check_together(out[0], out[2])
    return tuple(out)  # type: ignore[return-value]


def run_main(main: Callable[[Optional[list[str]]], Any], argv: Optional[list[str]] = None) -> None:
    """Run a recipe's main; bad input (ValueError, FileNotFoundError, FloatingPointError) becomes one
    ``error:`` line on stderr and exit code 2 instead of a traceback."""
    try:
        main(argv)
    except (ValueError, FileNotFoundError, FloatingPointError, NotADirectoryError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def options_markdown() -> str:
    """docs/OPTIONS.md (``python -m textmoco.cli > docs/OPTIONS.md``; a test keeps it current): name, aliases,
    library default, meaning of every config option."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for cls, prefix, title in SECTIONS:
        for f in dataclasses.fields(cls):
            aliases = "".join(f" (`--{a}`)" for a in ALIASES.get(prefix + f.name, ()))
            rows.append(f"| `--{prefix}{f.name}`{aliases} | `{f.default}` | {f.metadata.get('help', '')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(options_markdown())
