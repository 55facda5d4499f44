"""Export a detector to OpenVINO IR (``.xml`` + ``.bin``) by converting its ONNX export.

The graph is the ONNX graph of :func:`odkit.export.onnx.export_onnx` (same inputs, outputs and
in-graph NMS) converted with ``openvino.convert_model`` and written with ``openvino.save_model``.
``half=True`` stores float16 weights (``compress_to_fp16``); the CPU plugin computes in float32
(or bf16 where the CPU has it) either way. A JSON sidecar ``<file>.xml.json`` is written.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from odkit.errors import ConfigError, OdkitError
from odkit.export.onnx import deprecated_settings, export_onnx, require, sidecar_path, write_sidecar

log = logging.getLogger(__name__)

__all__ = ["export_openvino", "onnx_to_openvino"]


def onnx_to_openvino(onnx_path: str | Path, xml_path: str | Path, half: bool = False) -> Path:
    """Convert the ONNX file to OpenVINO IR ``xml_path`` (+ ``.bin``); float16 weights when ``half``."""
    ov = require("openvino")
    xml_path = Path(xml_path)
    if xml_path.suffix != ".xml":
        raise ConfigError(f"--out {xml_path}: an OpenVINO IR file name must end in .xml")
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ov_model = ov.convert_model(str(onnx_path))
        ov.save_model(ov_model, str(xml_path), compress_to_fp16=bool(half))
    except Exception as e:  # noqa: BLE001 - the converter raises many types
        raise OdkitError(f"OpenVINO cannot convert {onnx_path}: {e}") from e
    return xml_path


def export_openvino(
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
    """Export ``model`` to OpenVINO IR ``path`` (``.xml``; the weights go to the ``.bin`` beside it).

    Arguments as in :func:`odkit.export.onnx.export_onnx`; the sidecar is ``<path>.json`` with
    ``"format": "openvino"``. Returns ``path``.
    """
    conf, iou = deprecated_settings(conf, iou, renamed, "export_openvino")
    require("openvino")
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError(f"--out {path}: an OpenVINO IR file name must end in .xml")
    with tempfile.TemporaryDirectory(prefix="odkit-export-") as tmp:
        onnx_path = Path(tmp) / (path.stem + ".onnx")
        export_onnx(
            model,
            onnx_path,
            img_size,
            dynamic,
            nms,
            half=False,
            conf=conf,
            iou=iou,
            max_det=max_det,
            pre_topk=pre_topk,
            opset=opset,
            meta=meta,
        )
        info = json.loads(sidecar_path(onnx_path).read_text())
        if path.exists():
            log.info("overwriting %s", path)
        onnx_to_openvino(onnx_path, path, half=half)
    info.update({"format": "openvino", "half": bool(half)})
    write_sidecar(path, info)
    log.debug("exported %s (OpenVINO IR, %s weights)", path, "fp16" if half else "fp32")
    return path
