"""EfficientDet (Tan et al. 2020): EfficientNet + BiFPN + shared class / box nets, compound-scaled.

D0..D2 follow effdet's ``tf_efficientdet_d0..d2`` (TensorFlow "same" padding, biases before
BatchNorm, BatchNorm eps 1e-3), so effdet's weights import with equal outputs; ``padding="symmetric",
redundant_bias=False`` with ``backbone_args={"norm_eps": 1e-5}`` is the layout of its
``efficientdet_d0/d1``. ``efficientdet-lite`` is a CPU-sized member (B0, a 48-channel BiFPN of 2
cells, 2 head repeats, 256 input).
"""

from __future__ import annotations

from typing import Any

from odkit.errors import ConfigError
from odkit.models.backbones.efficientnet import EfficientNet
from odkit.models.backbones.registry import construct
from odkit.models.detector import Detector
from odkit.models.heads.efficientdet_head import EfficientDetHead
from odkit.models.necks.bifpn import BiFPN
from odkit.models.spec import ModelSpec

# compound level: (backbone, BiFPN width, BiFPN cells, head repeats, input size, drop-connect)
COMPOUND = {
    "d0": ("b0", 64, 3, 3, 512, 0.2),
    "d1": ("b1", 88, 4, 3, 640, 0.2),
    "d2": ("b2", 112, 5, 3, 768, 0.2),
    "lite": ("b0", 48, 2, 2, 256, 0.0),
}


def build_efficientdet(num_classes: int = 90, compound: str = "d0", padding: str = "same",
                       redundant_bias: bool = True, backbone_args: dict[str, Any] | None = None,
                       fpn_channels: int | None = None, fpn_repeats: int | None = None,
                       head_repeats: int | None = None, **head_args: Any) -> Detector:
    """EfficientDet at ``compound`` level (``d0``, ``d1``, ``d2``, ``lite``). ``padding``: ``"same"``
    (TensorFlow, effdet's ``tf_`` models) or ``"symmetric"``; ``redundant_bias``: conv biases before
    BatchNorm in the BiFPN and heads (the TF models have them); ``backbone_args`` go to
    :class:`EfficientNet` (``norm``, ``frozen_stages``, ``drop_path_rate``, ...); the widths and repeats
    override the level's; ``head_args`` go to :class:`EfficientDetHead`."""
    if compound not in COMPOUND:
        raise ConfigError(f"unknown EfficientDet level {compound!r}; expected one of {', '.join(COMPOUND)}")
    variant, channels, cells, repeats, _, drop = COMPOUND[compound]
    bb_args = {"variant": variant, "padding": padding, "drop_path_rate": drop, **(backbone_args or {})}
    backbone = construct(EfficientNet, f"efficientnet-{variant}", **bb_args)
    neck = BiFPN(backbone.out_channels, fpn_channels or channels, fpn_repeats or cells, backbone.strides,
                 padding, redundant_bias)
    head = EfficientDetHead(num_classes, neck.out_channels[0], neck.strides, head_repeats or repeats, padding,
                            redundant_bias, **head_args)
    return Detector(backbone, neck, head)


# effdet's prediction: top 5000 (anchor, class) logits over all levels, no score threshold, NMS 0.5,
# 100 detections per image.
POSTPROCESS = {"conf": 0.0, "pre_topk": 5000, "iou": 0.5, "max_det": 100}

# Training recipe for CPU-sized runs from scratch (AdamW, cosine, Mosaic with a no-augmentation tail);
# effdet itself trains with SGD / momentum 0.9, lr 0.08 per 64 images, cosine, for 300 epochs.
RECIPE = {
    "optimizer": "adamw", "lr_per_image": 0.004 / 16, "weight_decay": 0.05, "schedule": "cos",
    "warmup_epochs": 2.0, "mosaic": 0.5, "mixup": 0.0, "no_aug_epochs": 10, "clip_grad": 10.0,
}


def _entry(compound: str) -> ModelSpec:
    def builder(num_classes: int = 90, **kw: Any) -> Detector:
        return build_efficientdet(num_classes, compound, **kw)

    builder.__name__ = f"build_efficientdet_{compound}"
    return ModelSpec(builder, COMPOUND[compound][4], POSTPROCESS, RECIPE, "efficientdet", size_divisor=128)


def models() -> dict[str, ModelSpec]:
    """Zoo entries ``efficientdet-d0``, ``-d1``, ``-d2`` and ``efficientdet-lite``."""
    return {f"efficientdet-{c}": _entry(c) for c in COMPOUND}
