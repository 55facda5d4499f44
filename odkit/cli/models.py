"""``odkit models`` (also ``odkit info --list``): the model zoo with parameters, GFLOPs and reference."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import Any

from odkit.cli.args import arg_type


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the model zoo: parameters, GFLOPs at the default size, reference implementation",
        description="One line per zoo model: default input size, parameters and GFLOPs (2 x multiply-"
        "accumulates, one image, eval mode, without NMS, counted as `odkit info` counts them) for "
        "--num-classes classes, and the implementation the model follows. Nothing is cached: the "
        "figures are computed from the builders (a few seconds for the large models).",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="only these models (default: every model)")
    p.add_argument("--num-classes", type=arg_type("count"), default=80, help="number of object classes (default 80)")
    p.set_defaults(func=handler)


def zoo_rows(num_classes: int = 80, names: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """Per zoo model (``names``, default all, sorted by name): ``model``, ``family``, ``img_size``,
    ``params``, ``gflops`` at the default size, ``reference`` ("" for odkit's own light models)."""
    from odkit.cli.model_stats import model_info
    from odkit.models import zoo

    for name in names or zoo.available():
        spec = zoo.spec(name)
        info = model_info(name, None, num_classes)
        yield {"model": name, "family": spec.family, "img_size": spec.img_size, "params": info["params"],
               "gflops": info["gflops"], "reference": spec.reference}


def print_zoo(num_classes: int = 80, names: Sequence[str] | None = None) -> None:
    """Print the zoo table, one row at a time (the large models take a few seconds each)."""
    from odkit.models import zoo

    for name in names or []:
        zoo.spec(name)  # an unknown name: ConfigError listing the models, before any work
    print(f"{'model':<28}{'input':>6}{'params (M)':>12}{'GFLOPs':>10}  reference")
    for r in zoo_rows(num_classes, names):
        print(f"{r['model']:<28}{r['img_size']:>6}{r['params'] / 1e6:>12.2f}{r['gflops']:>10.2f}  "
              f"{r['reference'] or '- (odkit light model)'}", flush=True)
    print(f"figures for {num_classes} classes (--num-classes); one model at another size: "
          f"odkit info --model NAME --img N")


def handler(args: argparse.Namespace) -> int:
    print_zoo(args.num_classes, args.names)
    return 0
