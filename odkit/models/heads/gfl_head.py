"""GFL head (Li et al. 2020): joint class-quality scores (quality focal loss) and a general
distribution of each box side (distribution focal loss), ATSS assignment."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from odkit.assign.base import Assigner, GTBatch, Priors
from odkit.assign.result import IGNORE
from odkit.losses import (
    distribution_focal_loss,
    distribution_to_distance,
    iou_loss,
    quality_focal_loss,
    reduce_num_pos,
)
from odkit.models.heads.atss_head import square_anchors
from odkit.models.heads.base import DenseHead, Flat, init_prior_bias, positives
from odkit.models.heads.common import Scale, conv_tower, init_normal
from odkit.ops.boxes import aligned_box_iou
from odkit.ops.coders import DistanceCoder
from odkit.ops.priors import AnchorGenerator


class GFLHead(DenseHead):
    """GFL head.

    ``forward(feats)`` gives per level ``(cls [B, C, H, W], dist [B, 4 (reg_max + 1), H, W])``. A box
    side is the expectation of its distribution over ``0..reg_max`` (the integral), times the stride,
    measured from the prior point (the centre of its square ATSS anchor). Scores are
    ``sigmoid(cls)`` (class and localisation quality in one). Loss (MMDetection's GFL): QFL against
    the IoU of the decoded box with its gt / positives; GIoU (weight 2) and DFL (weight 0.25), both
    weighted by the detached best class score and divided by the sum of those weights.
    """

    LOSS_NORMS = ("batch",)  # MMDetection normalises by the batch (centerness / score weighted)

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        feat_channels: int = 256,
        stacked_convs: int = 4,
        norm: str | None = "gn",
        depthwise: bool = False,
        reg_max: int = 16,
        prior_generator: AnchorGenerator | None = None,
        assigner: Assigner | None = None,
        coder: DistanceCoder | None = None,
        box_weight: float = 2.0,
        dfl_weight: float = 0.25,
        prior_prob: float = 0.01,
    ) -> None:
        from odkit.assign import ATSSAssigner

        super().__init__(num_classes, strides, prior_generator or square_anchors(strides))
        if self.num_anchors != 1:
            raise ValueError("GFLHead: one anchor per location is expected")
        self.reg_max = int(reg_max)
        self.output_channels = (self.num_classes, 4 * (self.reg_max + 1))
        self.assigner = assigner if assigner is not None else ATSSAssigner(9)
        self.coder = coder or DistanceCoder(max_dis=float(self.reg_max))
        self.box_weight, self.dfl_weight = float(box_weight), float(dfl_weight)
        self.cls_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm, depthwise)
        self.reg_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm, depthwise)
        self.cls_logits = nn.Conv2d(feat_channels, self.num_classes, 3, padding=1)
        self.bbox_reg = nn.Conv2d(feat_channels, 4 * (self.reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        init_normal(self)
        init_prior_bias(self.cls_logits, prior_prob)

    def forward(self, feats: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        return [(self.cls_logits(self.cls_convs(x)), self.scales[i](self.bbox_reg(self.reg_convs(x))))
                for i, x in enumerate(feats)]

    def scores_of(self, flat: Flat) -> Tensor:
        return torch.sigmoid(flat[0])

    def boxes_of(self, flat: Flat, priors: Priors) -> Tensor:
        d = distribution_to_distance(flat[1], self.reg_max)
        return self.coder.decode(priors.points.to(d.dtype), d, priors.strides.to(d.dtype))

    def loss_by_flat(self, flat: Flat, priors: Priors, gt: GTBatch, input_hw: tuple[int, int]) -> dict[str, Tensor]:
        cls, dist = flat
        assign = self.assign(flat, priors, gt)
        pos = assign.gt_inds >= 0
        valid = assign.gt_inds != IGNORE
        b_idx, a_idx, num_pos = positives(assign)
        pri = priors.take(a_idx)
        matched = gt.matched_boxes(assign)[b_idx, a_idx]
        pos_dist = dist[b_idx, a_idx]
        boxes = self.boxes_of((cls[b_idx, a_idx], pos_dist), pri)
        quality = torch.zeros(cls.shape[:2], dtype=cls.dtype, device=cls.device)
        quality[b_idx, a_idx] = aligned_box_iou(boxes.detach(), matched).clamp(min=0)
        labels = torch.where(pos, assign.labels, torch.full_like(assign.labels, -1))
        loss_cls = quality_focal_loss(cls[valid], labels[valid], quality[valid], reduction="sum") / num_pos
        weight = torch.sigmoid(cls[b_idx, a_idx].detach()).max(dim=1).values
        denom = reduce_num_pos(weight.sum()) if weight.numel() else num_pos
        loss_box = self.box_weight * (iou_loss(boxes, matched, "giou") * weight).sum() / denom
        target = self.coder.encode(pri.points, matched, pri.strides)  # [P, 4] in strides, clamped
        dfl = distribution_focal_loss(pos_dist.reshape(-1, self.reg_max + 1), target.reshape(-1))
        loss_dfl = self.dfl_weight * (dfl * weight.repeat_interleave(4)).sum() / (4.0 * denom)
        return {"loss": loss_cls + loss_box + loss_dfl, "loss_cls": loss_cls, "loss_box": loss_box,
                "loss_dfl": loss_dfl, "num_fg": pos.sum().detach().float()}
