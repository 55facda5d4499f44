"""YOLOv1 (Redmon et al. 2016): the paper's network at 448 px (S = 7, B = 2) and ``yolov1-lite``.

``yolov1``: the 24 convolutions of the paper (20 in :class:`~odkit.models.backbones.yolov1_net.YOLOv1Net`,
four in the head, the last of stride 2), the fully connected layers 7 x 7 x 1024 -> 4096 (dropout
0.5) -> 7 x 7 x 30 for VOC's 20 classes, LeakyReLU(0.1), no normalisation; 271,703,550 parameters
for 20 classes. ``yolov1-lite``: the same head and loss on ShuffleNetV2 x1.0 (stride 32, 464 channels),
a 1x1 reduction to 64 channels and BatchNorm, a 512-wide hidden layer, and a 14 x 14 grid at
448 px (cells of 32 px). Both take only their own input size (the fully connected layers fix it).
"""

from __future__ import annotations

from typing import Any

from odkit.models.backbones.registry import construct
from odkit.models.backbones.shufflenetv2 import ShuffleNetV2
from odkit.models.backbones.yolov1_net import YOLOv1Net
from odkit.models.detector import Detector
from odkit.models.heads.yolov1_head import YOLOv1Head
from odkit.models.necks.yolov2_neck import LastLevel
from odkit.models.spec import ModelSpec

# the paper's VOC evaluation keeps class-specific scores above a small threshold; NMS 0.5 (darknet's
# detector test uses .5 for [detection] layers).
POSTPROCESS = {"conf": 0.005, "iou": 0.5, "max_det": 100, "pre_topk": 1000}

# The paper: momentum 0.9, decay 5e-4, lr 1e-3 warmed up to 1e-2, 1e-2 / 1e-3 / 1e-4 at 75 / 105 /
# 135 epochs of 135 (step decay at 55 % and 78 % of the run), batch 64.
RECIPE = {
    "optimizer": "sgd", "lr_per_image": 0.01 / 64, "momentum": 0.9, "weight_decay": 5e-4,
    "schedule": "step", "lr_steps": [75 / 135, 105 / 135], "lr_gamma": 0.1, "warmup_epochs": 1.0,
    "mosaic": 0.0, "mixup": 0.0, "no_aug_epochs": 0, "clip_grad": 10.0,
}
# The light member trains from scratch on a CPU as odkit's other light models do (AdamW, cosine), without
# Mosaic (which shrinks objects and crowds the cells of a one-class-per-cell grid).
RECIPE_LITE = {
    "optimizer": "adamw", "lr_per_image": 0.002 / 16, "weight_decay": 0.05, "schedule": "cos",
    "warmup_epochs": 2.0, "mosaic": 0.0, "mixup": 0.0, "no_aug_epochs": 0, "clip_grad": 10.0,
}

PAPER_HEAD_CONVS = ((1024, 3, 1), (1024, 3, 2), (1024, 3, 1), (1024, 3, 1))


def build_yolov1(num_classes: int = 20, grid: int = 7, boxes: int = 2, norm: str | None = None,
                 backbone_args: dict[str, Any] | None = None) -> Detector:
    """The paper's YOLOv1 (448 px, S = ``grid``, B = ``boxes``); ``norm="bn"`` adds BatchNorm."""
    backbone = construct(YOLOv1Net, "yolov1", **{"norm": norm, **(backbone_args or {})})
    neck = LastLevel(backbone.out_channels, backbone.strides)
    head = YOLOv1Head(num_classes, 1024, grid, boxes, 64, PAPER_HEAD_CONVS, None, 4096, 0.5, norm == "bn")
    return Detector(backbone, neck, head, size_divisor=64)


def build_yolov1_lite(num_classes: int = 20, grid: int = 14, boxes: int = 2, hidden: int = 512,
                      backbone_args: dict[str, Any] | None = None) -> Detector:
    """YOLOv1-lite: ShuffleNetV2 x1.0 (stride 32) + the YOLOv1 head (1x1 to 64, fc ``hidden``)."""
    backbone = construct(ShuffleNetV2, "shufflenetv2", **{"widen": 1.0, "out_indices": (2,), **(backbone_args or {})})
    neck = LastLevel(backbone.out_channels, backbone.strides)
    head = YOLOv1Head(num_classes, backbone.out_channels[-1], grid, boxes, 32, (), 64, hidden, 0.5, True)
    return Detector(backbone, neck, head)


def models() -> dict[str, ModelSpec]:
    """Zoo entries ``yolov1`` and ``yolov1-lite`` (448 px)."""
    return {
        "yolov1": ModelSpec(build_yolov1, 448, POSTPROCESS, RECIPE, "yolov1", size_divisor=64),
        "yolov1-lite": ModelSpec(build_yolov1_lite, 448, POSTPROCESS, RECIPE_LITE, "yolov1"),
    }
