"""``odkit anchors``: k-means (1 - IoU) anchors for a dataset at a given input size."""

from __future__ import annotations

import argparse
import logging

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
    p.add_argument("data", metavar="DATA", help="COCO json, VOC root, YOLO data.yaml or odkit dataset YAML")
    p.add_argument("-k", type=int, default=9, help="number of anchors (default 9)")
    p.add_argument("--img", type=int, default=640, help="network input size in pixels (default 640)")
    from odkit.data.formats import FORMATS

    p.add_argument("--format", choices=FORMATS, default=None, help="dataset layout (default: detected from DATA)")
    p.add_argument("--split", default=None, help="split to use (e.g. train)")
    from odkit.cli.data_check import add_source_args

    add_source_args(p, with_format=False)
    p.add_argument("--evolve", type=int, default=0, metavar="N", help="generations of evolution (default 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--iters", type=int, default=300, help="maximum k-means iterations (default 300)")
    p.add_argument("--metric", choices=("ratio", "iou"), default="ratio", help="best possible recall rule")
    p.add_argument("--thr", type=float, default=None, help="threshold for --metric (default 4.0 ratio, 0.5 IoU)")
    p.add_argument("--min-size", type=float, default=2.0, help="ignore boxes smaller than this (px, after scaling)")
    p.set_defaults(func=handler)


def letterbox_wh(aset, img: int):  # type: ignore[no-untyped-def]
    """``(w, h)`` of every non-crowd box of ``aset`` scaled by ``img / max(image w, h)``."""
    import cv2
    import numpy as np

    from odkit.errors import DataError

    widths = aset.widths.astype(np.float64).copy()
    heights = aset.heights.astype(np.float64).copy()
    counts = np.diff(aset.offsets)
    for i in np.nonzero(((widths <= 0) | (heights <= 0)) & (counts > 0))[0]:
        path = aset.path(int(i))
        im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if im is None:
            raise DataError(f"{path}: image size unknown in the annotations and the image cannot be read")
        heights[i], widths[i] = im.shape[:2]
    ratio = img / np.maximum(widths, heights).clip(min=1)
    per_box = np.repeat(ratio, counts)
    b = aset.boxes.astype(np.float64)
    wh = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1) * per_box[:, None]
    keep = ~aset.iscrowd.astype(bool)
    if (~keep).any():
        log.info("anchors: %d crowd boxes not used", int((~keep).sum()))
    return wh[keep]


def handler(args: argparse.Namespace) -> int:
    from odkit.data.formats import load_dataset
    from odkit.errors import ConfigError, DataError
    from odkit.ops.kmeans import anchor_metrics, evolve_anchors, kmeans_anchors

    if args.k < 1:
        raise ConfigError(f"-k must be >= 1, got {args.k}")
    if args.img < 1:
        raise ConfigError(f"--img must be >= 1, got {args.img}")
    from odkit.cli.data_check import source_kwargs

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
