"""``--anchors``: the anchor override of a training run (fitted to the training set, or given)."""

from __future__ import annotations

import logging
from typing import Any

from odkit.data.structures import AnnotationSet

log = logging.getLogger(__name__)


def training_anchors(value: str, model: str, train_set: AnnotationSet, img: int) -> list[list[float]]:
    """The ``anchors`` build override of ``model`` for ``--anchors value``: ``"auto"`` runs k-means
    (1 - IoU) on the non-crowd training boxes scaled as the letterbox resize to ``img`` scales them
    (the boxes ``odkit anchors --img img`` clusters); other values are ``w,h, w,h, ...`` pixels."""
    from odkit.data.stats import letterbox_wh
    from odkit.models.families.yolov3 import model_anchors
    from odkit.ops.kmeans import anchor_metrics

    auto = str(value).strip().lower() == "auto"
    wh: Any = letterbox_wh(train_set, img) if auto else None
    anchors = model_anchors(value, model, wh)
    if auto:
        fit = anchor_metrics(wh, anchors, "iou")
        log.info("--anchors auto: %d anchors from %d training boxes at %d px: %s (mean best IoU %.3f)",
                 len(anchors), len(wh), img, ", ".join(f"{w:g},{h:g}" for w, h in anchors), fit.mean_best_iou)
    return anchors
