"""EfficientDet head (Tan et al. 2020) with effdet's parameter names: a class net and a box net shared
over P3-P7, EfficientDet's anchors, focal loss and Huber box loss.

Each net (``class_net``, ``box_net``) is ``repeats`` depthwise-separable 3x3 convs (``conv_rep.i``,
shared over levels) each followed by a BatchNorm of its own per level (``bn_rep.i.<level>.bn``) and
SiLU, then a separable prediction conv (``predict``). Nine anchors per location: octave scales
``2**(i/3)`` (outer) times aspect pairs ``(1, 1), (1.4, 0.7), (0.7, 1.4)`` (``w``, ``h`` factors), base
size ``4 x stride``, centred on cells. Box outputs are ``(ty, tx, th, tw)`` relative to the anchor
(no clamping, as effdet decodes). Prediction: effdet's rule, the ``pre_topk`` best (anchor, class)
logits over all levels together, then the Detector's class-wise NMS.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from odkit.assign.base import Assigner, GTBatch, Priors
from odkit.models.heads.base import DenseHead, Flat, positives
from odkit.ops.priors import AnchorGenerator

ASPECTS = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))


class EfficientDetAnchors(AnchorGenerator):
    """EfficientDet's anchors: per location, for each octave scale (outer) and aspect pair ``(ax, ay)``,
    a box ``anchor_scale * stride * 2**(octave / num_scales)`` times ``ax`` wide and ``ay`` high, centred
    on the cell (offset 0.5)."""

    def __init__(self, strides: Sequence[int] = (8, 16, 32, 64, 128), anchor_scale: float = 4.0,
                 num_scales: int = 3, aspects: Sequence[tuple[float, float]] = ASPECTS) -> None:
        self.anchor_scale, self.num_scales, self.aspects = float(anchor_scale), int(num_scales), list(aspects)
        super().__init__([[float(s)] for s in strides], (1.0,), list(strides), offset=0.5)

    def _base(self, sizes: list[float], ratios: list[float]) -> Tensor:
        stride = sizes[0]
        rows = []
        for octave in range(self.num_scales):
            base = self.anchor_scale * stride * 2 ** (octave / self.num_scales)
            for ax, ay in self.aspects:
                hw, hh = base * ax / 2.0, base * ay / 2.0
                rows.append([-hw, -hh, hw, hh])
        return torch.tensor(rows, dtype=torch.float64).float()


class HeadNet(nn.Module):
    """effdet's ``HeadNet``: shared separable convs, per-level BatchNorms, SiLU, separable predictor."""

    def __init__(self, channels: int, num_outputs: int, repeats: int, num_levels: int, padding: str,
                 redundant_bias: bool, norm_eps: float, norm_momentum: float) -> None:
        super().__init__()
        from odkit.models.necks.bifpn import SeparableConv

        self.conv_rep = nn.ModuleList(SeparableConv(channels, channels, padding, redundant_bias)
                                      for _ in range(repeats))
        self.bn_rep = nn.ModuleList(
            nn.ModuleList(nn.Sequential() for _ in range(num_levels)) for _ in range(repeats))
        for levels in self.bn_rep:
            for seq in levels:
                seq.add_module("bn", nn.BatchNorm2d(channels, eps=norm_eps, momentum=norm_momentum))
        self.act = nn.SiLU()
        self.predict = SeparableConv(channels, num_outputs, padding, True)

    def forward(self, x: Sequence[Tensor]) -> list[Tensor]:
        outs = []
        for level, t in enumerate(x):
            for conv, bns in zip(self.conv_rep, self.bn_rep):
                t = self.act(bns[level](conv(t)))
            outs.append(self.predict(t))
        return outs


