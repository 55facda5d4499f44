"""odkit: an object-detection toolkit in pure PyTorch.

Box ops (``odkit.ops``), detectors (``odkit.models``), COCO / VOC / YOLO data with loud
validation (``odkit.data``), evaluation identical to pycocotools (``odkit.eval``), a training
engine (``odkit.engine``) and export to ONNX / OpenVINO (``odkit.export``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "train", "load", "evaluate"]


def train(*args: Any, **kwargs: Any) -> Any:
    """Train a detector; see :func:`odkit.engine.api.train`."""
    from odkit.engine.api import train as _train

    return _train(*args, **kwargs)


def load(path: Any, backend: str | None = None, **kwargs: Any) -> Any:
    """Load a trained detector from ``.safetensors`` (+ JSON sidecar) or a run directory for prediction.

    ``backend``: ``"auto"`` (default, or ``$ODKIT_BACKEND``: the exported graph in onnxruntime when the
    export extra is installed, else PyTorch), ``"torch"``, ``"onnxruntime"`` or ``"openvino"``; see
    :func:`odkit.export.backends.load` (and :func:`odkit.engine.api.load` for ``device``, ``compile``).
    """
    from odkit.export.backends import load as _load

    return _load(path, backend=backend, **kwargs)


def evaluate(*args: Any, **kwargs: Any) -> Any:
    """Evaluate detections against ground truth; see :func:`odkit.eval.api.evaluate`."""
    from odkit.eval.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
