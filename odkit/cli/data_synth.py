"""``odkit data synth``: write the synthetic shapes data set (COCO json + data.yaml)."""

from __future__ import annotations

import argparse

from odkit.cli.args import arg_type


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic shapes data set (circle, rectangle, triangle) in COCO format",
        description="Write DIR/images/{train,val}/*.jpg, DIR/train.json, DIR/val.json (COCO) and "
        "DIR/data.yaml. The output is byte-identical for the same arguments.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must be empty or absent)")
    p.add_argument("--n", type=arg_type("count"), default=200, help="number of images in total (default 200)")
    p.add_argument("--seed", type=arg_type("count0"), default=0, help="random seed (default 0)")
    p.add_argument(
        "--size", type=arg_type("size"), default=320, help="nominal image side in pixels; sides vary 0.75x-1.25x"
    )
    p.add_argument(
        "--val-fraction", type=arg_type("unit"), default=0.2, help="share of images in the val split (default 0.2)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a data set already in DIR")
    p.add_argument("--masks", action="store_true",
                   help="give every shape its exact pixel mask (COCO segmentation, compressed RLE)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from odkit.data.synth import synthesize

    path = synthesize(
        args.out,
        n=args.n,
        seed=args.seed,
        size=args.size,
        val_fraction=args.val_fraction,
        overwrite=args.overwrite,
        masks=args.masks,
    )
    print(f"wrote {args.n} images; dataset spec: {path}")
    return 0
