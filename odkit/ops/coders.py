"""Box coders: regression targets <-> boxes. Boxes are xyxy pixels (continuous, width = x2 - x1).

* :class:`DeltaXYWHCoder` - Faster R-CNN / RetinaNet / SSD deltas ``(dx, dy, dw, dh)``
  normalised by ``means`` / ``stds`` (SSD "variances" 0.1, 0.2 = ``stds=(0.1, 0.1, 0.2, 0.2)``;
  torchvision ``weights=(10, 10, 5, 5)`` = the same stds).
* :class:`DistanceCoder` - FCOS / GFL distances ``(l, t, r, b)`` from a point to the box sides.
* :class:`YOLOCoder` - YOLOv3 (sigmoid cell offset, ``exp * anchor``) and YOLOX (grid offset,
  ``exp * stride``).

All coders work on any leading shape ``[..., 4]`` with broadcasting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from odkit.errors import ConfigError

__all__ = ["DeltaXYWHCoder", "DistanceCoder", "YOLOCoder"]


def _clip_to(boxes: Tensor, max_shape: tuple[int, int] | None) -> Tensor:
    if max_shape is None:
        return boxes
    h, w = float(max_shape[0]), float(max_shape[1])
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def _cxcywh(b: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = b[..., 2] - b[..., 0]
    h = b[..., 3] - b[..., 1]
    return b[..., 0] + 0.5 * w, b[..., 1] + 0.5 * h, w, h


class DeltaXYWHCoder:
    """``(dx, dy, dw, dh) = ((gx - px) / pw, (gy - py) / ph, log(gw / pw), log(gh / ph))``,
    then ``(d - means) / stds``.

    ``clip`` bounds ``dw, dh`` (after de-normalisation) from above when decoding, so that ``exp``
    cannot overflow (default ``log(1000 / 16)``). torchvision and detectron2 clamp only from above
    (a box may shrink without limit); MMDetection's ``DeltaXYWHBBoxCoder`` clamps both sides to
    ``+-clip``: ``clip_both=True`` gives MMDetection's rule (odkit's ATSS and Double-Head, whose
    reference is MMDetection, use it; every torchvision-derived model uses the default).
    """

    def __init__(
        self,
        means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        clip: float = math.log(1000.0 / 16),
        eps: float = 1e-6,
        clip_both: bool = False,
    ) -> None:
        if len(means) != 4 or len(stds) != 4 or any(s <= 0 for s in stds):
            raise ConfigError(f"DeltaXYWHCoder: need 4 means and 4 positive stds, got {means}, {stds}")
        self.means = tuple(float(m) for m in means)
        self.stds = tuple(float(s) for s in stds)
        self.clip = float(clip)
        self.clip_both = bool(clip_both)
        self.eps = eps

    def encode(self, priors: Tensor, gt: Tensor) -> Tensor:
        """Deltas ``[..., 4]`` that move ``priors`` (xyxy) onto ``gt`` (xyxy)."""
        px, py, pw, ph = _cxcywh(priors.float() if priors.dtype != torch.float64 else priors)
        gx, gy, gw, gh = _cxcywh(gt.to(px.dtype))
        pw_, ph_ = pw.clamp(min=self.eps), ph.clamp(min=self.eps)
        d = torch.stack(
            [
                (gx - px) / pw_,
                (gy - py) / ph_,
                torch.log(gw.clamp(min=self.eps) / pw_),
                torch.log(gh.clamp(min=self.eps) / ph_),
            ],
            dim=-1,
        )
        means = d.new_tensor(self.means)
        stds = d.new_tensor(self.stds)
        return (d - means) / stds

    def decode(self, priors: Tensor, deltas: Tensor, max_shape: tuple[int, int] | None = None) -> Tensor:
        """Boxes ``[..., 4]`` xyxy from ``priors`` and ``deltas``; clipped to ``max_shape = (h, w)`` if given."""
        d = deltas.float() if deltas.dtype != torch.float64 else deltas
        d = d * d.new_tensor(self.stds) + d.new_tensor(self.means)
        px, py, pw, ph = _cxcywh(priors.to(d.dtype))
        low = -self.clip if self.clip_both else None
        dw = d[..., 2].clamp(min=low, max=self.clip)
        dh = d[..., 3].clamp(min=low, max=self.clip)
        cx = px + d[..., 0] * pw
        cy = py + d[..., 1] * ph
        w = pw * torch.exp(dw)
        h = ph * torch.exp(dh)
        boxes = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
        return _clip_to(boxes, max_shape)


class DistanceCoder:
    """``(l, t, r, b) = (px - x1, py - y1, x2 - px, y2 - py)``, divided by ``stride`` when given.

    ``max_dis`` (in the encoded units, i.e. after the stride division) clamps encoded distances to
    ``[0, max_dis - eps]`` (GFL's integral regression range); without it distances are only
    clamped at 0 when ``clamp_negative``.
    """

    def __init__(self, max_dis: float | None = None, clamp_negative: bool = False, eps: float = 0.01) -> None:
        self.max_dis = max_dis
        self.clamp_negative = clamp_negative
        self.eps = eps

    def encode(self, points: Tensor, gt: Tensor, stride: float | Tensor | None = None) -> Tensor:
        """Distances ``[..., 4]`` from ``points`` ``[..., 2]`` (x, y pixels) to the sides of ``gt``."""
        px, py = points[..., 0], points[..., 1]
        d = torch.stack([px - gt[..., 0], py - gt[..., 1], gt[..., 2] - px, gt[..., 3] - py], dim=-1)
        if stride is not None:
            d = d / (stride[..., None] if isinstance(stride, Tensor) and stride.dim() else stride)
        if self.max_dis is not None:
            d = d.clamp(min=0, max=self.max_dis - self.eps)
        elif self.clamp_negative:
            d = d.clamp(min=0)
        return d

    def decode(
        self,
        points: Tensor,
        distances: Tensor,
        stride: float | Tensor | None = None,
        max_shape: tuple[int, int] | None = None,
    ) -> Tensor:
        """Boxes ``[..., 4]`` xyxy from ``points`` and ``(l, t, r, b)`` (times ``stride`` when given)."""
        d = distances
        if stride is not None:
            d = d * (stride[..., None] if isinstance(stride, Tensor) and stride.dim() else stride)
        px, py = points[..., 0], points[..., 1]
        boxes = torch.stack([px - d[..., 0], py - d[..., 1], px + d[..., 2], py + d[..., 3]], dim=-1)
        return _clip_to(boxes, max_shape)


class YOLOCoder:
    """YOLO box parameterisations; raw predictions ``(tx, ty, tw, th)``.

    * ``style="v3"``: priors are anchors xyxy ``[..., 4]`` centred on their grid cell, ``stride`` the
      cell size: ``cx = acx + (sigmoid(tx) - 0.5) * stride``, ``w = aw * exp(tw)``.
    * ``style="yolox"``: priors are grid cells ``[..., 2]`` as integer ``(x, y)`` indices:
      ``cx = (tx + gx) * stride``, ``w = exp(tw) * stride``.

    ``encode`` is the exact inverse of ``decode`` (for v3 it returns the logit of the cell offset;
    ``sigmoid`` of it is the usual BCE target). Offsets are clamped to ``(eps, 1 - eps)`` first.
    """

    def __init__(self, style: str = "v3", eps: float = 1e-6) -> None:
        if style not in ("v3", "yolox"):
            raise ConfigError(f"YOLOCoder: style must be 'v3' or 'yolox', got {style!r}")
        self.style = style
        self.eps = eps

    def decode(self, priors: Tensor, pred: Tensor, stride: float | Tensor) -> Tensor:
        """Boxes ``[..., 4]`` xyxy pixels from raw predictions."""
        s = stride  # scalar or a tensor broadcastable to pred[..., 0]
        if self.style == "v3":
            acx, acy, aw, ah = _cxcywh(priors.to(pred.dtype))
            cx = acx + (torch.sigmoid(pred[..., 0]) - 0.5) * s
            cy = acy + (torch.sigmoid(pred[..., 1]) - 0.5) * s
            w = aw * torch.exp(pred[..., 2])
            h = ah * torch.exp(pred[..., 3])
        else:
            g = priors.to(pred.dtype)
            cx = (pred[..., 0] + g[..., 0]) * s
            cy = (pred[..., 1] + g[..., 1]) * s
            w = torch.exp(pred[..., 2]) * s
            h = torch.exp(pred[..., 3]) * s
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)

    def encode(self, priors: Tensor, gt: Tensor, stride: float | Tensor) -> Tensor:
        """Raw ``(tx, ty, tw, th)`` whose :meth:`decode` is ``gt``."""
        s = stride
        gx, gy, gw, gh = _cxcywh(gt)
        gw = gw.clamp(min=self.eps)
        gh = gh.clamp(min=self.eps)
        if self.style == "v3":
            acx, acy, aw, ah = _cxcywh(priors.to(gt.dtype))
            ox = ((gx - acx) / s + 0.5).clamp(self.eps, 1 - self.eps)
            oy = ((gy - acy) / s + 0.5).clamp(self.eps, 1 - self.eps)
            return torch.stack(
                [torch.logit(ox), torch.logit(oy), torch.log(gw / aw), torch.log(gh / ah)], dim=-1
            )
        g = priors.to(gt.dtype)
        return torch.stack([gx / s - g[..., 0], gy / s - g[..., 1], torch.log(gw / s), torch.log(gh / s)], dim=-1)
