"""Dense one-stage detectors: RetinaNet, FCOS, ATSS, GFL, each as a full-size ResNet-50-FPN member
(the reference configuration) and a light CPU member (ShuffleNetV2 x1.0 + SlimPAN, depthwise heads).

The heads take ``assigner=`` as a builder argument, so ``build("retinanet-lite", assigner="atss")``
is RetinaNet with ATSS sample selection, not another class.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from odkit.assign.registry import make_assigner
from odkit.errors import ConfigError
from odkit.models.backbones.registry import make_backbone
from odkit.models.detector import Detector
from odkit.models.heads.atss_head import ATSSHead
from odkit.models.heads.fcos_head import FCOSHead
from odkit.models.heads.gfl_head import GFLHead
from odkit.models.heads.retinanet_head import RetinaNetHead, retinanet_anchors
from odkit.models.necks.fpn import FPN
from odkit.models.necks.slim_pan import SlimPAN
from odkit.models.spec import ModelSpec
from odkit.ops.priors import AnchorGenerator

HEADS: dict[str, type[nn.Module]] = {"retinanet": RetinaNetHead, "fcos": FCOSHead, "atss": ATSSHead, "gfl": GFLHead}


def _r50_fpn(extra_source: str = "p5", name: str = "resnet50", **backbone_args: Any) -> tuple[nn.Module, nn.Module]:
    backbone = make_backbone(name, **backbone_args)
    neck = FPN(backbone.out_channels, 256, extra_levels=2, extra_source=extra_source, in_strides=backbone.strides)
    return backbone, neck


def _lite(name: str = "shufflenetv2", **backbone_args: Any) -> tuple[nn.Module, nn.Module]:
    backbone = make_backbone(name, **backbone_args)
    neck = SlimPAN(backbone.out_channels, 96, extra_levels=1, in_strides=backbone.strides)
    return backbone, neck


def build_dense(
    num_classes: int = 80,
    family: str = "retinanet",
    size: str = "r50",
    assigner: str | None = None,
    assigner_args: dict[str, Any] | None = None,
    backbone_args: dict[str, Any] | None = None,
    extra_source: str = "p5",
    backbone: str | None = None,
    **head_args: Any,
) -> Detector:
    """A dense detector: ``family`` (retinanet, fcos, atss, gfl) on ``size`` ``"r50"`` (ResNet-50 + FPN
    P3-P7, 256-channel towers of 4 convs) or ``"lite"`` (ShuffleNetV2 + SlimPAN P3-P6, 96-channel
    depthwise towers of 2 convs with GroupNorm). ``assigner`` swaps the head's assigner by name
    (``maxiou``, ``fcos``, ``atss``, ``simota``, ``yolo``; ``assigner_args`` configure it; an assigner
    the head cannot use is a ``ConfigError`` here); ``backbone_args`` go to the backbone, with the same
    meaning for every backbone (e.g. ``frozen_stages``, ``norm="frozen_bn"``, ``norm_eval``,
    ``out_indices``); ``extra_source`` picks P6's input for the r50 FPN (``"p5"`` as torchvision's
    RetinaNet / FCOS, or ``"c5"``); ``backbone`` swaps the size's backbone by name
    (``odkit.models.backbones.registry``: e.g. ``"mobilenetv2"``, ``"mobilenetv3-large"``,
    ``"repvgg-a0"``, ``"vgg16"``, ``"cspdarknet-s"``, ``"darknet53"``; default ``"resnet50"`` /
    ``"shufflenetv2"``), the neck following its channels; ``head_args`` go to the head class."""
    if family not in HEADS:
        raise ConfigError(f"unknown dense family {family!r}; expected one of {', '.join(HEADS)}")
    if size == "r50":
        backbone, neck = _r50_fpn(extra_source, backbone or "resnet50", **(backbone_args or {}))
        defaults: dict[str, Any] = {"feat_channels": 256, "stacked_convs": 4}
        if family == "retinanet":
            defaults.update(norm=None, stride_from_input=True,
                            prior_generator=retinanet_anchors(neck.strides, torchvision_sizes=True))
        elif family == "fcos":  # torchvision's FCOS: anchor-sized points, regress ranges without their ends
            from odkit.assign import FCOSAssigner
            from odkit.assign.registry import fcos_ranges

            defaults.update(norm="gn", stride_from_input=True,
                            prior_generator=AnchorGenerator([[8.0 * 2**i] for i in range(5)], (1.0,), neck.strides),
                            assigner=FCOSAssigner(fcos_ranges(len(neck.strides)), inclusive_ranges=False))
    elif size == "lite":
        backbone, neck = _lite(backbone or "shufflenetv2", **(backbone_args or {}))
        defaults = {"feat_channels": 96, "stacked_convs": 2, "norm": "gn", "depthwise": True}
        if family == "retinanet":
            defaults.update(box_loss="giou")
        if family == "fcos":
            defaults.update(learn_scale=True)
    else:
        raise ConfigError(f"unknown dense model size {size!r}; expected r50 or lite")
    kw = {**defaults, **head_args}
    made = make_assigner(assigner, len(neck.strides), **(assigner_args or {}))
    if made is not None:
        kw["assigner"] = made
    head = HEADS[family](num_classes, neck.out_channels[0], strides=neck.strides, **kw)
    return Detector(backbone, neck, head)


# Prediction settings of the references: torchvision's RetinaNet and FCOS, MMDetection's ATSS and GFL.
POSTPROCESS = {
    "retinanet": {"conf": 0.05, "pre_topk": 1000, "iou": 0.5, "max_det": 300},
    "fcos": {"conf": 0.2, "pre_topk": 1000, "iou": 0.6, "max_det": 100},
    "atss": {"conf": 0.05, "pre_topk": 1000, "iou": 0.6, "max_det": 100},
    "gfl": {"conf": 0.05, "pre_topk": 1000, "iou": 0.6, "max_det": 100},
}

# The reference "1x" recipe (SGD 0.01 per 16 images, warm-up, x0.1 at 8/12 and 11/12 of training,
# flip-only augmentation, no Mosaic), and a from-scratch recipe for the light members (AdamW, cosine,
# Mosaic with a no-augmentation tail), which train on a CPU in minutes.
RECIPE_1X = {
    "optimizer": "sgd", "lr_per_image": 0.01 / 16, "momentum": 0.9, "weight_decay": 1e-4,
    "schedule": "step", "lr_steps": [8 / 12, 11 / 12], "lr_gamma": 0.1, "warmup_epochs": 0.5,
    "mosaic": 0.0, "mixup": 0.0, "no_aug_epochs": 0, "clip_grad": 35.0,
}
RECIPE_LITE = {
    "optimizer": "adamw", "lr_per_image": 0.004 / 16, "weight_decay": 0.05, "schedule": "cos",
    "warmup_epochs": 2.0, "mosaic": 0.5, "mixup": 0.0, "no_aug_epochs": 10, "clip_grad": 35.0,
}


def _entry(family: str, size: str, **fixed: Any) -> ModelSpec:
    def builder(num_classes: int = 80, **kw: Any) -> Detector:
        return build_dense(num_classes, family, size, **{**fixed, **kw})

    builder.__name__ = f"build_{family}_{fixed.get('backbone', size)}"
    recipe = RECIPE_1X if size == "r50" else RECIPE_LITE
    return ModelSpec(builder, 800 if size == "r50" else 416, POSTPROCESS[family], recipe, family)


def models() -> dict[str, ModelSpec]:
    """Zoo entries of the dense families (``<family>-r50-fpn`` and ``<family>-lite``), and the light
    FCOS on MobileNetV2 (``fcos-mobilenetv2``: ``fcos-lite`` with ``backbone="mobilenetv2"``)."""
    out = {}
    for family in HEADS:
        out[f"{family}-r50-fpn"] = _entry(family, "r50")
        out[f"{family}-lite"] = _entry(family, "lite")
    out["fcos-mobilenetv2"] = _entry("fcos", "lite", backbone="mobilenetv2")
    return out

