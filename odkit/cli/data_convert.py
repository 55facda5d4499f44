"""``odkit data convert``: convert between data set layouts, every split carried (problems are
reported, never dropped)."""

from __future__ import annotations

import argparse

from odkit.cli.args import path_arg
from odkit.data.formats import FORMATS, WRITE_FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a dataset between layouts (coco, voc, yolo, csv, labelme, cvat, ...), all splits",
        description=(
            "Read SRC in any supported layout and write it to DST in another. Every split of SRC is written "
            "(VOC ImageSets files, YAML keys, CSV files, split folders, CVAT subsets); --split narrows to one. "
            "Images in no split of a source that has splits go to the split 'unassigned'. Boxes are copied "
            "unchanged (continuous pixel coordinates); parse problems and annotations that the target "
            "layout cannot hold are listed."
        ),
    )
    path_arg(p, "src", help="source dataset (file or folder; with --labels, the image folder)")
    p.add_argument("dst", help="output: COCO json path or folder, or a folder for the other layouts")
    p.add_argument("--from", dest="src_format", choices=FORMATS, help="source layout (default: detected)")
    p.add_argument("--to", dest="dst_format", required=True, choices=WRITE_FORMATS, help="target layout")
    path_arg(p, "--images", metavar="DIR", help="folder the source's image names resolve against")
    path_arg(p, "--labels", metavar="DIR", help="annotation folder paired by stem with the images of SRC")
    from odkit.cli.data_check import add_column_args

    add_column_args(p)
    p.add_argument("--out-columns", metavar="SPEC",
                   help="--to text: the columns to write (default file,x1,y1,x2,y2,label; --delimiter and "
                   "--one-based apply to them too)")
    p.add_argument("--split", help="convert only this split (it keeps its name in the output)")
    p.add_argument(
        "--link-images",
        action="store_true",
        help="symlink images (or, for COCO, reference them) instead of copying",
    )
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from odkit.data.formats import load_dataset, parse_columns, save_dataset, save_splits
    from odkit.errors import ConfigError

    if (args.delimiter or args.one_based) and not (args.columns or args.out_columns):
        raise ConfigError("--delimiter and --one-based describe text boxes: give --columns or --out-columns too")
    if args.out_columns and args.dst_format != "text":
        raise ConfigError(f"--out-columns is for --to text, not --to {args.dst_format}")
    spec = parse_columns(args.columns, args.delimiter, args.one_based) if args.columns else None
    aset = load_dataset(args.src, format=args.src_format, split=args.split, image_root=args.images,
                        labels=args.labels, columns=spec)
    out_spec = None
    if args.dst_format == "text":
        out_spec = parse_columns(args.out_columns or (spec.text() if spec is not None else "file,x1,y1,x2,y2,label"),
                                 args.delimiter, args.one_based)
    print(f"read {args.src} ({aset.source}): {aset.summary()}")
    if aset.problems:
        print(f"{len(aset.problems)} problems found while reading (kept as they are in the output):")
        for p in aset.problems[:20]:
            ann = f" [{p.annotation}]" if p.annotation is not None else ""
            print(f"  {p.kind}: {p.file}{ann}: {p.message}")
        if len(aset.problems) > 20:
            print(f"  ... and {len(aset.problems) - 20} more (run `odkit data check` for all)")
    copy = not args.link_images
    if args.split is not None:
        problems = save_dataset(aset, args.dst, args.dst_format, copy_images=copy, split=args.split,
                                columns=out_spec)
        counts = {args.split: len(aset)}
    else:
        problems, counts = save_splits(aset, args.dst, args.dst_format, copy_images=copy, columns=out_spec)
    per = ", ".join(f"{k} {v}" for k, v in counts.items() if k) or f"{len(aset)} images, no splits"
    print(f"wrote {args.dst} ({args.dst_format}): {per}")
    if "unassigned" in counts:
        print(f"  {counts['unassigned']} image(s) are in no split of the source: written as split 'unassigned'")
    if problems:
        print(f"{len(problems)} problems while writing:")
        for p in problems[:20]:
            print(f"  {p.kind}: {p.file}: {p.message}")
    return 1 if any(p.kind in ("not_written", "missing_image") for p in problems) else 0
