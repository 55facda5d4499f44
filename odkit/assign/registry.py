"""Assigners by name (``maxiou``, ``fcos``, ``atss``, ``simota``, ``yolo``), and the build-time check
that an assigner can work with a head's priors.

Every assigner follows :class:`~odkit.assign.base.Assigner`: ``needs_predictions`` says whether it
reads the head's decoded boxes and scores (the dense base hands them over only then), and
``requires_anchors`` whether it matches anchor boxes (so anchor-free heads cannot use it).
"""

from __future__ import annotations

from typing import Any

from odkit.errors import ConfigError

NAMES = ("maxiou", "fcos", "atss", "simota", "yolo")


def make_assigner(name: str | None, num_levels: int | None = None, **kw: Any) -> Any:
    """An assigner by name, configured by ``kw``; ``None`` gives ``None`` (the head's own).

    ``num_levels``: the head's pyramid levels; the FCOS assigner then gets FCOS's regression ranges
    for that many levels (64, 128, ... px, the last open-ended) unless ``regress_ranges`` is given."""
    from odkit.assign.atss import ATSSAssigner
    from odkit.assign.fcos import FCOSAssigner
    from odkit.assign.max_iou import MaxIoUAssigner
    from odkit.assign.simota import SimOTAAssigner
    from odkit.assign.yolov3 import YOLOv3Assigner

    if name is None:
        return None
    table = {"maxiou": MaxIoUAssigner, "fcos": FCOSAssigner, "atss": ATSSAssigner, "simota": SimOTAAssigner,
             "yolo": YOLOv3Assigner}
    key = str(name).lower().replace("-", "").replace("_", "")
    if key in ("maxiou", "maxiouassigner"):
        key = "maxiou"
    if key not in table:
        raise ConfigError(f"unknown assigner {name!r}; expected one of {', '.join(NAMES)}")
    if key == "fcos" and num_levels is not None and "regress_ranges" not in kw:
        kw["regress_ranges"] = fcos_ranges(num_levels)
    try:
        return table[key](**kw)
    except TypeError as e:
        raise ConfigError(f"assigner {name!r}: bad assigner_args {kw}: {e}") from None


def fcos_ranges(num_levels: int) -> tuple[tuple[float, float], ...]:
    """FCOS regression ranges ``(-1, 64), (64, 128), ...`` with the last level open-ended."""
    edges = [64.0 * 2**i for i in range(num_levels - 1)]
    lows = [-1.0, *edges]
    highs = [*edges, float("inf")]
    return tuple(zip(lows, highs))


def check_assigner(assigner: Any, head_name: str, anchor_based: bool, num_levels: int) -> Any:
    """Return ``assigner`` when it can work with a head, else raise ``ConfigError`` saying why.

    ``anchor_based``: the head's priors carry anchor boxes; ``num_levels``: its pyramid levels."""
    name = type(assigner).__name__
    if not callable(getattr(assigner, "assign", None)):
        raise ConfigError(f"{head_name}: assigner {name} has no assign(priors, gt, pred_boxes, pred_scores)")
    if not hasattr(assigner, "needs_predictions"):
        raise ConfigError(f"{head_name}: assigner {name} does not declare needs_predictions (Assigner protocol)")
    if getattr(assigner, "requires_anchors", False) and not anchor_based:
        raise ConfigError(
            f"{head_name} is anchor-free (its priors are points) but {name} matches gts to anchor boxes; "
            f"use an assigner for points: fcos, atss or simota"
        )
    ranges = getattr(assigner, "regress_ranges", None)
    if ranges is not None and len(ranges) < num_levels:
        raise ConfigError(
            f"{head_name} has {num_levels} pyramid levels but {name} has regression ranges for {len(ranges)}"
        )
    return assigner
