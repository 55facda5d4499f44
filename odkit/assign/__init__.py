"""odkit.assign: label assigners; all follow the ``Assigner`` protocol and return an ``AssignResult``."""

from odkit.assign.atss import ATSSAssigner
from odkit.assign.base import Assigner, GTBatch, Priors, empty_result, ignore_crowd
from odkit.assign.fcos import FCOSAssigner
from odkit.assign.max_iou import MaxIoUAssigner
from odkit.assign.registry import check_assigner, make_assigner
from odkit.assign.result import IGNORE, NEGATIVE, AssignResult
from odkit.assign.simota import SimOTAAssigner
from odkit.assign.ssd import ssd_match
from odkit.assign.yolov3 import YOLOv3Assigner

__all__ = [
    "IGNORE",
    "NEGATIVE",
    "ATSSAssigner",
    "AssignResult",
    "Assigner",
    "FCOSAssigner",
    "GTBatch",
    "MaxIoUAssigner",
    "Priors",
    "SimOTAAssigner",
    "YOLOv3Assigner",
    "check_assigner",
    "empty_result",
    "ignore_crowd",
    "make_assigner",
    "ssd_match",
]
