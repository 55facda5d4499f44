"""Prediction backends behind one predictor: PyTorch eager, or the model's exported graph in onnxruntime
or OpenVINO, built once and cached.

``load(weights, backend="auto")`` is what ``odkit.load``, ``odkit predict`` and ``odkit val`` use.
``auto`` runs the exported graph in onnxruntime (OpenVINO when only it is installed) on a CPU device
when the export extra is installed and the model exports, else PyTorch; the log says which runs and
why. The graph (fp32, dynamic batch, NMS outside, so every ``conf`` / ``iou`` / ``max_det`` works) is
written once per weights, input size and runtime into a cache folder (``.odkit-graphs/`` beside the
weights file, or ``~/.cache/odkit/graphs`` when that folder is not writable) and keyed by the SHA-256 of
the model's tensors, its config, the input size and the odkit / torch versions: a cached graph whose
recorded key differs is never used, it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odkit.errors import ConfigError, OdkitError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
GRAPH_SUFFIX = {"onnxruntime": ".onnx", "openvino": ".xml"}
CACHE_DIR = ".odkit-graphs"


def default_backend() -> str:
    """The backend used when none is given: ``$ODKIT_BACKEND`` if set, else ``"auto"``."""
    value = os.environ.get("ODKIT_BACKEND", "auto")
    if value not in BACKENDS:
        raise ConfigError(f"ODKIT_BACKEND={value!r}: expected one of {', '.join(BACKENDS)}")
    return value


def installed(runtime: str) -> bool:
    """Whether the Python package of ``runtime`` (``onnxruntime`` / ``openvino``) and onnx import."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnx", runtime))


def graph_key(model: torch.nn.Module, img_size: int, runtime: str) -> str:
    """SHA-256 (hex) of everything an exported graph depends on: every tensor of the model's state
    dict (name, dtype, shape, bytes), its config, the input size, the runtime and the versions."""
    import odkit

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    cfg = json.dumps(getattr(model, "config", {}) or {}, sort_keys=True, default=str)
    h.update(f"{cfg}|{img_size}|{runtime}|{odkit.__version__}|{torch.__version__}".encode())
    return h.hexdigest()


