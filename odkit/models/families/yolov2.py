"""YOLOv2 (darknet's ``yolov2.cfg``: Darknet-19, passthrough, region layer) and YOLOv2-tiny (``yolov2-tiny.cfg``).

Anchors are in grid cells (``anchors=``, the order of the prediction channels), stored in
``model.config``; ``odkit train --anchors auto`` fits five to the training boxes (k-means with the
1 - IoU distance at the training input size, divided by the stride 32). Multi-scale training as the
paper's (every 10 batches, 320-608 px in steps of 32) is the recipe option ``--multiscale
--multiscale-range 320,608``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from odkit.assign.registry import make_assigner
from odkit.errors import ConfigError
from odkit.models.backbones.darknet import DarknetTiny
from odkit.models.backbones.darknet19 import Darknet19
from odkit.models.backbones.registry import construct
from odkit.models.detector import Detector
from odkit.models.families.yolov3 import PIXEL_MEAN, PIXEL_STD, RECIPE_TINY, fit_anchors
from odkit.models.heads.yolov2_head import YOLOV2_ANCHORS, YOLOv2Head, grid_anchors
from odkit.models.necks.yolov2_neck import LastLevel, YOLOv2Neck
from odkit.models.spec import ModelSpec

# darknet's detector valid / map settings: threshold 0.005, NMS 0.45.
POSTPROCESS = {"conf": 0.005, "iou": 0.45, "max_det": 100, "pre_topk": 1000}

# yolov2.cfg: SGD lr 0.001 (batch 64), momentum 0.9, decay 5e-4, burn-in 1000 batches, x0.1 at 80 %
# and 90 % of the run: the YOLOv3-tiny recipe.
RECIPE = dict(RECIPE_TINY)

NUM_ANCHORS = {"yolov2": 5, "yolov2-tiny": 5}
STRIDE = 32


def _head(num_classes: int, in_channels: int, feat: int, anchors: Any, ignore_thr: float, rescore: bool,
          assigner: str | None, assigner_args: dict[str, Any] | None) -> YOLOv2Head:
    return YOLOv2Head(num_classes, in_channels, feat, STRIDE, anchors, ignore_thr=ignore_thr, rescore=rescore,
                      assigner=make_assigner(assigner, 1, **(assigner_args or {})))


def build_yolov2(num_classes: int = 80, anchors: str | Sequence[Any] = YOLOV2_ANCHORS, ignore_thr: float = 0.6,
                 rescore: bool = True, backbone_args: dict[str, Any] | None = None, assigner: str | None = None,
                 assigner_args: dict[str, Any] | None = None) -> Detector:
    """YOLOv2: Darknet-19 (C4, C5) + passthrough neck (1280 channels at stride 32) + region head
    (3x3 1024, 1x1 ``5 (5 + C)``)."""
    backbone = construct(Darknet19, "darknet19", **(backbone_args or {}))
    neck = YOLOv2Neck(backbone.out_channels, 1024, 64, backbone.strides)
    head = _head(num_classes, neck.out_channels[0], 1024, anchors, ignore_thr, rescore, assigner, assigner_args)
    return Detector(backbone, neck, head, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD)


def build_yolov2_tiny(num_classes: int = 80, anchors: str | Sequence[Any] = YOLOV2_ANCHORS, ignore_thr: float = 0.6,
                      rescore: bool = False, backbone_args: dict[str, Any] | None = None,
                      assigner: str | None = None, assigner_args: dict[str, Any] | None = None) -> Detector:
    """YOLOv2-tiny: the tiny trunk (stride-1 max-pool padded as darknet's) to 1024 channels at stride 32
    + region head (3x3 512, 1x1 ``5 (5 + C)``)."""
    args = {"out_indices": (4,), "pool_pad": "edge", **(backbone_args or {})}
    backbone = construct(DarknetTiny, "darknet-tiny", **args)
    neck = LastLevel(backbone.out_channels, backbone.strides)
    head = _head(num_classes, neck.out_channels[0], 512, anchors, ignore_thr, rescore, assigner, assigner_args)
    return Detector(backbone, neck, head, pixel_mean=PIXEL_MEAN, pixel_std=PIXEL_STD)


def model_anchors(value: str, model: str, wh: np.ndarray | None = None) -> list[list[float]]:
    """The ``anchors`` override (grid cells) of ``model`` for ``--anchors value``: ``"auto"`` fits five
    anchors to the box sizes ``wh`` (pixels at the training input size) and divides them by the stride;
    anything else is parsed as ``w,h, ...`` in grid cells."""
    if model not in NUM_ANCHORS:
        raise ConfigError(f"model_anchors: {model!r} is not a YOLOv2 model")
    if str(value).strip().lower() == "auto":
        if wh is None:
            raise ConfigError("--anchors auto needs the training boxes")
        return [[round(w / STRIDE, 4), round(h / STRIDE, 4)] for w, h in fit_anchors(wh, NUM_ANCHORS[model])]
    return grid_anchors(value)


def models() -> dict[str, ModelSpec]:
    """Zoo entries ``yolov2`` and ``yolov2-tiny`` (416 px)."""
    return {
        "yolov2": ModelSpec(build_yolov2, 416, POSTPROCESS, RECIPE, "yolov2"),
        "yolov2-tiny": ModelSpec(build_yolov2_tiny, 416, POSTPROCESS, RECIPE, "yolov2"),
    }
