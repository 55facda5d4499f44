"""``odkit data check``: validate a dataset, print a report, optionally write the repaired copy."""

from __future__ import annotations

import argparse

from odkit.cli.args import arg_type, path_arg
from odkit.data.formats import FORMATS


def add_column_args(p: argparse.ArgumentParser) -> None:
    """``--columns``, ``--delimiter``, ``--one-based``: the column spec of text box files."""
    p.add_argument(
        "--columns",
        metavar="SPEC",
        help='text boxes: the columns of each line, e.g. "file,x,y,w,h,label" (box as x1,y1,x2,y2 or x,y,w,h '
        "or cx,cy,w,h; _ skips a column); per-image files or one file for many images",
    )
    p.add_argument("--delimiter", metavar="D", help="text boxes: column delimiter (default: comma if the line has "
                   "one, else whitespace; tab, semicolon, ...)")
    p.add_argument("--one-based", action="store_true",
                   help="text boxes: the first pixel is 1 and x2/y2 are the last pixel inside the box")


def column_spec(args: argparse.Namespace) -> object:
    """The :class:`~odkit.data.formats.ColumnSpec` of ``--columns`` (None without it)."""
    from odkit.data.formats import parse_columns
    from odkit.errors import ConfigError

    if getattr(args, "columns", None) is None:
        if getattr(args, "delimiter", None) or getattr(args, "one_based", False):
            raise ConfigError("--delimiter and --one-based describe text boxes: give --columns too")
        return None
    return parse_columns(args.columns, args.delimiter, args.one_based)


def add_source_args(p: argparse.ArgumentParser, with_format: bool = True) -> None:
    """``--format``, ``--images``, ``--labels`` and the column spec: how a data set path is read
    (shared by the commands that read data)."""
    if with_format:
        p.add_argument("--format", choices=FORMATS, help="dataset layout (default: detected)")
    path_arg(
        p,
        "--images",
        metavar="DIR",
        help="folder the image names are resolved against (CSV, LabelMe, CVAT, COCO file_name, text boxes)",
    )
    path_arg(
        p,
        "--labels",
        metavar="DIR",
        help="annotation folder (VOC xml, LabelMe json, PASCAL 1.x text, YOLO txt, text boxes with --columns) "
        "paired by file stem with the images of DATA",
    )
    add_column_args(p)


def source_kwargs(args: argparse.Namespace) -> dict:
    """``image_root``, ``labels`` and ``columns`` for :func:`odkit.data.formats.load_dataset`."""
    return {"image_root": args.images, "labels": args.labels, "columns": column_spec(args)}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="find, count and name every problem in a dataset (exit 1 on errors that cannot be repaired)",
        description=(
            "Validate a data set in any supported layout (COCO json, VOC root, VOC xml beside the images, "
            "images + annotations folders, CSV, LabelMe, CVAT, PASCAL VOC 1.x text, text boxes with --columns, "
            "YOLO data.yaml, odkit YAML), all its splits unless --split names one. Annotation files no reader "
            "understands are an error naming them (never negatives); an image in two splits (same file or "
            "same bytes) is an error (--allow-overlap). Safe repairs (clip boxes slightly outside the image, drop zero-area "
            "boxes, fill unknown sizes) are reported. Damaged images: bytes after the end marker are an info "
            "note; a truncated image that still decodes is a warning naming the rows lost; an image that "
            "cannot be decoded is an error (training leaves it out). Exit status: 0 clean or repaired, 1 "
            "errors (or any warning with --strict), 2 bad input."
        ),
    )
    path_arg(p, "data", help="dataset path (file or folder; with --labels, the image folder)")
    add_source_args(p)
    p.add_argument("--split", help="check only this split (default: every split the data set defines)")
    p.add_argument("--strict", action="store_true", help="exit 1 on any warning too (info notes never fail)")
    p.add_argument("--allow-overlap", action="store_true",
                   help="an image in two splits (same file or same bytes) is a warning, not an error")
    p.add_argument("--json", metavar="OUT", help="write every problem to this json file")
    p.add_argument(
        "--fix-out",
        metavar="DIR",
        help="write the repaired data set here, in the same layout (recovered images re-encoded, "
        "undecodable ones listed in DIR/repair_report.json)",
    )
    p.add_argument("--no-images", action="store_true", help="skip image file checks (annotations only)")
    p.add_argument("--decode", action="store_true", help="also decode every image with OpenCV (slower)")
    p.add_argument(
        "--near-dup-iou", type=arg_type("unit"), default=0.9, help="IoU above which same-class boxes are near-duplicates"
    )
    p.add_argument("--examples", type=arg_type("count0"), default=3, help="instances named per problem kind")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from odkit.data.formats import load_dataset
    from odkit.data.validate import check_dataset

    aset = load_dataset(args.data, format=args.format, split=args.split, **source_kwargs(args))
    report = check_dataset(
        aset, check_images=not args.no_images, near_dup_iou=args.near_dup_iou, decode=args.decode,
        allow_overlap=args.allow_overlap,
    )
    report.name = f"{args.data}" + (f" [{args.split}]" if args.split else "")
    print(f"layout: {aset.source}" + (
        f"; splits: {', '.join(f'{k} ({len(v)})' for k, v in sorted(aset.splits.items()))}" if aset.splits else ""
    ))
    print(report.text(examples=args.examples))
    if report.unusable:
        print(f"{len(report.unusable)} image(s) cannot be decoded (training leaves them out, --strict refuses):")
        for f in report.unusable_files:
            print(f"  {f}")
    if args.json:
        report.to_json(args.json)
        print(f"problems written to {args.json}")
    if args.fix_out:
        from odkit.data.repair import write_repaired

        res = write_repaired(report, args.fix_out, split=args.split)
        per = ", ".join(f"{k or 'all'}: {v}" for k, v in res.counts.items())
        print(f"repaired dataset written to {args.fix_out} ({res.format}; images {per})")
        for f in res.reencoded:
            print(f"  re-encoded (was truncated): {f}")
        for f in res.left_out:
            print(f"  left out (cannot be decoded): {f}")
        for p in res.problems:
            print(f"  not written: {p.file}: {p.message}")
    code = report.exit_code(args.strict)
    if code and not report.has_errors:
        print("--strict: warnings present -> exit 1")
    return code
