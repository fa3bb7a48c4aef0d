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

from .config import ObjectiveConfig, QueueConfig, TrainConfig

# dataclass -> prefix of its CLI names (queue fields become --queue_size / --queue_dtype)
SECTIONS = ((ObjectiveConfig, "", "objective (METHOD.md)"), (QueueConfig, "queue_", "negative queue"),
            (TrainConfig, "", "training"))


def _none_or(cast: Callable) -> Callable:
    def parse(text: str):
        return None if text.lower() in ("none", "null", "off") else cast(text)
    parse.__name__ = cast.__name__
    return parse


def _bool(text: str) -> bool:
    value = text.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _caster(annotation: Any) -> Callable:
    hint = annotation if not isinstance(annotation, str) else eval(annotation, vars(typing))  # noqa: S307
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    cast = {bool: _bool, int: int, float: float, str: str}.get(base, str)
    return _none_or(cast) if optional else cast


def build_parser(description: str, defaults: Optional[dict] = None) -> argparse.ArgumentParser:
    """A parser with ``--config`` and one option per config field; ``defaults`` overrides dataclass defaults
    (e.g. the image recipe's temperature 0.2)."""
    defaults = defaults or {}
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=None,
                        help="YAML or JSON file of options (same names as below); command-line options win")
    for cls, prefix, title in SECTIONS:
        group = parser.add_argument_group(title)
        for f in dataclasses.fields(cls):
            name = prefix + f.name
            default = defaults.get(name, f.default)
            group.add_argument(f"--{name}", type=_caster(f.type), default=default, metavar=f.name.upper(),
                               help=f.metadata.get("help", ""))
    return parser


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
    except Exception as err:  # noqa: BLE001 - report the parser's message
        raise ValueError(f"--config {path!r} is not valid {file.suffix.lstrip('.') or 'JSON'}: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"--config {path!r} must hold a mapping of option: value, got {type(values).__name__}")
    return values


def parse_args(parser: argparse.ArgumentParser, argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Parse with the config file (if any) as defaults, so that options given on the command line win."""
    first, _ = parser.parse_known_args(argv)
    if first.config:
        values = load_config_file(first.config)
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"--config {first.config!r} has unknown option(s) {unknown}; see --help for the names")
        typed = {}
        for action in parser._actions:
            if action.dest in values:
                value = values[action.dest]
                typed[action.dest] = action.type(str(value)) if action.type and isinstance(value, str) else value
        parser.set_defaults(**typed)
    return parser.parse_args(argv)


def configs_from_args(args: argparse.Namespace) -> tuple[ObjectiveConfig, QueueConfig, TrainConfig]:
    """Build (and so validate) the three configs from parsed options."""
    values = vars(args)
    out = []
    for cls, prefix, _ in SECTIONS:
        out.append(cls(**{f.name: values[prefix + f.name] for f in dataclasses.fields(cls)}))
    return tuple(out)  # type: ignore[return-value]


def run_main(main: Callable[[Optional[list[str]]], Any], argv: Optional[list[str]] = None) -> None:
    """Run a recipe's main; bad input (ValueError, FileNotFoundError, FloatingPointError) becomes one
    ``error:`` line on stderr and exit code 2 instead of a traceback."""
    try:
        main(argv)
    except (ValueError, FileNotFoundError, FloatingPointError, NotADirectoryError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
