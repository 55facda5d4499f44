"""``odkit data slice``: cut the images of a data set into overlapping tiles with clipped boxes, in
any layout (training data for small objects in large images)."""

from __future__ import annotations

import argparse

from odkit.cli.args import arg_type, path_arg
from odkit.data.formats import FORMATS, WRITE_FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "slice",
        help="cut images into overlapping tiles with clipped boxes (small objects in large images)",
        description=(
            "Read SRC in any supported layout, cut every image into square tiles of --size pixels overlapping by "
            "--overlap (the grid `odkit predict --slice` uses) and write the tiles with their boxes to DST "
            "(--to: any layout, default SRC's). A box cut by a tile border is kept clipped when at least "
            "--min-visible of it lies in the tile and both clipped sides are >= --min-side px, else dropped "
            "for that tile. Tiles with no box are kept with probability --empty-fraction (seeded). The report "
            "counts every (box, tile) pair kept whole, kept clipped or dropped (with the reason) and names "
            "every source box that is in no written tile. Splits are kept (a tile is in its image's splits)."
        ),
    )
    path_arg(p, "src", help="source dataset (file or folder; with --labels, the image folder)")
    p.add_argument("dst", help="output: COCO json path or folder, or a folder for the other layouts")
    p.add_argument("--from", dest="src_format", choices=FORMATS, help="source layout (default: detected)")
    p.add_argument("--to", dest="dst_format", choices=WRITE_FORMATS, help="target layout (default: the source's)")
    path_arg(p, "--images", metavar="DIR", help="folder the source's image names resolve against")
    path_arg(p, "--labels", metavar="DIR", help="annotation folder paired by stem with the images of SRC")
    p.add_argument("--split", help="slice only this split")
    p.add_argument("--size", type=arg_type("size"), default=640, help="tile side in pixels (default 640)")
    p.add_argument("--overlap", type=arg_type("unit"), default=0.2,
                   help="fraction of a tile shared with its neighbours (default 0.2; must be < 1)")
    p.add_argument("--min-visible", type=arg_type("unit"), default=0.25,
                   help="keep a cut box when at least this fraction of its area is in the tile (default 0.25)")
    p.add_argument("--min-side", type=arg_type("nonneg"), default=1.0,
                   help="and both its clipped sides are at least this many pixels (default 1)")
    p.add_argument("--empty-fraction", type=arg_type("unit"), default=1.0,
                   help="fraction of the tiles without boxes to keep, drawn at random (default 1: all)")
    p.add_argument("--seed", type=arg_type("count0"), default=0, help="seed of the empty-tile draw (default 0)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from odkit.data.formats import load_dataset
    from odkit.data.tiles import write_sliced

    aset = load_dataset(args.src, format=args.src_format, split=args.split, image_root=args.images,
                        labels=args.labels)
    fmt = args.dst_format or (aset.source if aset.source in WRITE_FORMATS else None)
    if fmt is None:
        from odkit.errors import ConfigError

        raise ConfigError(f"{args.src} is read as {aset.source!r}, which odkit cannot write: give --to")
    print(f"read {args.src} ({aset.source}): {aset.summary()}")
    rep, problems = write_sliced(aset, args.dst, fmt, size=args.size, overlap=args.overlap,
                                 min_visible=args.min_visible, min_side=args.min_side,
                                 empty_fraction=args.empty_fraction, seed=args.seed)
    print(rep.text())
    print(f"wrote {args.dst} ({fmt})")
    if problems:
        print(f"{len(problems)} problems while writing:")
        for pr in problems[:20]:
            print(f"  {pr.kind}: {pr.file}: {pr.message}")
    return 1 if any(pr.kind in ("not_written", "missing_image") for pr in problems) else 0
