"""Backbones by name, for builder arguments such as ``build("fcos-lite", backbone="mobilenetv2")``.

Every named backbone returns three maps at strides 8, 16, 32 by default (``out_channels``, ``strides``
attributes), so any neck built from those attributes can sit on top of it. ``backbone_args`` given
by the caller override the defaults and mean the same in every backbone (``staged.py``):
``norm`` (``"bn"``, ``"frozen_bn"``, ``"gn"``, a ``num_features -> module`` callable; ``None`` for VGG
only), ``norm_eps``, ``norm_momentum``, ``norm_eval``, ``frozen_stages``, ``out_indices``; besides those,
each class takes its own architecture arguments (``depth``, ``widen``, ``width_mult``, ...).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.csp_darknet import SIZES, CSPDarknet
from odkit.models.backbones.darknet import Darknet53, DarknetTiny
from odkit.models.backbones.darknet19 import Darknet19
from odkit.models.backbones.efficientnet import EfficientNet
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
    **{f"cspdarknet-{s}": (CSPDarknet, {"depth": d, "width": w, "depthwise": dw}) for s, (d, w, dw) in SIZES.items()},
    "darknet53": (Darknet53, {"out_indices": (2, 3, 4)}),
    # YOLOv3-tiny's trunk; stage3 (128 channels) is the stride-8 map YOLOv3-tiny itself does not use
    "darknet-tiny": (DarknetTiny, {"out_indices": (2, 3, 4)}),
    "darknet19": (Darknet19, {"out_indices": (2, 3, 4)}),  # YOLOv2's trunk
    **{f"efficientnet-{v}": (EfficientNet, {"variant": v}) for v in ("b0", "b1", "b2")},
}

# backbone arguments that were renamed: old -> new
RENAMED = {"norm_layer": "norm", "batch_norm": "norm", "out_features": "out_indices"}


def backbone_names() -> list[str]:
    """Names accepted by :func:`make_backbone`."""
    return sorted(BACKBONES)


def construct(cls: Callable[..., nn.Module], label: str, /, *args: Any, **kwargs: Any) -> nn.Module:
    """``cls(*args, **kwargs)`` with a ``ConfigError`` naming ``label`` for an argument ``cls`` does not
    take (the new name of a renamed one: ``norm_layer`` / ``batch_norm`` -> ``norm``, ``out_features`` ->
    ``out_indices``)."""
    for old, new in RENAMED.items():
        if old in kwargs:
            hint = " (norm='bn' | 'frozen_bn' | 'gn' | None for VGG | a callable)" if new == "norm" else ""
            raise ConfigError(f"backbone {label!r}: argument {old!r} is now {new!r}{hint}")
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(k for k in kwargs if k not in params)
        if unknown:
            raise ConfigError(f"backbone {label!r} ({getattr(cls, '__name__', cls)}) takes no argument "
                              f"{', '.join(map(repr, unknown))}; it takes {', '.join(params)}")
    try:
        return cls(*args, **kwargs)
    except TypeError as e:
        raise ConfigError(f"bad backbone_args for backbone {label!r}: {e}") from e


def make_backbone(name: str, **args: Any) -> nn.Module:
    """The backbone ``name`` (see ``BACKBONES``) built with its defaults updated by ``args``."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; expected one of {', '.join(backbone_names())}")
    cls, defaults = BACKBONES[name]
    return construct(cls, name, **{**defaults, **args})
