"""RetinaNet head (Lin et al. 2017): shared class and box towers over the pyramid, anchors, focal loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from odkit.assign.base import Assigner, GTBatch, Priors
from odkit.losses import iou_loss, l1_loss, smooth_l1_loss
from odkit.models.heads.base import DenseHead, Flat, focal_class_loss, init_prior_bias, positives
from odkit.models.heads.common import conv_tower, init_normal
from odkit.ops.coders import DeltaXYWHCoder
from odkit.ops.priors import AnchorGenerator

BOX_LOSSES = ("l1", "smooth_l1", "giou")


def retinanet_anchors(strides: Sequence[int] = (8, 16, 32, 64, 128), octave_base: float = 4.0,
                      torchvision_sizes: bool = False, offset: float = 0.0) -> AnchorGenerator:
    """RetinaNet anchors: per level sizes ``octave_base * stride * 2**(i/3)`` (i = 0, 1, 2), ratios
    0.5 / 1 / 2, nine per location. ``torchvision_sizes``: sizes truncated to integers and anchor
    corners rounded, as torchvision builds them (``32, 40, 50`` on P3)."""
    sizes = []
    for s in strides:
        base = octave_base * s
        sizes.append([float(int(base * 2 ** (i / 3))) if torchvision_sizes else base * 2 ** (i / 3) for i in range(3)])
    return AnchorGenerator(sizes, (0.5, 1.0, 2.0), list(strides), offset=offset, round_base=torchvision_sizes)


class RetinaNetHead(DenseHead):
    """RetinaNet head.

    ``forward(feats)`` gives per level ``(cls [B, k*C, H, W], deltas [B, k*4, H, W])`` with ``k``
    anchors per location. Boxes decode with :class:`odkit.ops.DeltaXYWHCoder` (weights 1) from the
    anchors; scores are ``sigmoid(cls)``. Loss: sigmoid focal loss (alpha 0.25, gamma 2) over every
    non-ignored anchor plus the box loss (``l1`` on deltas as torchvision, ``smooth_l1``, or ``giou``
    on decoded boxes) over positives, both divided by the number of positives (averaged over
    processes; ``loss_norm="image"``: per image, then averaged, as torchvision). Assignment:
    ``assigner`` (default max-IoU 0.5 / 0.4 with low-quality matches).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        feat_channels: int = 256,
        stacked_convs: int = 4,
        norm: str | None = None,
        depthwise: bool = False,
        prior_generator: AnchorGenerator | None = None,
        assigner: Assigner | None = None,
        coder: DeltaXYWHCoder | None = None,
        box_loss: str = "l1",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        prior_prob: float = 0.01,
        stride_from_input: bool = False,
        loss_norm: str = "batch",
    ) -> None:
        from odkit.assign import MaxIoUAssigner

        prior_generator = prior_generator or retinanet_anchors(strides)
        super().__init__(num_classes, strides, prior_generator, stride_from_input=stride_from_input,
                         loss_norm=loss_norm)
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"RetinaNetHead: box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        k = self.num_anchors
        self.output_channels = (self.num_classes, 4)
        self.assigner = assigner if assigner is not None else MaxIoUAssigner(0.5, 0.4, allow_low_quality_matches=True)
        self.coder = coder or DeltaXYWHCoder()
        self.box_loss = box_loss
        self.focal_alpha, self.focal_gamma = float(focal_alpha), float(focal_gamma)
        self.cls_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm, depthwise)
        self.reg_convs = conv_tower(in_channels, feat_channels, stacked_convs, norm, depthwise)
        self.cls_logits = nn.Conv2d(feat_channels, k * self.num_classes, 3, padding=1)
        self.bbox_reg = nn.Conv2d(feat_channels, k * 4, 3, padding=1)
        init_normal(self)
        init_prior_bias(self.cls_logits, prior_prob)

    def forward(self, feats: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        return [(self.cls_logits(self.cls_convs(x)), self.bbox_reg(self.reg_convs(x))) for x in feats]

    def scores_of(self, flat: Flat) -> Tensor:
        return torch.sigmoid(flat[0])

    def boxes_of(self, flat: Flat, priors: Priors) -> Tensor:
        return self.coder.decode(priors.anchors, flat[1])

    def loss_by_flat(self, flat: Flat, priors: Priors, gt: GTBatch, input_hw: tuple[int, int]) -> dict[str, Tensor]:
        cls, deltas = flat
        assign = self.assign(flat, priors, gt)
        b_idx, a_idx, _ = positives(assign)
        norm = self.loss_normalizer(assign)
        loss_cls = focal_class_loss(cls, assign, norm, self.focal_alpha, self.focal_gamma)
        matched = gt.matched_boxes(assign)[b_idx, a_idx]
        anchors = priors.anchors[a_idx]
        if self.box_loss == "giou":
            loss_box = norm(iou_loss(self.coder.decode(anchors, deltas[b_idx, a_idx]), matched, "giou"), b_idx)
        else:
            tgt = self.coder.encode(anchors, matched)
            fn = l1_loss if self.box_loss == "l1" else smooth_l1_loss
            loss_box = norm(fn(deltas[b_idx, a_idx], tgt, reduction="none"), b_idx)
        return {"loss": loss_cls + loss_box, "loss_cls": loss_cls, "loss_box": loss_box,
                "num_fg": cls.new_tensor(float(b_idx.numel()))}
