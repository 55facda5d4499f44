"""SSD head (Liu et al. 2016) with torchvision's layout: default boxes, one class conv and one box conv
per feature level, softmax classes with a background logit, max-IoU matching, hard negative mining.

Per level ``k`` (``A_k`` default boxes per location) the head has ``cls_logits[k]`` -> ``A_k * L``
channels (``L`` logits, background first) and ``bbox_reg[k]`` -> ``A_k * 4``; outputs are flattened
location-major (prior ``(y * W + x) * A_k + a``), levels concatenated, as torchvision's
``SSDScoringHead``. Boxes decode with :class:`odkit.ops.DeltaXYWHCoder` with the SSD variances
(0.1, 0.1, 0.2, 0.2), i.e. torchvision's ``BoxCoder(weights=(10, 10, 5, 5))``.

Class layout: ``num_classes`` object classes ``C`` and a background logit, ``L = C + 1`` logits,
background first (class ``c`` is logit ``c + 1``). ``background_slot`` is only the label numbering
(the protocol's): ``True`` (imported torchvision weights) numbers class ``c`` as label ``c + 1``, so
labels equal torchvision's and label 0, the background, is never predicted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from odkit.assign.base import GTBatch
from odkit.assign.result import IGNORE, NEGATIVE
from odkit.assign.ssd import ssd_match
from odkit.errors import ConfigError
from odkit.losses.ssd import ssd_loss
from odkit.ops.coders import DeltaXYWHCoder
from odkit.ops.priors import DefaultBoxes

SSD_VARIANCES = (0.1, 0.1, 0.2, 0.2)


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
        num_classes: object classes ``C`` (the background logit comes on top).
        in_channels: channels of each feature level.
        priors: the default boxes (one entry per level).
        lite: SSDLite prediction blocks (3x3 depthwise conv + norm + ReLU6, then a 1x1 conv; normal
            init std 0.03) instead of one 3x3 conv (Xavier init).
        norm: ``num_features -> module`` norm factory of the lite blocks.
        background_slot: labels number the logits, label 0 the background (torchvision's COCO labels).
        pos_iou_thr: matching IoU (:func:`odkit.assign.ssd.ssd_match`).
        neg_pos_ratio: negatives per positive kept by hard negative mining.
        box_beta: smooth L1 beta on the encoded offsets (0: L1).
    """

    half_export: str | None = None  # float16 network, decoding in float32 (predict_raw)

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
        self.num_classes = int(num_classes)
        self.background_slot = bool(background_slot)
        self.num_logits = self.num_classes + 1
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
        """``[..., L]`` label probabilities (softmax without the background; with ``background_slot``,
        label 0, the background, scores 0)."""
        p = torch.softmax(logits.float(), dim=-1)[..., 1:]
        if self.background_slot:
            p = torch.cat([torch.zeros_like(p[..., :1]), p], -1)
        return p

    def _decode(self, deltas: Tensor, anchors: Tensor, input_hw: tuple[int, int]) -> Tensor:
        return self.coder.decode(anchors, deltas, max_shape=(int(input_hw[0]), int(input_hw[1])))

    def predict_raw(self, feats: Sequence[Tensor], input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Boxes ``[B, A, 4]`` (xyxy input pixels, clipped to the input) and scores ``[B, A, L]``."""
        outs = self(feats)
        logits, deltas = self.flatten(outs)
        return self._decode(deltas, self.anchors(outs, input_hw), input_hw), self.class_probs(logits)

    def predict_candidates(self, feats: Sequence[Tensor], input_hw: tuple[int, int], conf: float,
                           pre_topk: int) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per image and class (torchvision's SSD rule): priors with score ``> conf``, the best
        ``pre_topk`` of them over all levels; ``(boxes [K, 4], scores [K], labels [K])``."""
        boxes, scores = self.predict_raw(feats, input_hw)
        first = 1 if self.background_slot else 0
        results = []
        for b in range(boxes.shape[0]):
            s = scores[b, :, first:]  # [A, C']
            k = min(int(pre_topk), s.shape[0]) if pre_topk > 0 else s.shape[0]
            vals, idx = s.masked_fill(s <= conf, -1.0).topk(k, dim=0)  # [k, C'] per class
            keep = vals > conf
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
        gt = GTBatch.from_targets(targets, self.num_classes, logits.device, batch_size=logits.shape[0],
                                  label_offset=int(self.background_slot))
        assign = ssd_match(anchors, gt, self.pos_iou_thr)
        b_idx, a_idx, num_pos = positives(assign)
        pos = assign.gt_inds >= 0
        cls_targets = torch.where(pos, assign.labels + 1, torch.zeros_like(assign.labels))  # class c: logit c + 1
        box_targets = self.coder.encode(anchors[a_idx], gt.matched_boxes(assign)[b_idx, a_idx])
        negative = (assign.gt_inds == NEGATIVE) & (assign.gt_inds != IGNORE)
        terms = ssd_loss(logits, deltas, cls_targets, box_targets, pos, negative, num_pos, self.neg_pos_ratio,
                         self.box_beta)
        return {"loss": terms["loss_cls"] + terms["loss_box"], **terms, "num_fg": logits.new_tensor(float(b_idx.numel()))}
