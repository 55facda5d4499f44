"""CenterNet (Zhou et al. 2019, "Objects as Points"): backbone + upsampling neck + heatmap / size /
offset head at stride 4, decoded by max-pool peaks instead of NMS.

``centernet-r18`` is MMDetection's CenterNet ResNet-18 baseline without deformable convolutions
(ResNet-18 C5, ``CTResNetNeck`` 256 / 128 / 64 with 4x4 transposed convs, 64-channel head branches,
512 input, top 100 peaks). ``centernet-lite`` is a CPU-sized member: ShuffleNetV2 x1.0, a depthwise
neck (128 / 96 / 64) with nearest upsampling and lateral skips from the stride-16 and stride-8 maps,
384 input.
"""

from __future__ import annotations

from typing import Any

from odkit.errors import ConfigError
from odkit.models.backbones.registry import make_backbone
from odkit.models.detector import Detector
from odkit.models.heads.centernet_head import CenterNetHead
from odkit.models.necks.ct_neck import CenterNetNeck
from odkit.models.spec import ModelSpec


def build_centernet(num_classes: int = 80, size: str = "r18", backbone: str | None = None,
                    backbone_args: dict[str, Any] | None = None, neck_args: dict[str, Any] | None = None,
                    **head_args: Any) -> Detector:
    """CenterNet of ``size`` ``"r18"`` or ``"lite"`` (see the module docstring); ``backbone`` swaps the
    backbone by registry name, ``backbone_args`` / ``neck_args`` / ``head_args`` go to the parts."""
    if size == "r18":
        bb = make_backbone(backbone or "resnet18", **{"out_indices": (3,), **(backbone_args or {})})
        neck = CenterNetNeck(bb.out_channels, **{"channels": (256, 128, 64), **(neck_args or {})})
    elif size == "lite":
        bb = make_backbone(backbone or "shufflenetv2", **(backbone_args or {}))
        neck = CenterNetNeck(bb.out_channels, **{"channels": (128, 96, 64), "upsample": "nearest", "skips": True,
                                                 "depthwise": True, **(neck_args or {})})
    else:
        raise ConfigError(f"unknown CenterNet size {size!r}; expected r18 or lite")
    head = CenterNetHead(num_classes, neck.out_channels[0], **head_args)
    return Detector(bb, neck, head)


# MMDetection's test settings: the 100 best peaks, no score threshold and no NMS (IoU 1 suppresses nothing).
POSTPROCESS = {"conf": 0.0, "pre_topk": 100, "iou": 1.0, "max_det": 100}

# MMDetection's schedule (SGD 0.02 per 16 images, warm-up, x0.1 at 18/28 and 24/28) for the full
# member; the light member trains from scratch with the CPU recipe of the other light models.
RECIPE_R18 = {
    "optimizer": "sgd", "lr_per_image": 0.02 / 16, "momentum": 0.9, "weight_decay": 1e-4,
    "schedule": "step", "lr_steps": [18 / 28, 24 / 28], "lr_gamma": 0.1, "warmup_epochs": 0.5,
    "mosaic": 0.0, "mixup": 0.0, "no_aug_epochs": 0, "clip_grad": 35.0,
}
RECIPE_LITE = {
    "optimizer": "adamw", "lr_per_image": 0.004 / 16, "weight_decay": 0.05, "schedule": "cos",
    "warmup_epochs": 2.0, "mosaic": 0.5, "mixup": 0.0, "no_aug_epochs": 10, "clip_grad": 35.0,
}


def _entry(size: str) -> ModelSpec:
    def builder(num_classes: int = 80, **kw: Any) -> Detector:
        return build_centernet(num_classes, size, **kw)

    builder.__name__ = f"build_centernet_{size}"
    return ModelSpec(builder, 512 if size == "r18" else 384, POSTPROCESS,
                     RECIPE_R18 if size == "r18" else RECIPE_LITE, "centernet")


def models() -> dict[str, ModelSpec]:
    """Zoo entries ``centernet-r18`` and ``centernet-lite``."""
    return {"centernet-r18": _entry("r18"), "centernet-lite": _entry("lite")}
