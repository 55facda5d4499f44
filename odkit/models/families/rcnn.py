"""Two-stage detectors: Faster R-CNN and Mask R-CNN with FPN (ResNet-50 and the CPU-sized
MobileNetV3-Large members) and Double-Head R-CNN, all one :class:`~odkit.models.detector.Detector` with a
:class:`~odkit.models.two_stage.TwoStageHead`.

Defaults are torchvision's ``fasterrcnn_resnet50_fpn`` / ``fasterrcnn_mobilenet_v3_large_fpn`` /
``maskrcnn_resnet50_fpn``
(BatchNorm trainable, as torchvision builds them without pretrained weights), except RoIAlign's
``aligned`` (True here, half-pixel corrected; torchvision's ``MultiScaleRoIAlign`` uses False, so its
imported weights are built with ``aligned=False``). Builder arguments: ``backbone_args`` (e.g.
``frozen_stages``, ``norm="frozen_bn"``), ``rpn_args`` and ``roi_args`` go to
:class:`~odkit.models.two_stage.RPN` and the RoI head.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.mobilenet_v3 import MobileNetV3
from odkit.models.backbones.registry import construct
from odkit.models.backbones.resnet import ResNet
from odkit.models.detector import Detector
from odkit.models.spec import ModelSpec
from odkit.models.two_stage import RPN, DoubleHeadRoIHead, RoIHead, TwoStageHead
from odkit.models.two_stage.fpn_pool import FPNMaxPool
from odkit.models.two_stage.mask_head import MaskRoIHead
from odkit.ops.priors import AnchorGenerator

RATIOS = (0.5, 1.0, 2.0)


def _r50_fpn(**backbone_args: Any) -> tuple[nn.Module, nn.Module, AnchorGenerator, dict[str, Any]]:
    """ResNet-50 C2-C5 + FPN P2-P5 + max-pooled P6; anchors 32..512 one size per level; RoIs from P2-P5."""
    backbone = construct(ResNet, "resnet50", 50, out_indices=(0, 1, 2, 3), **backbone_args)
    neck = FPNMaxPool(backbone.out_channels, 256, in_strides=backbone.strides)
    anchors = AnchorGenerator([[32.0], [64.0], [128.0], [256.0], [512.0]], RATIOS, neck.strides, round_base=True)
    return backbone, neck, anchors, {"strides": neck.strides[:4], "feature_indices": (0, 1, 2, 3)}


def _mobilenetv3_fpn(**backbone_args: Any) -> tuple[nn.Module, nn.Module, AnchorGenerator, dict[str, Any]]:
    """MobileNetV3-Large: the output of ``features.13`` (stride 32, 160 ch) and of the last layer
    (``features.16``, stride 32, 960 ch) + FPN + max-pooled level (stride 64); anchors
    32-512 x 3 ratios on every level (15 per location); RoIs from the first FPN map only (torchvision's
    level rule puts every RoI there: both maps have stride 32)."""
    # torchvision builds this trunk with plain nn.BatchNorm2d (eps 1e-5, momentum 0.1) when not pretrained,
    # with FrozenBatchNorm2d (eps 1e-5) when pretrained
    args = {"norm_eps": 1e-5, "norm_momentum": 0.1, **backbone_args}
    backbone = construct(MobileNetV3, "mobilenetv3-large", "large", out_indices=(13, 16), **args)
    neck = FPNMaxPool(backbone.out_channels, 256, in_strides=backbone.strides)
    anchors = AnchorGenerator([[32.0, 64.0, 128.0, 256.0, 512.0]] * 3, RATIOS, neck.strides, round_base=True)
    return backbone, neck, anchors, {"strides": [32], "feature_indices": (0,)}


TRUNKS = {"r50": _r50_fpn, "mobilenetv3": _mobilenetv3_fpn}
ROI_HEADS: dict[str, type[RoIHead]] = {"fc": RoIHead, "double": DoubleHeadRoIHead, "mask": MaskRoIHead}


def build_rcnn(
    num_classes: int = 80,
    backbone: str = "r50",
    roi_head: str = "fc",
    aligned: bool = True,
    background_slot: bool = False,
    backbone_args: dict[str, Any] | None = None,
    rpn_args: dict[str, Any] | None = None,
    roi_args: dict[str, Any] | None = None,
) -> Detector:
    """A two-stage detector: ``backbone`` ``"r50"`` or ``"mobilenetv3"`` (with FPN), ``roi_head``
    ``"fc"`` (Faster R-CNN's two-fc head), ``"double"`` (Double-Head R-CNN) or ``"mask"`` (Mask R-CNN:
    the two-fc head plus the mask branch); ``aligned``:
    RoIAlign's half-pixel correction; ``background_slot``: labels number the classifier's columns,
    label 0 the background (torchvision's COCO labels; ``num_classes`` still counts object classes)."""
    if backbone not in TRUNKS:
        raise ConfigError(f"unknown two-stage backbone {backbone!r}; expected one of {', '.join(TRUNKS)}")
    if roi_head not in ROI_HEADS:
        raise ConfigError(f"unknown RoI head {roi_head!r}; expected one of {', '.join(ROI_HEADS)}")
    trunk, neck, anchors, roi_levels = TRUNKS[backbone](**(backbone_args or {}))
    rpn = RPN(neck.out_channels[0], anchors, **(rpn_args or {}))
    roi = ROI_HEADS[roi_head](num_classes, neck.out_channels[0], **{**roi_levels, "aligned": aligned, "background_slot": background_slot,
                                                            **(roi_args or {})})
    return Detector(trunk, neck, TwoStageHead(rpn, roi))


# torchvision's prediction settings: box score > 0.05, NMS 0.5, 100 detections, no candidate cap.
POSTPROCESS = {"conf": 0.05, "iou": 0.5, "max_det": 100, "pre_topk": 0}

# torchvision's reference recipe (SGD 0.02 for 16 images, warm-up, x0.1 at 16/26 and 22/26 of the run).
RECIPE_R50 = {
    "optimizer": "sgd", "lr_per_image": 0.02 / 16, "momentum": 0.9, "weight_decay": 1e-4,
    "schedule": "step", "lr_steps": [16 / 26, 22 / 26], "lr_gamma": 0.1, "warmup_epochs": 0.5,
    "mosaic": 0.0, "mixup": 0.0, "no_aug_epochs": 0, "clip_grad": 35.0,
}


# The CPU-sized member, made to train from scratch on a CPU: fewer proposals and sampled RoIs than
# the reference (2000 / 2000 proposals and 512 RoIs per training image, 1000 / 1000 proposals at
# test). The two-fc box head costs 2 x 12544 x 1024 multiply-adds per RoI: at 512 RoIs per image it
# is about 25x the MobileNetV3 trunk at 416 px, so it would be most of a CPU training step; 64 RoIs
# (16 foreground) per image, batch 8. Test-time proposals as torchvision's
# fasterrcnn_mobilenet_v3_large_320_fpn (150). Imported torchvision weights get the reference values
# (the import table's build overrides).
MOBILE_RPN = {"pre_nms_top_n": [600, 150], "post_nms_top_n": [300, 150], "score_thr": 0.05}
MOBILE_ROI = {"num_samples": 64}
RECIPE_MOBILE = {
    "batch": 8, "optimizer": "adamw", "weight_decay": 0.05, "schedule": "cos",
    "warmup_epochs": 2.0, "mosaic": 0.5, "mixup": 0.0, "no_aug_epochs": 10, "clip_grad": 35.0,
}

# The mask member: the same box path; a mask head of 128 channels (four 3x3 convs, deconvolution) costs
# about 0.3 GFLOPs per RoI, torchvision's 256 channels 1.1 (at 100 detections 110 GFLOPs, 16x this trunk
# at 416 px). Mosaic stays off: masks ride through the geometric augmentations only.
MOBILE_MASK_ROI = {**MOBILE_ROI, "mask_layers": [128, 128, 128, 128], "mask_dim": 128}
RECIPE_MOBILE_MASK = {**RECIPE_MOBILE, "mosaic": 0.0}


def _spec(img: int, recipe: dict[str, Any], family: str, **defaults: Any) -> ModelSpec:
    def builder(num_classes: int = 80, **kw: Any) -> Detector:
        return build_rcnn(num_classes, **{**defaults, **kw})

    builder.__name__ = f"build_{family}_{defaults.get('backbone', 'r50')}"
    return ModelSpec(builder, img, POSTPROCESS, recipe, family)


def models() -> dict[str, ModelSpec]:
    """Zoo entries: ``fasterrcnn-r50-fpn``, ``fasterrcnn-mobilenetv3-fpn``, ``doublehead-r50-fpn``,
    ``maskrcnn-r50-fpn``, ``maskrcnn-mobilenetv3-fpn``."""
    return {
        "fasterrcnn-r50-fpn": _spec(800, RECIPE_R50, "fasterrcnn", backbone="r50"),
        "doublehead-r50-fpn": _spec(800, RECIPE_R50, "doublehead", backbone="r50", roi_head="double"),
        "fasterrcnn-mobilenetv3-fpn": _spec(416, RECIPE_MOBILE, "fasterrcnn", backbone="mobilenetv3",
                                            rpn_args=MOBILE_RPN, roi_args=MOBILE_ROI),
        "maskrcnn-r50-fpn": _spec(800, RECIPE_R50, "maskrcnn", backbone="r50", roi_head="mask"),
        "maskrcnn-mobilenetv3-fpn": _spec(416, RECIPE_MOBILE_MASK, "maskrcnn", backbone="mobilenetv3", roi_head="mask",
                                          rpn_args=MOBILE_RPN, roi_args=MOBILE_MASK_ROI),
    }
