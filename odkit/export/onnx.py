"""Export a detector to ONNX: normalisation, box decoding and (optionally) class-wise NMS in the graph.

Graph input ``images``: float32 ``[B, 3, H, W]`` RGB in [0, 1], letterboxed to ``H = W = img_size``
(B is 1, or dynamic with ``dynamic=True``; H and W are fixed). Outputs, in network-input pixels:

- without NMS: ``boxes [B, N, 4]`` xyxy and ``scores [B, N, C]`` (objectness x class probability);
- with NMS: ``dets [B, max_det, 6]`` rows ``(x1, y1, x2, y2, score, class)`` and ``num_dets [B]`` int64
  (see :class:`odkit.export.nms.ExportNMS`);
- models with masks (Mask R-CNN) always have NMS in the graph and a third output ``masks
  [B, max_det, M, M]``: each detection's mask probabilities in its box (28 x 28); the runtime
  predictor pastes them into the image (:func:`odkit.ops.roi_masks.paste_masks_in_image`).

With ``half=True`` the network runs in float16 (weights and compute) while the graph input and
outputs stay float32: box decoding and NMS run in float32. On CPU onnxruntime float16 is often
slower than float32 (few fp16 CPU kernels; casts are inserted): use it for GPU runtimes.

A JSON sidecar ``<file>.json`` (e.g. ``best.onnx.json``) records what a predictor needs: the
architecture once, in ``model_config`` (name, num_classes, class_names; ``img_size`` the exported
size), the graph (input, outputs, dynamic batch, NMS, half, opset) and the prediction settings
(``postprocess``, and the in-graph ones of an NMS graph). Sidecars of earlier odkit versions (the
architecture also at the top level) are read by :func:`odkit.export.runtime.read_sidecar`.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from odkit.errors import ConfigError, OdkitError
from odkit.export.nms import ExportNMS
from odkit.weights.format import FORMAT_VERSION

log = logging.getLogger(__name__)

__all__ = ["ExportModule", "check_img_size", "deprecated_settings", "export_onnx", "require", "sidecar_path", "write_sidecar"]

INPUT_NAME = "images"
MIN_OPSET, MAX_OPSET = 11, 20  # TopK with k input / Loop need 11; 20 is the newest the exporter writes
EXTRA_HINT = "pip install 'odkit[export]'"
EXPORT_PRE_TOPK = 1000  # in-graph NMS candidates per image for models whose own limit is "all" (0)


def require(module: str) -> Any:
    """Import an optional export dependency, or raise ``OdkitError`` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise OdkitError(
            f"{module} is not installed; ONNX / OpenVINO export and inference need the export extra: {EXTRA_HINT}"
        ) from e


