"""odkit.assign: label assigners; all return an ``AssignResult``."""

from odkit.assign.result import IGNORE, NEGATIVE, AssignResult
from odkit.assign.simota import SimOTAAssigner

__all__ = ["IGNORE", "NEGATIVE", "AssignResult", "SimOTAAssigner"]
