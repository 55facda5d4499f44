"""``odkit data stats``: class counts, boxes per image, box sizes and aspect ratios of a data set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from odkit.cli.args import path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats",
        help="print dataset statistics and write a 2x2 PNG of histograms",
        description="Per-class box and image counts, boxes per image, COCO small/medium/large box counts "
        "(box area w*h in pixels), aspect ratios and negatives.",
    )
    path_arg(p, "data", metavar="DATA", help="COCO json, VOC root, YOLO data.yaml or odkit dataset YAML")
    from odkit.cli.data_check import add_source_args

    add_source_args(p)
    p.add_argument("--split", default=None, help="split to describe (e.g. train, val)")
    p.add_argument("--out", default=None, metavar="PNG", help="plot path (default: <DATA name>_stats.png)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON instead of a table")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from odkit.cli.data_check import source_kwargs
    from odkit.data.formats import load_dataset
    from odkit.data.stats import compute_stats, format_stats, plot_stats

    aset = load_dataset(args.data, format=args.format, split=args.split, **source_kwargs(args))
    name = Path(args.data).stem + (f"/{args.split}" if args.split else "")
    stats = compute_stats(aset, name=name)
    out = (
        Path(args.out)
        if args.out
        else Path(f"{Path(args.data).stem}{'_' + args.split if args.split else ''}_stats.png")
    )
    plot_stats(stats, out)
    if args.json:
        print(json.dumps(stats.to_dict(), indent=2))
    else:
        print(format_stats(stats))
    print(f"plot written to {out}")
    return 0
