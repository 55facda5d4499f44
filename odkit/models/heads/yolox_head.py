"""YOLOX decoupled head: per level a 1x1 stem, separate class and regression branches, and
``reg (4) + objectness (1) + class (C)`` outputs; anchor-free, one prior per grid cell."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from odkit.assign import SimOTAAssigner
from odkit.assign.base import GTBatch, Priors
from odkit.losses.yolox import yolox_loss
from odkit.models.heads.base import DenseHead, Flat, init_prior_bias
from odkit.nn import ConvBNAct, conv_or_dw
from odkit.ops.coders import YOLOCoder


class YOLOXHead(DenseHead):
    """YOLOX head over pyramid levels at ``strides`` (default 8, 16, 32).

    ``forward(feats)`` returns per level ``(cls [B, C, H, W], reg [B, 4, H, W], obj [B, 1, H, W])``.
    A prior is a grid cell ``(gx, gy)`` of its level (point at the cell centre, used by SimOTA);
    decoding (:class:`odkit.ops.YOLOCoder`, ``"yolox"``) gives ``cx = (tx + gx) * s``,
    ``w = exp(tw) * s`` in input pixels; scores are ``sigmoid(obj) * sigmoid(cls)``. Class and
    objectness biases start at ``-log((1 - p) / p)`` with ``p = prior_prob``. The ``"no_aug"`` phase
    adds the L1 loss on raw offsets (YOLOX's last epochs).
    """

    LOSS_NORMS = ("batch",)  # official YOLOX: each term over the batch\'s foreground count

    output_channels: tuple[int, ...] = ()

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int],
        feat_channels: int = 256,
        strides: Sequence[int] = (8, 16, 32),
        depthwise: bool = False,
        act: str = "silu",
        prior_prob: float = 0.01,
        iou_loss: str = "iou",
        reg_weight: float = 5.0,
        assigner: SimOTAAssigner | None = None,
    ) -> None:
        if len(in_channels) != len(strides):
            raise ValueError("YOLOXHead: in_channels and strides must have the same length")
        super().__init__(num_classes, strides, None, point_offset=0.5, clip_before_nms=False)
        self.output_channels = (self.num_classes, 4, 1)
        self.use_l1 = False
        self.iou_loss = iou_loss
        self.reg_weight = float(reg_weight)
        self.assigner = assigner if assigner is not None else SimOTAAssigner()
        self.coder = YOLOCoder("yolox")
        c = int(feat_channels)
        self.stems = nn.ModuleList(ConvBNAct(int(ch), c, 1, 1, act=act) for ch in in_channels)

        def branch() -> nn.Sequential:
            return nn.Sequential(
                conv_or_dw(c, c, 3, 1, depthwise, act), conv_or_dw(c, c, 3, 1, depthwise, act)
            )

        self.cls_convs = nn.ModuleList(branch() for _ in strides)
        self.reg_convs = nn.ModuleList(branch() for _ in strides)
        self.cls_preds = nn.ModuleList(nn.Conv2d(c, self.num_classes, 1) for _ in strides)
        self.reg_preds = nn.ModuleList(nn.Conv2d(c, 4, 1) for _ in strides)
        self.obj_preds = nn.ModuleList(nn.Conv2d(c, 1, 1) for _ in strides)
        self.init_biases(prior_prob)

    def init_biases(self, prior_prob: float = 0.01) -> None:
        """Set class and objectness biases so that initial probabilities are ``prior_prob``."""
        for conv in list(self.cls_preds) + list(self.obj_preds):
            init_prior_bias(conv, prior_prob)

    def forward(self, feats: Sequence[Tensor]) -> list[tuple[Tensor, Tensor, Tensor]]:
        outs = []
        for i, x in enumerate(feats):
            x = self.stems[i](x)
            cls_feat = self.cls_convs[i](x)
            reg_feat = self.reg_convs[i](x)
            outs.append((self.cls_preds[i](cls_feat), self.reg_preds[i](reg_feat), self.obj_preds[i](reg_feat)))
        return outs

    def enter_phase(self, phase: str) -> None:
        if phase == "no_aug":
            self.use_l1 = True

    def scores_of(self, flat: Flat) -> Tensor:
        cls, _, obj = flat
        return torch.sigmoid(obj) * torch.sigmoid(cls)

    def assign_scores_of(self, flat: Flat) -> Tensor:
        """SimOTA's cost reads ``sqrt(sigmoid(cls) * sigmoid(obj))`` (official YOLOX)."""
        return (torch.sigmoid(flat[0]) * torch.sigmoid(flat[2])).sqrt()

    def boxes_of(self, flat: Flat, priors: Priors) -> Tensor:
        return self.coder.decode(priors.grid, flat[1], priors.strides.to(flat[1].dtype))

    def loss_by_flat(self, flat: Flat, priors: Priors, gt: GTBatch, input_hw: tuple[int, int]) -> dict[str, Tensor]:
        """The YOLOX loss (:func:`odkit.losses.yolox_loss`) with SimOTA assignment."""
        cls, reg, obj = flat
        boxes = self.boxes_of(flat, priors)
        assign = self.assign(flat, priors, gt, pred_boxes=boxes)
        return yolox_loss(
            reg,
            boxes,
            obj[..., 0],
            cls,
            assign,
            gt.boxes,
            priors.grid,
            priors.strides,
            use_l1=self.use_l1,
            reg_weight=self.reg_weight,
            iou_loss=self.iou_loss,
        )
