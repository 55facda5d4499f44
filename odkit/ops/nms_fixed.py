"""Greedy NMS with fixed shapes, exportable to ONNX: a keep mask ``[B, K]`` over score-sorted candidates.

The kept set is exactly greedy NMS (:func:`odkit.ops.nms`: suppress when IoU ``>`` the threshold,
float32 IoU with the same arithmetic), computed without data-dependent shapes as the unique fixed
point of ``keep[j] = valid[j] and not any(keep[i] and suppresses[i, j] for i before j)``, reached by
iterating from ``keep = valid``. The loop runs until nothing changes (scripted, so it becomes an ONNX
``Loop``), and a converged image stays unchanged while the other images of the batch converge, so
every image of a batch gets exactly what it gets alone. Used by the in-graph NMS of exports
(:class:`odkit.export.nms.ExportNMS`) and by the proposal stage of two-stage detectors.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from odkit.ops.boxes import DEFAULT_EPS

__all__ = ["IOU_EPS", "greedy_fixed_point", "iou_threshold_f32", "sorted_nms_keep"]

IOU_EPS = DEFAULT_EPS  # union clamp, the same as odkit.ops.nms


def _greedy_fixed_point(sup: Tensor, valid: Tensor) -> Tensor:
    """Greedy NMS keep mask ``[B, K]`` from ``sup [B, K, K]`` (bool, ``sup[b, i, j]``: candidate ``i``
    suppresses ``j``; only ``i < j`` set) and ``valid [B, K]`` (bool). Loops until the fixed point."""
    keep = valid
    supf = sup.to(torch.float32)
    go = torch.tensor(True)
    while bool(go):
        # number of kept candidates suppressing each j; exact in float32 (sums of 0/1, K << 2**24)
        hits = torch.bmm(keep.to(torch.float32).unsqueeze(1), supf)[:, 0, :]
        new = torch.logical_and(valid, hits == 0.0)
        go = torch.ne(new, keep).any()
        keep = new
    return keep


# Scripted (not traced) so that the data-dependent loop becomes an ONNX Loop when the module is exported.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    greedy_fixed_point = torch.jit.script(_greedy_fixed_point)


def iou_threshold_f32(thr: float) -> float:
    """The float32 ``t`` with ``iou > t`` (float32) iff ``iou > thr`` (float64), the comparison rule of
    ``odkit.ops.nms``: ``thr`` rounded down to a float32 (a float32 value maps to itself)."""
    t = torch.tensor(thr, dtype=torch.float32)
    if float(t) > thr:
        t = torch.nextafter(t, torch.tensor(float("-inf")))
    return float(t)


def sorted_nms_keep(boxes: Tensor, valid: Tensor, iou_thr: float, labels: Tensor | None = None) -> Tensor:
    """Keep mask ``[B, K]`` (bool) of greedy NMS over ``boxes`` ``[B, K, 4]`` (xyxy, each row sorted by
    decreasing score). ``valid`` ``[B, K]`` marks the candidates that take part (others are never kept
    and suppress nothing); with ``labels`` ``[B, K]`` a box suppresses only boxes of its own label
    (class-wise NMS). Suppression is IoU ``> iou_thr`` in float32, as :func:`odkit.ops.nms`."""
    x1, y1, x2, y2 = boxes.float().unbind(-1)
    areas = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    iw = (torch.minimum(x2[:, :, None], x2[:, None, :]) - torch.maximum(x1[:, :, None], x1[:, None, :])).clamp(min=0)
    ih = (torch.minimum(y2[:, :, None], y2[:, None, :]) - torch.maximum(y1[:, :, None], y1[:, None, :])).clamp(min=0)
    inter = iw * ih
    union = (areas[:, :, None] + areas[:, None, :] - inter).clamp(min=IOU_EPS)
    r = torch.arange(boxes.shape[1], device=boxes.device)
    later = r[:, None] < r[None, :]  # i suppresses only later j
    sup = (inter / union > iou_threshold_f32(iou_thr)) & later[None]
    if labels is not None:
        sup = sup & (labels[:, :, None] == labels[:, None, :])
    return greedy_fixed_point(sup, valid)
