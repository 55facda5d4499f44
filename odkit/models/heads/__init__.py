"""odkit.models.heads."""

from odkit.models.heads.yolox_head import YOLOXHead

__all__ = ["YOLOXHead"]
