"""Two-stage detection (Faster R-CNN line): region proposal network, RoI heads and the
:class:`TwoStageHead` that gives them the head contract of :class:`~odkit.models.detector.Detector`."""

from odkit.models.two_stage.double_head import DoubleHeadRoIHead
from odkit.models.two_stage.roi_head import RoIHead
from odkit.models.two_stage.rpn import RPN, RPNHead
from odkit.models.two_stage.sampler import BalancedSampler
from odkit.models.two_stage.two_stage_head import TwoStageHead

__all__ = ["BalancedSampler", "DoubleHeadRoIHead", "RPN", "RPNHead", "RoIHead", "TwoStageHead"]
