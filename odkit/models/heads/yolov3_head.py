"""YOLOv3 head (Redmon & Farhadi 2018): per level a 3x3 conv then a 1x1 prediction of ``k (5 + C)``
channels (``tx, ty, tw, th, objectness, C class logits`` per anchor), k-means anchors.

The loss follows darknet's ``yolo_layer.c`` (the reference implementation of the paper), written as
the loss whose gradients are darknet's deltas. With the :class:`~odkit.assign.yolov3.YOLOv3Assigner`
(one anchor per gt by shape IoU at the gt's cell; predictions with IoU > 0.7 to a gt ignored),
``s = 2 - w h / (W H)`` (gt size relative to the input) and per positive prior
``t_xy = centre / stride - cell`` and ``t_wh = log(gt_wh / anchor_wh)``:

- ``loss_xy  = sum_pos s * BCE(tx, ty logits; t_xy)`` (darknet: ``s (t - sigmoid(x))`` on the logit),
- ``loss_wh  = sum_pos s * 0.5 * ((tw - t_w)^2 + (th - t_h)^2)``,
- ``loss_obj = sum_{not ignored} BCE(objectness logit; 1 on positives, 0 on negatives)``,
- ``loss_cls = sum_pos sum_c BCE(class logit c; one-hot)``,

each divided by the batch size (darknet sums over the batch and divides the learning rate by it).
Deviation: when two gts share a prior only the later one is kept (darknet also adds the earlier one's
class as a second positive class). Decoding: centre ``(cell + sigmoid(t_xy)) * stride``, size
``anchor * exp(t_wh)`` (``t_wh`` clamped at 10 for finite boxes); scores ``sigmoid(obj) * sigmoid(cls)``.
Initial prediction biases as MMDetection's ``YOLOV3Head``: objectness probability ``8 / (608 / stride)^2``
(about 8 objects per map), class probability ``1 / C``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from odkit.assign.base import Assigner, GTBatch, Priors
from odkit.assign.result import IGNORE
from odkit.errors import ConfigError
from odkit.models.heads.base import DenseHead, Flat, cell_targets, log_wh_targets
from odkit.nn import ConvBNAct
from odkit.ops.priors import YOLOV3_ANCHORS, YOLOAnchorGenerator, parse_anchors

MAX_LOG_WH = 10.0


def _logit(p: float) -> float:
    return -math.log((1.0 - p) / p)


class YOLOv3Head(DenseHead):
    """YOLOv3 head on neck maps ``in_channels`` (finest first) at ``strides``.

    ``forward(feats)`` gives per level ``(pred [B, k (5 + C), H, W],)``, anchor-major, each anchor's
    channels ``tx, ty, tw, th, obj, cls_0..cls_{C-1}`` (darknet's layout). ``anchors``: ``(w, h)``
    pixels, sorted by area and split evenly over the levels (finest level: smallest anchors).
    See the module docstring for the loss and decoding.
    """

    LOSS_NORMS = ("batch",)  # darknet: each term over the batch size

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int],
        feat_channels: Sequence[int],
        strides: Sequence[int] = (8, 16, 32),
        anchors: str | Sequence[Sequence[float]] = YOLOV3_ANCHORS,
        assigner: Assigner | None = None,
        ignore_thr: float = 0.7,
    ) -> None:
        from odkit.assign.yolov3 import YOLOv3Assigner

        n = len(strides)
        if not (len(in_channels) == len(feat_channels) == n):
            raise ConfigError(f"YOLOv3Head: {len(in_channels)} input levels, {len(feat_channels)} feat_channels, "
                              f"{n} strides")
        pairs = parse_anchors(anchors, n)
        k = len(pairs) // n
        gen = YOLOAnchorGenerator([pairs[i * k : (i + 1) * k] for i in range(n)], strides)
        super().__init__(num_classes, strides, gen)
        self.anchors = pairs
        self.output_channels = (5 + self.num_classes,)
        self.assigner = assigner if assigner is not None else YOLOv3Assigner(ignore_thr)
        self.bridges = nn.ModuleList(ConvBNAct(c, f, 3, act="lrelu") for c, f in zip(in_channels, feat_channels))
        self.preds = nn.ModuleList(nn.Conv2d(f, k * (5 + self.num_classes), 1) for f in feat_channels)
        for conv, stride in zip(self.preds, self.strides):
            nn.init.normal_(conv.weight, std=0.01)
            bias = conv.bias.data.view(k, 5 + self.num_classes)
            bias.zero_()
            bias[:, 4] = _logit(8.0 / (608.0 / stride) ** 2)
            bias[:, 5:] = _logit(1.0 / self.num_classes) if self.num_classes > 1 else 0.0

    def forward(self, feats: Sequence[Tensor]) -> list[tuple[Tensor]]:
        return [(pred(bridge(x)),) for x, bridge, pred in zip(feats, self.bridges, self.preds)]

    def scores_of(self, flat: Flat) -> Tensor:
        p = flat[0]
        return torch.sigmoid(p[..., 4:5]) * torch.sigmoid(p[..., 5:])

    def boxes_of(self, flat: Flat, priors: Priors) -> Tensor:
        p = flat[0]
        stride = priors.strides[:, None].to(p.dtype)
        anchor_wh = (priors.anchors[:, 2:] - priors.anchors[:, :2]).to(p.dtype)
        ctr = priors.points.to(p.dtype) + (torch.sigmoid(p[..., :2]) - 0.5) * stride
        half = anchor_wh * torch.exp(p[..., 2:4].clamp(max=MAX_LOG_WH)) * 0.5
        return torch.cat((ctr - half, ctr + half), -1)

    def loss_by_flat(self, flat: Flat, priors: Priors, gt: GTBatch, input_hw: tuple[int, int]) -> dict[str, Tensor]:
        pred = flat[0]
        batch = pred.shape[0]
        assign = self.assign(flat, priors, gt)
        b_idx, a_idx, matched, stride, t_xy = cell_targets(assign, gt, priors)
        p = pred[b_idx, a_idx]
        gt_wh, t_wh = log_wh_targets(matched, priors, a_idx)
        scale = 2.0 - gt_wh.prod(1, keepdim=True) / float(input_hw[0] * input_hw[1])
        loss_xy = (scale * F.binary_cross_entropy_with_logits(p[:, :2], t_xy, reduction="none")).sum()
        loss_wh = (scale * 0.5 * (p[:, 2:4] - t_wh) ** 2).sum()
        onehot = F.one_hot(assign.labels[b_idx, a_idx], self.num_classes).to(p.dtype)
        loss_cls = F.binary_cross_entropy_with_logits(p[:, 5:], onehot, reduction="sum")
        obj_target = (assign.gt_inds >= 0).to(pred.dtype)
        valid = assign.gt_inds != IGNORE
        loss_obj = F.binary_cross_entropy_with_logits(pred[..., 4][valid], obj_target[valid], reduction="sum")
        terms = {"loss_xy": loss_xy, "loss_wh": loss_wh, "loss_obj": loss_obj, "loss_cls": loss_cls}
        terms = {k: v / batch for k, v in terms.items()}
        return {"loss": sum(terms.values()), **terms, "num_fg": pred.new_tensor(float(b_idx.numel()))}
