"""Predictors for exported models: onnxruntime for ``.onnx``, OpenVINO for ``.xml``.

They mirror :class:`odkit.engine.predictor.Predictor`: the same input forms (paths, numpy HWC RGB,
tensors), the same letterbox or plain resize (:func:`odkit.data.transforms.fit_to_input`, the
model's ``resize`` mode from the sidecar's model config) and the same post-processing
(:func:`odkit.models.postprocess.postprocess`, or the in-graph NMS followed by
:func:`odkit.models.postprocess.undo_letterbox`), so they return the same prediction dicts
``{"boxes" [K,4] float32 xyxy original pixels, "scores" [K], "labels" [K] int64}`` (a mask graph adds
``"masks"`` ``[K, 1, H, W]``: its per-detection ``28 x 28`` probabilities pasted into the original
image, as ``Detector.predict`` does).

A graph exported with in-graph NMS has its thresholds fixed: a stricter ``conf``, a smaller
``max_det`` are applied exactly on its output; a looser ``conf``, a larger ``max_det`` or another
``iou`` cannot be, and the exported values are used (with a warning).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odkit.errors import ConfigError, OdkitError
from odkit.export.onnx import require, sidecar_path

log = logging.getLogger(__name__)

__all__ = ["ExportedPredictor", "OnnxRuntimeBackend", "OpenVINOBackend", "load_predictor", "read_sidecar"]


def current_layout(info: dict[str, Any], where: str) -> dict[str, Any]:
    """An export sidecar in the current layout: the architecture in ``model_config`` only, the
    prediction settings spelled ``conf`` / ``iou``. Sidecars of earlier odkit versions (``model``,
    ``num_classes``, ``class_names`` and the exported ``img_size`` at the top level; ``conf_thr`` /
    ``iou_thr``) are read the same."""
    from odkit.arguments import renamed_keywords
    from odkit.weights.format import canonical_meta

    out = renamed_keywords(canonical_meta(info, where, top_level_wins=True, strict=False), where, warn=False)
    if out.get("postprocess"):
        out["postprocess"] = renamed_keywords(dict(out["postprocess"]), where, warn=False)
    for key in ("img_size", "num_classes"):
        if out["model_config"].get(key) is None:
            raise OdkitError(f"{where}: lacks model_config.{key}")
    if "nms" not in out:
        raise OdkitError(f"{where}: lacks 'nms'")
    return out


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar (``<file>.json``) of an exported model, in the current layout
    (:func:`current_layout`)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise OdkitError(
            f"{path}: its sidecar {side.name} is missing (it records image size, classes and NMS settings; "
            f"re-export with `odkit export`)"
        )
    try:
        info = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise OdkitError(f"{side}: not valid JSON: {e}") from e
    return current_layout(info, str(side))


class OnnxRuntimeBackend:
    """``run(images [B,3,H,W] float32) -> list of output arrays`` with onnxruntime on CPU."""

    def __init__(self, path: str | Path, threads: int | None = None):
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise OdkitError(f"onnxruntime cannot load {path}: {e}") from e
        self.input_name = self.session.get_inputs()[0].name

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: images})


class OpenVINOBackend:
    """``run(images [B,3,H,W] float32) -> list of output arrays`` with OpenVINO on CPU (float32 precision
    unless the model was exported with ``half``)."""

    def __init__(self, path: str | Path, threads: int | None = None, half: bool = False):
        ov = require("openvino")
        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if not half:
            config["INFERENCE_PRECISION_HINT"] = "f32"  # no silent bf16 on CPUs that have it
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(str(path), "CPU", config)
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
            raise OdkitError(f"OpenVINO cannot load {path}: {e}") from e
        self.request = self.compiled.create_infer_request()
        self.outputs = list(self.compiled.outputs)

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        res = self.request.infer({0: images})
        return [np.asarray(res[o]) for o in self.outputs]


def _inputs(images: Any) -> list[tuple[np.ndarray, str]]:
    """``(uint8 [H, W, 3] RGB, path or "")`` per image; the input forms of the PyTorch ``Predictor``."""
    from odkit.engine.predictor import prepare_inputs

    return prepare_inputs(images)


class ExportedPredictor:
    """Inference with an exported model; the interface of :class:`odkit.engine.predictor.Predictor`.

    ``backend`` is an :class:`OnnxRuntimeBackend` / :class:`OpenVINOBackend` (anything with
    ``run(images) -> outputs``) and ``info`` the export sidecar.
    """

    def __init__(self, backend: Any, info: dict[str, Any], path: str | Path = ""):
        from odkit.models.zoo import input_size, label_names

        info = current_layout(info, str(path or "export sidecar"))
        self.backend = backend
        self.info = info
        self.meta = info
        self.path = str(path)
        self.config: dict[str, Any] = dict(info["model_config"])
        self.img_size = input_size(self.config)
        self.nms = bool(info["nms"])
        self.dynamic = bool(info.get("dynamic_batch", False))
        self.class_names: list[str] = label_names(self.config)
        self._warned = False

    def _check_thresholds(self, conf: float, iou: float, max_det: int) -> None:
        i = self.info
        problems = []
        if conf < i["conf"]:
            problems.append(f"conf {conf} < exported {i['conf']}")
        if abs(iou - i["iou"]) > 1e-12:
            problems.append(f"iou {iou} != exported {i['iou']}")
        if max_det > i["max_det"]:
            problems.append(f"max_det {max_det} > exported {i['max_det']}")
        if problems and not self._warned:
            log.warning(
                "%s has NMS in the graph with fixed thresholds; %s: using the exported values "
                "(re-export with other --conf/--iou/--max-det, or without --nms)",
                self.path or "model",
                "; ".join(problems),
            )
            self._warned = True

    @torch.no_grad()
    def predict(
        self,
        images: Any,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        img_size: int | None = None,
        batch: int = 8,
        *,
        conf_thr: float | None = None,
        iou_thr: float | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image (in original image pixels). ``conf_thr``/``iou_thr`` are deprecated
        names of ``conf``/``iou``; unset settings take the graph's own (with in-graph NMS) or the model's
        prediction defaults recorded in the sidecar. ``img_size``, when given, must be the exported
        size."""
        from odkit.models.postprocess import POSTPROCESS_DEFAULTS

        if self.nms:
            defaults = {k: self.info[k] for k in ("conf", "iou", "max_det")}
        else:
            defaults = {**POSTPROCESS_DEFAULTS, **(self.info.get("postprocess") or {})}
        if conf_thr is not None or iou_thr is not None:
            from odkit.export.onnx import deprecated_settings

            conf, iou = deprecated_settings(conf, iou, {k: v for k, v in (("conf_thr", conf_thr), ("iou_thr", iou_thr))
                                                        if v is not None}, "ExportedPredictor.predict")
        conf = float(defaults["conf"] if conf is None else conf)
        iou = float(defaults["iou"] if iou is None else iou)
        max_det = int(defaults["max_det"] if max_det is None else max_det)
        if img_size is not None and int(img_size) != self.img_size:
            raise ConfigError(
                f"{self.path}: exported for img size {self.img_size}, got img_size={img_size} (re-export with --img)"
            )
        if self.nms:
            self._check_thresholds(conf, iou, max_det)
        items = _inputs(images)
        results: list[dict[str, torch.Tensor]] = []
        step = max(int(batch), 1)
        for s in range(0, len(items), step):
            fitted = [self.fit(img, self.img_size, s + k, path) for k, (img, path) in enumerate(items[s : s + step])]
            results += self._predict_fitted(np.stack([f[0] for f in fitted]), [f[1] for f in fitted], conf, iou,
                                            max_det, defaults)
        return results

    def input_side(self, img_size: int | None = None) -> int:
        """The network input side: the exported one (another ``img_size`` is a ``ConfigError``)."""
        if img_size is not None and int(img_size) != self.img_size:
            raise ConfigError(
                f"{self.path}: exported for img size {self.img_size}, got img_size={img_size} (re-export with --img)"
            )
        return self.img_size

    def fit(self, image: np.ndarray, size: int, index: int = 0, path: str = "") -> tuple[np.ndarray, dict[str, Any]]:
        """``(uint8 [S, S, 3] network input, meta)`` of an RGB image, as the PyTorch ``Predictor.fit``."""
        from odkit.engine.predictor import fit_image
        from odkit.models.postprocess import resize_mode

        return fit_image(image, size, resize_mode(self.config), index, path)

    def predict_prepared(self, inputs: np.ndarray, metas: list[dict[str, Any]], conf: float | None = None,
                         iou: float | None = None, max_det: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Detections of fitted inputs ``uint8 [B, S, S, 3]`` (from :meth:`fit`) with their metas."""
        from odkit.models.postprocess import POSTPROCESS_DEFAULTS

        if self.nms:
            defaults = {k: self.info[k] for k in ("conf", "iou", "max_det")}
        else:
            defaults = {**POSTPROCESS_DEFAULTS, **(self.info.get("postprocess") or {})}
        conf = float(defaults["conf"] if conf is None else conf)
        iou = float(defaults["iou"] if iou is None else iou)
        max_det = int(defaults["max_det"] if max_det is None else max_det)
        if self.nms:
            self._check_thresholds(conf, iou, max_det)
        return self._predict_fitted(inputs, metas, conf, iou, max_det, defaults)

    def _predict_fitted(self, inputs: np.ndarray, metas: list[dict[str, Any]], conf: float, iou: float,
                        max_det: int, defaults: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        from odkit.models.postprocess import postprocess, undo_letterbox
        from odkit.ops.roi_masks import paste_masks_in_image

        step = len(inputs) if self.dynamic else 1
        results: list[dict[str, torch.Tensor]] = []
        for s in range(0, len(inputs), max(step, 1)):
            part = metas[s : s + step]
            # uint8 NHWC -> contiguous float32 NCHW in [0, 1], one pass in numpy (single-threaded: torch's
            # thread pool would wake beside the runtime's own threads and both would wait on each other)
            x = np.empty((len(part), 3, *inputs.shape[1:3]), np.float32)
            np.divide(inputs[s : s + step].transpose(0, 3, 1, 2), np.float32(255.0), out=x, dtype=np.float32)
            outs = self.backend.run(x)
            if not self.nms:
                boxes, scores = torch.from_numpy(outs[0]), torch.from_numpy(outs[1])
                pre_topk = int(defaults.get("pre_topk") or 0) or 1000
                results.extend(postprocess(boxes, scores, part, conf, iou, max_det, pre_topk=pre_topk))
                continue
            metas_b = part
            dets, num = outs[0], outs[1]
            for b, meta in enumerate(metas_b):
                d = torch.from_numpy(np.ascontiguousarray(dets[b, : int(num[b])], dtype=np.float32))
                keep = torch.arange(len(d))
                if conf > self.info["conf"]:
                    keep = keep[d[:, 4] > conf]
                keep = keep[:max_det]
                d = d[keep]
                res = {
                    "boxes": undo_letterbox(d[:, :4], meta).float(),
                    "scores": d[:, 4].clone(),
                    "labels": d[:, 5].round().long(),
                }
                if len(outs) > 2:  # per-detection mask probabilities [K, M, M], pasted into the image
                    m = torch.from_numpy(np.ascontiguousarray(outs[2][b, : int(num[b])], dtype=np.float32))[keep]
                    res["masks"] = paste_masks_in_image(m[:, None], res["boxes"], tuple(meta["orig_size"]))
                results.append(res)
        return results

    __call__ = predict

    @property
    def name(self) -> str:
        """The model's zoo name (``"the model"`` when the sidecar has none)."""
        return str(self.config.get("name") or "the model")

    def run(self, images: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        """Raw graph outputs for already letterboxed ``images [B,3,H,W]`` float32 in [0, 1]."""
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().float().numpy()
        return self.backend.run(np.ascontiguousarray(images, dtype=np.float32))

    def __repr__(self) -> str:
        kind = type(self.backend).__name__.replace("Backend", "")
        return (
            f"ExportedPredictor({self.path}, {kind}, {len(self.class_names)} classes, img {self.img_size}, "
            f"nms {'in graph' if self.nms else 'outside'})"
        )


def load_predictor(path: str | Path, threads: int | None = None) -> ExportedPredictor:
    """Predictor for an exported model: ``.onnx`` (onnxruntime) or ``.xml`` (OpenVINO IR), with its
    JSON sidecar. ``threads``: intra-op threads (default: the runtime's choice)."""
    p = Path(path)
    if p.suffix not in (".onnx", ".xml"):
        raise ConfigError(f"{p}: an exported model must be .onnx (onnxruntime) or .xml (OpenVINO)")
    if not p.is_file():
        raise OdkitError(f"{p}: file does not exist")
    info = read_sidecar(p)
    if p.suffix == ".onnx":
        backend: Any = OnnxRuntimeBackend(p, threads)
    else:
        backend = OpenVINOBackend(p, threads, half=bool(info.get("half")))
    return ExportedPredictor(backend, info, p)
