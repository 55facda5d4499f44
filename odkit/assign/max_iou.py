"""Max-IoU label assignment (Faster R-CNN RPN and RoI head, RetinaNet, SSD).

Boxes are xyxy in input pixels (continuous coordinates, width = ``x2 - x1``). Per image, with
``IoU[g, a]`` the IoU of valid gt ``g`` and prior box ``a`` (padding and crowd gts take no part):

1. ``max_iou[a]`` / ``argmax[a]``: the highest IoU of prior ``a`` over the valid gts and the gt
   reaching it; among gts with equal IoU the lowest gt index wins (first maximum).
2. Thresholds on ``max_iou[a]``:

   * ``max_iou >= pos_iou_thr`` -> positive, matched to ``argmax[a]``;
   * ``neg_iou_thr`` a number ``t``: ``max_iou < t`` -> negative;
     ``neg_iou_thr`` a pair ``(lo, hi)`` (MMDetection): ``lo <= max_iou < hi`` -> negative,
     ``max_iou < lo`` -> ``IGNORE``;
   * everything else (between the negative and positive thresholds) -> ``IGNORE``.

3. Low-quality matches (``allow_low_quality_matches``; torchvision/detectron2 ``Matcher``
   semantics): for each valid gt ``g`` let ``best[g] = max_a IoU[g, a]``. When
   ``best[g] >= min_pos_iou`` and ``best[g] > 0``, every prior ``a`` with ``IoU[g, a] == best[g]``
   (ties included) becomes positive, matched to ``argmax[a]`` -- the gt *it* overlaps most, which
   need not be ``g`` (torchvision's ``set_low_quality_matches_``). This step overrides step 2 (an
   ``IGNORE`` or negative prior can become positive this way).

   Deliberate difference from torchvision / detectron2 / MMDetection: a gt whose best IoU is 0
   (it overlaps no prior at all, e.g. a zero-size or out-of-image box) gets no low-quality match;
   the references would turn every prior with IoU 0 into a positive in that case.

4. Images without valid gts: every prior is negative (whatever ``neg_iou_thr``).
5. :func:`~odkit.assign.base.ignore_crowd`: negative priors whose box lies at least half inside a
   crowd box become ``IGNORE``.

``quality`` is the matched IoU (``max_iou``) of positives, 0 elsewhere; ``labels`` the matched gt's
class, -1 elsewhere.

Which boxes are matched (``match_on``): ``"anchors"`` uses ``priors.anchors`` (``[A, 4]``, shared by
the batch; RPN, RetinaNet, SSD); ``"pred_boxes"`` uses the per-image ``pred_boxes`` argument
(``[B, A, 4]``, e.g. RoI-head proposals padded to a common count).

Typical settings: RetinaNet ``(0.5, 0.4)``; RPN ``(0.7, 0.3)``; RoI head ``(0.5, 0.5)`` with
``allow_low_quality_matches=False``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from odkit.assign.base import GTBatch, Priors, empty_result, ignore_crowd
from odkit.assign.result import IGNORE, NEGATIVE, AssignResult
from odkit.errors import ConfigError
from odkit.ops import aligned_box_iou

MATCH_ON = ("anchors", "pred_boxes")


class MaxIoUAssigner:
    """Max-IoU assigner; see the module docstring for the exact rule.

    Args:
        pos_iou_thr: a prior whose best IoU is ``>=`` this is positive.
        neg_iou_thr: a prior whose best IoU is ``<`` this is negative; or a pair ``(lo, hi)``:
            negative when ``lo <= best IoU < hi``.
        min_pos_iou: low-quality matches need a gt best IoU of at least this (and above 0).
        allow_low_quality_matches: give every gt its highest-IoU priors (ties included).
        match_on: ``"anchors"`` (``priors.anchors``) or ``"pred_boxes"`` (the ``pred_boxes``
            argument, ``[B, A, 4]``).
        max_elements: images are processed in chunks so that no ``[b, G, A]`` intermediate has more
            elements than this.
    """

    needs_predictions: bool = False  # True with ``match_on="pred_boxes"``; ``pred_scores`` is never used

    def __init__(
        self,
        pos_iou_thr: float = 0.5,
        neg_iou_thr: float | Sequence[float] = 0.4,
        min_pos_iou: float = 0.0,
        allow_low_quality_matches: bool = True,
        match_on: str = "anchors",
        max_elements: int = 1 << 24,
    ) -> None:
        if isinstance(neg_iou_thr, Sequence):
            if len(neg_iou_thr) != 2:
                raise ConfigError(
                    f"MaxIoUAssigner: neg_iou_thr must be a number or a (low, high) pair, got {neg_iou_thr}"
                )
            neg_lo, neg_hi = float(neg_iou_thr[0]), float(neg_iou_thr[1])
        else:
            neg_lo, neg_hi = float("-inf"), float(neg_iou_thr)
        if neg_lo > neg_hi:
            raise ConfigError(f"MaxIoUAssigner: neg_iou_thr low {neg_lo} is above high {neg_hi}")
        if neg_hi > float(pos_iou_thr):
            raise ConfigError(f"MaxIoUAssigner: neg_iou_thr {neg_hi} is above pos_iou_thr {pos_iou_thr}")
        if match_on not in MATCH_ON:
            raise ConfigError(f"MaxIoUAssigner: match_on={match_on!r} is not one of {MATCH_ON}")
        self.pos_iou_thr = float(pos_iou_thr)
        self.neg_lo = neg_lo
        self.neg_hi = neg_hi
        self.min_pos_iou = float(min_pos_iou)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)
        self.match_on = match_on
        self.needs_predictions = match_on == "pred_boxes"
        self.requires_anchors = match_on == "anchors"
        self.max_elements = int(max_elements)

    @torch.no_grad()
    def assign(
        self,
        priors: Priors,
        gt: GTBatch,
        pred_boxes: Tensor | None = None,
        pred_scores: Tensor | None = None,
    ) -> AssignResult:
        """Assign priors to gts.

        Args:
            priors: the priors; ``priors.anchors`` (``[A, 4]`` xyxy px) is required when
                ``match_on="anchors"``.
            gt: padded gts ``[B, G]``.
            pred_boxes: ``[B, A, 4]`` xyxy px; required when ``match_on="pred_boxes"``.
            pred_scores: unused.

        Returns:
            ``AssignResult`` with ``[B, A]`` fields.
        """
        b = gt.batch_size
        if self.match_on == "anchors":
            if priors.anchors is None:
                raise ConfigError(
                    "MaxIoUAssigner(match_on='anchors'): priors.anchors is None (anchor-free priors)"
                )
            boxes = priors.anchors.float()
            a = int(boxes.shape[0])
            shared = True
        else:
            if pred_boxes is None:
                raise ConfigError("MaxIoUAssigner(match_on='pred_boxes'): pred_boxes is required")
            boxes = pred_boxes.float()
            if boxes.dim() != 3 or boxes.shape[0] != b or boxes.shape[2] != 4:
                raise ConfigError(
                    f"MaxIoUAssigner: pred_boxes must be [B={b}, A, 4], got {tuple(pred_boxes.shape)}"
                )
            a = int(boxes.shape[1])
            shared = False
        g = gt.max_gts
        if g == 0 or a == 0:
            result = empty_result(b, a, gt)
        else:
            chunk = max(1, self.max_elements // max(1, g * a))
            parts = [
                self._assign_chunk(
                    boxes if shared else boxes[i : i + chunk],
                    gt.boxes[i : i + chunk].float(),
                    gt.labels[i : i + chunk].long(),
                    gt.valid[i : i + chunk].bool(),
                )
                for i in range(0, b, chunk)
            ]
            gt_inds, labels, quality = (torch.cat(t, 0) for t in zip(*parts))
            result = AssignResult(gt_inds, labels, quality, gt.num_gts)
        if shared:
            return ignore_crowd(result, priors, gt)
        if not bool(gt.crowd.any()):
            return result
        # per-image boxes: the crowd rule of ``ignore_crowd`` applied image by image
        for i in range(b):
            img_priors = Priors(
                points=(boxes[i, :, :2] + boxes[i, :, 2:]) * 0.5,
                strides=torch.ones(a, device=boxes.device),
                levels=torch.zeros(a, dtype=torch.long, device=boxes.device),
                num_per_level=[a],
                grid=torch.zeros(a, 2, device=boxes.device),
                anchors=boxes[i],
            )
            img_gt = GTBatch(
                gt.boxes[i : i + 1], gt.labels[i : i + 1], gt.valid[i : i + 1], gt.crowd[i : i + 1]
            )
            view = AssignResult(
                result.gt_inds[i : i + 1],
                result.labels[i : i + 1],
                result.quality[i : i + 1],
                result.num_gts[i : i + 1],
            )
            ignore_crowd(view, img_priors, img_gt)  # writes through the views into ``result``
        return result

    def _assign_chunk(
        self, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_valid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``boxes`` ``[A, 4]`` or ``[b, A, 4]``; gts ``[b, G, ...]`` -> gt_inds, labels, quality ``[b, A]``."""
        prior_boxes = boxes[None, None] if boxes.dim() == 2 else boxes[:, None]  # [1|b, 1, A, 4]
        ious = aligned_box_iou(gt_boxes[:, :, None, :], prior_boxes).float()  # [b, G, A]
        ious = torch.where(gt_valid[..., None], ious, torch.full((), -1.0, device=ious.device))
        max_iou, argmax = ious.max(dim=1)  # [b, A]; ties -> lowest gt index
        has_gt = gt_valid.any(dim=1, keepdim=True)  # [b, 1]
        gt_inds = torch.full_like(argmax, IGNORE)
        neg = ((max_iou >= self.neg_lo) & (max_iou < self.neg_hi)) | ~has_gt
        gt_inds[neg] = NEGATIVE
        pos = (max_iou >= self.pos_iou_thr) & has_gt
        if self.allow_low_quality_matches:
            best = ious.max(dim=2, keepdim=True).values  # [b, G, 1]
            ok = gt_valid[..., None] & (best >= self.min_pos_iou) & (best > 0)
            pos |= ((ious == best) & ok).any(dim=1)
        gt_inds = torch.where(pos, argmax, gt_inds)
        labels = torch.where(pos, gt_labels.gather(1, argmax), torch.full_like(argmax, -1))
        quality = torch.where(pos, max_iou, torch.zeros_like(max_iou))
        return gt_inds, labels, quality
