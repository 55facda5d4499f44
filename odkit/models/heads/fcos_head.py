"""FCOS head (Tian et al. 2019): anchor-free points, ltrb distances, centerness."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from odkit.assign.base import Assigner, GTBatch, Priors
from odkit.assign.registry import fcos_ranges
from odkit.losses import centerness_loss, centerness_targets, iou_loss
from odkit.models.heads.base import DenseHead, Flat, focal_class_loss, init_prior_bias, positives
from odkit.models.heads.common import Scale, conv_tower, init_normal
from odkit.ops.coders import DistanceCoder
from odkit.ops.priors import AnchorGenerator


class FCOSHead(DenseHead):
    """FCOS head.

    ``forward(feats)`` gives per level ``(cls [B, C, H, W], ltrb [B, 4, H, W], ctr [B, 1, H, W])``;
    ``ltrb = relu(conv(x)) [* Scale]`` are distances from the prior point in units of the prior's size
    (the anchor side when an anchor generator is given, as torchvision's FCOS; else the stride), so a
    box is ``(x - l s, y - t s, x + r s, y + b s)``. Scores are ``sqrt(sigmoid(cls) * sigmoid(ctr))``.
    Loss: sigmoid focal (all priors), GIoU on decoded boxes and centerness BCE (positives), each divided
    by the number of positives (``loss_norm``: of the batch, or per image). The centerness target
    is computed from the prior point and its matched gt (as torchvision), so any assigner can be
    swapped in. Assignment: ``assigner`` (default :class:`~odkit.assign.FCOSAssigner`
    with centre sampling, radius 1.5 strides).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        feat_channels: int = 256,
        stacked_convs: int = 4,
        norm: str | None = "gn",
        depthwise: bool = False,
        prior_generator: AnchorGenerator | None = None,
        assigner: Assigner | None = None,
        coder: DistanceCoder | None = None,
        learn_scale: bool = False,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        prior_prob: float = 0.01,
        point_offset: float = 0.5,
        stride_from_input: bool = False,
        loss_norm: str = "batch",
    ) -> None:
        from odkit.assign import FCOSAssigner

        super().__init__(num_classes, strides, prior_generator, point_offset, stride_from_input, loss_norm=loss_norm)
        self.output_channels = (self.num_classes, 4, 1)
        self.assigner = assigner if assigner is not None else FCOSAssigner(fcos_ranges(len(self.strides)))
        self.coder = coder or DistanceCoder()
        self.focal_alpha, self.focal_gamma = float(focal_alpha), float(focal_gamma)
        self.cls_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm, depthwise)
        self.reg_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm, depthwise)
        self.cls_logits = nn.Conv2d(feat_channels, self.num_classes, 3, padding=1)
        self.bbox_reg = nn.Conv2d(feat_channels, 4, 3, padding=1)
        self.bbox_ctrness = nn.Conv2d(feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides) if learn_scale else None
        init_normal(self)
        init_prior_bias(self.cls_logits, prior_prob)

    def forward(self, feats: Sequence[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
        outs = []
        for i, x in enumerate(feats):
            r = self.reg_convs(x)
            d = self.bbox_reg(r)
            if self.scales is not None:
                d = self.scales[i](d)
            outs.append((self.cls_logits(self.cls_convs(x)), F.relu(d), self.bbox_ctrness(r)))
        return outs

    def prior_size(self, priors: Priors) -> Tensor:
        """``[..., 4]`` multipliers of ``(l, t, r, b)``: anchor width/height, or the stride."""
        if priors.anchors is not None:
            w = priors.anchors[..., 2] - priors.anchors[..., 0]
            h = priors.anchors[..., 3] - priors.anchors[..., 1]
            return torch.stack((w, h, w, h), -1)
        return priors.strides[..., None].expand(*priors.strides.shape, 4)

    def scores_of(self, flat: Flat) -> Tensor:
        return torch.sqrt(torch.sigmoid(flat[0]) * torch.sigmoid(flat[2]))

    def boxes_of(self, flat: Flat, priors: Priors) -> Tensor:
        d = flat[1] * self.prior_size(priors).to(flat[1].dtype)
        return self.coder.decode(priors.points.to(d.dtype), d)

    def loss_by_flat(self, flat: Flat, priors: Priors, gt: GTBatch, input_hw: tuple[int, int]) -> dict[str, Tensor]:
        cls, ltrb, ctr = flat
        assign = self.assign(flat, priors, gt)
        b_idx, a_idx, _ = positives(assign)
        norm = self.loss_normalizer(assign)
        loss_cls = focal_class_loss(cls, assign, norm, self.focal_alpha, self.focal_gamma)
        pri = priors.take(a_idx)
        boxes = self.boxes_of((cls[b_idx, a_idx], ltrb[b_idx, a_idx], ctr[b_idx, a_idx]), pri)
        matched = gt.matched_boxes(assign)[b_idx, a_idx]
        loss_box = norm(iou_loss(boxes, matched, "giou"), b_idx)
        ctr_t = centerness_targets(DistanceCoder().encode(pri.points.to(matched.dtype), matched))
        loss_ctr = norm(centerness_loss(ctr[b_idx, a_idx, 0], ctr_t, reduction="none"), b_idx)
        return {"loss": loss_cls + loss_box + loss_ctr, "loss_cls": loss_cls, "loss_box": loss_box,
                "loss_ctr": loss_ctr, "num_fg": cls.new_tensor(float(b_idx.numel()))}
