"""``odkit data``: check, stats, convert, show, synth, slice.

Each action lives in its own module (``odkit.cli.data_<action>``) exposing ``register(sub)``.
"""

from __future__ import annotations

import argparse
import importlib

ACTIONS = ["check", "stats", "convert", "show", "synth", "slice"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="check, describe, convert, show and synthesise datasets")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION")
    for name in ACTIONS:
        try:
            module = importlib.import_module(f"odkit.cli.data_{name}")
        except ModuleNotFoundError as e:
            if e.name == f"odkit.cli.data_{name}":
                continue
            raise
        module.register(actions)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
