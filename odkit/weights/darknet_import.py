"""``import_darknet``: darknet ``.weights`` files into odkit's yolov2, yolov2-tiny, yolov3 and yolov3-tiny,
and ``export_darknet``: the reverse (odkit weights to a darknet weights file).

The class count is read from the file's size (the values are ``a + b C`` for a model; ``a`` and ``b``
come from the model built with one and two classes) or from ``--cfg`` (whose convolutions are
checked layer by layer against the model, and whose anchors and classes are used). A file holding
exactly the backbone's convolutions (``darknet53.conv.74``, ``darknet19_448.conv.23``) is a
backbone-only import; any other length is an error naming the sizes that would fit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from odkit.errors import ConfigError, DataError
from odkit.weights.darknet import (
    Unit,
    cfg_head,
    check_cfg,
    model_units,
    parse_cfg,
    read_darknet,
    units_size,
    values_to_state,
    write_darknet,
)
from odkit.weights.importer import ImportReport, _load_into, _write
from odkit.weights.tables import darknet as layout

log = logging.getLogger(__name__)


def _order(model: str) -> tuple[str, ...]:
    if model not in layout.ORDER:
        raise ConfigError(f"--from darknet: no darknet layout for {model!r}; darknet models: "
                          f"{', '.join(sorted(layout.ORDER))}")
    return layout.ORDER[model]


def _build(model: str, num_classes: int, overrides: dict[str, Any], class_names: list[str] | None = None) -> nn.Module:
    from odkit.models import zoo

    return zoo.build(model, num_classes=num_classes, class_names=class_names, **overrides)


def _cfg_overrides(cfg: str | Path | None, model: str) -> tuple[list[dict[str, str]] | None, dict[str, Any], int | None]:
    if cfg is None:
        return None, {}, None
    where = str(cfg)
    try:
        text = Path(cfg).read_text()
    except OSError as e:
        raise DataError(f"{cfg}: cannot read the cfg ({e.strerror or e})") from e
    sections = parse_cfg(text, where)
    head = cfg_head(sections, where)
    if head["kind"] != layout.HEAD_KIND[model]:
        raise DataError(f"{where}: has [{head['kind']}] output layers; {model} has [{layout.HEAD_KIND[model]}]")
    return sections, {"anchors": head["anchors"]}, head["num_classes"]


def import_darknet(src: str | Path, model: str, cfg: str | Path | None = None, num_classes: int | None = None,
                   out: str | Path | None = None, class_names: list[str] | None = None) -> ImportReport:
    """Import darknet weights ``src`` into zoo model ``model`` (see the module docstring).

    ``num_classes`` other than the file's keeps the prediction convolutions at their initialisation.
    The header's images-seen count goes to the model's ``seen`` buffer where the head has one (YOLOv2's
    prior-matching term). With ``out`` the odkit weights file is written when the import is complete.
    """
    from odkit.models import zoo

    zoo.spec(model)
    order = _order(model)
    sections, overrides, cfg_classes = _cfg_overrides(cfg, model)
    dw = read_darknet(src)
    n_values = len(dw.values)
    one = model_units(_build(model, 1, overrides), order)
    # the prediction convolutions (no BatchNorm, k (5 + C) filters) grow by k (c_in k_h k_w + 1) a class
    b = sum(u.shape[0] // 6 * (u.size // u.shape[0]) for u in one if u.bn is None)
    a = units_size(one) - b
    n_backbone = layout.BACKBONE_UNITS[model]
    backbone_size = units_size(one[:n_backbone])
    if n_values == backbone_size:
        return _import_backbone(src, dw, model, one[:n_backbone], num_classes, overrides, out, class_names)
    file_classes = (n_values - a) // b if n_values > a and (n_values - a) % b == 0 else None
    if file_classes is None:
        raise DataError(f"{src}: {n_values} values after the header fit neither {model} ({a} + {b} x classes) "
                        f"nor its backbone ({backbone_size}); is {model} the file's architecture?")
    if cfg_classes is not None and cfg_classes != file_classes:
        raise DataError(f"{src}: holds {model} with {file_classes} classes, but {cfg} says classes={cfg_classes}")
    n = int(num_classes) if num_classes is not None else file_classes
    if class_names is None and n == file_classes == 80:
        from odkit.weights.tables.coco import COCO80

        class_names = list(COCO80)
    source = _build(model, file_classes, overrides, class_names if n == file_classes else None)
    units = model_units(source, order)
    if sections is not None:
        check_cfg(sections, units, str(cfg), model)
    tensors = values_to_state(units, dw.values, str(src))
    _load_into(source, tensors)
    _set_seen(source, dw.seen)
    mapped = [(f"layer {i} ({u.weight.rsplit('.', 2)[0]})", u.weight) for i, u in enumerate(units)]
    if n == file_classes:
        detector, kept = source, []
    else:
        detector = _build(model, n, overrides, class_names)
        state, src_state = detector.state_dict(), source.state_dict()
        kept = [k for k in state if k in src_state and src_state[k].shape != state[k].shape]
        state.update({k: v for k, v in src_state.items() if k in state and v.shape == state[k].shape})
        detector.load_state_dict(state)
        log.info("file has %d classes, model %d: the prediction layers keep their initialisation", file_classes, n)
    report = ImportReport(detector, detector.state_dict(), mapped=mapped, kept=kept, source="darknet",
                          num_classes=n)
    if out is not None:
        report.out = _write(report, out, src, "darknet", None)
    return report


def _set_seen(model: nn.Module, seen: int) -> None:
    buf = getattr(getattr(model, "head", None), "seen", None)
    if buf is not None:
        buf.fill_(int(seen))


def _import_backbone(src: Any, dw: Any, model: str, units: list[Unit], num_classes: int | None,
                     overrides: dict[str, Any], out: str | Path | None, class_names: list[str] | None) -> ImportReport:
    if num_classes is None:
        raise ConfigError(f"{src} holds only the backbone of {model} ({len(units)} convolutions); a backbone "
                          f"import needs num_classes (--num-classes) for the freshly initialised head (in "
                          f"training: --pretrained-backbone {src} --from darknet)")
    detector = _build(model, int(num_classes), overrides, class_names)
    tensors = values_to_state(units, dw.values, str(src))
    _load_into(detector, tensors)
    mapped = [(f"layer {i} ({u.weight.rsplit('.', 2)[0]})", u.weight) for i, u in enumerate(units)]
    report = ImportReport(detector, detector.state_dict(), mapped=mapped, source="darknet",
                          num_classes=int(num_classes), scope="backbone")
    if out is not None:
        report.out = _write(report, out, src, "darknet", None)
    return report


def load_darknet_backbone(model: nn.Module, path: str | Path) -> list[str]:
    """Load the backbone convolutions of a darknet file (a backbone prefix such as ``darknet53.conv.74``,
    or any longer file of the model: its leading convolutions) into ``model``, a zoo detector with a
    darknet layout; returns the loaded state-dict keys."""
    name = str(getattr(model, "config", {}).get("name", ""))
    units = model_units(model, _order(name))[: layout.BACKBONE_UNITS[name]]
    dw = read_darknet(path)
    need = units_size(units)
    if len(dw.values) < need:
        raise DataError(f"{path}: {len(dw.values)} values after the header, fewer than the {need} of the "
                        f"{len(units)} backbone convolutions of {name}")
    tensors = values_to_state(units, dw.values[:need], str(path))
    _load_into(model, tensors)
    return sorted(tensors)


def export_darknet(model: nn.Module, path: str | Path, seen: int | None = None) -> Path:
    """Write ``model`` (a zoo detector with a darknet layout) as a darknet weights file; the images-seen
    count is the head's ``seen`` buffer where it has one, else ``seen`` (default 0)."""
    name = str(getattr(model, "config", {}).get("name", ""))
    units = model_units(model, _order(name))
    if seen is None:
        buf = getattr(getattr(model, "head", None), "seen", None)
        seen = int(buf) if buf is not None else 0
    return write_darknet(path, units, model.state_dict(), seen)
