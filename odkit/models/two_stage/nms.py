"""Greedy NMS of score-sorted candidates as a boolean keep mask ``[B, K]``, computed without
data-dependent shapes (the fixed point of :func:`odkit.export.nms.greedy_fixed_point`), so the
proposal stage traces into an ONNX graph with a dynamic batch. The kept set equals greedy NMS
(``odkit.ops.nms`` / torchvision: suppress when IoU ``>`` the threshold, float32 IoU)."""

from __future__ import annotations

import torch
from torch import Tensor

from odkit.export.nms import IOU_EPS, greedy_fixed_point, iou_threshold_f32


def sorted_nms_keep(boxes: Tensor, valid: Tensor, iou_thr: float) -> Tensor:
    """Keep mask of greedy NMS over ``boxes`` ``[B, K, 4]`` (xyxy, each row sorted by decreasing
    score); ``valid`` ``[B, K]`` marks the candidates that take part (others are never kept and
    suppress nothing)."""
    x1, y1, x2, y2 = boxes.float().unbind(-1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    iw = (x2[:, :, None].minimum(x2[:, None, :]) - x1[:, :, None].maximum(x1[:, None, :])).clamp(min=0)
    ih = (y2[:, :, None].minimum(y2[:, None, :]) - y1[:, :, None].maximum(y1[:, None, :])).clamp(min=0)
    inter = iw * ih
    union = (areas[:, :, None] + areas[:, None, :] - inter).clamp(min=IOU_EPS)
    k = boxes.shape[1]
    r = torch.arange(k, device=boxes.device)
    pos = r[:, None] < r[None, :]  # i suppresses only later j
    sup = (inter / union > iou_threshold_f32(iou_thr)) & pos[None]
    return greedy_fixed_point(sup, valid)
