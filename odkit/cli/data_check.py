"""``odkit data check``: validate a dataset, print a report, optionally write the repaired copy."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="find, count and name every problem in a dataset (exit 1 on errors that cannot be repaired)",
        description=(
            "Validate a COCO json, VOC root, YOLO data.yaml or odkit dataset YAML. Safe repairs "
            "(clip boxes slightly outside the image, drop zero-area boxes, fill unknown sizes) are "
            "reported. Exit status: 0 clean or repaired, 1 errors (or any problem with --strict), 2 bad input."
        ),
    )
    p.add_argument("data", help="dataset path (COCO json, VOC root, YOLO data.yaml or odkit YAML)")
    p.add_argument(
        "--format", choices=["coco", "voc", "yolo", "spec"], help="dataset format (default: detected)"
    )
    p.add_argument("--split", help="VOC ImageSets/Main split, YOLO/odkit YAML key (default: all / train)")
    p.add_argument(
        "--strict", action="store_true", help="exit 1 on any problem, warnings included (not negatives)"
    )
    p.add_argument("--json", metavar="OUT", help="write every problem to this json file")
    p.add_argument("--fix-out", metavar="DIR", help="write the repaired dataset here, in the same format")
    p.add_argument("--no-images", action="store_true", help="skip image file checks (annotations only)")
    p.add_argument("--decode", action="store_true", help="also decode every image with OpenCV (slower)")
    p.add_argument(
        "--near-dup-iou", type=float, default=0.9, help="IoU above which same-class boxes are near-duplicates"
    )
    p.add_argument("--examples", type=int, default=3, help="instances named per problem kind")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from odkit.data.formats import load_dataset, save_dataset
    from odkit.data.validate import check_dataset

    aset = load_dataset(args.data, format=args.format, split=args.split)
    report = check_dataset(
        aset, check_images=not args.no_images, near_dup_iou=args.near_dup_iou, decode=args.decode
    )
    report.name = f"{args.data}" + (f" [{args.split}]" if args.split else "")
    print(report.text(examples=args.examples))
    if args.json:
        report.to_json(args.json)
        print(f"problems written to {args.json}")
    if args.fix_out:
        fmt = aset.source if aset.source in ("coco", "voc", "yolo") else "coco"
        problems = save_dataset(report.dataset, args.fix_out, fmt, split=args.split)
        print(f"repaired dataset written to {args.fix_out} ({fmt})")
        for p in problems:
            print(f"  not written: {p.file}: {p.message}")
    code = report.exit_code(args.strict)
    if code and not report.has_errors:
        print("--strict: warnings present -> exit 1")
    return code
