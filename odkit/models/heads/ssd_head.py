"""SSD head (Liu et al. 2016) with torchvision's layout: default boxes, one class conv and one box conv
per feature level, softmax classes with a background logit, max-IoU matching, hard negative mining.

Per level ``k`` (``A_k`` default boxes per location) the head has ``cls_logits[k]`` -> ``A_k * L``
channels (``L`` logits, background first) and ``bbox_reg[k]`` -> ``A_k * 4``; outputs are flattened
location-major (prior ``(y * W + x) * A_k + a``), levels concatenated, as torchvision's
``SSDScoringHead``. Boxes decode with :class:`odkit.ops.DeltaXYWHCoder` with the SSD variances
(0.1, 0.1, 0.2, 0.2), i.e. torchvision's ``BoxCoder(weights=(10, 10, 5, 5))``.

Class layout: ``num_classes`` object classes and a separate background logit (``L = C + 1``, class
``c`` is logit ``c + 1``); or, with ``background_slot=True``, torchvision's COCO layout where class 0
*is* the background (``L = C``, class 0 never predicted; imported torchvision weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from odkit.assign.base import GTBatch, Priors, empty_result, ignore_crowd
from odkit.assign.result import IGNORE, NEGATIVE, AssignResult
from odkit.errors import ConfigError
from odkit.losses.ssd import ssd_loss
from odkit.ops import aligned_box_iou
from odkit.ops.coders import DeltaXYWHCoder

SSD_VARIANCES = (0.1, 0.1, 0.2, 0.2)


class DefaultBoxes:
    """SSD default boxes, torchvision's ``DefaultBoxGenerator`` rule.

    Level ``k`` of an ``H x W`` input has scale ``s_k`` (``scales``, or ``min_ratio`` .. ``max_ratio``
    evenly over the levels followed by 1.0): per location a square ``s_k``, a square
    ``sqrt(s_k s_{k+1})`` and, per aspect ratio ``a``, ``(s_k sqrt(a), s_k / sqrt(a))`` and its
    transpose (widths/heights relative to the input, clipped to 1 when ``clip``). Centres are at
    ``(j + 0.5) * step_k`` pixels (``steps``), or ``(j + 0.5) / f_k`` of the input without steps.
    Boxes are xyxy input pixels (not clipped to the image), location-major within a level.
    """

    def __init__(
        self,
        aspect_ratios: Sequence[Sequence[float]],
        scales: Sequence[float] | None = None,
        min_ratio: float = 0.15,
        max_ratio: float = 0.9,
        steps: Sequence[float] | None = None,
        clip: bool = True,
    ) -> None:
        n = len(aspect_ratios)
        if scales is None:
            scales = [min_ratio + (max_ratio - min_ratio) * k / (n - 1.0) for k in range(n)] + [1.0] if n > 1 \
                else [min_ratio, max_ratio]
        if len(scales) != n + 1:
            raise ConfigError(f"DefaultBoxes: need {n + 1} scales for {n} levels, got {len(scales)}")
        if steps is not None and len(steps) != n:
            raise ConfigError(f"DefaultBoxes: need {n} steps, got {len(steps)}")
        self.aspect_ratios = [list(a) for a in aspect_ratios]
        self.scales = [float(s) for s in scales]
        self.steps = None if steps is None else [float(s) for s in steps]
        self.clip = bool(clip)
        self.wh = []
        for k in range(n):
            s, s_next = self.scales[k], self.scales[k + 1]
            pairs = [(s, s), (math.sqrt(s * s_next),) * 2]
            for a in self.aspect_ratios[k]:
                r = math.sqrt(a)
                pairs += [(s * r, s / r), (s / r, s * r)]
            wh = np.array(pairs, dtype=np.float64)
            self.wh.append(wh.clip(0, 1) if self.clip else wh)

    @property
    def num_levels(self) -> int:
        return len(self.aspect_ratios)

    def num_anchors_per_location(self) -> list[int]:
        return [2 + 2 * len(a) for a in self.aspect_ratios]

    def __call__(self, level_sizes: Sequence[tuple[int, int]], input_hw: tuple[int, int],
                 device: torch.device | str | None = None) -> Tensor:
        """Default boxes ``[A, 4]`` xyxy input pixels (float32) for feature maps of ``level_sizes``."""
        if len(level_sizes) != self.num_levels:
            raise ConfigError(f"DefaultBoxes: {len(level_sizes)} feature maps for {self.num_levels} levels")
        h_in, w_in = float(input_hw[0]), float(input_hw[1])
        f32 = np.float32  # torchvision's float32 operations, in its order: the same bits (ties break alike)
        size = np.array([w_in, h_in], dtype=f32)
        out = []
        for k, (fh, fw) in enumerate(level_sizes):  # numpy: a constant when traced for export
            fx, fy = (w_in / self.steps[k], h_in / self.steps[k]) if self.steps else (float(fw), float(fh))
            xx, yy = np.meshgrid((np.arange(fw, dtype=f32) + f32(0.5)) / f32(fx),
                                 (np.arange(fh, dtype=f32) + f32(0.5)) / f32(fy))
            ctr = np.stack([xx.reshape(-1), yy.reshape(-1)], 1)[:, None, :]  # [HW, 1, 2]
            wh = self.wh[k].astype(f32)[None]  # [1, A_k, 2]
            out.append(np.concatenate([(ctr - f32(0.5) * wh) * size, (ctr + f32(0.5) * wh) * size], -1).reshape(-1, 4))
        return torch.from_numpy(np.concatenate(out)).to(device)


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
    a = int(anchors.shape[0])
    dev = anchors.device
    return Priors(points=(anchors[:, :2] + anchors[:, 2:]) * 0.5, strides=torch.ones(a, device=dev),
                  levels=torch.zeros(a, dtype=torch.long, device=dev), num_per_level=[a],
                  grid=torch.zeros(a, 2, device=dev), anchors=anchors)


def _xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _normal(module: nn.Module, std: float = 0.03) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SSDHead(nn.Module):
    """SSD / SSDLite head; see the module docstring.

    Args:
        num_classes: object classes ``C`` (with ``background_slot``: class slots including background 0).
        in_channels: channels of each feature level.
        priors: the default boxes (one entry per level).
        lite: SSDLite prediction blocks (3x3 depthwise conv + norm + ReLU6, then a 1x1 conv; normal
            init std 0.03) instead of one 3x3 conv (Xavier init).
        norm: ``num_features -> module`` norm factory of the lite blocks.
        background_slot: class 0 is the background logit (torchvision's COCO weights).
        pos_iou_thr: matching IoU (:func:`ssd_match`).
        neg_pos_ratio: negatives per positive kept by hard negative mining.
        box_beta: smooth L1 beta on the encoded offsets (0: L1).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int],
        priors: DefaultBoxes,
        lite: bool = False,
        norm: Any = None,
        background_slot: bool = False,
        pos_iou_thr: float = 0.5,
        neg_pos_ratio: float = 3.0,
        box_beta: float = 1.0,
    ) -> None:
        super().__init__()
        if len(in_channels) != priors.num_levels:
            raise ConfigError(f"SSDHead: {len(in_channels)} feature levels but {priors.num_levels} prior levels")
        if background_slot and num_classes < 2:
            raise ConfigError("SSDHead: background_slot needs at least 2 class slots")
        self.num_classes = int(num_classes)
        self.background_slot = bool(background_slot)
        self.num_logits = self.num_classes + (0 if background_slot else 1)
        self.priors = priors
        self.pos_iou_thr, self.neg_pos_ratio, self.box_beta = float(pos_iou_thr), float(neg_pos_ratio), float(box_beta)
        self.coder = DeltaXYWHCoder(stds=SSD_VARIANCES)
        self.anchors_per_level = priors.num_anchors_per_location()
        self.cls_logits = nn.ModuleList()
        self.bbox_reg = nn.ModuleList()
        for c, k in zip(in_channels, self.anchors_per_level):
            self.cls_logits.append(self._block(c, k * self.num_logits, lite, norm))
            self.bbox_reg.append(self._block(c, k * 4, lite, norm))
        (_normal if lite else _xavier)(self)
        self._cache: dict[Any, Tensor] = {}

    @staticmethod
    def _block(c: int, out: int, lite: bool, norm: Any) -> nn.Module:
        if not lite:
            return nn.Conv2d(c, out, 3, padding=1)
        from odkit.models.backbones.mobile_common import ConvNormAct

        return nn.Sequential(ConvNormAct(c, c, 3, norm, nn.ReLU6, groups=c), nn.Conv2d(c, out, 1))

    # ------------------------------------------------------------------ outputs
    def forward(self, feats: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Per level ``(cls [B, A_k * L, H, W], deltas [B, A_k * 4, H, W])``."""
        return [(c(x), r(x)) for x, c, r in zip(feats, self.cls_logits, self.bbox_reg)]

    def flatten(self, outs: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """``(logits [B, A, L], deltas [B, A, 4])``, location-major per level, levels concatenated."""
        cls, reg = [], []
        for (c, r), k in zip(outs, self.anchors_per_level):
            b, _, h, w = c.shape
            cls.append(c.view(b, k, self.num_logits, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * k, -1))
            reg.append(r.view(b, k, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * k, 4))
        return torch.cat(cls, 1), torch.cat(reg, 1)

    def anchors(self, outs: Sequence[tuple[Tensor, Tensor]], input_hw: tuple[int, int]) -> Tensor:
        """Default boxes ``[A, 4]`` xyxy input pixels for these outputs (cached per sizes and device)."""
        sizes = tuple((int(c.shape[-2]), int(c.shape[-1])) for c, _ in outs)
        device = outs[0][0].device
        key = (sizes, tuple(int(v) for v in input_hw), str(device))
        if key not in self._cache:
            boxes = self.priors(sizes, input_hw, device)
            if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
                return boxes
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = boxes
        return self._cache[key]

    def class_probs(self, logits: Tensor) -> Tensor:
        """``[..., C]`` class probabilities (softmax without the background; a background slot scores 0)."""
        p = torch.softmax(logits.float(), dim=-1)[..., 1:]
        if self.background_slot:
            p = torch.cat([torch.zeros_like(p[..., :1]), p], -1)
        return p

    def _decode(self, deltas: Tensor, anchors: Tensor, input_hw: tuple[int, int]) -> Tensor:
        return self.coder.decode(anchors, deltas, max_shape=(int(input_hw[0]), int(input_hw[1])))

    def predict_raw(self, feats: Sequence[Tensor], input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Boxes ``[B, A, 4]`` (xyxy input pixels, clipped to the input) and scores ``[B, A, C]``."""
        outs = self(feats)
        logits, deltas = self.flatten(outs)
        return self._decode(deltas, self.anchors(outs, input_hw), input_hw), self.class_probs(logits)

    def predict_candidates(self, feats: Sequence[Tensor], input_hw: tuple[int, int], conf_thr: float,
                           pre_topk: int) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per image and class (torchvision's SSD rule): priors with score ``> conf_thr``, the best
        ``pre_topk`` of them over all levels; ``(boxes [K, 4], scores [K], labels [K])``."""
        boxes, scores = self.predict_raw(feats, input_hw)
        first = 1 if self.background_slot else 0
        results = []
        for b in range(boxes.shape[0]):
            s = scores[b, :, first:]  # [A, C']
            k = min(int(pre_topk), s.shape[0]) if pre_topk > 0 else s.shape[0]
            vals, idx = s.masked_fill(s <= conf_thr, -1.0).topk(k, dim=0)  # [k, C'] per class
            keep = vals > conf_thr
            cls = keep.nonzero(as_tuple=True)[1]
            results.append((boxes[b][idx[keep]], vals[keep], cls + first))
        return results

    # ------------------------------------------------------------------ training
    def enter_phase(self, phase: str) -> None:
        """Training phase hook (nothing changes for SSD)."""

    def loss(self, feats: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]],
             input_hw: tuple[int, int]) -> dict[str, Tensor]:
        """Softmax cross-entropy with hard negative mining + smooth L1 on offsets (``odkit.losses.ssd``)."""
        from odkit.models.heads.base import positives

        outs = self(feats)
        logits, deltas = (t.float() for t in self.flatten(outs))
        anchors = self.anchors(outs, input_hw)
        gt = GTBatch.from_targets(targets, self.num_classes, logits.device, batch_size=logits.shape[0])
        assign = ssd_match(anchors, gt, self.pos_iou_thr)
        b_idx, a_idx, num_pos = positives(assign)
        pos = assign.gt_inds >= 0
        offset = 0 if self.background_slot else 1
        cls_targets = torch.where(pos, assign.labels + offset, torch.zeros_like(assign.labels))
        box_targets = self.coder.encode(anchors[a_idx], gt.matched_boxes(assign)[b_idx, a_idx])
        negative = (assign.gt_inds == NEGATIVE) & (assign.gt_inds != IGNORE)
        terms = ssd_loss(logits, deltas, cls_targets, box_targets, pos, negative, num_pos, self.neg_pos_ratio,
                         self.box_beta)
        return {"loss": terms["loss_cls"] + terms["loss_box"], **terms, "num_fg": logits.new_tensor(float(b_idx.numel()))}
