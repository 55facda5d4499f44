"""odkit.export: trained detectors to ONNX / OpenVINO, in-graph NMS, and predictors for exported files.

- :func:`export` (``odkit export``): trained weights (``.safetensors`` + sidecar, or a run
  directory) -> ``.onnx`` or OpenVINO ``.xml``/``.bin`` with a JSON sidecar ``<file>.json``.
- :func:`odkit.export.onnx.export_onnx`, :func:`odkit.export.openvino.export_openvino`: the same
  from a model object (no check that it is trained).
- :class:`odkit.export.nms.ExportNMS`: fixed-shape class-wise NMS in plain torch ops.
- :func:`odkit.export.runtime.load_predictor`: onnxruntime / OpenVINO predictor with the
  ``Predictor.predict`` interface.

onnx, onnxruntime and openvino are optional (``pip install 'odkit[export]'``); they are imported
only when needed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from odkit.errors import ConfigError, OdkitError

__all__ = ["FORMATS", "check_trained", "export", "load_predictor", "resolve_weights"]

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "openvino": ".xml"}


def load_predictor(path: str | Path, threads: int | None = None) -> Any:
    """Predictor for an exported ``.onnx`` / ``.xml`` file; see :func:`odkit.export.runtime.load_predictor`."""
    from odkit.export.runtime import load_predictor as _load

    return _load(path, threads=threads)


def resolve_weights(weights: str | Path) -> Path:
    """The ``.safetensors`` file meant by ``weights`` (a file or a run directory).

    A bare model name (``yolox-nano``) is refused: it has no trained weights; an unknown name that
    is not a file either is refused naming the available models.
    """
    from odkit.models import zoo

    p = Path(weights)
    if p.is_dir():
        for cand in (p / "weights" / "best.safetensors", p / "best.safetensors"):
            if cand.is_file():
                return cand
        raise OdkitError(f"--weights {p}: directory has no weights/best.safetensors")
    if p.is_file():
        return p
    name = str(weights)
    if name in zoo.available():
        raise OdkitError(
            f"--weights {name}: this is an untrained model name; export needs trained weights "
            f"(runs/<name>/weights/best.safetensors from `odkit train`)"
        )
    if p.suffix in ("", ".safetensors") and "/" not in name and "\\" not in name:
        raise ConfigError(
            f"--weights {name}: no such file, and not a known model name (known: {', '.join(zoo.available())})"
        )
    raise OdkitError(f"--weights {p}: file does not exist")


def default_name(stem: str, suffix: str, img: int, nms: bool, dynamic: bool, half: bool) -> str:
    """File name of an export: one name per distinct graph (NMS, dynamic batch, fp16, input size)."""
    parts = [stem] + [tag for tag, on in (("nms", nms), ("dynamic", dynamic), ("fp16", half)) if on]
    return "-".join(parts + [str(img)]) + suffix


def check_trained(meta: dict[str, Any], source: str | Path) -> None:
    """Refuse weights without a training record: the sidecar must say ``epoch >= 1`` (odkit's trainer
    writes the number of completed epochs) or record a whole-detector import of published weights
    (``odkit weights import``)."""
    imported = meta.get("imported")
    if isinstance(imported, dict) and imported.get("scope") == "detector":
        return
    epoch = meta.get("epoch")
    try:
        done = int(epoch) if epoch is not None else 0
    except (TypeError, ValueError):
        done = 0
    if done < 1:
        raise OdkitError(
            f"{source}: weights look untrained (their sidecar has no completed training epoch: "
            f"epoch={epoch!r}); export refuses untrained models. Train with `odkit train` first"
        )


def export(
    weights: str | Path,
    format: str = "onnx",
    img_size: int | None = None,
    dynamic: bool = False,
    nms: bool = False,
    half: bool = False,
    out: str | Path | None = None,
    conf: float | None = None,
    iou: float | None = None,
    max_det: int | None = None,
    opset: int = 17,
    pre_topk: int | None = None,
    force: bool = False,
    **renamed: Any,
) -> Path:
    """Export trained ``weights`` to ``format`` (``"onnx"`` or ``"openvino"``); returns the written file.

    ``img_size`` (square, pixels; rounded to the nearest multiple of the model's size divisor with a
    warning) defaults to the training size of the weights.
    ``out`` (a file, or a folder) defaults to a name beside the weights that differs per graph
    (:func:`default_name`, e.g. ``best-nms-416.onnx``); an existing file is replaced only with
    ``force``. Prediction settings left ``None`` (``conf``, ``iou``, ``max_det``, ``pre_topk``; ``conf_thr`` /
    ``iou_thr`` are deprecated names of ``conf`` / ``iou``)
    are the model's own (``model.postprocess_defaults``: its reference implementation's). Other
    arguments: see
    :func:`odkit.export.onnx.export_onnx`. Raises ``OdkitError`` for untrained weights, unknown
    models, bad sizes or a missing export extra.
    """
    from odkit.arguments import check_value, fit_input_size
    from odkit.export.onnx import deprecated_settings

    conf, iou = deprecated_settings(conf, iou, renamed, "export")
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if img_size is not None:
        check_value("--img", img_size, "size")
    src = resolve_weights(weights)
    from odkit.engine.api import load

    predictor = load(src)
    meta = dict(predictor.meta)
    check_trained(meta, src)
    model = predictor.model
    size = fit_input_size(img_size if img_size is not None else predictor.img_size,
                          int(getattr(model, "stride", 32)), "--img", predictor.name)
    suffix = FORMATS[format]
    name = default_name(src.stem, suffix, size, nms, dynamic, half)
    out_path = Path(out) if out is not None else src.with_name(name)
    if out_path.is_dir():
        out_path = out_path / name
    if out_path.suffix != suffix:
        raise ConfigError(f"--out {out_path}: a {format} export must end in {suffix}")
    if out_path.exists() and not force:
        raise ConfigError(f"{out_path} exists; pass force=True (--force) to replace it")
    # the record of where the graph comes from; the architecture is the sidecar's model_config
    extra = {"class_ids": meta.get("class_ids"), "source_weights": str(src), "epoch": meta.get("epoch")}
    reason = getattr(model.head, "half_export", None)
    if half and reason:
        raise ConfigError(f"--half: {predictor.name} cannot be exported in float16: {reason}")
    kw = dict(
        img_size=size,
        dynamic=dynamic,
        nms=nms,
        half=half,
        conf=conf,
        iou=iou,
        max_det=max_det,
        pre_topk=pre_topk,
        opset=opset,
        meta=extra,
    )
    if format == "onnx":
        from odkit.export.onnx import export_onnx

        return export_onnx(model, out_path, **kw)
    from odkit.export.openvino import export_openvino

    return export_openvino(model, out_path, **kw)
