"""IoU-family box regression losses on aligned xyxy box pairs (via ``odkit.ops``)."""

from __future__ import annotations

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.ops import aligned_box_iou

IOU_LOSS_MODES = ("iou", "linear_iou", "giou", "diou", "ciou")


def iou_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mode: str = "iou",
    reduction: str = "none",
    eps: float = 1e-7,
) -> torch.Tensor:
    """IoU-family loss between aligned xyxy boxes ``[..., 4]`` (same units for both).

    Modes: ``"iou"``: ``1 - IoU**2`` (YOLOX's "iou" loss); ``"linear_iou"``: ``1 - IoU``;
    ``"giou"`` / ``"diou"`` / ``"ciou"``: ``1 - (G|D|C)IoU``. ``reduction``: none, sum or mean.
    """
    if mode not in IOU_LOSS_MODES:
        raise ConfigError(f"iou_loss: mode {mode!r} is not one of {IOU_LOSS_MODES}")
    if mode in ("iou", "linear_iou"):
        iou = aligned_box_iou(pred, target, mode="iou", eps=eps)
        loss = 1.0 - iou**2 if mode == "iou" else 1.0 - iou
    else:
        loss = 1.0 - aligned_box_iou(pred, target, mode=mode, eps=eps)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ConfigError(f"iou_loss: reduction {reduction!r} is not one of none, sum, mean")


class IoULoss(nn.Module):
    """Module form of :func:`iou_loss`."""

    def __init__(self, mode: str = "iou", reduction: str = "none") -> None:
        super().__init__()
        if mode not in IOU_LOSS_MODES:
            raise ConfigError(f"IoULoss: mode {mode!r} is not one of {IOU_LOSS_MODES}")
        self.mode = mode
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return iou_loss(pred, target, self.mode, self.reduction)
