"""YOLOX: CSPDarknet + PAFPN + decoupled head with SimOTA (Ge et al. 2021)."""

from __future__ import annotations

from typing import Any

from odkit.assign.registry import make_assigner
from odkit.models.backbones import CSPDarknet
from odkit.models.backbones.registry import construct
from odkit.models.detector import Detector
from odkit.models.heads import YOLOXHead
from odkit.models.necks import PAFPN

# YOLOX's prediction settings (its demo: score 0.25, NMS IoU 0.45); evaluation passes its own
# (score 0.001, NMS 0.65, as YOLOX's evaluator).
POSTPROCESS = {"conf": 0.25, "iou": 0.45, "max_det": 300, "pre_topk": 1000}

# The YOLOX recipe: SGD (lr 0.01 per 64 images), cosine with warm-up, Mosaic, the last 15 epochs without
# strong augmentation and with the L1 loss ("no_aug" phase).
RECIPE = {
    "optimizer": "sgd",
    "schedule": "cos",
    "warmup_epochs": 3.0,
    "mosaic": 1.0,
    "mixup": 0.0,
    "no_aug_epochs": 15,
}


def build_yolox(
    num_classes: int = 80,
    depth: float = 1.0,
    width: float = 1.0,
    depthwise: bool = False,
    act: str = "silu",
    prior_prob: float = 0.01,
    iou_loss: str = "iou",
    assigner: str | None = None,
    assigner_args: dict[str, Any] | None = None,
    backbone_args: dict[str, Any] | None = None,
) -> Detector:
    """A YOLOX detector: CSPDarknet + PAFPN + decoupled head at strides 8, 16, 32. ``assigner``
    swaps SimOTA for another assigner by name (``odkit.assign.make_assigner``); ``backbone_args`` go to
    the CSPDarknet (e.g. ``norm``, ``frozen_stages``, ``norm_eval``)."""
    backbone = construct(CSPDarknet, "cspdarknet", depth, width, depthwise=depthwise, act=act, **(backbone_args or {}))
    neck = PAFPN(backbone.out_channels, depth, depthwise=depthwise, act=act)
    head = YOLOXHead(
        num_classes,
        neck.out_channels,
        feat_channels=int(256 * width),
        strides=backbone.strides,
        depthwise=depthwise,
        act=act,
        prior_prob=prior_prob,
        iou_loss=iou_loss,
        assigner=make_assigner(assigner, len(backbone.strides), **(assigner_args or {})),
    )
    return Detector(backbone, neck, head)
