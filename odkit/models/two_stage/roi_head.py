"""Fast R-CNN RoI head: proposals (plus gt boxes in training) -> max-IoU assignment and balanced
sampling -> multi-level RoIAlign -> box head -> class scores and per-class box deltas.

Class layout: the classifier has ``C + 1`` columns, column 0 background and column ``c + 1``
class ``c``. ``background_slot=True`` (imported torchvision weights) only numbers the labels as
torchvision does: class ``c`` is label ``c + 1``, label 0 the background, never predicted. Deltas are per column (``DeltaXYWHCoder`` with weights (10, 10, 5, 5), i.e. stds
(0.1, 0.1, 0.2, 0.2), ``dw, dh`` clamped at ``log(1000 / 16)``). Prediction (torchvision's
``RoIHeads.postprocess_detections`` up to NMS): softmax, per-class boxes clipped to the input,
background dropped, candidates with score ``> conf`` whose sides are ``>= min_size`` px.

Fast R-CNN on given boxes: :meth:`~odkit.models.two_stage.TwoStageHead.predict_candidates` and
``Detector.predict(images, proposals=[boxes, ...])`` run this head on user-supplied proposals
(e.g. selective search boxes) instead of the RPN's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from odkit.assign.base import GTBatch
from odkit.assign.max_iou import MaxIoUAssigner
from odkit.assign.result import IGNORE
from odkit.errors import ConfigError
from odkit.models.two_stage.box_head import FastRCNNPredictor, TwoMLPHead
from odkit.models.two_stage.sampler import BalancedSampler
from odkit.ops.coders import DeltaXYWHCoder
from odkit.ops.roi import fpn_levels, multiscale_roi_align

Pool = Callable[[float], Tensor]  # scale_factor -> pooled RoI features [K, C, S, S]


@dataclass
class SampledRoIs:
    """The RoIs a loss is computed on: ``rois`` ``[K, 5]`` (batch index, xyxy input px), ``labels``
    ``[K]`` classifier columns (0 background, ``c + 1`` class ``c``), ``gt_index`` ``[K]`` the matched
    gt row of the RoI's image (-1 for background), ``deltas`` ``[K, 4]`` regression targets."""

    rois: Tensor
    labels: Tensor
    gt_index: Tensor
    deltas: Tensor


