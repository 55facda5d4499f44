"""``odkit data show``: a PNG grid of dataset images with their boxes (optionally as augmented)."""

from __future__ import annotations

import argparse
from pathlib import Path

from odkit.cli.args import arg_type, path_arg
from odkit.errors import OdkitError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show",
        help="write a PNG grid of images with their boxes (--augment: as the training pipeline sees them)",
    )
    path_arg(p, "data", metavar="DATA", help="COCO json, VOC root, YOLO data.yaml or odkit dataset YAML")
    from odkit.cli.data_check import add_source_args

    add_source_args(p)
    p.add_argument("--split", default=None, help="split to show (e.g. train, val)")
    p.add_argument("--out", default=None, metavar="PNG", help="output path (default: <DATA name>_show.png)")
    p.add_argument("--n", type=arg_type("count"), default=16, help="number of images (default 16)")
    p.add_argument(
        "--seed", type=arg_type("count0"), default=0, help="seed of the image choice and augmentation (default 0)"
    )
    p.add_argument("--augment", action="store_true", help="show training augmentations instead of raw images")
    p.add_argument("--img", type=arg_type("size"), default=None,
                   help="network input size for --augment (default: the default training model's)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from odkit.cli.data_check import source_kwargs
    from odkit.data.formats import load_dataset

    aset = load_dataset(args.data, format=args.format, split=args.split, **source_kwargs(args))
    stem = Path(args.data).stem + (f"_{args.split}" if args.split else "")
    out = Path(args.out) if args.out else Path(f"{stem}_{'augmented' if args.augment else 'show'}.png")
    if args.augment:
        try:
            from odkit.data.preview import augmented_grid
        except ImportError as e:
            if isinstance(e, ModuleNotFoundError) and e.name != "odkit.data.preview":
                raise
            raise OdkitError(
                f"--augment needs odkit.data.preview.augmented_grid, which this build does not have ({e})"
            ) from e
        if args.img is None:
            from odkit.engine.config import TrainConfig
            from odkit.models.zoo import input_size

            args.img = input_size({"name": TrainConfig.model})
        written = augmented_grid(aset, out, n=args.n, img_size=args.img, seed=args.seed)
    else:
        from odkit.data.preview import dataset_grid

        written = dataset_grid(aset, out, n=args.n, seed=args.seed)
    print(f"grid of {min(args.n, len(aset))} images written to {written or out}")
    return 0
