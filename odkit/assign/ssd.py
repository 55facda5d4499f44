"""SSD matching (Liu et al. 2016; torchvision's ``SSDMatcher``): IoU ``>= 0.5`` to the best gt, then
every gt takes its own best prior. Boxes are xyxy input pixels; the default boxes are
:class:`odkit.ops.priors.DefaultBoxes`."""

from __future__ import annotations

import torch
from torch import Tensor

from odkit.assign.base import GTBatch, Priors, empty_result, ignore_crowd
from odkit.assign.result import NEGATIVE, AssignResult
from odkit.ops import aligned_box_iou

__all__ = ["ssd_match"]


def ssd_match(anchors: Tensor, gt: GTBatch, pos_iou_thr: float = 0.5) -> AssignResult:
    """SSD matching: a prior whose best IoU with a gt is ``>= pos_iou_thr`` is matched to that gt (the
    lowest gt index among equals); then every gt takes its own best prior (first maximum; only when
    that IoU is above 0), overriding step 1. The rest is background; background priors at least half
    inside a crowd box are ``IGNORE``. ``anchors`` ``[A, 4]`` xyxy pixels shared by the batch."""
    b, a = gt.batch_size, int(anchors.shape[0])
    if gt.max_gts == 0:
        return empty_result(b, a, gt)
    ious = aligned_box_iou(gt.boxes.float()[:, :, None, :], anchors.float()[None, None]).float()  # [B, G, A]
    ious = torch.where(gt.valid[..., None], ious, torch.full((), -1.0, device=ious.device))
    max_iou, argmax = ious.max(dim=1)
    gt_inds = torch.where(max_iou >= pos_iou_thr, argmax, torch.full_like(argmax, NEGATIVE))
    best_iou, best_prior = ious.max(dim=2)  # [B, G]
    bi, gi = (gt.valid & (best_iou > 0)).nonzero(as_tuple=True)
    gt_inds[bi, best_prior[bi, gi]] = gi
    pos = gt_inds >= 0
    idx = gt_inds.clamp(min=0)
    labels = torch.where(pos, gt.labels.gather(1, idx), torch.full_like(idx, -1))
    quality = torch.where(pos, ious.gather(1, idx[:, None]).squeeze(1), torch.zeros_like(max_iou))
    result = AssignResult(gt_inds, labels, quality, gt.num_gts)
    return ignore_crowd(result, _as_priors(anchors), gt)


def _as_priors(anchors: Tensor) -> Priors:
    """``Priors`` of plain boxes ``[A, 4]`` (one level, stride 1), for :func:`ignore_crowd`."""
    a = int(anchors.shape[0])
    dev = anchors.device
    return Priors(points=(anchors[:, :2] + anchors[:, 2:]) * 0.5, strides=torch.ones(a, device=dev),
                  levels=torch.zeros(a, dtype=torch.long, device=dev), num_per_level=[a],
                  grid=torch.zeros(a, 2, device=dev), anchors=anchors)
