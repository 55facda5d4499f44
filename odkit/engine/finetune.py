"""Starting a run from existing weights: fine-tuning (``--weights``), backbone-only weights
(``--pretrained-backbone``) and frozen parts (``--freeze``).

- odkit weights (``.safetensors`` + sidecar) are read with :func:`odkit.weights.format.load_weights`,
  which refuses pickles without opening them; foreign checkpoints (``--from yolox|torchvision``) go
  through :func:`odkit.weights.import_weights` / :func:`odkit.weights.load_backbone`, which read
  pickles only with ``torch.load(weights_only=True)``.
- Class-specific tensors are found by shape, not by name: every entry of the model's state dict whose
  shape changes when the model is built for one more class. When the class count (or the known class
  names) differ from the weights', exactly those are re-initialised; everything else must fit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from odkit.errors import ConfigError

log = logging.getLogger(__name__)

# model.config keys that describe the data set rather than the architecture
# what a model config says about the data, not the network: a model built for other data drops them
# (``background_slot`` is a label numbering: the run's data numbers its classes from 0)
_DATA_KEYS = ("name", "num_classes", "class_names", "img_size", "background_slot")


@dataclass
class SourceWeights:
    """Weights to start from, read but not yet loaded.

    ``model``: zoo name they belong to; ``num_classes`` / ``class_names``: their classes (``None``
    when unknown); ``overrides``: ``zoo.build`` overrides the model must be built with to use them
    (input format, architecture options); ``source``: ``"odkit"``, ``"yolox"`` or ``"torchvision"``.
    """

    path: str
    state: dict[str, torch.Tensor]
    model: str
    num_classes: int | None
    class_names: list[str] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    source: str = "odkit"


@dataclass
class InitReport:
    """What was loaded into a model: ``kept`` keys took the weights' values, ``reinitialised`` kept
    their fresh initialisation (class-specific layers), ``unused`` weights' keys the model lacks."""

    path: str
    what: str
    kept: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    reason: str = ""

    def describe(self) -> str:
        lines = [f"{self.what} from {self.path}: kept {len(self.kept)} tensors, re-initialised "
                 f"{len(self.reinitialised)}" + (f" ({self.reason})" if self.reason else "")]
        lines += [f"  re-initialised  {k}" for k in self.reinitialised]
        if self.unused:
            lines.append(f"  not used ({len(self.unused)}): {', '.join(self.unused[:8])}"
                         + (" ..." if len(self.unused) > 8 else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "what": self.what, "kept": len(self.kept),
                "reinitialised": list(self.reinitialised), "reason": self.reason}


def arch_overrides(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``zoo.build`` overrides in a ``model.config`` (everything but name, classes and size)."""
    return {k: v for k, v in dict(config or {}).items() if k not in _DATA_KEYS}


def weights_model(path: str | Path, source: str | None) -> str | None:
    """The zoo model odkit weights at ``path`` were saved as (``None`` for foreign checkpoints)."""
    if source:
        return None
    from odkit.weights.format import read_meta

    return str(read_meta(path)["model_config"]["name"])


def read_source(path: str | Path, source: str | None, model: str) -> SourceWeights:
    """Read ``--weights``: odkit weights (``source`` None) or a foreign checkpoint imported into
    ``model``. Pickles are never unpickled beyond ``weights_only``; odkit weights refuse them."""
    if not source:
        from odkit.weights.format import load_weights

        state, meta = load_weights(path)
        cfg = meta["model_config"]
        names = cfg.get("class_names")
        return SourceWeights(str(path), state, str(cfg["name"]), int(cfg["num_classes"]),
                             list(names) if names else None, arch_overrides(cfg), "odkit")
    from odkit.weights import import_weights, tables

    if source == "darknet":
        from odkit.weights.darknet_import import import_darknet

        report = import_darknet(path, model)
        cfg = dict(getattr(report.model, "config", {}) or {})
        names = cfg.get("class_names")
        log.info("imported %s (darknet): %s", path, report.lines()[0])
        return SourceWeights(str(path), dict(report.state_dict), model, int(report.num_classes or 0),
                             list(names) if names else None, arch_overrides(cfg), source)
    if tables.detector_table(source, model) is None:
        raise ConfigError(
            f"--from {source} has no whole-detector mapping for {model!r}; for backbone-only weights "
            f"(e.g. ImageNet classification) use --pretrained-backbone {path} --from {source}"
        )
    report = import_weights(path, source=source, model=model, num_classes=None)
    if not report.ok:
        raise ConfigError(f"{path}: the {source} checkpoint does not fit {model!r}:\n" + "\n".join(report.lines()))
    cfg = dict(getattr(report.model, "config", {}) or {})
    names = cfg.get("class_names")
    log.info("imported %s (%s): %s", path, source, report.lines()[0])
    return SourceWeights(str(path), dict(report.state_dict), model, report.num_classes,
                         list(names) if names else None, arch_overrides(cfg), source)


def class_specific_keys(model: nn.Module) -> set[str]:
    """Keys of ``model.state_dict()`` whose shape depends on the number of classes.

    Found by building the same zoo model (``model.config``) for one more class, on the ``meta``
    device (no memory, no init cost), and comparing shapes."""
    from odkit.models import zoo

    cfg = dict(getattr(model, "config", {}) or {})
    if "name" not in cfg or "num_classes" not in cfg:
        raise ConfigError("cannot tell the class-specific layers of a model without a zoo config")
    kw = arch_overrides(cfg)
    try:
        with torch.device("meta"):
            other = zoo.build(cfg["name"], num_classes=int(cfg["num_classes"]) + 1, **kw)
    except Exception:  # noqa: BLE001 - some initialisers need real tensors; build on the CPU then
        other = zoo.build(cfg["name"], num_classes=int(cfg["num_classes"]) + 1, **kw)
    theirs = {k: tuple(v.shape) for k, v in other.state_dict().items()}
    return {k for k, v in model.state_dict().items() if theirs.get(k) != tuple(v.shape)}


def init_from_weights(model: nn.Module, src: SourceWeights) -> InitReport:
    """Load ``src`` into ``model`` (built for the run's classes).

    Same classes (count, and names where both are known): every tensor is loaded. Otherwise the
    class-specific tensors keep their initialisation and the rest is loaded. Any other missing key or
    shape mismatch is a ``ConfigError`` (the weights belong to another architecture)."""
    target = model.state_dict()
    n = int(model.num_classes)
    names = list(getattr(model, "config", {}).get("class_names") or []) or None
    reason = ""
    if src.num_classes is not None and src.num_classes != n:
        reason = f"{src.num_classes} classes in the weights, {n} in the data"
    elif src.class_names and names and list(src.class_names) != names:
        reason = f"class names differ: {src.class_names} in the weights, {names} in the data"
    cls_keys = class_specific_keys(model) if reason else set()
    kept, reinit, missing, bad = [], [], [], []
    for k, v in target.items():
        if k in cls_keys:
            reinit.append(k)
            continue
        w = src.state.get(k)
        if w is None:
            if not k.endswith("num_batches_tracked"):
                missing.append(k)
            continue
        if tuple(w.shape) != tuple(v.shape):
            bad.append(f"{k} {list(w.shape)} -> {list(v.shape)}")
            continue
        kept.append(k)
    if missing or bad:
        raise ConfigError(
            f"{src.path} does not fit {model.config.get('name')!r}: {len(missing)} missing, {len(bad)} of another "
            f"shape (first: {(missing + bad)[:6]})"
        )
    with torch.no_grad():
        merged = dict(target)
        merged.update({k: src.state[k].to(dtype=target[k].dtype) for k in kept})
        model.load_state_dict(merged, strict=True)
    unused = sorted(set(src.state) - set(target))
    return InitReport(src.path, "weights", kept, reinit, unused, reason)


def load_pretrained_backbone(model: nn.Module, path: str | Path, source: str | None) -> InitReport:
    """Load backbone-only weights into ``model.backbone``: odkit weights of any model with the same
    backbone (its ``backbone.*`` tensors), or a foreign checkpoint through
    :func:`odkit.weights.load_backbone` (the model takes the checkpoint's input format)."""
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ConfigError("--pretrained-backbone: the model has no backbone module")
    if source == "darknet":
        from odkit.weights.darknet_import import load_darknet_backbone

        kept = load_darknet_backbone(model, path)
        return InitReport(str(path), "backbone (darknet)", kept, [], [], "neck and head keep their initialisation")
    if source:
        from odkit.weights import load_backbone, tables

        table = tables.backbone_table(source, type(backbone).__name__)
        fmt = dict(table.build_overrides) if table is not None else {}
        if fmt and hasattr(model, "set_input_format"):
            model.set_input_format(fmt["pixel_mean"], fmt["pixel_std"], fmt["input_bgr"])
            model.config.update(fmt)
        report = load_backbone(model, path, source)
        if not report.ok:
            raise ConfigError(f"{path}: backbone weights do not fit:\n" + "\n".join(report.lines()))
        kept = [t for _, t in report.mapped]
        return InitReport(str(path), f"backbone ({source})", kept, [], list(report.unexpected),
                          "neck and head keep their initialisation")
    from odkit.weights.format import load_weights

    state, _ = load_weights(path)
    target = backbone.state_dict()
    sub = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    missing = [k for k in target if k not in sub and not k.endswith("num_batches_tracked")]
    bad = [k for k in target if k in sub and tuple(sub[k].shape) != tuple(target[k].shape)]
    if missing or bad:
        raise ConfigError(f"{path}: its backbone does not fit this model's ({len(missing)} missing, {len(bad)} of "
                          f"another shape; first: {(missing + bad)[:6]})")
    with torch.no_grad():
        merged = dict(target)
        merged.update({k: sub[k].to(dtype=target[k].dtype) for k in target if k in sub})
        backbone.load_state_dict(merged, strict=True)
    kept = [f"backbone.{k}" for k in target if k in sub]
    return InitReport(str(path), "backbone", kept, [], [], "neck and head keep their initialisation")


def _freeze(module: nn.Module) -> int:
    n = 0
    for p in module.parameters():
        p.requires_grad_(False)
        n += p.numel()
    module.eval()
    return n


def freeze(model: nn.Module, parts: Mapping[str, int | None]) -> tuple[list[nn.Module], str]:
    """Freeze ``parts`` of ``model`` (``{"backbone": None | N, "neck": None}``, see
    :meth:`TrainConfig.freeze_parts`): no gradients and batch-norm statistics kept.

    ``backbone: N`` freezes the stem and the first ``N`` stages: through the backbone's own
    ``freeze(N)`` when it has one, else its ``frozen_stages`` / ``stages()``, else its first ``N + 1``
    child modules. Returns the modules the trainer must keep in eval mode and a description."""
    keep_eval: list[nn.Module] = []
    said = []
    for part, n in parts.items():
        module = getattr(model, part, None)
        if not isinstance(module, nn.Module):
            raise ConfigError(f"--freeze {part}: the model has no {part}")
        if n is None:
            count = _freeze(module)
            keep_eval.append(module)
            said.append(f"{part} ({count / 1e6:.2f}M parameters)")
            continue
        if callable(getattr(module, "freeze", None)):
            module.freeze(n)
            said.append(f"{part} stem + {n} stage(s) via {type(module).__name__}.freeze")
            continue
        stages = module.stages() if callable(getattr(module, "stages", None)) else list(module.children())
        if n > len(stages) - 1:
            raise ConfigError(f"--freeze {part}:{n}: {type(module).__name__} has a stem and {len(stages) - 1} stages")
        count = sum(_freeze(s) for s in stages[: n + 1])
        if hasattr(module, "frozen_stages") and callable(getattr(module, "stages", None)):
            module.frozen_stages = max(int(module.frozen_stages), n)  # its train() keeps them in eval mode
        else:
            keep_eval.extend(stages[: n + 1])
        said.append(f"{part} stem + {n} stage(s) ({count / 1e6:.2f}M parameters)")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return keep_eval, f"frozen: {', '.join(said)}; {trainable / 1e6:.2f}M parameters train"
