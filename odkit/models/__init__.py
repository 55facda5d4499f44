"""odkit.models: detectors (``Detector``) and named builders (``odkit.models.zoo``)."""

from odkit.models.detector import PIXEL_MEAN, PIXEL_STD, Detector
from odkit.models.postprocess import postprocess, undo_letterbox
from odkit.models.zoo import available, build, from_config

__all__ = [
    "PIXEL_MEAN",
    "PIXEL_STD",
    "Detector",
    "available",
    "build",
    "from_config",
    "postprocess",
    "undo_letterbox",
]
