"""The one argument check of every ``odkit`` command.

- Numbers: ``type=arg_type("size" | "count" | "count0" | "positive" | "nonneg" | "unit" | "fraction")``
  parses and range-checks with the rules of :mod:`odkit.arguments` (argparse error, exit 2).
- Paths: :func:`path_arg` (or :func:`mark_path` on an existing action) marks an argument whose file or
  folder must exist; :func:`check_paths` verifies them after parsing (so parsing alone stays pure).
- Sizes: :func:`fit_img` rounds ``--img`` to the model's size divisor with a warning.
- :class:`OdkitParser` reports every argument error on one line, and :func:`key_value_hint` answers
  ``odkit train data=x.yaml`` with the equivalent ``--data x.yaml`` command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from odkit.arguments import RULES, fit_input_size, parse_value

PATH_KINDS = ("path", "weights", "resume", "source")
# spellings of other tools mapped to odkit's options (answer to `key=value` arguments)
ALIASES = {"imgsz": "img", "img_size": "img", "conf_thr": "conf", "iou_thr": "iou", "lr0": "lr",
           "batch_size": "batch"}


class OdkitParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``odkit predict: error: argument --img: ...``
    followed by where to find the usage; exit status 2 (sub-command parsers inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def arg_type(kind: str) -> Callable[[str], int | float]:
    """An argparse ``type=`` for rule ``kind`` of :data:`odkit.arguments.RULES`; the function carries
    ``odkit_kind`` so that the parser can be inspected (tests derive bad values from it)."""
    if kind not in RULES:
        raise KeyError(f"unknown argument rule {kind!r}")

    def parse(text: str) -> int | float:
        try:
            return parse_value(kind, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = kind
    parse.odkit_kind = kind  # type: ignore[attr-defined]
    return parse


def mark_path(action: argparse.Action, kind: str = "path") -> argparse.Action:
    """Mark ``action`` as a path that must exist (``kind``: ``path``; ``weights``: a weights file or run
    directory, with a note for model names; ``resume``: a path or the constant ``last``; ``source``: a path,
    a camera index or a stream URL)."""
    if kind not in PATH_KINDS:
        raise KeyError(f"unknown path kind {kind!r}")
    action.odkit_path = kind  # type: ignore[attr-defined]
    return action


def path_arg(p: argparse.ArgumentParser, *flags: str, kind: str = "path", **kw: Any) -> argparse.Action:
    """``p.add_argument(*flags, **kw)`` for a file or folder that must exist."""
    return mark_path(p.add_argument(*flags, **kw), kind)


def command_chain(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[argparse.ArgumentParser]:
    """The parsers ``args`` went through: ``[odkit, odkit data, odkit data check]``."""
    chain = [parser]
    while True:
        subs = [a for a in chain[-1]._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if not subs or name is None or name not in subs[0].choices:
            return chain
        chain.append(subs[0].choices[name])


def option_name(action: argparse.Action) -> str:
    """How argparse names ``action`` in messages: its longest option string, else its metavar / dest."""
    if action.option_strings:
        return max(action.option_strings, key=len)
    return str(action.metavar or action.dest)


def _missing(value: str, kind: str) -> str | None:
    """Why path ``value`` is unusable, or None when it exists (or is ``last`` for ``resume``)."""
    if kind == "resume" and value == "last":
        return None
    if kind == "source" and (value.isdigit() or "://" in value):  # a camera index or a stream URL
        return None
    if Path(value).exists():
        return None
    if kind == "weights":
        from odkit.models import zoo

        if value in zoo.available():
            return (f"{value!r} is an untrained model name, not weights: give trained weights "
                    f"(runs/<name>/weights/best.safetensors from `odkit train`)")
        if "/" not in value and "\\" not in value and Path(value).suffix in ("", ".safetensors"):
            return f"no such file, and not a known model name: {value!r} (models: `odkit models`)"
    return f"no such file or directory: {value!r}"


def check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit 2 with a one-line error for the first marked path argument that does not exist."""
    for p in command_chain(parser, args):
        for action in p._actions:
            kind = getattr(action, "odkit_path", None)
            value = getattr(args, action.dest, None) if kind else None
            if value is None:
                continue
            for v in value if isinstance(value, list) else [value]:
                why = _missing(str(v), kind)
                if why:
                    p.error(f"argument {option_name(action)}: {why}")


def fit_img(size: int, divisor: int, model: str = "the model") -> int:
    """``--img`` fitted to the model's size divisor (nearest multiple, with a warning)."""
    return fit_input_size(size, divisor, "--img", model)


def _command_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[argparse.ArgumentParser, int]:
    """The sub-command parser ``argv`` names and the index of the first word after the command."""
    p, i = parser, 0
    while True:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        while p is parser and i < len(argv) and argv[i].startswith("-"):
            i += 1  # global flags (-v) before the command
        if not subs or i >= len(argv) or argv[i] not in subs[0].choices:
            return p, i
        p, i = subs[0].choices[argv[i]], i + 1


def _as_option(action: argparse.Action, flag: str, value: str) -> list[str]:
    """``key=value`` written as the words of option ``flag`` (``amp=False`` -> ``--no-amp``)."""
    if action.nargs != 0:
        return [flag, *(value.split(",") if action.nargs in ("+", "*") else [value])]
    on = value.strip().lower() not in ("false", "0", "no", "off")
    if on:
        return [flag]
    return ["--no-" + flag[2:]] if isinstance(action, argparse.BooleanOptionalAction) else []


def key_value_hint(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """For ``odkit train data=x.yaml model=y``: the message giving the equivalent ``--key value``
    command, or None when ``argv`` has no ``key=value`` word naming an option of its command
    (values of options, e.g. ``--aug scale=[0.5,1.5]``, are left alone)."""
    cmd, start = _command_parser(parser, argv)
    options = {o: a for a in cmd._actions for o in a.option_strings}
    words, unknown, found = list(argv[:start]), [], False
    takes, current = 0, None  # values the last option still takes (-1: any number), that option
    for word in argv[start:]:
        key, sep, value = word.partition("=")
        if word.startswith("-"):
            current = options.get(key)
            many = current is not None and current.nargs in ("+", "*")
            takes = 0 if current is None or current.nargs == 0 or sep else -1 if many else 1
        elif sep and key.replace("-", "_").isidentifier() and (
            takes == 0 or (takes == -1 and hasattr(current.type, "odkit_kind"))  # `--lr-steps 0.5 epochs=3`
        ):
            flag = "--" + ALIASES.get(key, key).replace("_", "-")
            if flag in options:
                words += _as_option(options[flag], flag, value)
                found, takes = True, 0
                continue
            unknown.append(key)
        elif takes > 0:
            takes -= 1
        words.append(word)
    if not found:
        return None
    line = f"{cmd.prog}: options are written --key value, not key=value: {shlex.join(['odkit', *words])}"
    return line + (f" ({cmd.prog} has no option {', '.join(unknown)})" if unknown else "")


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` with the one argument check: ``key=value`` answer, values, existing paths."""
    words = list(sys.argv[1:] if argv is None else argv)
    hint = key_value_hint(parser, words)
    if hint:
        parser.exit(2, hint + "\n")
    args = parser.parse_args(words)
    check_paths(parser, args)
    return args
