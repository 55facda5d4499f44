"""``ModelSpec``: what the zoo knows about a named model (builder and defaults).

Families (``odkit/models/families/``) make their specs with it and :mod:`odkit.models.zoo` collects
them by name, so the families never import the zoo.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from odkit.models.detector import Detector


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry.

    Attributes:
        builder: ``builder(num_classes, **overrides) -> Detector``.
        img_size: default square input size in pixels (training and inference).
        postprocess: prediction defaults (``conf``, ``pre_topk`` per level, ``iou``,
            ``max_det``): the reference implementation's values.
        recipe: training defaults, as ``TrainConfig`` field values (optimizer, lr, schedule,
            warm-up, augmentation, no-augmentation tail, ...); ``odkit train`` flags override them.
        family: detector family name (for listings).
        resize: how images reach the input size, ``"letterbox"`` or ``"stretch"`` (plain resize, SSD);
            stored in ``model.config`` when not letterbox.
        reference: the implementation whose architecture and defaults the model follows ("" for
            odkit's own light models).
        size_divisor: what input sides must be multiples of (the built model's ``size_divisor``).
    """

    builder: Callable[..., Detector]
    img_size: int
    postprocess: Mapping[str, Any] = field(default_factory=dict)
    recipe: Mapping[str, Any] = field(default_factory=dict)
    family: str = ""
    resize: str = "letterbox"
    size_divisor: int = 32
    reference: str = ""
