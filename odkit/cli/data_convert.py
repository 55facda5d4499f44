"""``odkit data convert``: convert between COCO, VOC and YOLO (problems are reported, never dropped)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a dataset between coco, voc and yolo",
        description=(
            "Read SRC (COCO json, VOC root, YOLO data.yaml or odkit YAML) and write it to DST in "
            "another format. Boxes are copied unchanged (continuous pixel coordinates); parse "
            "problems and annotations that the target format cannot hold are listed."
        ),
    )
    p.add_argument("src", help="source dataset")
    p.add_argument("dst", help="output: COCO json path or folder, VOC root, YOLO folder")
    p.add_argument(
        "--from",
        dest="src_format",
        choices=["coco", "voc", "yolo", "spec"],
        help="source format (default: detected)",
    )
    p.add_argument(
        "--to", dest="dst_format", required=True, choices=["coco", "voc", "yolo"], help="target format"
    )
    p.add_argument(
        "--split",
        help="VOC ImageSets/Main split or YOLO/odkit YAML key to read (also names the output split)",
    )
    p.add_argument(
        "--link-images",
        action="store_true",
        help="symlink images (VOC/YOLO) or reference them (COCO) instead of copying",
    )
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from odkit.data.formats import load_dataset, save_dataset

    aset = load_dataset(args.src, format=args.src_format, split=args.split)
    print(f"read {args.src}: {aset.summary()}")
    if aset.problems:
        print(f"{len(aset.problems)} problems found while reading (kept as they are in the output):")
        for p in aset.problems[:20]:
            ann = f" [{p.annotation}]" if p.annotation is not None else ""
            print(f"  {p.kind}: {p.file}{ann}: {p.message}")
        if len(aset.problems) > 20:
            print(f"  ... and {len(aset.problems) - 20} more (run `odkit data check` for all)")
    problems = save_dataset(
        aset, args.dst, args.dst_format, copy_images=not args.link_images, split=args.split
    )
    print(f"wrote {args.dst} ({args.dst_format})")
    if problems:
        print(f"{len(problems)} problems while writing:")
        for p in problems[:20]:
            print(f"  {p.kind}: {p.file}: {p.message}")
    return 1 if any(p.kind in ("not_written", "missing_image") for p in problems) else 0
