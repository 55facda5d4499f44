"""Dense one-stage detectors: RetinaNet, FCOS, ATSS, GFL (filled in below)."""

from __future__ import annotations

from typing import Any

MODELS: dict[str, Any] = {}
