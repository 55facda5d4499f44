"""YOLOv2 head (Redmon & Farhadi 2017): a 3x3 conv, then a 1x1 prediction of ``k (5 + C)`` channels on one
stride-32 map, anchors in grid cells (darknet's ``[region]`` layer).

Per anchor the channels are ``tx, ty, tw, th, objectness, C class logits`` (darknet's layout).
Decoding ("direct location prediction"): centre ``(cell + sigmoid(t_xy)) * stride``, size
``anchor * stride * exp(t_wh)`` (``t_wh`` clamped at 10); score ``sigmoid(obj) * softmax(cls)``.

The loss is the one whose gradients are the deltas of darknet's ``region_layer.c``
(``forward_region_layer``, with the logistic gradients of its GPU backward). Assignment is
:class:`~odkit.assign.yolov3.YOLOv3Assigner` on the single level: the anchor whose shape best
matches the gt (``bias_match``) at the cell holding the gt centre, the later gt winning a shared
prior; a non-positive prior whose predicted box has IoU ``> ignore_thr`` (0.6, the cfg's ``thresh``)
with a gt gets no objectness term. With ``s = coord_scale (2 - w h / (W H))`` and, per positive,
``t_xy = centre / stride - cell``, ``t_wh = log(gt_wh / anchor_wh)``:

- ``loss_xy    = sum_pos 0.5 s |t_xy - sigmoid(tx, ty)|^2``,
- ``loss_wh    = sum_pos 0.5 s |t_wh - (tw, th)|^2``,
- ``loss_obj   = sum_pos 0.5 object_scale (target - sigmoid(obj))^2``, target the IoU of the
  (detached) predicted box with its gt when ``rescore`` (yolov2.cfg), else 1 (yolov2-tiny.cfg),
- ``loss_noobj = sum_neg 0.5 noobject_scale sigmoid(obj)^2`` (negatives: neither positive nor ignored),
- ``loss_cls   = sum_pos class_scale CE(softmax(cls), class)`` (darknet's ``onehot - p`` delta),
- ``loss_prior = sum_{not pos} 0.5 * 0.01 (|0.5 - sigmoid(tx, ty)|^2 + |(tw, th)|^2)`` while fewer
  than ``prior_images`` (12,800) training images have been seen (the ``seen`` buffer, counted as
  darknet counts ``net.seen``: incremented by the batch before the loss; set from a darknet
  header on import),

each divided by the batch size (darknet sums over the batch and divides the learning rate by it).
Initial prediction biases as odkit's ``YOLOv3Head`` (objectness ``8 / (608 / 32)^2``, classes 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from odkit.assign.base import Assigner, GTBatch, Priors
from odkit.assign.result import NEGATIVE
from odkit.errors import ConfigError
from odkit.models.heads.base import DenseHead, Flat, cell_targets, log_wh_targets
from odkit.nn import ConvBNAct
from odkit.ops import aligned_box_iou
from odkit.ops.priors import YOLOAnchorGenerator, anchor_numbers

# yolov2.cfg / yolov2-tiny.cfg (COCO), grid cells at stride 32.
YOLOV2_ANCHORS = ((0.57273, 0.677385), (1.87446, 2.06253), (3.33843, 5.47434), (7.88282, 3.52778), (9.77052, 9.16828))
MAX_LOG_WH = 10.0


def grid_anchors(anchors: str | Sequence[Sequence[float]] | Sequence[float]) -> list[list[float]]:
    """Anchors ``[[w, h], ...]`` in grid cells, in the given order (the order of the prediction
    channels), from pairs, a flat list or ``"w,h, w,h, ..."``; ``ConfigError`` otherwise."""
    flat = anchor_numbers(anchors, " (grid cells)")
    if not flat or len(flat) % 2 or any(not (v > 0 and math.isfinite(v)) for v in flat):
        raise ConfigError(f"anchors: expected positive (w, h) pairs in grid cells, got {anchors!r}")
    return [[flat[i], flat[i + 1]] for i in range(0, len(flat), 2)]


def decode(p: Tensor, points: Tensor, strides: Tensor, anchors: Tensor) -> Tensor:
    """xyxy pixel boxes ``[..., 4]`` of predictions ``p [..., 4+]`` at priors (cell-centre ``points [A, 2]``,
    ``strides [A]``, anchor boxes ``[A, 4]``): centre ``point + (sigmoid(t_xy) - 0.5) stride``, size
    ``anchor exp(t_wh)``."""
    stride = strides[:, None].to(p.dtype)
    anchor_wh = (anchors[:, 2:] - anchors[:, :2]).to(p.dtype)
    ctr = points.to(p.dtype) + (torch.sigmoid(p[..., :2]) - 0.5) * stride
    half = anchor_wh * torch.exp(p[..., 2:4].clamp(max=MAX_LOG_WH)) * 0.5
    return torch.cat((ctr - half, ctr + half), -1)


class YOLOv2Head(DenseHead):
    """YOLOv2 region head on one neck map of ``in_channels`` at ``stride`` (32); see the module
    docstring. ``anchors``: ``(w, h)`` in grid cells, channel order. ``forward(feats)`` gives
    ``[(pred [B, k (5 + C), H, W],)]``."""

    LOSS_NORMS = ("batch",)

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 1024, stride: int = 32,
                 anchors: str | Sequence[Sequence[float]] = YOLOV2_ANCHORS, assigner: Assigner | None = None,
                 ignore_thr: float = 0.6, rescore: bool = True, object_scale: float = 5.0,
                 noobject_scale: float = 1.0, class_scale: float = 1.0, coord_scale: float = 1.0,
                 prior_images: int = 12800, prior_scale: float = 0.01) -> None:
        from odkit.assign.yolov3 import YOLOv3Assigner

        cells = grid_anchors(anchors)
        gen = YOLOAnchorGenerator([[[w * stride, h * stride] for w, h in cells]], [stride])
        super().__init__(num_classes, [stride], gen)
        self.anchors = cells
        k, c = len(cells), self.num_classes
        self.output_channels = (5 + c,)
        self.assigner = assigner if assigner is not None else YOLOv3Assigner(ignore_thr)
        self.rescore = bool(rescore)
        self.object_scale, self.noobject_scale = float(object_scale), float(noobject_scale)
        self.class_scale, self.coord_scale = float(class_scale), float(coord_scale)
        self.prior_images, self.prior_scale = int(prior_images), float(prior_scale)
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.bridge = ConvBNAct(int(in_channels), int(feat_channels), 3, act="lrelu")
        self.pred = nn.Conv2d(int(feat_channels), k * (5 + c), 1)
        nn.init.normal_(self.pred.weight, std=0.01)
        bias = self.pred.bias.data.view(k, 5 + c)
        bias.zero_()
        bias[:, 4] = -math.log((608.0 / stride) ** 2 / 8.0 - 1.0)

    def forward(self, feats: Sequence[Tensor]) -> list[tuple[Tensor]]:
        if len(feats) != 1:
            raise ConfigError(f"YOLOv2Head: expects one feature map, got {len(feats)}")
        return [(self.pred(self.bridge(feats[0])),)]

    def scores_of(self, flat: Flat) -> Tensor:
        p = flat[0]
        return torch.sigmoid(p[..., 4:5]) * torch.softmax(p[..., 5:], -1)

    def boxes_of(self, flat: Flat, priors: Priors) -> Tensor:
        return decode(flat[0], priors.points, priors.strides, priors.anchors)

    def loss_by_flat(self, flat: Flat, priors: Priors, gt: GTBatch, input_hw: tuple[int, int]) -> dict[str, Tensor]:
        pred = flat[0]
        batch = pred.shape[0]
        if self.training:
            self.seen += batch
        assign = self.assign(flat, priors, gt)
        b_idx, a_idx, matched, stride, t_xy = cell_targets(assign, gt, priors)
        pos = assign.gt_inds >= 0
        xy, wh = torch.sigmoid(pred[..., :2]), pred[..., 2:4]
        obj = torch.sigmoid(pred[..., 4])
        # positives: box, objectness (rescored), class
        gt_wh, t_wh = log_wh_targets(matched, priors, a_idx)
        s = self.coord_scale * (2.0 - gt_wh.prod(1, keepdim=True) / float(input_hw[0] * input_hw[1]))
        loss_xy = (0.5 * s * (t_xy - xy[b_idx, a_idx]) ** 2).sum()
        loss_wh = (0.5 * s * (t_wh - wh[b_idx, a_idx]) ** 2).sum()
        if self.rescore:
            with torch.no_grad():
                boxes = decode(pred[b_idx, a_idx].detach(), priors.points[a_idx], priors.strides[a_idx],
                               priors.anchors[a_idx])
                target = aligned_box_iou(boxes, matched).to(obj.dtype)
        else:
            target = torch.ones_like(obj[b_idx, a_idx])
        loss_obj = (0.5 * self.object_scale * (target - obj[b_idx, a_idx]) ** 2).sum()
        loss_noobj = (0.5 * self.noobject_scale * obj[assign.gt_inds == NEGATIVE] ** 2).sum()
        loss_cls = self.class_scale * F.cross_entropy(pred[b_idx, a_idx][:, 5:], assign.labels[b_idx, a_idx],
                                                      reduction="sum")
        terms = {"loss_xy": loss_xy, "loss_wh": loss_wh, "loss_obj": loss_obj, "loss_noobj": loss_noobj,
                 "loss_cls": loss_cls}
        if int(self.seen) < self.prior_images:
            rest = ~pos
            terms["loss_prior"] = 0.5 * self.prior_scale * (((0.5 - xy[rest]) ** 2).sum() + (wh[rest] ** 2).sum())
        else:
            terms["loss_prior"] = pred.sum() * 0.0
        terms = {k: v / batch for k, v in terms.items()}
        return {"loss": sum(terms.values()), **terms, "num_fg": pred.new_tensor(float(b_idx.numel()))}
