"""ATSS head (Zhang et al. 2020): one square anchor per location, adaptive training sample selection,
delta regression with per-level scales, centerness."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from odkit.assign.base import Assigner, GTBatch, Priors
from odkit.losses import centerness_loss, centerness_targets, iou_loss, reduce_num_pos
from odkit.models.heads.base import DenseHead, Flat, focal_class_loss, init_prior_bias, positives
from odkit.models.heads.common import Scale, conv_tower, init_normal
from odkit.ops.coders import DeltaXYWHCoder, DistanceCoder
from odkit.ops.priors import AnchorGenerator


def square_anchors(strides: Sequence[int], scale: float = 8.0, offset: float = 0.5) -> AnchorGenerator:
    """One square anchor of side ``scale * stride`` per location (ATSS / GFL)."""
    return AnchorGenerator([[scale * s] for s in strides], (1.0,), list(strides), offset=offset)


class ATSSHead(DenseHead):
    """ATSS head.

    ``forward(feats)`` gives per level ``(cls [B, k*C, H, W], deltas [B, k*4, H, W], ctr [B, k, H, W])``;
    boxes decode from the anchors with :class:`odkit.ops.DeltaXYWHCoder` (stds 0.1, 0.1, 0.2, 0.2);
    scores are ``sigmoid(cls) * sigmoid(ctr)``. Loss (MMDetection's ATSS): sigmoid focal over
    non-ignored priors / positives; GIoU on decoded boxes weighted by the centerness target and
    divided by the sum of those targets (weight 2); centerness BCE / positives.
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
        prior_generator: AnchorGenerator | None = None,
        assigner: Assigner | None = None,
        coder: DeltaXYWHCoder | None = None,
        box_weight: float = 2.0,
        prior_prob: float = 0.01,
    ) -> None:
        from odkit.assign import ATSSAssigner

        super().__init__(num_classes, strides, prior_generator or square_anchors(strides))
        k = self.num_anchors
        self.output_channels = (self.num_classes, 4, 1)
        self.assigner = assigner if assigner is not None else ATSSAssigner(9)
        self.coder = coder or DeltaXYWHCoder(stds=(0.1, 0.1, 0.2, 0.2), clip_both=True)
        self.box_weight = float(box_weight)
        self.cls_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm, depthwise)
        self.reg_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm, depthwise)
        self.cls_logits = nn.Conv2d(feat_channels, k * self.num_classes, 3, padding=1)
        self.bbox_reg = nn.Conv2d(feat_channels, k * 4, 3, padding=1)
        self.bbox_ctrness = nn.Conv2d(feat_channels, k, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        init_normal(self)
        init_prior_bias(self.cls_logits, prior_prob)

    def forward(self, feats: Sequence[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
        outs = []
        for i, x in enumerate(feats):
            r = self.reg_convs(x)
            outs.append((self.cls_logits(self.cls_convs(x)), self.scales[i](self.bbox_reg(r)), self.bbox_ctrness(r)))
        return outs

    def scores_of(self, flat: Flat) -> Tensor:
        return torch.sigmoid(flat[0]) * torch.sigmoid(flat[2])

    def boxes_of(self, flat: Flat, priors: Priors) -> Tensor:
        return self.coder.decode(priors.anchors, flat[1])

    def loss_by_flat(self, flat: Flat, priors: Priors, gt: GTBatch, input_hw: tuple[int, int]) -> dict[str, Tensor]:
        cls, deltas, ctr = flat
        assign = self.assign(flat, priors, gt)
        b_idx, a_idx, num_pos = positives(assign)
        loss_cls = focal_class_loss(cls, assign, num_pos, 0.25, 2.0)
        matched = gt.matched_boxes(assign)[b_idx, a_idx]
        anchors = priors.anchors[a_idx]
        ctr_t = centerness_targets(DistanceCoder().encode((anchors[:, :2] + anchors[:, 2:]) * 0.5, matched))
        boxes = self.coder.decode(anchors, deltas[b_idx, a_idx])
        denom = reduce_num_pos(ctr_t.sum()) if ctr_t.numel() else num_pos
        loss_box = self.box_weight * (iou_loss(boxes, matched, "giou") * ctr_t).sum() / denom
        loss_ctr = centerness_loss(ctr[b_idx, a_idx, 0], ctr_t, reduction="sum") / num_pos
        return {"loss": loss_cls + loss_box + loss_ctr, "loss_cls": loss_cls, "loss_box": loss_box,
                "loss_ctr": loss_ctr, "num_fg": cls.new_tensor(float(b_idx.numel()))}
