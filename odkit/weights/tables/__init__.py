"""Key-mapping tables, one module per checkpoint source, kept as data.

Each source module (``yolox.py``, ``torchvision.py``) defines two dicts:

- ``DETECTORS``: odkit zoo model name -> :class:`Table` mapping a whole detector checkpoint of that
  source onto the odkit detector (``import_weights``);
- ``BACKBONES``: odkit backbone class name (``"ResNet"``, ``"ShuffleNetV2"``, ``"CSPDarknet"``) ->
  :class:`Table` mapping the source's keys onto that backbone's own state dict (``load_backbone``).

Adding a mapping is adding an entry: e.g. ``DETECTORS["retinanet-r50-fpn"] = Table(rules=(...))`` in
``torchvision.py``. A table's rules are ``(regex, replacement)`` pairs; the first regex that matches
the start of a source key gives the odkit key (``re.sub`` with ``count=1``). Source keys no rule
matches are reported as unexpected, except those matching ``drop``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from odkit.errors import ConfigError

# Target keys that may keep their initial value: BatchNorm's step counter is not a weight.
OPTIONAL_DEFAULT: tuple[str, ...] = (r"(^|\.)num_batches_tracked$",)


@dataclass(frozen=True)
class Table:
    """How one source's checkpoint keys become odkit keys.

    Attributes:
        rules: ``(regex, replacement)`` pairs tried in order; the first whose regex matches the start
            of a source key rewrites it (``re.sub(regex, replacement, key, count=1)``).
        drop: regexes of source keys that are deliberately not used (e.g. an ImageNet ``fc``).
        optional: regexes of odkit keys that may stay at their initial value without failing.
        class_layers: regexes of odkit keys whose shape depends on the class count; with another
            class count than the checkpoint's they keep their initialisation (reported).
        num_classes_key: source key whose first dimension is the checkpoint's class count (times
            ``num_classes_divisor``, e.g. the anchors per location of a RetinaNet class layer).
        build_overrides: ``zoo.build`` overrides the source's models need, e.g. the input format
            (``input_bgr``, ``pixel_mean``, ``pixel_std`` in [0, 1] units); stored in ``model.config``.
        class_names: names of the classes when the checkpoint has exactly that many (e.g. COCO's 80).
        epochs_key: top-level checkpoint entry holding the number of completed training epochs
            (recorded as ``epoch`` in the written sidecar).
        note: one line shown in reports (what the checkpoints are).
        overrides_without: ``(regex, overrides)`` pairs: when no checkpoint key matches ``regex``, the
            model is built with ``overrides`` too (a layout variant the keys reveal, e.g. effdet's
            ``efficientdet_d0`` without biases before BatchNorm).
    """

    rules: Sequence[tuple[str, str]]
    drop: Sequence[str] = ()
    optional: Sequence[str] = OPTIONAL_DEFAULT
    class_layers: Sequence[str] = ()
    num_classes_key: str | None = None
    num_classes_divisor: int = 1
    build_overrides: Mapping[str, Any] = field(default_factory=dict)
    class_names: Sequence[str] | None = None
    epochs_key: str | None = None
    note: str = ""
    overrides_without: Sequence[tuple[str, Mapping[str, Any]]] = ()

    @cached_property
    def _compiled(self) -> tuple[list[tuple[re.Pattern[str], str]], list[re.Pattern[str]],
                                 list[re.Pattern[str]], list[re.Pattern[str]]]:
        return (
            [(re.compile(p), r) for p, r in self.rules],
            [re.compile(p) for p in self.drop],
            [re.compile(p) for p in self.optional],
            [re.compile(p) for p in self.class_layers],
        )

    def target(self, key: str) -> str | None:
        """The odkit key of source ``key`` (``None`` when no rule applies)."""
        for pattern, repl in self._compiled[0]:
            if pattern.match(key):
                return pattern.sub(repl, key, count=1)
        return None

    def dropped(self, key: str) -> bool:
        """Whether source ``key`` is deliberately unused."""
        return any(p.search(key) for p in self._compiled[1])

    def is_optional(self, key: str) -> bool:
        """Whether odkit ``key`` may keep its initial value."""
        return any(p.search(key) for p in self._compiled[2])

    def overrides_for(self, keys: Sequence[str]) -> dict[str, Any]:
        """``build_overrides`` plus those of the :attr:`overrides_without` entries no key of ``keys`` matches."""
        out = dict(self.build_overrides)
        for pattern, extra in self.overrides_without:
            if not any(re.search(pattern, k) for k in keys):
                out.update(extra)
        return out

    def is_class_layer(self, key: str) -> bool:
        """Whether odkit ``key`` belongs to a class-specific layer."""
        return any(p.search(key) for p in self._compiled[3])


def _modules() -> dict[str, Any]:
    from odkit.weights.tables import effdet, torchvision, yolox

    return {"yolox": yolox, "torchvision": torchvision, "effdet": effdet}


def sources() -> list[str]:
    """Names of the checkpoint sources that have tables."""
    return sorted(_modules())


def _module(source: str) -> Any:
    mods = _modules()
    if source not in mods:
        raise ConfigError(f"unknown weights source {source!r}; expected one of {', '.join(sorted(mods))}")
    return mods[source]


def detector_tables(source: str) -> dict[str, Table]:
    """odkit model name -> whole-detector table, for ``source``."""
    return dict(_module(source).DETECTORS)


def backbone_tables(source: str) -> dict[str, Table]:
    """odkit backbone class name -> backbone table, for ``source``."""
    return dict(_module(source).BACKBONES)


def detector_table(source: str, model: str) -> Table | None:
    """The table importing ``source`` detector checkpoints into odkit model ``model``, if any."""
    return detector_tables(source).get(model)


def backbone_table(source: str, backbone_class: str) -> Table | None:
    """The table importing ``source`` checkpoints into an odkit backbone of class ``backbone_class``."""
    return backbone_tables(source).get(backbone_class)


__all__ = ["Table", "sources", "detector_tables", "backbone_tables", "detector_table", "backbone_table"]
