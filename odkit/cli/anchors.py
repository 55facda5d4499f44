"""``odkit anchors``: k-means (1 - IoU) anchors for a dataset at a given input size."""

from __future__ import annotations

import argparse
import logging

from odkit.cli.args import arg_type, path_arg

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "anchors",
        help="compute k-means anchors (1 - IoU distance) for a dataset",
        description="Boxes are scaled as the letterbox resize to --img would scale them (longest image side "
        "= --img), clustered with k-means under the 1 - IoU distance (boxes aligned at a common centre), "
        "optionally refined by a genetic evolution that keeps only improvements of the mean best IoU. "
        "Prints the anchors (w,h in pixels, sorted by area) and their fit: best possible recall (a box "
        "counts when some anchor has both w and h within a factor --thr of its own, or IoU >= --thr with "
        "--metric iou) and the mean best IoU.",
    )
    path_arg(p, "data", metavar="DATA", help="COCO json, VOC root, YOLO data.yaml or odkit dataset YAML")
    p.add_argument("-k", type=arg_type("count"), default=9, help="number of anchors (default 9)")
    p.add_argument("--img", type=arg_type("size"), default=640, help="network input size in pixels (default 640)")
    from odkit.data.formats import FORMATS

    p.add_argument("--format", choices=FORMATS, default=None, help="dataset layout (default: detected from DATA)")
    p.add_argument("--split", default=None, help="split to use (e.g. train)")
    from odkit.cli.data_check import add_source_args

    add_source_args(p, with_format=False)
    p.add_argument("--evolve", type=arg_type("count0"), default=0, metavar="N", help="generations of evolution (default 0)")
    p.add_argument("--seed", type=arg_type("count0"), default=0, help="random seed (default 0)")
    p.add_argument("--iters", type=arg_type("count"), default=300, help="maximum k-means iterations (default 300)")
    p.add_argument("--metric", choices=("ratio", "iou"), default="ratio", help="best possible recall rule")
    p.add_argument("--thr", type=arg_type("positive"), default=None, help="threshold for --metric (default 4.0 ratio, 0.5 IoU)")
    p.add_argument("--min-size", type=arg_type("nonneg"), default=2.0, help="ignore boxes smaller than this (px, after scaling)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from odkit.cli.data_check import source_kwargs
    from odkit.data.formats import load_dataset
    from odkit.data.stats import letterbox_wh
    from odkit.errors import DataError
    from odkit.ops.kmeans import anchor_metrics, evolve_anchors, kmeans_anchors

    aset = load_dataset(args.data, format=args.format, split=args.split, **source_kwargs(args))
    wh_all = letterbox_wh(aset, args.img)
    small = (wh_all < args.min_size).any(1)
    if small.any():
        log.warning(
            "anchors: %d of %d boxes are smaller than %g px at --img %d and are not used for fitting",
            int(small.sum()),
            len(wh_all),
            args.min_size,
            args.img,
        )
    wh = wh_all[~small]
    if len(wh) < args.k:
        raise DataError(f"{args.data}: {len(wh)} usable boxes, fewer than -k {args.k}")
    anchors = kmeans_anchors(wh, args.k, iters=args.iters, seed=args.seed)
    fit = anchor_metrics(wh, anchors, args.metric, args.thr)
    print(f"{len(wh)} boxes from {len(aset)} images at --img {args.img}; k-means (1 - IoU), seed {args.seed}")
    if args.evolve > 0:
        before = fit.mean_best_iou
        anchors, _ = evolve_anchors(wh, anchors, generations=args.evolve, seed=args.seed)
        fit = anchor_metrics(wh, anchors, args.metric, args.thr)
        print(f"evolution ({args.evolve} generations): mean best IoU {before:.4f} -> {fit.mean_best_iou:.4f}")
    rule = f"w and h within {fit.thr:g}x" if fit.metric == "ratio" else f"IoU >= {fit.thr:g}"
    print(f"anchors (w,h px, sorted by area): {', '.join(f'{w:.0f},{h:.0f}' for w, h in anchors)}")
    print(f"best possible recall ({rule}): {fit.bpr:.4f}")
    print(f"mean best IoU: {fit.mean_best_iou:.4f}")
    print(f"anchors per box passing: {fit.anchors_above:.2f}")
    return 0
