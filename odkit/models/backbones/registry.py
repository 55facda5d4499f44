"""Backbones by name, for builder arguments such as ``build("fcos-lite", backbone="mobilenetv2")``.

Every named backbone returns three maps at strides 8, 16, 32 by default (``out_channels``, ``strides``
attributes), so any neck built from those attributes can sit on top of it. ``backbone_args`` given
by the caller (e.g. ``frozen_stages``, ``norm_eval``, ``out_indices``) override the defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.mobilenet_v1 import MobileNetV1
from odkit.models.backbones.mobilenet_v2 import MobileNetV2
from odkit.models.backbones.mobilenet_v3 import MobileNetV3
from odkit.models.backbones.repvgg import RepVGG
from odkit.models.backbones.resnet import ResNet
from odkit.models.backbones.shufflenetv2 import ShuffleNetV2
from odkit.models.backbones.vgg import VGG

# name -> (class, defaults)
BACKBONES: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    **{f"resnet{d}": (ResNet, {"depth": d, "out_indices": (1, 2, 3)}) for d in (18, 34, 50, 101)},
    "shufflenetv2": (ShuffleNetV2, {"widen": 1.0, "out_indices": (0, 1, 2)}),
    **{f"shufflenetv2-x{w}": (ShuffleNetV2, {"widen": w, "out_indices": (0, 1, 2)}) for w in (0.5, 1.5, 2.0)},
    "mobilenetv1": (MobileNetV1, {}),
    "mobilenetv2": (MobileNetV2, {}),
    "mobilenetv3-large": (MobileNetV3, {"arch": "large"}),
    "mobilenetv3-small": (MobileNetV3, {"arch": "small"}),
    "vgg16": (VGG, {"depth": 16}),
    **{f"repvgg-{a.lower()}": (RepVGG, {"arch": a}) for a in ("A0", "A1", "A2", "B0", "B1")},
}


def backbone_names() -> list[str]:
    """Names accepted by :func:`make_backbone`."""
    return sorted(BACKBONES)


def make_backbone(name: str, **args: Any) -> nn.Module:
    """The backbone ``name`` (see ``BACKBONES``) built with its defaults updated by ``args``."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; expected one of {', '.join(backbone_names())}")
    cls, defaults = BACKBONES[name]
    try:
        return cls(**{**defaults, **args})
    except TypeError as e:
        raise ConfigError(f"bad backbone_args for backbone {name!r}: {e}") from e
