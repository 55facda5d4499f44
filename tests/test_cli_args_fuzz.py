"""Every command and sub-command of ``odkit``, driven with bad values for each of its numeric and path
arguments: exit status 2, one line on stderr naming the argument, no traceback, no command run.

The commands and their options come from the argparse parser itself, so a new option is covered (and
a number or input path without a rule fails :func:`test_every_number_and_input_path_has_a_rule`).
"""

from __future__ import annotations

import argparse
import math

import pytest

from odkit.arguments import RULES, check_value, fit_input_size
from odkit.cli import main as cli_main
from odkit.cli.args import option_name
from odkit.errors import ConfigError

# bad values per rule: negative, zero where it is out of range, NaN, infinity, wrong type
BAD = {
    "size": ["-32", "0", "nan", "abc", "1.5"],
    "count": ["-1", "0", "nan", "abc", "2.5"],
    "count0": ["-1", "nan", "abc", "2.5"],
    "positive": ["-1", "0", "nan", "inf", "abc"],
    "nonneg": ["-1", "nan", "inf", "abc"],
    "unit": ["-0.1", "1.5", "nan", "abc"],
    "fraction": ["0", "1", "-0.5", "nan", "abc"],
}
GOOD = {"size": "64", "count": "1", "count0": "0", "positive": "0.5", "nonneg": "0", "unit": "0.5",
        "fraction": "0.5"}
MISSING = "/nonexistent/odkit-fuzz/missing.file"
# dests that name an input file or folder: they must be marked as paths that exist
INPUT_PATHS = {"data", "weights", "source", "gt", "dt", "src", "images", "labels", "pretrained_backbone", "resume"}


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(command words, parser)`` of every parser reachable from ``parser``, itself included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _guarded_parser() -> argparse.ArgumentParser:
    """The real parser, with every command's handler replaced by one that fails the test (a bad value
    must be refused before anything runs)."""

    def reached(args: argparse.Namespace) -> int:
        raise AssertionError(f"handler ran for {args}")

    parser = cli_main.build_parser()
    for _, p in _commands(parser):
        if p.get_default("func") is not None:
            p.set_defaults(func=reached)
    return parser


PARSER = _guarded_parser()
COMMANDS = list(_commands(PARSER))


def _value_words(action: argparse.Action, value: str) -> list[str]:
    return [value] if not action.option_strings else [action.option_strings[0], value]


def _good_value(action: argparse.Action, existing: str) -> str:
    if getattr(action, "odkit_path", None):
        return existing
    if action.choices:
        return str(next(iter(action.choices)))
    kind = getattr(action.type, "odkit_kind", None)
    return GOOD[kind] if kind else "yolox-nano"


def _argv(path: tuple[str, ...], parser: argparse.ArgumentParser, target: argparse.Action, bad: str,
          existing: str) -> list[str]:
    """``path`` + every positional and required option with a good value, ``target`` with ``bad``."""
    words = list(path)
    needed = [a for a in parser._actions
              if not isinstance(a, (argparse._SubParsersAction, argparse._HelpAction))
              and (not a.option_strings or a.required)]
    for a in needed:
        words += _value_words(a, bad if a is target else _good_value(a, existing))
    if target not in needed:
        words += _value_words(target, bad)
    return words


def _cases():
    for path, parser in COMMANDS:
        for action in parser._actions:
            kind = getattr(action.type, "odkit_kind", None)
            values = BAD[kind] if kind else [MISSING] if getattr(action, "odkit_path", None) else []
            for bad in values:
                yield pytest.param(path, parser, action, bad, id=f"{' '.join(path)} {option_name(action)} {bad}")


CASES = list(_cases())


def test_the_fuzz_covers_every_command():
    leaves = {" ".join(p) for p, parser in COMMANDS if parser.get_default("func") is not None}
    covered = {" ".join(c.values[0]) for c in CASES}
    # commands without a numeric or path argument (the `data` / `weights` groups) are the only ones left out
    assert leaves - covered <= {"", "data", "weights"}, leaves - covered
    assert {"train", "val", "predict", "export", "info", "models", "anchors", "eval", "demo", "data check",
            "data stats", "data convert", "data show", "data synth", "weights import"} <= covered


def test_every_number_and_input_path_has_a_rule():
    for path, parser in COMMANDS:
        for action in parser._actions:
            where = f"odkit {' '.join(path)} {option_name(action)}"
            assert action.type not in (int, float), f"{where}: a number without a value rule (arg_type)"
            if action.dest in INPUT_PATHS and not action.choices and action.type is None:
                assert getattr(action, "odkit_path", None), f"{where}: an input path not marked (path_arg)"


@pytest.fixture(scope="module")
def existing(tmp_path_factory):
    """A file that exists (the good value of every other path argument); ``main`` uses the guarded parser."""
    f = tmp_path_factory.mktemp("fuzz") / "exists.yaml"
    f.write_text("x")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli_main, "build_parser", lambda: PARSER)
        yield str(f)


@pytest.mark.parametrize("path,parser,action,bad", CASES)
def test_bad_value_exits_2_with_one_line_naming_the_argument(path, parser, action, bad, existing, capsys):
    argv = _argv(path, parser, action, bad, existing)
    assert cli_main.main(argv) == 2, argv
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, (argv, err)
    assert f"argument {option_name(action)}:" in lines[0], (argv, err)
    assert bad in lines[0] or repr(bad) in lines[0]
    assert "Traceback" not in err + out and out == ""


# ------------------------------------------------------------------------- the rules themselves


@pytest.mark.parametrize("kind", sorted(RULES))
def test_rules_accept_good_and_refuse_bad_python_values(kind):
    good = float(GOOD[kind])
    assert check_value("--x", int(good) if RULES[kind].number is int else good, kind) == good
    for bad in BAD[kind]:
        try:
            value = float(bad)
        except ValueError:
            value = bad  # a string is never a number
        with pytest.raises(ConfigError, match="--x"):
            check_value("--x", value, kind)
    with pytest.raises(ConfigError):
        check_value("--x", True, kind)  # a bool is not a number


def test_fit_input_size_rounds_to_the_nearest_multiple(caplog):
    # hand-worked: 420 / 32 = 13.1 -> 13 * 32; 431 / 32 = 13.47 -> 416; 432 / 32 = 13.5 -> 14 * 32
    assert fit_input_size(416, 32) == 416 and not caplog.records
    assert fit_input_size(420, 32, "--img", "yolox-nano") == 416
    assert "--img 420" in caplog.text and "using 416" in caplog.text and "yolox-nano" in caplog.text
    assert fit_input_size(431, 32) == 416 and fit_input_size(432, 32) == 448
    assert fit_input_size(10, 32) == 32  # never below one divisor
    assert fit_input_size(301, 1) == 301  # SSD300 (divisor 1)
    for bad in (-32, 0, 1.5, math.nan, "416"):
        with pytest.raises(ConfigError, match="img_size"):
            fit_input_size(bad, 32)
