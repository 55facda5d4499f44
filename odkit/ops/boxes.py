"""Box formats, areas, clipping and the IoU family (IoU, GIoU, DIoU, CIoU, IoF).

Conventions: boxes are ``[..., 4]`` tensors; ``xyxy`` is ``(x1, y1, x2, y2)`` with continuous
coordinates (width = x2 - x1, no "+1"), ``xywh`` is ``(x1, y1, w, h)`` (COCO), ``cxcywh`` is
``(cx, cy, w, h)``. Units are whatever the caller uses (pixels or normalised), as long as both
operands agree.

Every IoU function is differentiable, accepts empty inputs, treats inverted or zero-size boxes as
having zero area (widths/heights are clamped at 0) and divides by ``max(denominator, eps)``, so it
never returns NaN. float16/bfloat16 (and integer) inputs are computed in float32 and return
float32; float32/float64 inputs keep their dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from odkit.errors import ConfigError

__all__ = [
    "BOX_FORMATS",
    "IOU_MODES",
    "aligned_box_iou",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes",
    "complete_box_iou",
    "cxcywh_to_xyxy",
    "distance_box_iou",
    "generalized_box_iou",
    "rescale_boxes",
    "xywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xyxy_to_xywh",
]

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
IOU_MODES = ("iou", "giou", "diou", "ciou", "iof")
DEFAULT_EPS = 1e-7


def _as_float(t: Tensor) -> Tensor:
    """float32 for half/bf16/integer tensors; float32/float64 unchanged."""
    if t.dtype in (torch.float32, torch.float64):
        return t
    return t.float()


def _check_boxes(boxes: Tensor, name: str) -> None:
    if not isinstance(boxes, Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(boxes).__name__}")
    if boxes.shape[-1:] != (4,):
        raise ConfigError(f"{name} must have shape [..., 4], got {tuple(boxes.shape)}")


# ----------------------------------------------------------------------------- formats


def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` -> ``(x1, y1, w, h)``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(x1, y1, w, h)`` -> ``(x1, y1, x2, y2)``."""
    x1, y1, w, h = boxes.unbind(-1)
    return torch.stack((x1, y1, x1 + w, y1 + h), dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    cx, cy, w, h = boxes.unbind(-1)
    hw, hh = w * 0.5, h * 0.5
    return torch.stack((cx - hw, cy - hh, cx + hw, cy + hh), dim=-1)


_TO_XYXY = {"xyxy": lambda b: b, "xywh": xywh_to_xyxy, "cxcywh": cxcywh_to_xyxy}
_FROM_XYXY = {"xyxy": lambda b: b, "xywh": xyxy_to_xywh, "cxcywh": xyxy_to_cxcywh}


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``[..., 4]`` boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"`` (torchvision style).

    Returns a new tensor (a clone when the formats are equal).
    """
    _check_boxes(boxes, "boxes")
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in BOX_FORMATS:
            raise ConfigError(f"box_convert: {name}={fmt!r} is not one of {BOX_FORMATS}")
    if in_fmt == out_fmt:
        return boxes.clone()
    return _FROM_XYXY[out_fmt](_TO_XYXY[in_fmt](boxes))


# ----------------------------------------------------------------------------- area / clip


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``[..., 4]`` xyxy boxes -> ``[...]``; inverted boxes have area 0 (w, h clamped at 0)."""
    _check_boxes(boxes, "boxes")
    b = _as_float(boxes)
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def clip_boxes(boxes: Tensor, size_hw: tuple[int | float, int | float] | Tensor) -> Tensor:
    """Clip xyxy boxes to the image ``[0, w] x [0, h]``; ``size_hw = (height, width)``. Out of place."""
    _check_boxes(boxes, "boxes")
    h, w = (float(size_hw[0]), float(size_hw[1]))
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def rescale_boxes(boxes: Tensor, factor: float) -> Tensor:
    """xyxy boxes ``[..., 4]`` scaled by ``factor`` about their centres (returned as they are for 1)."""
    if factor == 1.0:
        return boxes
    c = (boxes[..., :2] + boxes[..., 2:]) * 0.5
    half = (boxes[..., 2:] - boxes[..., :2]) * (0.5 * factor)
    return torch.cat((c - half, c + half), dim=-1)


# ----------------------------------------------------------------------------- IoU family


def _iou_core(b1: Tensor, b2: Tensor, mode: str, eps: float) -> Tensor:
    """IoU family for broadcastable ``[..., 4]`` xyxy tensors (already float)."""
    x11, y11, x12, y12 = b1.unbind(-1)
    x21, y21, x22, y22 = b2.unbind(-1)
    w1 = (x12 - x11).clamp(min=0)
    h1 = (y12 - y11).clamp(min=0)
    w2 = (x22 - x21).clamp(min=0)
    h2 = (y22 - y21).clamp(min=0)
    area1 = w1 * h1
    area2 = w2 * h2
    iw = (torch.minimum(x12, x22) - torch.maximum(x11, x21)).clamp(min=0)
    ih = (torch.minimum(y12, y22) - torch.maximum(y11, y21)).clamp(min=0)
    inter = iw * ih
    if mode == "iof":
        return inter / area1.clamp(min=eps)
    union = area1 + area2 - inter
    iou = inter / union.clamp(min=eps)
    if mode == "iou":
        return iou
    # smallest enclosing box
    ew = (torch.maximum(x12, x22) - torch.minimum(x11, x21)).clamp(min=0)
    eh = (torch.maximum(y12, y22) - torch.minimum(y11, y21)).clamp(min=0)
    if mode == "giou":
        enclose = (ew * eh).clamp(min=eps)
        return iou - (enclose - union) / enclose
    diag2 = ew * ew + eh * eh + eps
    rho2 = ((x21 + x22 - x11 - x12) ** 2 + (y21 + y22 - y11 - y12) ** 2) * 0.25
    diou = iou - rho2 / diag2
    if mode == "diou":
        return diou
    # ciou: aspect-ratio consistency term; alpha is a weight without gradient (as in the paper).
    v = (4.0 / math.pi**2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (1.0 - iou + v + eps)
    return (diou - alpha * v).clamp(min=-1.0, max=1.0)


def _check_mode(mode: str) -> None:
    if mode not in IOU_MODES:
        raise ConfigError(f"IoU mode {mode!r} is not one of {IOU_MODES}")


def box_iou(boxes1: Tensor, boxes2: Tensor, mode: str = "iou", eps: float = DEFAULT_EPS) -> Tensor:
    """Pairwise IoU-family matrix of xyxy boxes ``[N,4] x [M,4] -> [N,M]``.

    ``mode``: ``"iou"`` (in [0, 1]), ``"giou"``, ``"diou"`` (in [-1, 1]), ``"ciou"`` (clamped to
    [-1, 1]) or ``"iof"`` (intersection over the area of ``boxes1``, in [0, 1]).
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    _check_mode(mode)
    b1, b2 = _as_float(boxes1), _as_float(boxes2)
    if b1.dtype != b2.dtype:
        b1, b2 = b1.double(), b2.double()
    return _iou_core(b1[:, None, :], b2[None, :, :], mode, eps)


def aligned_box_iou(boxes1: Tensor, boxes2: Tensor, mode: str = "iou", eps: float = DEFAULT_EPS) -> Tensor:
    """Element-wise IoU family of xyxy boxes ``[N,4] x [N,4] -> [N]`` (any broadcastable ``[..., 4]``)."""
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    _check_mode(mode)
    b1, b2 = _as_float(boxes1), _as_float(boxes2)
    if b1.dtype != b2.dtype:
        b1, b2 = b1.double(), b2.double()
    return _iou_core(b1, b2, mode, eps)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise GIoU ``[N,M]`` (torchvision name)."""
    return box_iou(boxes1, boxes2, mode="giou")


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Pairwise DIoU ``[N,M]`` (torchvision name)."""
    return box_iou(boxes1, boxes2, mode="diou", eps=eps)


def complete_box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Pairwise CIoU ``[N,M]`` (torchvision name; clamped to [-1, 1])."""
    return box_iou(boxes1, boxes2, mode="ciou", eps=eps)