class RoIHead(nn.Module):
    """Box branch of Faster R-CNN; see the module docstring.

    Args:
        num_classes: object classes ``C`` (background is extra).
        in_channels: channels of the pooled feature maps.
        strides: strides of the maps the RoIs are pooled from (consecutive powers of two).
        feature_indices: which neck outputs those maps are (default the first ``len(strides)``).
        roi_size, sampling_ratio, aligned: RoIAlign settings (7, 2, True; torchvision: aligned False).
        representation: width of the two fc layers.
        pos_iou_thr, neg_iou_thr: proposals with IoU ``>= pos`` are foreground, ``< neg`` background.
        num_samples, pos_fraction: RoIs sampled per image for the loss, foreground share.
        min_size: smallest box side kept at prediction (px).
        canonical_scale, canonical_level: the FPN level rule ``k = floor(k0 + log2(sqrt(wh) / 224))``.
        background_slot: labels number the columns, label 0 the background (see the module docstring).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        strides: Sequence[int],
        feature_indices: Sequence[int] | None = None,
        roi_size: int = 7,
        sampling_ratio: int = 2,
        aligned: bool = True,
        representation: int = 1024,
        pos_iou_thr: float = 0.5,
        neg_iou_thr: float = 0.5,
        num_samples: int = 512,
        pos_fraction: float = 0.25,
        min_size: float = 1e-2,
        canonical_scale: float = 224.0,
        canonical_level: int = 4,
        background_slot: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.background_slot = bool(background_slot)
        self.num_logits = self.num_classes + 1
        self.strides = [int(s) for s in strides]
        self.feature_indices = list(feature_indices) if feature_indices is not None else list(range(len(strides)))
        if len(self.feature_indices) != len(self.strides):
            raise ConfigError(f"RoIHead: {len(self.feature_indices)} feature_indices for {len(self.strides)} strides")
        fpn_levels(self.strides, "RoIHead")
        self.roi_size = int(roi_size)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.min_size = float(min_size)
        self.canonical = (float(canonical_scale), int(canonical_level))
        self.coder = DeltaXYWHCoder(stds=(0.1, 0.1, 0.2, 0.2), clip=math.log(1000.0 / 16))
        self.assigner = MaxIoUAssigner(pos_iou_thr, neg_iou_thr, allow_low_quality_matches=False,
                                       match_on="pred_boxes")
        self.sampler = BalancedSampler(num_samples, pos_fraction)
        self.build_layers(in_channels * self.roi_size**2, representation)

    def build_layers(self, in_features: int, representation: int) -> None:
        """The box head and predictor (subclasses build their own)."""
        self.box_head = TwoMLPHead(in_features, representation)
        self.box_predictor = FastRCNNPredictor(representation, self.num_logits)

    # ------------------------------------------------------------------ pooling

    def _maps(self, feats: Sequence[Tensor]) -> list[Tensor]:
        return [feats[i] for i in self.feature_indices]

    def pool(self, feats: Sequence[Tensor], rois: Tensor, scale_factor: float = 1.0) -> Tensor:
        """RoIAlign of ``rois`` ``[K, 5]`` (batch index, xyxy px) -> ``[K, C, S, S]``; the level comes
        from the RoI, the pooled box is enlarged by ``scale_factor``."""
        return multiscale_roi_align(self._maps(feats), rois, self.strides, self.roi_size, self.sampling_ratio,
                                    self.aligned, *self.canonical, scale_factor=scale_factor)

    def pool_batched(self, feats: Sequence[Tensor], boxes: Tensor, scale_factor: float = 1.0) -> Tensor:
        """RoIAlign of padded boxes ``[B, P, 4]`` -> ``[B * P, C, S, S]`` (fixed shapes, export-friendly)."""
        out = multiscale_roi_align(self._maps(feats), boxes, self.strides, self.roi_size, self.sampling_ratio,
                                   self.aligned, *self.canonical, scale_factor=scale_factor)
        return out.flatten(0, 1)

    # ------------------------------------------------------------------ outputs (subclass hooks)

    def forward_rois(self, pool: Pool) -> dict[str, Tensor]:
        """Raw outputs of the RoIs that ``pool(scale_factor)`` pools: ``cls`` ``[K, C + 1]`` logits,
        ``deltas`` ``[K, C + 1, 4]``."""
        cls, deltas = self.box_predictor(self.box_head(pool(1.0)))
        return {"cls": cls, "deltas": deltas.view(deltas.shape[0], self.num_logits, 4)}

    def class_probs(self, out: dict[str, Tensor]) -> Tensor:
        """``[K, num_logits]`` class probabilities (background in column 0)."""
        return F.softmax(out["cls"], -1)

    def loss_terms(self, out: dict[str, Tensor], labels: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Cross-entropy over the sampled RoIs (``labels`` 0 = background) and smooth L1 (beta 1/9)
        on the foreground RoIs' class deltas, summed and divided by the sampled count (torchvision)."""
        return {"loss_cls": F.cross_entropy(out["cls"], labels),
                "loss_box": box_loss(out["deltas"], labels, targets, beta=1.0 / 9)}

    # ------------------------------------------------------------------ contract

    def decode(self, out: dict[str, Tensor], proposals: Tensor, input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Per-label boxes ``[K, L, 4]`` (xyxy input px, clipped) and scores ``[K, L]`` of
        ``proposals`` ``[K, 4]`` (``L`` = num_labels; with ``background_slot`` label 0 scores 0)."""
        h, w = input_hw
        first = 0 if self.background_slot else 1
        bx = self.coder.decode(proposals[:, None, :].float(), out["deltas"][:, first:].float())
        bx = torch.stack((bx[..., 0].clamp(0, w), bx[..., 1].clamp(0, h),
                          bx[..., 2].clamp(0, w), bx[..., 3].clamp(0, h)), dim=-1)
        probs = self.class_probs(out)[:, first:].float()
        if self.background_slot:  # class slot 0 is the background: never a detection
            probs = torch.cat((torch.zeros_like(probs[:, :1]), probs[:, 1:]), 1)
        return bx, probs

    def box_predictor_dtype(self) -> torch.dtype:
        """The dtype of the head's parameters (what its input features are cast to)."""
        return next(self.parameters()).dtype

    def big_enough(self, boxes: Tensor) -> Tensor:
        """Whether both sides of xyxy ``boxes`` are ``>= min_size``."""
        return ((boxes[..., 2] - boxes[..., 0]) >= self.min_size) & ((boxes[..., 3] - boxes[..., 1]) >= self.min_size)

    def predict_rois(self, feats: Sequence[Tensor], rois: Tensor, input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Boxes ``[K, C, 4]`` and scores ``[K, C]`` of ``rois`` ``[K, 5]``."""
        out = self.forward_rois(lambda f: self.pool(feats, rois, f))
        return self.decode(out, rois[:, 1:], input_hw)

    def predict_batched(self, feats: Sequence[Tensor], proposals: Tensor, valid: Tensor,
                        input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Boxes ``[B, P, C, 4]`` and scores ``[B, P, C]`` of padded proposals ``[B, P, 4]``; invalid
        proposals and boxes under ``min_size`` score 0 (fixed shapes, for export)."""
        b, p = proposals.shape[:2]
        out = self.forward_rois(lambda f: self.pool_batched(feats, proposals, f))
        boxes, scores = self.decode(out, proposals.reshape(-1, 4), input_hw)
        boxes = boxes.view(b, p, -1, 4)
        keep = self.big_enough(boxes) & valid[..., None]
        return boxes, scores.view(b, p, -1) * keep.to(scores.dtype)

    def sample(self, proposals: Tensor, valid: Tensor, gt: GTBatch) -> SampledRoIs:
        """Assign ``proposals`` ``[B, P, 4]`` (``valid`` rows) plus the gt boxes to the gts and draw
        the balanced sample of RoIs the loss is computed on."""
        props = torch.cat((proposals.detach().float(), gt.boxes), 1)
        ok = torch.cat((valid, gt.valid), 1)
        assign = self.assigner.assign(None, gt, pred_boxes=props)  # type: ignore[arg-type]
        gt_inds = torch.where(ok, assign.gt_inds, torch.full_like(assign.gt_inds, IGNORE))
        pos, neg = self.sampler.sample(gt_inds, ok)
        b_idx, p_idx = (pos | neg).nonzero(as_tuple=True)
        boxes = props[b_idx, p_idx]
        fg = pos[b_idx, p_idx]
        labels = torch.where(fg, assign.labels[b_idx, p_idx] + 1, torch.zeros_like(p_idx))  # class c: column c + 1
        matched_gt = torch.where(fg, gt_inds[b_idx, p_idx], torch.full_like(p_idx, -1))
        matched = gt.boxes[b_idx, matched_gt.clamp(min=0)] if gt.max_gts else boxes
        rois = torch.cat((b_idx[:, None].to(boxes.dtype), boxes), 1)
        return SampledRoIs(rois, labels, matched_gt, self.coder.encode(boxes, matched))

    def loss(self, feats: Sequence[Tensor], proposals: Tensor, valid: Tensor, gt: GTBatch,
             targets: Sequence[Mapping[str, Tensor]] | None = None) -> dict[str, Tensor]:
        """Loss of the sampled RoIs among ``proposals`` ``[B, P, 4]`` (``valid`` rows) plus the gt boxes
        (``targets``: the batch's target dicts, for heads that need more than ``gt``)."""
        return self.sampled_loss(feats, self.sample(proposals, valid, gt), targets)

    def sampled_loss(self, feats: Sequence[Tensor], s: SampledRoIs,
                     targets: Sequence[Mapping[str, Tensor]] | None = None) -> dict[str, Tensor]:
        """The box branch's loss terms of the sampled RoIs ``s``."""
        out = self.forward_rois(lambda f: self.pool(feats, s.rois, f))
        return self.loss_terms(out, s.labels, s.deltas)


def box_loss(deltas: Tensor, labels: Tensor, targets: Tensor, beta: float = 1.0 / 9, kind: str = "smooth_l1") -> Tensor:
    """Smooth L1 (or L1) of the foreground RoIs' deltas of their class (``deltas`` ``[K, C + 1, 4]``,
    ``labels`` ``[K]`` with 0 background), summed and divided by ``K`` (at least 1)."""
    fg = (labels > 0).nonzero().squeeze(1)
    n = max(int(labels.numel()), 1)
    if fg.numel() == 0:
        return deltas.sum() * 0.0
    pred = deltas[fg, labels[fg]].float()
    if kind == "l1":
        return (pred - targets[fg]).abs().sum() / n
    return F.smooth_l1_loss(pred, targets[fg], beta=beta, reduction="sum") / n
