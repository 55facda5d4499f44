"""YOLOv3 (Darknet-53 + YOLOv3 neck, three scales, 9 anchors) and YOLOv3-tiny (two scales, 6 anchors).

Anchors are a builder argument (``anchors=``: ``(w, h)`` pixel pairs or the ``odkit anchors`` text,
sorted by area and split evenly over the levels), stored in ``model.config``, so weights sidecars
rebuild the same model; ``odkit train --anchors auto`` fits them to the training set with k-means
(1 - IoU), see :func:`fit_anchors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from odkit.assign.registry import make_assigner
from odkit.errors import ConfigError
from odkit.models.backbones.darknet import Darknet53, DarknetTiny
from odkit.models.backbones.registry import construct
from odkit.models.detector import Detector
from odkit.models.heads.yolov3_head import YOLOv3Head
from odkit.models.necks.yolov3_neck import YOLOv3Neck, YOLOv3TinyNeck
from odkit.models.spec import ModelSpec
from odkit.ops.priors import YOLOV3_ANCHORS, YOLOV3_TINY_ANCHORS, parse_anchors

# Input of darknet's YOLOv3: RGB in [0, 1], no mean / std.
PIXEL_MEAN = (0.0, 0.0, 0.0)
PIXEL_STD = (1.0, 1.0, 1.0)

# MMDetection's YOLOv3 test settings (score 0.05 on obj * cls, NMS IoU 0.45, 100 per image, 1000 per
# level before NMS).
POSTPROCESS = {"conf": 0.05, "iou": 0.45, "max_det": 100, "pre_topk": 1000}

# MMDetection's yolov3_d53 recipe (SGD lr 0.001 at batch 64, momentum 0.9, decay 5e-4, linear warm-up
# of 2000 iterations at batch 64 (about one COCO epoch), x0.1 at epochs 218 and 246 of 273, gradient
# clip 35; photometric / expand / crop / flip, no Mosaic); darknet's yolov3-tiny.cfg uses the same
# optimizer settings (steps at 80% and 90%).
RECIPE = {
    "optimizer": "sgd", "lr_per_image": 0.001 / 64, "momentum": 0.9, "weight_decay": 5e-4,
    "schedule": "step", "lr_steps": [218 / 273, 246 / 273], "lr_gamma": 0.1, "warmup_epochs": 1.0,
    "mosaic": 0.0, "mixup": 0.0, "no_aug_epochs": 0, "clip_grad": 35.0,
}
RECIPE_TINY = {**RECIPE, "lr_steps": [0.8, 0.9]}

# Anchors per model (``odkit train --anchors auto`` fits this many).
NUM_ANCHORS = {"yolov3": len(YOLOV3_ANCHORS), "yolov3-tiny": len(YOLOV3_TINY_ANCHORS)}


def build_yolov3(num_classes: int = 80, anchors: str | Sequence[Any] = YOLOV3_ANCHORS, ignore_thr: float = 0.7,
                 backbone_args: dict[str, Any] | None = None, assigner: str | None = None,
                 assigner_args: dict[str, Any] | None = None) -> Detector:
    """YOLOv3: Darknet-53 (C3-C5) + YOLOv3 neck (128/256/512) + head (3x3 bridges to 256/512/1024,
    1x1 predictions) at strides 8, 16, 32, three anchors per level."""
    backbone = construct(Darknet53, "darknet53", **(backbone_args or {}))
    neck = YOLOv3Neck(backbone.out_channels, (128, 256, 512), backbone.strides)
    head = YOLOv3Head(num_classes, neck.out_channels, (256, 512, 1024), neck.strides, anchors, ignore_thr=ignore_thr,
                      assigner=make_assigner(assigner, len(neck.strides), **(assigner_args or {})))
    return Detector(backbone, neck, head, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD)


def build_yolov3_tiny(num_classes: int = 80, anchors: str | Sequence[Any] = YOLOV3_TINY_ANCHORS,
                      ignore_thr: float = 0.7, backbone_args: dict[str, Any] | None = None,
                      assigner: str | None = None, assigner_args: dict[str, Any] | None = None) -> Detector:
    """YOLOv3-tiny: the tiny trunk (C4, C5) + tiny neck + head (3x3 bridges to 256 / 512) at strides
    16, 32, three anchors per level."""
    backbone = construct(DarknetTiny, "darknet-tiny", **(backbone_args or {}))
    neck = YOLOv3TinyNeck(backbone.out_channels, 256, backbone.strides)
    head = YOLOv3Head(num_classes, neck.out_channels, (256, 512), neck.strides, anchors, ignore_thr=ignore_thr,
                      assigner=make_assigner(assigner, len(neck.strides), **(assigner_args or {})))
    return Detector(backbone, neck, head, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD)


def fit_anchors(wh: np.ndarray, k: int, seed: int = 0) -> list[list[float]]:
    """``k`` anchors ``[[w, h], ...]`` (pixels, rounded to 0.1, sorted by area) fitted to box sizes
    ``wh`` ``[N, 2]`` by k-means with the 1 - IoU distance (as ``odkit anchors``); boxes under 2 px are
    left out. Raises ``ConfigError`` when fewer than ``k`` boxes remain."""
    from odkit.ops.kmeans import kmeans_anchors

    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    wh = wh[(wh >= 2.0).all(1)]
    if len(wh) < k:
        raise ConfigError(f"--anchors auto: {len(wh)} usable training boxes, fewer than the {k} anchors to fit")
    return [[round(float(w), 1), round(float(h), 1)] for w, h in kmeans_anchors(wh, k, seed=seed)]


def model_anchors(value: str, model: str, wh: np.ndarray | None = None) -> list[list[float]]:
    """The ``anchors`` override of ``model`` for ``--anchors value``: ``"auto"`` fits
    ``NUM_ANCHORS[model]`` anchors to the box sizes ``wh`` (pixels at the training input size), anything
    else is parsed as ``w,h, w,h, ...`` (e.g. the line printed by ``odkit anchors``)."""
    if model not in NUM_ANCHORS:
        raise ConfigError(f"--anchors applies to models with settable anchors ({', '.join(NUM_ANCHORS)}, "
                          f"yolov2, yolov2-tiny), not {model!r}")
    levels = 3 if model == "yolov3" else 2
    if str(value).strip().lower() == "auto":
        if wh is None:
            raise ConfigError("--anchors auto needs the training boxes")
        return fit_anchors(wh, NUM_ANCHORS[model])
    return parse_anchors(value, levels)


def models() -> dict[str, ModelSpec]:
    """Zoo entries ``yolov3`` (416 px) and ``yolov3-tiny`` (416 px)."""
    return {
        "yolov3": ModelSpec(build_yolov3, 416, POSTPROCESS, RECIPE, "yolov3"),
        "yolov3-tiny": ModelSpec(build_yolov3_tiny, 416, POSTPROCESS, RECIPE_TINY, "yolov3"),
    }