def cache_folder(weights: str | Path | None) -> Path:
    """Where graphs of ``weights`` are cached: beside the file when writable, else the user cache."""
    if weights is not None:
        d = Path(weights).resolve().parent / CACHE_DIR
        try:
            d.mkdir(exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            pass
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    d = base / "odkit" / "graphs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def cached_graph(model: torch.nn.Module, img_size: int, runtime: str, weights: str | Path | None = None) -> Path:
    """The exported graph of ``model`` at ``img_size`` for ``runtime``: the cached file when its
    recorded key matches, else a fresh export (written under a temporary name, then renamed)."""
    from odkit.export.runtime import read_sidecar

    key = graph_key(model, img_size, runtime)
    stem = Path(weights).stem if weights is not None else str((getattr(model, "config", {}) or {}).get("name", "model"))
    path = cache_folder(weights) / f"{stem}-{img_size}-{key[:16]}{GRAPH_SUFFIX[runtime]}"
    if path.is_file():
        try:
            if read_sidecar(path).get("graph_key") == key:
                return path
        except OdkitError:
            pass
        log.info("cached graph %s does not match the model: rebuilding it", path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    kw = dict(img_size=img_size, dynamic=True, nms=False, meta={"graph_key": key})
    if runtime == "onnxruntime":
        from odkit.export.onnx import export_onnx

        written = export_onnx(model, tmp, **kw)
    else:
        from odkit.export.openvino import export_openvino

        written = export_openvino(model, tmp, **kw)
    _move_export(written, path)
    log.info("exported %s for %s (cached: %s)", (getattr(model, "config", {}) or {}).get("name", "the model"),
             runtime, path)
    return path


def _move_export(src: Path, dst: Path) -> None:
    """Rename an export and its companions (JSON sidecar, OpenVINO ``.bin``) to ``dst``'s name; the
    graph itself last, so that a graph file always has its sidecar."""
    from odkit.export.onnx import sidecar_path

    os.replace(sidecar_path(src), sidecar_path(dst))
    if src.with_suffix(".bin").is_file():
        os.replace(src.with_suffix(".bin"), dst.with_suffix(".bin"))
    if dst.suffix == ".xml":  # the .xml names its .bin by file name: rewrite the reference
        text = src.read_text()
        dst.write_text(text.replace(src.with_suffix(".bin").name, dst.with_suffix(".bin").name))
        src.unlink()
    else:
        os.replace(src, dst)


def choose(backend: str | None, device: torch.device | str = "cpu") -> tuple[str, str]:
    """``(runtime, why)``: the backend that runs (``torch``, ``onnxruntime`` or ``openvino``) for the
    requested one, and the reason for the log. An explicit runtime that is not installed is a
    ``ConfigError``; ``auto`` falls back to PyTorch."""
    backend = default_backend() if backend is None else backend
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend in ("onnxruntime", "openvino"):
        if not installed(backend):
            raise ConfigError(f"--backend {backend}: {backend} (and onnx) are not installed; "
                              "pip install 'odkit[export]'")
        return backend, "requested"
    if backend == "torch":
        return "torch", "requested"
    if torch.device(device).type != "cpu":
        return "torch", f"auto: device {device} (the graph runtimes run on the CPU here)"
    for runtime in ("onnxruntime", "openvino"):
        if installed(runtime):
            return runtime, "auto: export extra installed"
    return "torch", "auto: the export extra (onnx, onnxruntime) is not installed"


class GraphPredictor:
    """The interface of :class:`odkit.engine.predictor.Predictor` running the model's exported graph
    (one per input size, built on first use). ``model`` is the eager model (for export, info, Python
    use); ``backend`` names the runtime."""

    def __init__(self, eager: Any, runtime: str, weights: str | Path | None = None, threads: int | None = None):
        self.eager = eager
        self.backend = runtime
        self.weights = weights
        self.threads = threads
        self._graphs: dict[int, Any] = {}
        self.graph(eager.img_size)  # the default size now: a model that does not export fails here

    model = property(lambda self: self.eager.model)
    meta = property(lambda self: self.eager.meta)
    config = property(lambda self: self.eager.config)
    class_names = property(lambda self: self.eager.class_names)
    img_size = property(lambda self: self.eager.img_size)
    name = property(lambda self: self.eager.name)
    device = property(lambda self: torch.device("cpu"))

    def graph(self, size: int) -> Any:
        """The :class:`~odkit.export.runtime.ExportedPredictor` of input size ``size``."""
        if size not in self._graphs:
            from odkit.export.runtime import load_predictor

            path = cached_graph(self.eager.model, size, self.backend, self.weights)
            self._graphs[size] = load_predictor(path, threads=self.threads)
        return self._graphs[size]

    def predict(self, images: Any, conf: float | None = None, iou: float | None = None, max_det: int | None = None,
                img_size: int | None = None, batch: int = 8) -> list[dict[str, torch.Tensor]]:
        """Detections per image, as :meth:`Predictor.predict` (same inputs, settings and defaults)."""
        from odkit.arguments import check_value
        from odkit.engine.predictor import prepare_inputs

        size = self.input_side(img_size)
        batch = int(check_value("batch", batch, "count"))
        for name, value, kind in (("conf", conf, "unit"), ("iou", iou, "unit"), ("max_det", max_det, "count")):
            if value is not None:
                check_value(name, value, kind)
        items = prepare_inputs(images)
        results: list[dict[str, torch.Tensor]] = []
        for s in range(0, len(items), batch):
            fitted = [self.fit(img, size, s + k, path) for k, (img, path) in enumerate(items[s:s + batch])]
            results += self.predict_prepared(np.stack([f[0] for f in fitted]), [f[1] for f in fitted],
                                             conf, iou, max_det)
        return results

    __call__ = predict

    def settings(self, conf: float | None, iou: float | None, max_det: int | None) -> tuple[float, float, int]:
        """``conf``, ``iou``, ``max_det`` with the model's own defaults filled in."""
        d = self.model.postprocess_defaults
        return (float(d["conf"] if conf is None else conf), float(d["iou"] if iou is None else iou),
                int(d["max_det"] if max_det is None else max_det))

    def input_side(self, img_size: int | None = None) -> int:
        """The square network input side for ``img_size`` (default: the training size)."""
        return self.eager.input_side(img_size)

    def fit(self, image: np.ndarray, size: int, index: int = 0, path: str = "") -> tuple[np.ndarray, dict[str, Any]]:
        """``(uint8 [S, S, 3] network input, meta)``, as :meth:`Predictor.fit`."""
        return self.eager.fit(image, size, index, path)

    def predict_prepared(self, inputs: np.ndarray, metas: list[dict[str, Any]], conf: float | None = None,
                         iou: float | None = None, max_det: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Detections of fitted inputs ``uint8 [B, S, S, 3]`` (from :meth:`fit`) with their metas."""
        x = np.empty((len(inputs), 3, *inputs.shape[1:3]), np.float32)
        np.divide(inputs.transpose(0, 3, 1, 2), np.float32(255.0), out=x, dtype=np.float32)
        return self._postprocess(self.graph(int(inputs.shape[1])).run(x), metas, conf, iou, max_det)

    def _postprocess(self, outs: list[np.ndarray], metas: list[dict[str, Any]], conf: float | None,
                     iou: float | None, max_det: int | None) -> list[dict[str, torch.Tensor]]:
        from odkit.models.postprocess import postprocess

        conf, iou, max_det = self.settings(conf, iou, max_det)
        pre_topk = int(self.model.postprocess_defaults.get("pre_topk") or 0) or 1000
        return postprocess(torch.from_numpy(outs[0]), torch.from_numpy(outs[1]), metas, conf, iou, max_det,
                           pre_topk=pre_topk)

    def predict_letterboxed(self, images: torch.Tensor, metas: list[dict[str, Any]], conf: float | None = None,
                            iou: float | None = None, max_det: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Detections of already fitted network inputs ``images [B, 3, S, S]`` (float in [0, 1]) with
        their ``metas`` (from :func:`odkit.data.transforms.fit_to_input`): what ``val`` runs."""
        outs = self.graph(int(images.shape[-1])).run(np.ascontiguousarray(images.float().cpu().numpy()))
        return self._postprocess(outs, metas, conf, iou, max_det)

    def __repr__(self) -> str:
        return f"GraphPredictor({self.name}, {self.backend}, {len(self.class_names)} classes, img {self.img_size})"


def load(weights: str | Path, backend: str | None = None, device: str | torch.device = "cpu",
         compile: bool = False, threads: int | None = None) -> Any:
    """A predictor for trained ``weights`` (``.safetensors`` + sidecar, or a run directory) on
    ``backend`` (``auto``, ``torch``, ``onnxruntime``, ``openvino``; default :func:`default_backend`).
    An explicit graph runtime that cannot export the model is an error naming the reason; ``auto``
    then runs PyTorch and logs why."""
    from odkit.engine.api import load as load_eager

    runtime, why = choose(backend, device)
    if runtime != "torch" and compile:
        runtime, why = "torch", "compile requested (torch.compile runs in PyTorch)"
    eager = load_eager(weights, device=device, compile=compile)
    if runtime != "torch" and getattr(eager.model, "has_masks", False):
        if (backend or default_backend()) != "auto":
            raise ConfigError(f"--backend {runtime}: {eager.name} predicts masks, which run with the PyTorch backend "
                              f"(or export it with `odkit export`, whose graph has NMS and masks)")
        runtime, why = "torch", "auto: a mask model (its graphs fix the NMS settings)"
    if runtime == "torch":
        log.info("%s: predicting with PyTorch (%s)", eager.name, why)
        return eager
    src = Path(weights)
    if src.is_dir():
        cand = src / "weights" / "best.safetensors"
        src = cand if cand.exists() else src / "best.safetensors"
    try:
        pred = GraphPredictor(eager, runtime, src, threads)
    except (OdkitError, RuntimeError, ValueError, TypeError) as e:
        if (backend or default_backend()) != "auto":
            raise OdkitError(f"--backend {runtime}: {eager.name} could not be exported: {e}") from e
        log.warning("%s: the graph export failed (%s); predicting with PyTorch", eager.name, e)
        return eager
    log.info("%s: predicting with %s (%s)", eager.name, runtime, why)
    return pred
