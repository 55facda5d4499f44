"""odkit.losses: detection losses (IoU family, YOLOX, dense-detector focal / GFL / regression terms, Mask R-CNN masks)."""

from odkit.losses.focal import sigmoid_focal_loss
from odkit.losses.gfl import Integral, distribution_focal_loss, distribution_to_distance, quality_focal_loss
from odkit.losses.iou import IOU_LOSS_MODES, IoULoss, iou_loss
from odkit.losses.mask import mask_loss
from odkit.losses.normalize import reduce_loss, reduce_num_pos
from odkit.losses.regression import centerness_loss, centerness_targets, l1_loss, smooth_l1_loss
from odkit.losses.yolox import yolox_loss

__all__ = [
    "IOU_LOSS_MODES",
    "Integral",
    "IoULoss",
    "centerness_loss",
    "centerness_targets",
    "distribution_focal_loss",
    "distribution_to_distance",
    "iou_loss",
    "l1_loss",
    "mask_loss",
    "quality_focal_loss",
    "reduce_loss",
    "reduce_num_pos",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "yolox_loss",
]
