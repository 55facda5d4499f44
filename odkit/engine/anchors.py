"""``--anchors``: the anchor override of a training run (fitted to the training set, or given)."""

from __future__ import annotations

import logging
from typing import Any

from odkit.data.structures import AnnotationSet

log = logging.getLogger(__name__)


def training_anchors(value: str, model: str, train_set: AnnotationSet, img: int) -> list[list[float]]:
    """The ``anchors`` build override of ``model`` for ``--anchors value``: ``"auto"`` runs k-means
    (1 - IoU) on the non-crowd training boxes scaled as the letterbox resize to ``img`` scales them
    (the boxes ``odkit anchors --img img`` clusters); other values are ``w,h, w,h, ...`` pixels (grid
    cells of stride 32 for YOLOv2, whose anchors are in cells)."""
    from odkit.data.stats import letterbox_wh
    from odkit.models.families import yolov2, yolov3
    from odkit.ops.kmeans import anchor_metrics

    model_anchors = yolov2.model_anchors if model in yolov2.NUM_ANCHORS else yolov3.model_anchors

    auto = str(value).strip().lower() == "auto"
    wh: Any = letterbox_wh(train_set, img) if auto else None
    anchors = model_anchors(value, model, wh)
    if auto:
        scale = yolov2.STRIDE if model in yolov2.NUM_ANCHORS else 1.0
        fit = anchor_metrics(wh, [[w * scale, h * scale] for w, h in anchors], "iou")
        log.info("--anchors auto: %d anchors from %d training boxes at %d px: %s (mean best IoU %.3f)",
                 len(anchors), len(wh), img, ", ".join(f"{w:g},{h:g}" for w, h in anchors), fit.mean_best_iou)
    return anchors
