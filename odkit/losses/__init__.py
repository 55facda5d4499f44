"""odkit.losses: detection losses (IoU family, YOLOX objectness / class / L1 terms)."""

from odkit.losses.iou import IOU_LOSS_MODES, IoULoss, iou_loss
from odkit.losses.yolox import yolox_loss

__all__ = ["IOU_LOSS_MODES", "IoULoss", "iou_loss", "yolox_loss"]
