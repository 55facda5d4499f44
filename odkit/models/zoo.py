"""Named models: ``build("yolox-nano", num_classes=3)``, ``available()``, ``from_config(cfg)``, ``recipe(name)``.

Every entry of ``MODELS`` is a :class:`~odkit.models.spec.ModelSpec`: a plain builder function plus the model's defaults
(input size, prediction settings, training recipe). Every built model gets a JSON-serialisable
``model.config`` (name, num_classes, class_names, img_size and any overrides) that ``from_config``
turns back into the same architecture. Detector families live in ``odkit/models/families/`` (one
file each); adding one is a builder there plus its entries here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from odkit.errors import ConfigError
from odkit.models.detector import Detector
from odkit.models.families import centernet, dense, efficientdet, rcnn, ssd, yolov1, yolov2, yolov3, yolox
from odkit.models.spec import ModelSpec

# Overrides every model accepts (handled here, not by the builders): in-model input format and
# prediction defaults.
INPUT_KEYS = ("pixel_mean", "pixel_std", "input_bgr")
POSTPROCESS_KEYS = ("conf", "iou", "max_det", "pre_topk")


def _with(builder: Callable[..., Detector], **defaults: Any) -> Callable[..., Detector]:
    def build_preset(num_classes: int = 80, **kw: Any) -> Detector:
        return builder(num_classes, **{**defaults, **kw})

    build_preset.__doc__ = f"{builder.__name__} with {defaults}"
    return build_preset


def _yolox(depth: float, width: float, depthwise: bool, img: int) -> ModelSpec:
    return ModelSpec(
        _with(yolox.build_yolox, depth=depth, width=width, depthwise=depthwise),
        img,
        yolox.POSTPROCESS,
        yolox.RECIPE,
        "yolox",
    )


MODELS: dict[str, ModelSpec] = {
    "yolox-nano": _yolox(0.33, 0.25, True, 416),
    "yolox-tiny": _yolox(0.33, 0.375, False, 416),
    "yolox-s": _yolox(0.33, 0.50, False, 640),
    "yolox-m": _yolox(0.67, 0.75, False, 640),
    "yolox-l": _yolox(1.0, 1.0, False, 640),
    "yolox-x": _yolox(1.33, 1.25, False, 640),
}
MODELS.update(dense.models())
MODELS.update(yolov3.models())
MODELS.update(yolov2.models())
MODELS.update(yolov1.models())
MODELS.update(rcnn.models())
MODELS.update(ssd.models())
MODELS.update(efficientdet.models())
MODELS.update(centernet.models())

# The implementation each model follows (its architecture, prediction defaults and recipe).
REFERENCES = {
    **{f"yolox-{s}": "official YOLOX (Megvii)" for s in ("nano", "tiny", "s", "m", "l", "x")},
    "retinanet-r50-fpn": "torchvision", "fcos-r50-fpn": "torchvision",
    "atss-r50-fpn": "MMDetection", "gfl-r50-fpn": "MMDetection",
    "yolov3": "darknet, MMDetection", "yolov3-tiny": "darknet",
    "yolov2": "darknet yolov2.cfg", "yolov2-tiny": "darknet yolov2-tiny.cfg", "yolov1": "Redmon et al. 2016",
    "ssd300-vgg16": "torchvision", "ssdlite320-mobilenetv3": "torchvision",
    "fasterrcnn-r50-fpn": "torchvision", "fasterrcnn-mobilenetv3-fpn": "torchvision", "maskrcnn-r50-fpn": "torchvision",
    "doublehead-r50-fpn": "Wu et al. 2020, MMDetection",
    **{f"efficientdet-{c}": "effdet (tf_efficientdet)" for c in ("d0", "d1", "d2")},
    "centernet-r18": "MMDetection (CenterNet ResNet-18, no DCN)",
}
MODELS = {name: replace(s, reference=REFERENCES.get(name, s.reference)) for name, s in MODELS.items()}


def available() -> list[str]:
    """Names accepted by :func:`build`."""
    return sorted(MODELS)


def spec(name: str) -> ModelSpec:
    """The zoo entry of ``name`` (``ConfigError`` for an unknown name)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(available())}")
    return MODELS[name]


def input_size(config: Mapping[str, Any]) -> int:
    """The default square input side in pixels of a model config (``model.config``, or a weights
    sidecar's ``model_config``): its ``img_size`` (an int, or ``[h, w]``: the longer side), else the
    zoo entry's. The one place the default input size is read."""
    size = config.get("img_size")
    if size is None:
        if not config.get("name"):
            raise ConfigError("the model config has neither an img_size nor a zoo model name: give the input size")
        return int(spec(str(config["name"])).img_size)
    return int(size) if isinstance(size, (int, float)) else max(int(v) for v in size)


