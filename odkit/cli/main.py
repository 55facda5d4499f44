"""The ``odkit`` entry point: builds the sub-command parser from the verb modules."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from odkit.cli.args import OdkitParser, parse
from odkit.errors import OdkitError

# Verb modules, in help order. Each defines ``register(subparsers)`` which adds its parser and
# sets ``func`` (a callable taking the parsed args and returning an exit code).
VERBS = ["data", "anchors", "models", "info", "train", "val", "predict", "eval", "report", "export", "weights", "demo"]

log = logging.getLogger("odkit")


def build_parser() -> argparse.ArgumentParser:
    parser = OdkitParser(
        prog="odkit",
        description="odkit: object detection in pure PyTorch (data, ops, models, training, evaluation, export).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in VERBS:
        try:
            module = importlib.import_module(f"odkit.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"odkit.cli.{name}":
                continue  # verb not available in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``odkit`` command ``argv`` (default: ``sys.argv[1:]``); returns the exit status (argument
    errors and ``--help`` included: 2 and 0)."""
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s" if not args.verbose else "%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except OdkitError as e:
        print(f"odkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("odkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
