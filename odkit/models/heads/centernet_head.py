"""CenterNet head (Zhou et al. 2019, "Objects as Points"): class heatmaps, sub-cell offsets and sizes
on one stride-4 map; no anchors, no IoU assignment, no NMS.

Three branches (MMDetection's ``CenterNetHead``): ``heatmap_head``, ``wh_head``, ``offset_head``, each
a 3x3 conv + ReLU and a 1x1 conv (``C``, 2, 2 outputs). Targets: :mod:`odkit.assign.heatmap`
(Gaussians with CenterNet's radius, min overlap 0.7). Loss: the penalty-reduced focal loss (alpha 2,
beta 4) on the heatmaps, plus the L1 losses of the size (weight 0.1) and the offset (weight 1) at the
objects' centre cells, each averaged over the objects' coordinates (CenterNet's ``RegL1Loss``).
Decoding: sigmoid heatmaps, 3 x 3 max-pool peaks, top-``k`` over classes and cells
(:func:`odkit.ops.peaks.heatmap_peaks`), boxes ``(x + ox -/+ w / 2, y + oy -/+ h / 2) * stride``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from odkit.assign.heatmap import center_targets
from odkit.losses.heatmap import penalty_reduced_focal_loss
from odkit.ops.peaks import heatmap_peaks


def _branch(cin: int, feat: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, feat, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(feat, cout, 1))


class CenterNetHead(nn.Module):
    """CenterNet's head (see the module docstring); implements ``DetectorHead``.

    Args:
        num_classes: object classes ``C``.
        in_channels: channels of the neck's one map.
        feat_channels: width of each branch's 3x3 conv (MMDetection: 64).
        stride: the map's stride in input pixels (4).
        min_overlap: the Gaussian radius' IoU (CenterNet: 0.7).
        wh_weight, offset_weight: loss weights (the paper's 0.1 and 1).
        topk: peaks kept by :meth:`predict_raw` (CenterNet's K = 100).
    """

    background_slot = False
    half_export: str | None = None

    def __init__(self, num_classes: int, in_channels: int = 64, feat_channels: int = 64, stride: int = 4,
                 min_overlap: float = 0.7, hm_weight: float = 1.0, wh_weight: float = 0.1,
                 offset_weight: float = 1.0, topk: int = 100, prior_prob: float = 0.1) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.stride = int(stride)
        self.strides = [self.stride]
        self.min_overlap = float(min_overlap)
        self.hm_weight, self.wh_weight, self.offset_weight = float(hm_weight), float(wh_weight), float(offset_weight)
        self.topk = int(topk)
        self.heatmap_head = _branch(in_channels, feat_channels, self.num_classes)
        self.wh_head = _branch(in_channels, feat_channels, 2)
        self.offset_head = _branch(in_channels, feat_channels, 2)
        for branch in (self.wh_head, self.offset_head):
            for m in branch.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=0.001)
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.heatmap_head[-1].bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """``(heatmap logits [B, C, H, W], wh [B, 2, H, W], offset [B, 2, H, W])`` of the one map."""
        x = feats[0]
        return self.heatmap_head(x), self.wh_head(x), self.offset_head(x)

    def enter_phase(self, phase: str) -> None:
        """No phase-dependent behaviour."""

    def loss(self, feats: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]],
             input_hw: tuple[int, int]) -> dict[str, Tensor]:
        """``loss = hm_weight * focal + wh_weight * L1(wh) + offset_weight * L1(offset)``."""
        hm, wh, off = (t.float() for t in self(feats))
        t = center_targets(targets, self.num_classes, (hm.shape[-2], hm.shape[-1]), self.stride, self.min_overlap,
                           hm.device)
        loss_hm = penalty_reduced_focal_loss(hm, t.heatmap)
        n = t.b.numel()
        pred_wh = wh[t.b, :, t.y, t.x]
        pred_off = off[t.b, :, t.y, t.x]
        loss_wh = (pred_wh - t.wh).abs().sum() / (2 * n + 1e-4)
        loss_off = (pred_off - t.offset).abs().sum() / (2 * n + 1e-4)
        total = self.hm_weight * loss_hm + self.wh_weight * loss_wh + self.offset_weight * loss_off
        return {"loss": total, "loss_hm": loss_hm, "loss_wh": loss_wh, "loss_offset": loss_off,
                "num_fg": hm.new_tensor(float(n))}

    def decode(self, outs: tuple[Tensor, Tensor, Tensor], k: int,
               input_hw: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        """Top-``k`` peaks -> ``(boxes [B, K, 4] xyxy input pixels clipped to the input, scores [B, K],
        classes [B, K])``, in float32."""
        hm, wh, off = (t.float() for t in outs)
        scores, cls, ys, xs = heatmap_peaks(torch.sigmoid(hm), k)
        b, _, h, w = hm.shape
        pix = (ys * w + xs).unsqueeze(1).expand(-1, 2, -1)  # [B, 2, K]
        size = wh.reshape(b, 2, h * w).gather(2, pix)
        delta = off.reshape(b, 2, h * w).gather(2, pix)
        cx, cy = xs.float() + delta[:, 0], ys.float() + delta[:, 1]
        half_w, half_h = size[:, 0] / 2, size[:, 1] / 2
        s = float(self.stride)
        ih, iw = input_hw
        boxes = torch.stack(((cx - half_w) * s, (cy - half_h) * s, (cx + half_w) * s, (cy + half_h) * s), dim=-1)
        boxes = torch.stack((boxes[..., 0].clamp(0, iw), boxes[..., 1].clamp(0, ih),
                             boxes[..., 2].clamp(0, iw), boxes[..., 3].clamp(0, ih)), dim=-1)
        return boxes, scores, cls

    def predict_raw(self, feats: Sequence[Tensor], input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """The ``topk`` peaks: boxes ``[B, K, 4]`` and scores ``[B, K, C]`` (each peak's score in its class
        column, 0 elsewhere); the peak extraction is part of the exported graph."""
        boxes, scores, cls = self.decode(self(feats), self.topk, input_hw)
        onehot = torch.arange(self.num_classes, device=cls.device).view(1, 1, -1) == cls.unsqueeze(-1)
        return boxes, scores.unsqueeze(-1) * onehot.to(scores.dtype)

    def predict_candidates(self, feats: Sequence[Tensor], input_hw: tuple[int, int], conf: float,
                           pre_topk: int) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per image the ``pre_topk`` peaks (``topk`` when 0) with score ``> conf``."""
        boxes, scores, cls = self.decode(self(feats), pre_topk if pre_topk > 0 else self.topk, input_hw)
        out = []
        for i in range(boxes.shape[0]):
            keep = scores[i] > conf
            out.append((boxes[i][keep], scores[i][keep], cls[i][keep]))
        return out