def _init_head(net: HeadNet, cls_bias: float | None) -> None:
    """effdet's initialisation of a head net: variance scaling (normal, std sqrt(1 / fan_in)), zero
    biases, the class predictor's bias at ``cls_bias``."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight.shape[1] * m.weight[0][0].numel()
            nn.init.normal_(m.weight, std=math.sqrt(1.0 / max(1.0, fan_in)))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if cls_bias is not None:
        nn.init.constant_(net.predict.conv_pw.bias, cls_bias)


class EfficientDetHead(DenseHead):
    """EfficientDet's class and box nets (see the module docstring).

    ``forward(feats)`` gives per level ``(cls [B, 9 C, H, W], box [B, 9 * 4, H, W])``. Loss: sigmoid
    focal loss (alpha 0.25, gamma 1.5) summed over every non-ignored anchor plus ``box_loss_weight``
    (50) times the Huber loss (delta 0.1) of the positives' ``(ty, tx, th, tw)`` targets divided by 4,
    both divided by the batch's positives + 1 (effdet). Assignment: max-IoU 0.5 / 0.5 with each
    gt's best anchor forced (effdet's ``ArgMaxMatcher``).
    """

    def __init__(self, num_classes: int, in_channels: int, strides: Sequence[int] = (8, 16, 32, 64, 128),
                 repeats: int = 3, padding: str = "same", redundant_bias: bool = True, norm_eps: float = 1e-3,
                 norm_momentum: float = 0.01, focal_alpha: float = 0.25, focal_gamma: float = 1.5,
                 huber_delta: float = 0.1, box_loss_weight: float = 50.0, assigner: Assigner | None = None,
                 anchor_scale: float = 4.0, prior_prob: float = 0.01) -> None:
        from odkit.assign import MaxIoUAssigner

        super().__init__(num_classes, strides, EfficientDetAnchors(strides, anchor_scale))
        k = self.num_anchors
        self.output_channels = (self.num_classes, 4)
        self.assigner = assigner if assigner is not None else MaxIoUAssigner(0.5, 0.5, allow_low_quality_matches=True)
        self.focal_alpha, self.focal_gamma = float(focal_alpha), float(focal_gamma)
        self.huber_delta, self.box_loss_weight = float(huber_delta), float(box_loss_weight)
        args = (repeats, len(self.strides), padding, redundant_bias, norm_eps, norm_momentum)
        self.class_net = HeadNet(in_channels, k * self.num_classes, *args)
        self.box_net = HeadNet(in_channels, k * 4, *args)
        _init_head(self.class_net, -math.log((1 - prior_prob) / prior_prob))
        _init_head(self.box_net, None)

    def forward(self, feats: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        return list(zip(self.class_net(feats), self.box_net(feats)))

    def scores_of(self, flat: Flat) -> Tensor:
        return torch.sigmoid(flat[0])

    def boxes_of(self, flat: Flat, priors: Priors) -> Tensor:
        return decode_yx(flat[1], priors.anchors)

    def predict_candidates(self, feats: Sequence[Tensor], input_hw: tuple[int, int], conf: float,
                           pre_topk: int) -> list[tuple[Tensor, Tensor, Tensor]]:
        """effdet's selection: per image the ``pre_topk`` best (anchor, class) logits over all levels,
        those with score ``> conf`` decoded and clipped to the input."""
        outs = self(feats)
        flat = tuple(t.float() for t in self.flatten(outs))
        priors = self.get_priors(self.level_sizes(outs), input_hw, flat[0].device)
        cls, box = flat
        b, a, c = cls.shape
        k = min(int(pre_topk), a * c) if pre_topk > 0 else a * c
        top, idx = cls.reshape(b, -1).topk(k, dim=1)
        h, w = input_hw
        results = []
        for i in range(b):
            scores = torch.sigmoid(top[i])
            keep = scores > conf
            sel, scores = idx[i][keep], scores[keep]
            anchor = torch.div(sel, c, rounding_mode="floor")
            boxes = decode_yx(box[i, anchor], priors.anchors[anchor])
            boxes = torch.stack((boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                                 boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)), dim=1)
            results.append((boxes, scores, sel % c))
        return results

    def loss_by_flat(self, flat: Flat, priors: Priors, gt: GTBatch, input_hw: tuple[int, int]) -> dict[str, Tensor]:
        from odkit.assign.result import IGNORE
        from odkit.losses import sigmoid_focal_loss

        cls, box = flat
        assign = self.assign(flat, priors, gt)
        b_idx, a_idx, _ = positives(assign)
        norm = b_idx.numel() + 1.0  # effdet: positives + 1, not averaged over processes
        target = torch.zeros_like(cls)
        target[b_idx, a_idx, assign.labels[b_idx, a_idx]] = 1.0
        valid = assign.gt_inds != IGNORE
        loss_cls = sigmoid_focal_loss(cls[valid], target[valid], self.focal_alpha, self.focal_gamma, "sum") / norm
        tgt = encode_yx(gt.matched_boxes(assign)[b_idx, a_idx], priors.anchors[a_idx])
        huber = F.huber_loss(box[b_idx, a_idx], tgt, reduction="sum", delta=self.huber_delta)
        loss_box = huber / (4.0 * norm)
        return {"loss": loss_cls + self.box_loss_weight * loss_box, "loss_cls": loss_cls, "loss_box": loss_box,
                "num_fg": cls.new_tensor(float(b_idx.numel()))}


def decode_yx(codes: Tensor, anchors: Tensor) -> Tensor:
    """effdet's ``decode_box_outputs``: ``(ty, tx, th, tw)`` codes ``[..., 4]`` on xyxy anchors -> xyxy
    boxes (input pixels), no clamping of ``th`` / ``tw``."""
    yc_a = (anchors[..., 1] + anchors[..., 3]) / 2
    xc_a = (anchors[..., 0] + anchors[..., 2]) / 2
    ha = anchors[..., 3] - anchors[..., 1]
    wa = anchors[..., 2] - anchors[..., 0]
    ty, tx, th, tw = codes.unbind(-1)
    w = torch.exp(tw) * wa
    h = torch.exp(th) * ha
    yc = ty * ha + yc_a
    xc = tx * wa + xc_a
    return torch.stack([xc - w / 2.0, yc - h / 2.0, xc + w / 2.0, yc + h / 2.0], dim=-1)


def encode_yx(boxes: Tensor, anchors: Tensor, eps: float = 1e-8) -> Tensor:
    """The ``(ty, tx, th, tw)`` targets of xyxy ``boxes`` on xyxy ``anchors`` (effdet's Faster R-CNN coder
    without scale factors; sides floored at ``eps``)."""
    ha = (anchors[..., 3] - anchors[..., 1]).clamp(min=eps)
    wa = (anchors[..., 2] - anchors[..., 0]).clamp(min=eps)
    h = (boxes[..., 3] - boxes[..., 1]).clamp(min=eps)
    w = (boxes[..., 2] - boxes[..., 0]).clamp(min=eps)
    ty = ((boxes[..., 1] + boxes[..., 3]) / 2 - (anchors[..., 1] + anchors[..., 3]) / 2) / ha
    tx = ((boxes[..., 0] + boxes[..., 2]) / 2 - (anchors[..., 0] + anchors[..., 2]) / 2) / wa
    return torch.stack([ty, tx, torch.log(h / ha), torch.log(w / wa)], dim=-1)