def label_names(config: Mapping[str, Any]) -> list[str]:
    """The names of a model config's labels: its ``class_names``, else ``"0"``, ``"1"``, ... for its
    ``num_classes`` object classes plus, with ``background_slot``, label 0 the background (labels
    index these names; see :mod:`odkit.models.heads.protocol`). The one place the label count is read."""
    names = config.get("class_names")
    if names:
        return [str(n) for n in names]
    n = int(config["num_classes"]) + int(bool(config.get("background_slot")))
    return [str(i) for i in range(n)]


def recipe(name: str) -> dict[str, Any]:
    """Training defaults of model ``name`` as ``TrainConfig`` field values (``img_size`` included)."""
    s = spec(name)
    return {"img_size": s.img_size, **dict(s.recipe)}


def build(
    name: str,
    num_classes: int = 80,
    class_names: Sequence[str] | None = None,
    img_size: int | Sequence[int] | None = None,
    **overrides: Any,
) -> Detector:
    """Build the named model with ``num_classes`` classes.

    ``num_classes`` counts object classes. ``class_names`` (optional; one per label: ``num_classes``
    names, one more with the ``background_slot`` override, whose label 0 is the background) and ``img_size`` (training/inference size, int or
    ``[h, w]``; default per model) are stored in ``model.config``. ``overrides`` go to the builder
    (e.g. ``depth``, ``width`` for YOLOX; ``assigner`` for dense heads), except the input format
    (``pixel_mean``, ``pixel_std`` in [0, 1] units, ``input_bgr``) and prediction defaults
    (``conf``, ``iou``, ``max_det``, ``pre_topk``; ``conf_thr`` / ``iou_thr`` are their deprecated
    names) and the resize mode (``resize``:
    ``"letterbox"`` or ``"stretch"``), which every model accepts. All are stored.
    """
    from odkit.arguments import renamed_keywords

    s = spec(name)
    overrides = renamed_keywords(overrides, f"build({name!r})")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        labels = num_classes + int(bool(overrides.get("background_slot")))
        if len(class_names) != labels:
            slot = " plus the background slot" if labels > num_classes else ""
            raise ConfigError(f"class_names has {len(class_names)} names but the model has {labels} labels "
                              f"({num_classes} classes{slot})")
    if img_size is None:
        img_size = s.img_size
    if not isinstance(img_size, int):
        img_size = [int(v) for v in img_size]
        if len(img_size) != 2:
            raise ConfigError(f"img_size must be an int or [h, w], got {img_size}")
    resize = str(overrides.get("resize", s.resize))
    if resize not in ("letterbox", "stretch"):
        raise ConfigError(f"resize must be 'letterbox' or 'stretch', got {resize!r}")
    arch = {k: v for k, v in overrides.items() if k not in INPUT_KEYS + POSTPROCESS_KEYS + ("resize",)}
    try:
        model = s.builder(num_classes, **arch)
    except TypeError as e:
        raise ConfigError(f"bad override for model {name!r}: {e}") from e
    if any(k in overrides for k in INPUT_KEYS):
        model.set_input_format(
            overrides.get("pixel_mean", model.pixel_mean.view(-1).tolist()),
            overrides.get("pixel_std", model.pixel_std.view(-1).tolist()),
            overrides.get("input_bgr", model.input_bgr),
        )
    model.postprocess_defaults.update(s.postprocess)
    model.postprocess_defaults.update({k: overrides[k] for k in POSTPROCESS_KEYS if k in overrides})
    model.config = {
        "name": name,
        "num_classes": num_classes,
        "class_names": class_names,
        "img_size": img_size,
        **({"resize": resize} if resize != "letterbox" else {}),
        **overrides,
    }
    return model


def from_config(config: Mapping[str, Any]) -> Detector:
    """Rebuild a model from its ``model.config`` dict (e.g. read from a JSON sidecar)."""
    from odkit.arguments import renamed_keywords

    # a config written by an earlier odkit version may spell the prediction settings conf_thr / iou_thr
    cfg = renamed_keywords(dict(config), "model config", warn=False)
    if "name" not in cfg:
        raise ConfigError(f"model config has no 'name': {cfg}")
    return build(cfg.pop("name"), **cfg)
