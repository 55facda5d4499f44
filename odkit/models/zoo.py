"""Named model builders: ``build("yolox-nano", num_classes=3)``, ``available()``, ``from_config(cfg)``.

Builders are plain functions in the ``BUILDERS`` dict. Every model gets a JSON-serialisable
``model.config`` (name, num_classes, class_names, img_size and any overrides) that
``from_config`` turns back into the same architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from odkit.errors import ConfigError
from odkit.models.backbones import CSPDarknet
from odkit.models.detector import Detector
from odkit.models.heads import YOLOXHead
from odkit.models.necks import PAFPN


def yolox(
    num_classes: int = 80,
    depth: float = 1.0,
    width: float = 1.0,
    depthwise: bool = False,
    act: str = "silu",
    prior_prob: float = 0.01,
    iou_loss: str = "iou",
) -> Detector:
    """A YOLOX detector: CSPDarknet + PAFPN + decoupled head at strides 8, 16, 32."""
    backbone = CSPDarknet(depth, width, depthwise=depthwise, act=act)
    neck = PAFPN(backbone.out_channels, depth, depthwise=depthwise, act=act)
    head = YOLOXHead(
        num_classes,
        neck.out_channels,
        feat_channels=int(256 * width),
        strides=backbone.strides,
        depthwise=depthwise,
        act=act,
        prior_prob=prior_prob,
        iou_loss_mode=iou_loss,
    )
    return Detector(backbone, neck, head)


def _preset(depth: float, width: float, depthwise: bool, img_size: int) -> Callable[..., Detector]:
    def builder(num_classes: int = 80, **kw: Any) -> Detector:
        kw.setdefault("depth", depth)
        kw.setdefault("width", width)
        kw.setdefault("depthwise", depthwise)
        return yolox(num_classes, **kw)

    builder.default_img_size = img_size  # type: ignore[attr-defined]
    return builder


BUILDERS: dict[str, Callable[..., Detector]] = {
    "yolox-nano": _preset(0.33, 0.25, True, 416),
    "yolox-tiny": _preset(0.33, 0.375, False, 416),
    "yolox-s": _preset(0.33, 0.50, False, 640),
    "yolox-m": _preset(0.67, 0.75, False, 640),
    "yolox-l": _preset(1.0, 1.0, False, 640),
    "yolox-x": _preset(1.33, 1.25, False, 640),
}


def available() -> list[str]:
    """Names accepted by :func:`build`."""
    return sorted(BUILDERS)


def build(
    name: str,
    num_classes: int = 80,
    class_names: Sequence[str] | None = None,
    img_size: int | Sequence[int] | None = None,
    **overrides: Any,
) -> Detector:
    """Build the named model with ``num_classes`` classes.

    ``class_names`` (optional, length ``num_classes``) and ``img_size`` (training/inference size, int or
    ``[h, w]``; default per model: 416 for nano/tiny, 640 otherwise) are stored in ``model.config``.
    ``overrides`` go to the builder (``depth``, ``width``, ``depthwise``, ``act``, ``prior_prob``,
    ``iou_loss``) and are stored too.
    """
    if name not in BUILDERS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(available())}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            raise ConfigError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
    builder = BUILDERS[name]
    if img_size is None:
        img_size = getattr(builder, "default_img_size", 640)
    if not isinstance(img_size, int):
        img_size = [int(v) for v in img_size]
        if len(img_size) != 2:
            raise ConfigError(f"img_size must be an int or [h, w], got {img_size}")
    try:
        model = builder(num_classes, **overrides)
    except TypeError as e:
        raise ConfigError(f"bad override for model {name!r}: {e}") from e
    model.config = {
        "name": name,
        "num_classes": num_classes,
        "class_names": class_names,
        "img_size": img_size,
        **overrides,
    }
    return model


def from_config(config: Mapping[str, Any]) -> Detector:
    """Rebuild a model from its ``model.config`` dict (e.g. read from a JSON sidecar)."""
    cfg = dict(config)
    if "name" not in cfg:
        raise ConfigError(f"model config has no 'name': {cfg}")
    return build(cfg.pop("name"), **cfg)
