"""YOLOv3 grid assignment (darknet's ``yolo_layer.c``, Redmon & Farhadi 2018).

Boxes are xyxy in input pixels. The anchor shapes are read from the priors: on each level, the
priors of cell ``(0, 0)`` are that level's anchors ``(w, h)`` in order. Per image:

1. Each valid gt is matched to the single anchor (over all levels) whose shape has the highest IoU
   with the gt's shape, both centred at the origin (ties: the first anchor, finest level first).
   The positive prior is that anchor at the cell holding the gt centre on the anchor's level:
   ``(floor(cx / stride), floor(cy / stride))``, clamped to the grid.
2. When several gts land on the same prior, the gt with the highest index keeps it (darknet walks
   the truths in order and the later one overwrites the targets).
3. Every other prior is negative, except that a prior whose *predicted* box (``pred_boxes``) has an
   IoU ``> ignore_thr`` with some valid gt is ``IGNORE`` (no objectness loss; darknet's
   ``ignore_thresh``, 0.7 in ``yolov3.cfg``). Without ``pred_boxes`` nothing is ignored.
4. :func:`~odkit.assign.base.ignore_crowd` marks negative priors inside crowd boxes ``IGNORE``.

``labels`` is the matched gt's class on positives (-1 elsewhere); ``quality`` is 0 (unused).
"""

from __future__ import annotations

import torch
from torch import Tensor

from odkit.assign.base import GTBatch, Priors, empty_result, ignore_crowd
from odkit.assign.result import IGNORE, NEGATIVE, AssignResult
from odkit.errors import ConfigError
from odkit.ops import aligned_box_iou

# Largest [b, A, G] IoU block computed at once for the ignore rule.
MAX_ELEMENTS = 1 << 22


def shape_iou(wh1: Tensor, wh2: Tensor) -> Tensor:
    """IoU ``[N, M]`` of boxes given as ``(w, h)`` ``[N, 2]`` and ``[M, 2]`` sharing a centre."""
    inter = torch.minimum(wh1[:, None, 0], wh2[None, :, 0]) * torch.minimum(wh1[:, None, 1], wh2[None, :, 1])
    union = (wh1[:, 0] * wh1[:, 1])[:, None] + (wh2[:, 0] * wh2[:, 1])[None, :] - inter
    return inter / union.clamp(min=1e-9)


class YOLOv3Assigner:
    """Grid assigner of YOLOv3; see the module docstring. ``ignore_thr``: IoU of a prediction with a
    gt above which a non-positive prior takes no objectness loss."""

    needs_predictions = True
    requires_anchors = True  # reads the anchor shapes from the priors

    def __init__(self, ignore_thr: float = 0.7) -> None:
        if not 0.0 <= float(ignore_thr) <= 1.0:
            raise ConfigError(f"YOLOv3Assigner: ignore_thr must be in [0, 1], got {ignore_thr}")
        self.ignore_thr = float(ignore_thr)

    @staticmethod
    def anchor_layout(priors: Priors) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The anchors behind ``priors``: ``shapes [K, 2]`` ``(w, h)`` of all levels (finest first),
        ``level [K]`` of each shape, per level ``table [L, 5]`` int64 ``(first prior, anchors per cell,
        H, W, first shape)`` and ``strides [L]``."""
        if priors.anchors is None:
            raise ConfigError("YOLOv3Assigner needs anchor priors")
        shapes, rows, strides = [], [], []
        start = 0
        for lvl, n in enumerate(priors.num_per_level):
            grid = priors.grid[start : start + n]
            first = (grid == 0).all(1).nonzero().squeeze(1)
            k = int(first.numel())
            w, h = int(grid[:, 0].max()) + 1, int(grid[:, 1].max()) + 1
            if k == 0 or k * w * h != n:
                raise ConfigError(f"YOLOv3Assigner: level {lvl} priors are not a full grid of anchors")
            a = priors.anchors[start + first]
            rows.append((start, k, h, w, sum(len(x) for x in shapes)))
            shapes.append(a[:, 2:] - a[:, :2])
            strides.append(priors.strides[start])
            start += n
        device = priors.anchors.device
        level = torch.cat([torch.full((len(x),), i, dtype=torch.long, device=device) for i, x in enumerate(shapes)])
        return torch.cat(shapes), level, torch.tensor(rows, dtype=torch.long, device=device), torch.stack(strides)

    def ignored(self, pred_boxes: Tensor, boxes: Tensor, valid: Tensor) -> Tensor:
        """``[B, A]`` True where a predicted box ``[B, A, 4]`` has IoU ``> ignore_thr`` with a valid gt
        (``boxes [B, G, 4]``, ``valid [B, G]``); images in chunks of at most ``MAX_ELEMENTS`` IoUs."""
        b, a, g = pred_boxes.shape[0], pred_boxes.shape[1], boxes.shape[1]
        step = max(1, MAX_ELEMENTS // max(1, a * g))
        out = []
        for i in range(0, b, step):
            iou = aligned_box_iou(pred_boxes[i : i + step, :, None, :], boxes[i : i + step, None, :, :])
            iou = iou.masked_fill(~valid[i : i + step, None, :], -1.0)
            out.append(iou.amax(2) > self.ignore_thr)
        return torch.cat(out)

    def assign(self, priors: Priors, gt: GTBatch, pred_boxes: Tensor | None = None,
               pred_scores: Tensor | None = None) -> AssignResult:
        b, a_total = gt.batch_size, priors.num_priors
        if gt.max_gts == 0 or not bool(gt.valid.any()):
            return ignore_crowd(empty_result(b, a_total, gt), priors, gt)
        shapes, shape_level, table, level_strides = self.anchor_layout(priors)
        boxes = gt.boxes.float()
        wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)  # [B, G, 2]
        ctr = (boxes[..., :2] + boxes[..., 2:]) * 0.5
        best = shape_iou(wh.reshape(-1, 2), shapes).argmax(1).view(b, -1)  # [B, G] index of the anchor shape
        lvl = shape_level[best]
        start, k, hh, ww, first = table[lvl].unbind(-1)
        stride = level_strides[lvl]
        gx = torch.minimum(torch.floor(ctr[..., 0] / stride).clamp(min=0).long(), ww - 1)
        gy = torch.minimum(torch.floor(ctr[..., 1] / stride).clamp(min=0).long(), hh - 1)
        device = best.device
        prior_idx = start + (gy * ww + gx) * k + (best - first)  # [B, G]
        g_idx = torch.arange(gt.max_gts, device=device).expand(b, -1)
        owner = torch.full((b, a_total), -1, dtype=torch.long, device=device)
        owner.scatter_reduce_(1, prior_idx, torch.where(gt.valid, g_idx, -1), "amax")
        gt_inds = torch.where(owner >= 0, owner, torch.full_like(owner, NEGATIVE))
        if pred_boxes is not None:
            gt_inds[self.ignored(pred_boxes.detach().float(), boxes, gt.valid) & (gt_inds == NEGATIVE)] = IGNORE
        pos = gt_inds >= 0
        labels = torch.where(pos, torch.gather(gt.labels, 1, gt_inds.clamp(min=0)), torch.full_like(gt_inds, -1))
        result = AssignResult(gt_inds, labels, torch.zeros((b, a_total), device=device), gt.num_gts)
        return ignore_crowd(result, priors, gt)
