"""Inference with a trained model: inputs in any common form, resized to the input the way the model
was trained (letterbox, or a plain resize for SSD) inside, boxes returned in original image pixels."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from odkit.arguments import check_value, fit_input_size
from odkit.errors import ConfigError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(source: str | Path) -> list[Path]:
    """Image files of ``source``: the file itself, the images of a directory (sorted, not recursive),
    or the paths listed in a ``.txt`` file (one per line, relative to the list's folder; order kept)."""
    p = Path(source)
    if p.is_file() and p.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in p.read_text().splitlines()]
        files = [Path(ln) if Path(ln).is_absolute() else p.parent / ln for ln in lines if ln and not ln.startswith("#")]
        if not files:
            raise ConfigError(f"--source {p}: the list names no images")
        return files
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not files:
            raise ConfigError(f"--source {p}: directory has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return files
    if not p.exists():
        raise ConfigError(f"--source {p} does not exist")
    return [p]


def _to_rgb_uint8(x: Any, name: str) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB from a path, a numpy array (HWC RGB, uint8 or float in [0, 1]) or a
    tensor (CHW, float in [0, 1] or uint8)."""
    from odkit.data.imageio import read_image

    if isinstance(x, (str, Path)):
        return read_image(x)
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise ConfigError(f"{name}: a tensor image must be [3, H, W] (RGB), got {tuple(t.shape)}")
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        arr = t.permute(1, 2, 0).numpy()
    else:
        arr = np.asarray(x)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ConfigError(f"{name}: a numpy image must be [H, W, 3] RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ConfigError(f"{name}: image dtype must be uint8 or float in [0, 1], got {arr.dtype}")
        arr = np.clip(np.round(arr.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def prepare_inputs(images: Any) -> list[tuple[np.ndarray, str]]:
    """``(uint8 [H, W, 3] RGB, path or "")`` per image, from one image or a list of paths, numpy
    arrays or tensors, or a batch tensor ``[B, 3, H, W]`` (the input forms of ``predict``)."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return [(_to_rgb_uint8(t, f"image {i}"), "") for i, t in enumerate(images)]
    if isinstance(images, (str, Path, np.ndarray, torch.Tensor)):
        images = [images]
    out = []
    for i, x in enumerate(images):
        name = str(x) if isinstance(x, (str, Path)) else f"image {i}"
        out.append((_to_rgb_uint8(x, name), str(x) if isinstance(x, (str, Path)) else ""))
    return out


class Predictor:
    """A trained detector ready for inference (see :func:`odkit.load`).

    ``predict(images)`` accepts one image or a list: file paths, numpy ``[H, W, 3]`` RGB arrays
    (uint8, or float in [0, 1]), tensors ``[3, H, W]`` (float in [0, 1] or uint8) or a batch tensor
    ``[B, 3, H, W]``. Returns one dict per image ``{"boxes" [K,4] float32 xyxy original pixels,
    "scores" [K], "labels" [K] int64}``.

    ``fuse_activations`` also fuses SiLU/ReLU into the oneDNN convolutions on CPU (off by default:
    it measured slower than separate activations for yolox-nano at batch 1, see
    ``benchmarks/latency.py``).
    """

    def __init__(self, model: nn.Module, meta: dict[str, Any] | None = None, device: str | torch.device = "cpu",
                 compile: bool = False, fuse: bool = True, fuse_activations: bool = False):
        from odkit.models.fuse import prepare_inference_model
        from odkit.models.zoo import input_size, label_names
        from odkit.weights.format import canonical_meta

        # the weights sidecar (training record); the architecture is ``config``: the model's, updated by
        # the sidecar's ``model_config``
        self.meta = canonical_meta(meta or {}, strict=False)
        self.config: dict[str, Any] = {**(getattr(model, "config", None) or {}), **self.meta["model_config"]}
        self.device = torch.device(device)
        # the prepared inference copy (BatchNorm folded, channels_last, eval mode for good); the
        # given model is left as it is
        self.model = prepare_inference_model(model, channels_last=True, fuse=fuse, device=self.device,
                                             fuse_activations=fuse_activations and fuse and not compile)
        self.compile = bool(compile)
        self.class_names: list[str] = label_names(self.config)
        self.img_size = input_size(self.config)
        self._u8: np.ndarray | None = None  # reused letterbox buffer [B, S, S, 3] uint8
        self._x: torch.Tensor | None = None  # reused network input [B, 3, S, S] float, channels_last
        self._lock = threading.Lock()
        self._compiled_sizes: set[tuple[int, int]] = set()
        if self.compile:
            from odkit.models.fuse import compile_network

            self.model = compile_network(self.model)

    def _buffers(self, n: int, size: int) -> tuple[np.ndarray, torch.Tensor]:
        """Letterbox (uint8 NHWC) and network-input (float NCHW channels_last) buffers for ``n``
        images of ``size``, reused between calls."""
        if self._u8 is None or self._u8.shape[0] < n or self._u8.shape[1] != size:
            self._u8 = np.empty((n, size, size, 3), np.uint8)
            self._x = torch.empty((n, 3, size, size), device=self.device).contiguous(
                memory_format=torch.channels_last)
        assert self._x is not None
        return self._u8[:n], self._x[:n]

    def _run(self, x: torch.Tensor, metas: list[dict[str, Any]], **kw: Any) -> list[dict[str, torch.Tensor]]:
        """The prepared model's ``predict``; a compiled model is checked on its first call per input
        shape and falls back to eager (with a warning) where compilation fails."""
        key = (x.shape[0], x.shape[-1])
        if getattr(self.model, "compiled", False) and key not in self._compiled_sizes:
            from odkit.models.fuse import compile_or_eager

            self.model = compile_or_eager(self.model, lambda m: m.predict(x, metas, **kw))
            self._compiled_sizes.add(key)
        return self.model.predict(x, metas, **kw)

    def _inputs(self, images: Any) -> list[tuple[np.ndarray, str]]:
        return prepare_inputs(images)

    @torch.no_grad()
    def predict(
        self,
        images: Any,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int | None = None,
        img_size: int | None = None,
        batch: int = 8,
    ) -> list[dict[str, torch.Tensor]]:
        """Detections per image (``conf``: score threshold, ``iou``: NMS IoU, ``max_det``: detections per
        image, each defaulting to the model's prediction settings (``model.postprocess_defaults``: the
        reference implementation's); ``img_size``: square network input in pixels, rounded to the
        nearest multiple of the model's size divisor with a warning; default: the training size).
        Values out of range (a size or batch below 1, thresholds outside [0, 1]) raise ``ConfigError``."""
        from odkit.data.transforms import fit_to_input
        from odkit.models.postprocess import resize_mode

        mode = resize_mode(self.model)
        divisor = int(getattr(self.model, "size_divisor", 32))
        size = fit_input_size(self.img_size if img_size is None else img_size, divisor, "img_size",
                              self.name)
        batch = int(check_value("batch", batch, "count"))
        for name, value, kind in (("conf", conf, "unit"), ("iou", iou, "unit"), ("max_det", max_det, "count")):
            if value is not None:
                check_value(name, value, kind)
        items = self._inputs(images)
        results: list[dict[str, torch.Tensor]] = []
        no_boxes = np.zeros((0, 4), np.float32)
        with self._lock, torch.no_grad():
            for s in range(0, len(items), batch):
                chunk = items[s : s + batch]
                u8, x = self._buffers(len(chunk), size)
                metas = []
                for k, (img, path) in enumerate(chunk):
                    out, _, meta = fit_to_input(img, no_boxes, {"image_id": s + k, "path": path}, size, mode)
                    u8[k] = out
                    metas.append(meta)
                # NHWC uint8 viewed as NCHW is channels_last: one conversion pass into the reused input
                x.copy_(torch.from_numpy(u8).permute(0, 3, 1, 2)).div_(255.0)
                preds = self._run(x, metas, conf=conf, iou=iou, max_det=max_det)
                results.extend({k: v.cpu() for k, v in p.items()} for p in preds)
        return results

    __call__ = predict

    backend = "torch"

    def input_side(self, img_size: int | None = None) -> int:
        """The square network input side for ``img_size`` (default: the training size), fitted to the
        model's size divisor."""
        return fit_input_size(self.img_size if img_size is None else img_size,
                              int(getattr(self.model, "size_divisor", 32)), "img_size", self.name)

    def fit(self, image: np.ndarray, size: int, index: int = 0, path: str = "") -> tuple[np.ndarray, dict[str, Any]]:
        """``(uint8 [S, S, 3] network input, meta)`` of an RGB image, resized as the model was trained
        (thread-safe: what a prefetching loop runs beside the network)."""
        return fit_image(image, size, resize_mode_of(self.config, self.model), index, path)

    @torch.no_grad()
    def predict_prepared(self, inputs: np.ndarray, metas: list[dict[str, Any]], conf: float | None = None,
                         iou: float | None = None, max_det: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Detections of fitted inputs ``uint8 [B, S, S, 3]`` (from :meth:`fit`) with their metas."""
        with self._lock:
            x = torch.empty((len(inputs), 3, *inputs.shape[1:3]), device=self.device).contiguous(
                memory_format=torch.channels_last)
            x.copy_(torch.from_numpy(np.ascontiguousarray(inputs)).permute(0, 3, 1, 2)).div_(255.0)
            preds = self._run(x, metas, conf=conf, iou=iou, max_det=max_det)
        return [{k: v.cpu() for k, v in p.items()} for p in preds]

    @property
    def name(self) -> str:
        """The model's zoo name (``"the model"`` when it has none)."""
        return str(self.config.get("name") or "the model")

    def __repr__(self) -> str:
        return (f"Predictor({self.name}, {len(self.class_names)} classes, img {self.img_size}, "
                f"device {self.device})")


def resize_mode_of(config: dict[str, Any], model: Any = None) -> str:
    """The resize mode (``letterbox`` / ``stretch``) of a model config."""
    from odkit.models.postprocess import resize_mode

    return resize_mode(model if model is not None else config)


def fit_image(image: np.ndarray, size: int, mode: str, index: int = 0, path: str = "") -> tuple[np.ndarray, dict[str, Any]]:
    """``(uint8 [S, S, 3], meta)``: an RGB image fitted to a ``size`` network input by ``mode``."""
    from odkit.data.transforms import fit_to_input

    out, _, meta = fit_to_input(image, np.zeros((0, 4), np.float32), {"image_id": index, "path": path}, size, mode)
    return out, meta


def build_from_meta(meta: dict[str, Any]) -> nn.Module:
    """The model architecture described by a weights sidecar (its ``model_config``; weights not loaded)."""
    from odkit.models import zoo
    from odkit.weights.format import canonical_meta

    return zoo.from_config(canonical_meta(meta)["model_config"])


def predictions_to_lists(preds: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, list]]:
    """JSON-friendly copy of prediction dicts."""
    return [{k: v.tolist() for k, v in p.items()} for p in preds]
