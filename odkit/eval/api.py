"""One entry point for every metric: ``odkit.evaluate(gt, dt, metric="coco")``."""

from __future__ import annotations

from typing import Any

from odkit.errors import ConfigError
from odkit.eval.coco import CocoResult, evaluate_coco
from odkit.eval.inputs import load_detections, load_ground_truth
from odkit.eval.voc import VocResult, evaluate_voc

__all__ = ["evaluate", "METRICS"]

METRICS = ("coco", "voc07", "voc12")


def evaluate(
    gt: Any,
    dt: Any,
    metric: str = "coco",
    *,
    iou: float = 0.5,
    plus_one: bool = False,
    format: str | None = None,
    split: str | None = None,
    plots: str | None = None,
    conf: float = 0.25,
    iou_type: str = "bbox",
) -> CocoResult | VocResult:
    """Evaluate detections ``dt`` against ground truth ``gt``.

    ``gt``: an AnnotationSet or a dataset path (COCO json, VOC root, YOLO data.yaml; ``format`` and
    ``split`` are passed to ``load_dataset``). ``dt``: prediction dicts (xyxy pixels, contiguous
    labels), a COCO results list or a COCO results json path. ``metric``: ``"coco"`` (pycocotools
    bbox metrics), ``"voc07"`` (11-point AP at IoU ``iou``) or ``"voc12"`` (all-point AP);
    ``plus_one`` selects the legacy VOC +1 pixel box convention. ``iou_type="segm"`` evaluates masks
    (COCO metric only: pycocotools' ``iouType="segm"``). ``plots``: a directory that receives
    ``pr_curves.png`` and ``confusion_matrix.png`` / ``.npy`` (matched at IoU ``iou``, score >= ``conf``).
    """
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not 0.0 < float(iou) <= 1.0:
        raise ConfigError(f"iou must be in (0, 1], got {iou}")
    if iou_type not in ("bbox", "segm"):
        raise ConfigError(f"iou_type must be bbox or segm, got {iou_type!r}")
    segm = iou_type == "segm"
    if segm and metric != "coco":
        raise ConfigError(f"iou_type segm is evaluated with the coco metric only, not {metric}")
    g = load_ground_truth(gt, format=format, split=split, masks=segm)
    d = load_detections(dt, g, masks=segm)
    result: CocoResult | VocResult
    if metric == "coco":
        if plus_one:
            raise ConfigError("plus_one applies to VOC metrics only (COCO boxes have no +1)")
        result = evaluate_coco(g, d, iou_type=iou_type)
    else:
        result = evaluate_voc(
            g, d, iou_threshold=iou, use_07_metric=metric == "voc07", legacy_plus_one=plus_one
        )
    if plots:
        from pathlib import Path

        import numpy as np

        from odkit.eval.curves import confusion_matrix, plot_confusion_matrix, plot_pr_curves

        out = Path(plots)
        out.mkdir(parents=True, exist_ok=True)
        pr_iou = iou if metric != "coco" or np.isclose(result.iou_thresholds, iou).any() else 0.5
        plot_pr_curves(result, out / "pr_curves.png", iou=pr_iou)
        cm = confusion_matrix(g, d, iou_threshold=iou, score_threshold=conf)
        np.save(out / "confusion_matrix.npy", cm)
        plot_confusion_matrix(cm, g.class_names, out / "confusion_matrix.png")
    return result
