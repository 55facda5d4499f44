"""Import foreign checkpoints into odkit models with a mapping table (see :mod:`odkit.weights.tables`)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.weights import tables
from odkit.weights.load import StateDict, read_checkpoint, read_state_dict
from odkit.weights.tables import Table

log = logging.getLogger(__name__)


class Mismatch(NamedTuple):
    """A source tensor whose shape does not fit its odkit parameter."""

    name: str  # odkit key
    source_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    source_name: str


@dataclass
class ImportReport:
    """What an import did.

    Attributes:
        model: the model with the mapped weights loaded (a ``Detector``, or what ``load_backbone`` got).
        state_dict: the model's full state dict after loading (what ``out`` holds).
        mapped: ``(source key, odkit key)`` pairs copied.
        missing: odkit keys that must come from the checkpoint but did not.
        unexpected: source keys that map to nothing in the model.
        mismatched: source tensors whose shape does not fit (:class:`Mismatch`).
        kept: odkit keys left at their initial value on purpose (class layers for another class
            count, optional buffers such as BatchNorm's ``num_batches_tracked``).
        dropped: source keys the table does not use (e.g. an ImageNet classifier).
        source: the checkpoint source name; ``num_classes``: classes of the model; ``scope``:
            ``"detector"`` or ``"backbone"``; ``out``: written weights file, if any.
    """

    model: nn.Module
    state_dict: StateDict
    mapped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[Mismatch] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    source: str = ""
    num_classes: int | None = None
    scope: str = "detector"
    out: Path | None = None

    @property
    def ok(self) -> bool:
        """No required key missing and no shape mismatch."""
        return not self.missing and not self.mismatched

    def lines(self, show_mapped: bool = False) -> list[str]:
        """A human-readable report (counts, then the names of every problem)."""
        out = [
            f"mapped {len(self.mapped)}, missing {len(self.missing)}, unexpected {len(self.unexpected)}, "
            f"shape-mismatched {len(self.mismatched)}, kept at init {len(self.kept)}, dropped {len(self.dropped)}"
        ]
        if show_mapped:
            out += [f"  mapped      {s} -> {t}" for s, t in self.mapped]
        out += [f"  missing     {k}" for k in self.missing]
        out += [f"  unexpected  {k}" for k in self.unexpected]
        out += [
            f"  mismatched  {m.source_name} {list(m.source_shape)} -> {m.name} {list(m.target_shape)}"
            for m in self.mismatched
        ]
        if self.kept and any(not k.endswith("num_batches_tracked") for k in self.kept):
            out += [f"  kept        {k}" for k in self.kept if not k.endswith("num_batches_tracked")]
        return out


def map_state_dict(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], table: Table,
                   reinit_classes: bool = False) -> tuple[StateDict, dict[str, list[Any]]]:
    """Map ``source`` keys onto ``target`` (a model's state dict) with ``table``.

    Returns ``(tensors, parts)``: ``tensors`` are the mapped values (cast to the target dtypes) keyed by
    odkit key; ``parts`` has the lists ``mapped``, ``missing``, ``unexpected``, ``mismatched``, ``kept``,
    ``dropped`` of :class:`ImportReport`. With ``reinit_classes`` the table's class layers are not
    copied (they stay at their initialisation and are listed as kept).
    """
    tensors: StateDict = {}
    parts: dict[str, list[Any]] = {k: [] for k in ("mapped", "missing", "unexpected", "mismatched", "kept", "dropped")}
    for skey, value in source.items():
        if table.dropped(skey):
            parts["dropped"].append(skey)
            continue
        tkey = table.target(skey)
        if tkey is None or tkey not in target:
            if tkey is not None and table.is_optional(tkey):
                parts["dropped"].append(skey)
            else:
                parts["unexpected"].append(skey)
            continue
        if tkey in tensors:
            raise ConfigError(f"mapping table sends two checkpoint keys to {tkey!r} (second: {skey!r})")
        if reinit_classes and table.is_class_layer(tkey):
            continue
        want = target[tkey]
        if tuple(value.shape) != tuple(want.shape):
            parts["mismatched"].append(Mismatch(tkey, tuple(value.shape), tuple(want.shape), skey))
            continue
        tensors[tkey] = value.detach().to(dtype=want.dtype)
        parts["mapped"].append((skey, tkey))
    bad = {m.name for m in parts["mismatched"]}
    for tkey in target:
        if tkey in tensors or tkey in bad:
            continue
        if table.is_optional(tkey) or (reinit_classes and table.is_class_layer(tkey)):
            parts["kept"].append(tkey)
        else:
            parts["missing"].append(tkey)
    return tensors, parts


def _load_into(module: nn.Module, tensors: StateDict) -> None:
    state = module.state_dict()
    state.update(tensors)
    module.load_state_dict(state, strict=True)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source_info(src: Any, source: str) -> dict[str, Any]:
    info: dict[str, Any] = {"from": source}
    if isinstance(src, (str, Path)):
        info["file"] = Path(src).name
        info["sha256"] = _file_sha256(Path(src))
    return info


def _write(report: ImportReport, out: str | Path, src: Any, source: str, epochs: int | None = None) -> Path:
    """Write the imported weights; the sidecar's architecture is the built model's ``config``
    (name, classes, class names, the zoo's input size, input format)."""
    from odkit.weights.format import save_weights

    meta = {
        "model_config": dict(report.model.config),
        "imported": {**_source_info(src, source), "scope": report.scope, "mapped": len(report.mapped),
                     "kept": [k for k in report.kept if not k.endswith("num_batches_tracked")]},
    }
    if epochs is not None:
        meta["epoch"] = int(epochs)  # completed training epochs, as the source's checkpoint states them
    path = save_weights(out, report.state_dict, meta)
    # odkit.weights.format.load_weights takes a file whose first bytes are 0x80 or "PK" for a pickle;
    # a safetensors header length can start that way, so grow the metadata until it does not.
    for k in range(1, 65):
        with open(path, "rb") as f:
            head = f.read(2)
        if head[:1] != b"\x80" and head != b"PK":
            break
        meta["imported"]["pad"] = "." * k
        path = save_weights(out, report.state_dict, meta)
    return path


def import_weights(
    src: str | Path | Mapping[str, torch.Tensor],
    source: str,
    model: str,
    num_classes: int | None = None,
    out: str | Path | None = None,
    class_names: list[str] | None = None,
) -> ImportReport:
    """Import a ``source`` checkpoint (``"yolox"``, ``"torchvision"`` or ``"effdet"``) into odkit model ``model``.

    ``src`` is a ``.pth`` / ``.pt`` / ``.tar`` (read with ``torch.load(weights_only=True)`` only), a
    ``.safetensors`` file or an in-memory state dict. ``num_classes`` defaults to the checkpoint's;
    another value keeps the class-prediction layers at their initialisation. When the source has no
    whole-detector table for ``model`` but one for its backbone (ImageNet classification weights), or
    none of the checkpoint's keys is a detector key of the table, only the backbone is loaded and
    ``num_classes`` is required. The model is built with the source's input
    format (e.g. BGR 0-255 for official YOLOX), stored in its config. With ``out`` (``.safetensors``)
    the weights and their JSON sidecar are written when the import is complete (``report.ok``); they
    load with :func:`odkit.load` and every ``--weights`` option. The sidecar records the source
    (``imported``: file name, sha256, scope) and, when the checkpoint states it (YOLOX's
    ``start_epoch``), the completed training epochs as ``epoch``.
    """
    from odkit.models import zoo

    zoo.spec(model)  # an unknown name is a ConfigError before the checkpoint is read
    table = tables.detector_table(source, model)
    sd, info = read_checkpoint(src)
    if table is not None and tables.backbone_tables(source) and not any(table.target(k) for k in sd):
        table = None  # none of its keys is a detector key: a backbone checkpoint (e.g. timm ImageNet weights)
    if table is None:
        return _import_backbone_only(sd, src, source, model, num_classes, out, class_names)
    key = table.num_classes_key
    overrides = table.overrides_for(list(sd))
    # a softmax classifier's background logit is not a class (``background_slot`` tables)
    ckpt_classes = (int(sd[key].shape[0]) // table.num_classes_divisor - int(bool(overrides.get("background_slot")))
                    if key is not None and key in sd and sd[key].dim() else None)
    if num_classes is None:
        if ckpt_classes is None:
            raise ConfigError(f"{src}: cannot read the class count from the checkpoint (no {key!r}); "
                              f"pass num_classes (--num-classes)")
        num_classes = ckpt_classes
    n = int(num_classes)
    if class_names is None and table.class_names is not None and ckpt_classes == n == len(table.class_names):
        class_names = list(table.class_names)
    reinit = ckpt_classes is not None and ckpt_classes != n
    if reinit:  # other classes: the source's label numbering does not apply
        overrides.pop("background_slot", None)
    detector = zoo.build(model, num_classes=n, class_names=class_names, **overrides)
    if reinit:
        log.info("checkpoint has %d classes, model %d: class layers keep their initialisation", ckpt_classes, n)
    tensors, parts = map_state_dict(sd, detector.state_dict(), table, reinit_classes=reinit)
    _load_into(detector, tensors)
    report = ImportReport(detector, detector.state_dict(), **parts, source=source, num_classes=n)
    if out is not None:
        if report.ok:
            epochs = info.get(table.epochs_key) if table.epochs_key else None
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
                epochs = None
            report.out = _write(report, out, src, source, epochs)
        else:
            log.error("import incomplete (%d missing, %d shape-mismatched): %s not written",
                      len(report.missing), len(report.mismatched), out)
    return report


def _backbone_of(model: nn.Module) -> tuple[nn.Module, str]:
    bb = getattr(model, "backbone", None)
    return (bb, "backbone.") if isinstance(bb, nn.Module) else (model, "")


def _backbone_table(source: str, backbone: nn.Module, what: str) -> Table:
    cls = type(backbone).__name__
    table = tables.backbone_table(source, cls)
    if table is None:
        known = sorted(tables.backbone_tables(source))
        raise ConfigError(
            f"no {source} mapping for {what} (backbone {cls}); {source} backbone tables: {', '.join(known) or 'none'}"
        )
    return table


def _check_input_format(model: nn.Module, table: Table) -> None:
    fmt = table.build_overrides
    mean, std = getattr(model, "pixel_mean", None), getattr(model, "pixel_std", None)
    if not fmt or mean is None or std is None:
        return
    same = (
        bool(getattr(model, "input_bgr", False)) == bool(fmt.get("input_bgr", False))
        and torch.allclose(mean.view(-1).cpu(), torch.tensor(fmt["pixel_mean"], dtype=torch.float32), atol=1e-6)
        and torch.allclose(std.view(-1).cpu(), torch.tensor(fmt["pixel_std"], dtype=torch.float32), atol=1e-6)
    )
    if not same:
        log.warning(
            "the model's input format (bgr=%s, mean=%s, std=%s) differs from the one these weights were "
            "trained with (%s); fine-tuning adapts, but features start off-distribution",
            getattr(model, "input_bgr", False), mean.view(-1).tolist(), std.view(-1).tolist(), dict(fmt),
        )


def _prefixed(parts: dict[str, list[Any]], prefix: str) -> dict[str, list[Any]]:
    if not prefix:
        return parts
    out = dict(parts)
    out["mapped"] = [(s, prefix + t) for s, t in parts["mapped"]]
    out["missing"] = [prefix + k for k in parts["missing"]]
    out["kept"] = [prefix + k for k in parts["kept"]]
    out["mismatched"] = [m._replace(name=prefix + m.name) for m in parts["mismatched"]]
    return out


def load_backbone(model: nn.Module, src: str | Path | Mapping[str, torch.Tensor],
                  source: str = "torchvision") -> ImportReport:
    """Load backbone-only weights (e.g. torchvision ImageNet ResNet / ShuffleNetV2) into ``model``.

    ``model`` is a built ``Detector`` (its ``backbone`` is loaded; neck and head are untouched) or a
    bare backbone module. The table is chosen by the backbone's class name. Names in the report are
    the model's (``backbone.`` prefix for a detector). Nothing is loaded unless every required key is
    present with the right shape (the returned report says what is wrong).
    """
    backbone, prefix = _backbone_of(model)
    table = _backbone_table(source, backbone, type(model).__name__)
    sd = read_state_dict(src)
    tensors, parts = map_state_dict(sd, backbone.state_dict(), table)
    report = ImportReport(model, {}, **_prefixed(parts, prefix), source=source,
                          num_classes=getattr(model, "num_classes", None), scope="backbone")
    if report.ok:
        _load_into(backbone, tensors)
        _check_input_format(model, table)
    else:
        log.error("backbone weights not loaded: %d missing, %d shape-mismatched", len(report.missing),
                  len(report.mismatched))
    report.state_dict = model.state_dict()
    return report


def _import_backbone_only(sd: StateDict, src: Any, source: str, model: str, num_classes: int | None,
                          out: str | Path | None, class_names: list[str] | None) -> ImportReport:
    from odkit.models import zoo

    if num_classes is None:
        raise ConfigError(
            f"{source} has no whole-detector mapping for {model!r} (detector tables: "
            f"{', '.join(sorted(tables.detector_tables(source))) or 'none'}); a backbone-only import "
            f"needs num_classes (--num-classes) for the freshly initialised head"
        )
    detector = zoo.build(model, num_classes=int(num_classes), class_names=class_names)
    backbone, _ = _backbone_of(detector)
    table = _backbone_table(source, backbone, repr(model))
    fmt = dict(table.build_overrides)
    if fmt:  # the pretrained backbone's input format, recorded like a zoo.build override
        detector.set_input_format(fmt["pixel_mean"], fmt["pixel_std"], fmt["input_bgr"])
        detector.config.update(fmt)
    log.info("%s: backbone-only import (%s); neck and head keep their initialisation", model, table.note)
    report = load_backbone(detector, sd, source)
    report.num_classes = int(num_classes)
    if out is not None:
        if report.ok:
            report.out = _write(report, out, src, source)
        else:
            log.error("import incomplete: %s not written", out)
    return report
