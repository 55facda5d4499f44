"""YOLOv1 assignment (Redmon et al. 2016): one grid cell per object, the responsible predictor by IoU.

Boxes are xyxy in input pixels; the priors are ``B`` predictors per cell of one ``S x S`` grid
(cell ``(gx, gy)`` from ``priors.grid``). Per image:

1. A valid gt belongs to the cell holding its centre, ``(floor(cx / stride), floor(cy / stride))``
   clamped to the grid. A cell predicts one class, so when several gts fall in one cell the first
   (lowest index) owns it and the others are not assigned (darknet's ``fill_truth_region`` keeps the
   first box of a cell).
2. Of the ``B`` predictors of an owned cell, the one whose *predicted* box has the highest IoU with
   the gt is responsible (positive; ties: the first). When every predicted box misses the gt (all
   IoUs 0) the one of least root-mean-square difference of ``(cx, cy, w, h)`` is (darknet's
   ``forward_detection_layer``). Without ``pred_boxes`` the first predictor is.
3. Every other predictor is negative (the paper's ``1^noobj``); crowd regions are ignored
   (:func:`~odkit.assign.base.ignore_crowd`).

``labels`` is the gt class on positives; ``quality`` is 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from odkit.assign.base import GTBatch, Priors, empty_result, ignore_crowd
from odkit.assign.result import NEGATIVE, AssignResult
from odkit.errors import ConfigError
from odkit.ops import aligned_box_iou


def _cxcywh(b: Tensor) -> Tensor:
    return torch.cat(((b[..., :2] + b[..., 2:]) * 0.5, b[..., 2:] - b[..., :2]), -1)


class YOLOv1Assigner:
    """The grid rule of YOLOv1; see the module docstring."""

    needs_predictions = True
    requires_anchors = False

    def assign(self, priors: Priors, gt: GTBatch, pred_boxes: Tensor | None = None,
               pred_scores: Tensor | None = None) -> AssignResult:
        b, a_total = gt.batch_size, priors.num_priors
        if len(priors.num_per_level) != 1:
            raise ConfigError("YOLOv1Assigner: expects the priors of one grid")
        if gt.max_gts == 0 or not bool(gt.valid.any()):
            return ignore_crowd(empty_result(b, a_total, gt), priors, gt)
        w, h = int(priors.grid[:, 0].max()) + 1, int(priors.grid[:, 1].max()) + 1
        k = a_total // (w * h)
        stride = priors.strides[0]
        boxes = gt.boxes.float()
        ctr = (boxes[..., :2] + boxes[..., 2:]) * 0.5
        gx = torch.floor(ctr[..., 0] / stride).clamp(0, w - 1).long()
        gy = torch.floor(ctr[..., 1] / stride).clamp(0, h - 1).long()
        cell = gy * w + gx  # [B, G]
        device = cell.device
        g_idx = torch.arange(gt.max_gts, device=device).expand(b, -1)
        big = gt.max_gts
        owner = torch.full((b, w * h), big, dtype=torch.long, device=device)
        owner.scatter_reduce_(1, cell, torch.where(gt.valid, g_idx, big), "amin")
        owns = gt.valid & (torch.gather(owner, 1, cell) == g_idx)  # [B, G]
        cand = cell[..., None] * k + torch.arange(k, device=device)  # [B, G, k]
        if pred_boxes is None:
            choice = torch.zeros_like(cell)
        else:
            pb = torch.gather(pred_boxes.detach().float(), 1, cand.reshape(b, -1, 1).expand(-1, -1, 4))
            pb = pb.view(b, -1, k, 4)
            iou = aligned_box_iou(pb, boxes[:, :, None, :].expand_as(pb))
            rmse = ((_cxcywh(pb) - _cxcywh(boxes)[:, :, None, :]) ** 2).sum(-1).sqrt()
            by_iou, by_rmse = iou.argmax(-1), rmse.argmin(-1)
            choice = torch.where((iou > 0).any(-1), by_iou, by_rmse)
        prior = torch.gather(cand, 2, choice[..., None]).squeeze(-1)  # [B, G]
        gt_inds = torch.full((b, a_total), NEGATIVE, dtype=torch.long, device=device)
        bi = torch.arange(b, device=device)[:, None].expand_as(prior)
        gt_inds[bi[owns], prior[owns]] = g_idx[owns]
        pos = gt_inds >= 0
        labels = torch.where(pos, torch.gather(gt.labels, 1, gt_inds.clamp(min=0)), torch.full_like(gt_inds, -1))
        result = AssignResult(gt_inds, labels, torch.zeros((b, a_total), device=device), gt.num_gts)
        return ignore_crowd(result, priors, gt)
