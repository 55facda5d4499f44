"""``odkit eval``: score a COCO results json against a ground-truth dataset (COCO / VOC metrics)."""

from __future__ import annotations

import argparse

from odkit.cli.args import arg_type, path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate detections (COCO results json) against ground truth: COCO or VOC metrics",
        description=(
            "Evaluate detections against ground truth. COCO metrics are identical to pycocotools; "
            "VOC metrics give per-class AP at one IoU (voc07: 11-point, voc12: all-point)."
        ),
    )
    path_arg(p, "--gt", required=True, help="ground truth: COCO json, VOC root or YOLO data.yaml")
    path_arg(
        p, "--dt", required=True, help="detections: COCO results json (image_id, category_id, bbox xywh, score)"
    )
    p.add_argument(
        "--metric", choices=["coco", "voc07", "voc12"], default="coco", help="metric (default coco)"
    )
    p.add_argument(
        "--iou-type",
        choices=["bbox", "segm"],
        default="bbox",
        help="COCO metric on boxes or on masks (segm: results carry 'segmentation', the gt segmentations)",
    )
    p.add_argument(
        "--iou", type=arg_type("unit"), default=0.5, help="IoU threshold for VOC metrics and plots (default 0.5)"
    )
    p.add_argument(
        "--plus-one", action="store_true", help="VOC: legacy +1 pixel box convention of the devkit"
    )
    p.add_argument(
        "--conf", type=arg_type("unit"), default=0.25, help="score threshold of the confusion matrix (default 0.25)"
    )
    p.add_argument("--plots", metavar="DIR", help="write pr_curves.png and confusion_matrix.{png,npy} here")
    p.add_argument("--json", metavar="OUT", help="write every figure at full precision to this json file")
    p.add_argument("--errors", action="store_true",
                   help="also print the TIDE error analysis: dAP of classification, localisation, both, duplicate, "
                   "background and missed errors (foreground IoU 0.5, background 0.1)")
    p.add_argument("--format", help="ground-truth format when it cannot be guessed (coco, voc, yolo)")
    p.add_argument("--split", help="ground-truth split (for example val)")
    p.set_defaults(func=handler)


def _clean(x):
    """NaN -> None recursively, so the json stays valid."""
    import math

    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def handler(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from odkit.eval.api import evaluate

    result = evaluate(
        args.gt,
        args.dt,
        metric=args.metric,
        iou=args.iou,
        plus_one=args.plus_one,
        format=args.format,
        split=args.split,
        plots=args.plots,
        conf=args.conf,
        iou_type=args.iou_type,
    )
    print(result.summary)
    print()
    print(result.table())
    tide = None
    if args.errors:
        from odkit.eval.tide import tide_errors

        tide = tide_errors(args.gt, args.dt, format=args.format, split=args.split)
        print()
        print(tide.table())
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = _clean({"gt": str(args.gt), "dt": str(args.dt), **result.to_dict()})
        if tide is not None:
            payload["tide"] = _clean(tide.to_dict())
        out.write_text(json.dumps(payload, indent=2))
        print(f"\nwrote {out}")
    if args.plots:
        print(f"plots in {args.plots}")
    return 0