def sidecar_path(path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` (``model.xml`` -> ``model.xml.json``)."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def write_sidecar(path: str | Path, info: Mapping[str, Any]) -> Path:
    """Write the JSON sidecar of the exported file ``path``; returns the sidecar path."""
    side = sidecar_path(path)
    side.write_text(json.dumps(dict(info), indent=2) + "\n")
    return side


def check_img_size(img_size: Any, stride: int = 32) -> int:
    """A positive int multiple of ``stride`` or ``ConfigError``."""
    try:
        s = int(img_size)
    except (TypeError, ValueError):
        raise ConfigError(f"--img must be an integer number of pixels, got {img_size!r}") from None
    if s != img_size or s <= 0 or s % stride:
        raise ConfigError(f"--img must be a positive multiple of {stride} pixels, got {img_size}")
    return s


def prediction_settings(model: nn.Module, conf: float | None, iou: float | None, max_det: int | None,
                        pre_topk: int | None) -> tuple[float, float, int, int]:
    """The given settings, those left ``None`` taken from ``model.postprocess_defaults``."""
    from odkit.models.postprocess import POSTPROCESS_DEFAULTS

    d = {**POSTPROCESS_DEFAULTS, **(getattr(model, "postprocess_defaults", None) or {})}
    topk = int(d["pre_topk"] if pre_topk is None else pre_topk)
    if topk <= 0:  # "no pre-NMS limit" (two-stage models): a fixed-shape graph needs a bound
        topk = EXPORT_PRE_TOPK
        log.info("in-graph NMS: the model has no pre-NMS candidate limit; the graph keeps the %d best (box, class) "
                 "candidates per image (--pre-topk)", topk)
    return (float(d["conf"] if conf is None else conf), float(d["iou"] if iou is None else iou),
            int(d["max_det"] if max_det is None else max_det), topk)


def deprecated_settings(conf: float | None, iou: float | None, renamed: dict[str, Any],
                        where: str) -> tuple[float | None, float | None]:
    """``conf`` / ``iou`` given under their deprecated names ``conf_thr`` / ``iou_thr`` (a
    DeprecationWarning); any other unknown keyword is a ``TypeError``."""
    from odkit.arguments import RENAMED_SETTINGS, renamed_keywords

    unknown = sorted(set(renamed) - set(RENAMED_SETTINGS))
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword arguments {', '.join(unknown)}")
    if not renamed:
        return conf, iou
    kw = renamed_keywords({"conf": conf, "iou": iou, **renamed}, where)
    return kw["conf"], kw["iou"]


class ExportModule(nn.Module):
    """What is exported: ``images [B,3,H,W] float32 in [0,1]`` -> decoded outputs (+ NMS).

    The detector normalises internally; with ``half`` the network runs in float16 and the head
    decodes its raw outputs in float32 (the ``DetectorHead`` contract of ``predict_raw``).
    """

    def __init__(self, model: nn.Module, nms: ExportNMS | None = None, half: bool = False, masks: bool = False):
        super().__init__()
        if masks and nms is None:
            raise ConfigError("a mask graph needs in-graph NMS (the masks are per detection)")
        self.model = model
        self.nms = nms
        self.half = half
        self.masks = masks

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = images.to(torch.float16) if self.half else images
        if self.masks:  # the detections' masks [B, max_det, M, M] from the same features
            feats = self.model.features(x)
            boxes, scores = self.model.head.predict_raw(feats, tuple(x.shape[-2:]))
            dets, num = self.nms(boxes.float(), scores.float())
            masks = self.model.head.predict_masks_batched(feats, dets[..., :4], dets[..., 5].round().long())
            return dets, num, masks.float()
        boxes, scores = self.model.forward_export(x)
        boxes, scores = boxes.float(), scores.float()
        if self.nms is not None:
            return self.nms(boxes, scores)
        return boxes, scores


def export_onnx(
    model: nn.Module,
    path: str | Path,
    img_size: int | None = None,
    dynamic: bool = False,
    nms: bool = False,
    half: bool = False,
    conf: float | None = None,
    iou: float | None = None,
    max_det: int | None = None,
    pre_topk: int | None = None,
    opset: int = 17,
    meta: Mapping[str, Any] | None = None,
    **renamed: Any,
) -> Path:
    """Export ``model`` (an odkit ``Detector``) to the ONNX file ``path`` and write its JSON sidecar.

    ``img_size``: square input in pixels (multiple of the model stride; default: the model config's,
    :func:`odkit.models.zoo.input_size`). ``dynamic``: batch dimension
    dynamic (else 1). ``nms``: include class-wise NMS with ``conf``/``iou``/``max_det``/``pre_topk``
    fixed in the graph (settings left ``None``: the model's ``postprocess_defaults``, the values
    ``Detector.predict`` uses). ``half``: float16 network. ``meta``: extra fields for the sidecar (class
    names, source weights, ...). The model itself is not modified. Returns ``path``.

    This does not check that the weights are trained: :func:`odkit.export.export` does.
    """
    from odkit.models.fuse import prepare_inference_model
    from odkit.models.zoo import input_size

    conf, iou = deprecated_settings(conf, iou, renamed, "export_onnx")
    require("onnx")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ConfigError(f"--out {path}: an ONNX file name must end in .onnx")
    stride = int(getattr(model, "stride", 32))
    cfg = dict(getattr(model, "config", {}) or {})
    img_size = check_img_size(input_size(cfg) if img_size is None else img_size, stride)
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ConfigError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    masks = bool(getattr(model, "has_masks", False))
    if masks and not nms:
        log.info("%s predicts masks, one per detection: the graph includes NMS", cfg.get("name", "the model"))
        nms = True
    conf, iou, max_det, pre_topk = prediction_settings(model, conf, iou, max_det, pre_topk)
    nms_mod = ExportNMS(conf, iou, max_det, pre_topk) if nms else None
    # the prepared inference copy: BatchNorm folded into the convolutions, deploy-form blocks
    net = prepare_inference_model(model, channels_last=False, device="cpu")
    net = net.half() if half else net.float()
    if half and getattr(net.head, "float32_in_half", False):
        net.head.float()  # the head asks to stay float32 (e.g. two-stage proposal selection)
    wrapper = ExportModule(net, nms_mod, half, masks).eval()
    batch = 2 if dynamic else 1
    dummy = torch.rand(batch, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    outputs = (["dets", "num_dets"] + (["masks"] if masks else [])) if nms else ["boxes", "scores"]
    dyn = {n: {0: "batch"} for n in [INPUT_NAME, *outputs]} if dynamic else None
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        log.info("overwriting %s", path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / legacy-exporter chatter
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=int(opset),
            input_names=[INPUT_NAME],
            output_names=outputs,
            dynamic_axes=dyn,
            do_constant_folding=True,
        )
    onnx = require("onnx")
    try:
        onnx.checker.check_model(str(path))
    except Exception as e:  # noqa: BLE001 - report any checker failure as a user-facing error
        raise OdkitError(f"exported ONNX file {path} fails the ONNX checker: {e}") from e
    # the architecture once, in model_config (name, classes, class names; img_size: the exported size)
    cfg = {**cfg, "num_classes": cfg.get("num_classes") or int(getattr(model, "num_classes", 0)),
           "img_size": img_size}
    info: dict[str, Any] = {
        "format": "onnx",
        "format_version": FORMAT_VERSION,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch" if dynamic else 1, 3, img_size, img_size],
            "dtype": "float32",
            "layout": "RGB in [0, 1], letterboxed (pad 114)",
        },
        "outputs": outputs,
        "dynamic_batch": bool(dynamic),
        "nms": bool(nms),
        "masks": masks,
        "half": bool(half),
        "opset": int(opset),
        "model_config": cfg,
        "postprocess": dict(getattr(model, "postprocess_defaults", {}) or {}),
    }
    if nms:  # the settings fixed in the graph; without NMS the runtime applies "postprocess"
        info.update({"conf": conf, "iou": iou, "max_det": max_det, "pre_topk": pre_topk})
    info.update(dict(meta or {}))
    write_sidecar(path, info)
    log.debug(
        "exported %s (%s, img %d, nms %s, %s)", path, cfg.get("name"), img_size, nms, "fp16" if half else "fp32"
    )
    return path
