"""ATSS label assignment (Zhang et al. 2020): an adaptive IoU threshold per gt from its closest priors.

Coordinates are input pixels, boxes xyxy (continuous, width = ``x2 - x1``). Each prior has a box
and a centre: with anchors, the anchor box ``priors.anchors`` and its centre ``((x1+x2)/2, (y1+y2)/2)``;
anchor-free priors (``priors.anchors is None``) use a square box of side ``anchor_scale * stride``
centred on ``priors.points`` (ATSS / GFL: ``anchor_scale = 8``) and the point as centre. Per image,
for each valid gt (padding and crowd gts take no part):

1. Candidates: on every level ``l`` (``priors.num_per_level``; priors are concatenated level by
   level), the ``min(topk, n_l)`` priors whose centres are closest to the gt centre in L2 distance
   (compared squared); equal distances: the lower prior index first.
2. Threshold: ``mean + std`` of the candidates' IoU (prior box vs gt), with the *unbiased* standard
   deviation (divisor ``K - 1``, ``torch.std``'s default; both the ATSS reference code and
   MMDetection call ``Tensor.std`` with its default). Computed in float64. With a single candidate
   the std is taken as 0 (``torch.std`` would give NaN and no positive).
3. Positives: candidates with ``IoU >= threshold`` whose centre lies strictly inside the gt with a
   margin: ``min(cx - x1, cy - y1, x2 - cx, y2 - cy) > 0.01`` (``center_eps``, as MMDetection).
4. A prior positive for several gts goes to the gt with the highest IoU; equal IoU: lowest gt index.
   All other priors are negative.
5. :func:`~odkit.assign.base.ignore_crowd`: negative priors whose anchor lies at least half inside a
   crowd box (anchor-free priors: whose point lies strictly inside) become ``IGNORE``.

``quality`` is the IoU of a positive prior's box with its gt, 0 elsewhere; ``labels`` the matched
gt's class, -1 elsewhere.
"""

from __future__ import annotations

import torch
from torch import Tensor

from odkit.assign.base import GTBatch, Priors, assign_in_chunks, empty_result, ignore_crowd
from odkit.assign.result import NEGATIVE, AssignResult
from odkit.errors import ConfigError
from odkit.ops import aligned_box_iou


class ATSSAssigner:
    """ATSS assigner; see the module docstring for the exact rule.

    Args:
        topk: candidates per level and gt.
        anchor_scale: side of the square box of anchor-free priors, in strides.
        center_eps: margin (pixels) by which a positive's centre must lie inside its gt.
        max_elements: images are processed in chunks so that no ``[b, G, A]`` intermediate has more
            elements than this.
    """

    needs_predictions: bool = False  # uses neither ``pred_boxes`` nor ``pred_scores``
    requires_anchors: bool = False  # works on points as well as on anchor boxes

    def __init__(
        self, topk: int = 9, anchor_scale: float = 8.0, center_eps: float = 0.01, max_elements: int = 1 << 24
    ) -> None:
        if topk < 1:
            raise ConfigError(f"ATSSAssigner: topk must be >= 1, got {topk}")
        if anchor_scale <= 0:
            raise ConfigError(f"ATSSAssigner: anchor_scale must be positive, got {anchor_scale}")
        self.topk = int(topk)
        self.anchor_scale = float(anchor_scale)
        self.center_eps = float(center_eps)
        self.max_elements = int(max_elements)

    def prior_boxes(self, priors: Priors) -> tuple[Tensor, Tensor]:
        """The boxes ``[A, 4]`` (xyxy px) and centres ``[A, 2]`` (px) ATSS matches."""
        if priors.anchors is not None:
            boxes = priors.anchors.float()
            return boxes, (boxes[:, :2] + boxes[:, 2:]) * 0.5
        points = priors.points.float()
        half = (0.5 * self.anchor_scale * priors.strides.float())[:, None]
        return torch.cat((points - half, points + half), dim=1), points

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
            priors: anchors ``[A, 4]`` or points ``[A, 2]`` with strides ``[A]``; ``num_per_level``.
            gt: padded gts ``[B, G]``.
            pred_boxes, pred_scores: unused.

        Returns:
            ``AssignResult`` with ``[B, A]`` fields; ``quality`` is the prior-box IoU.
        """
        b, a, g = gt.batch_size, priors.num_priors, gt.max_gts
        if sum(priors.num_per_level) != a:
            raise ConfigError(
                f"ATSSAssigner: num_per_level {priors.num_per_level} does not sum to {a} priors"
            )
        if g == 0 or a == 0:
            return ignore_crowd(empty_result(b, a, gt), priors, gt)
        device = gt.boxes.device
        boxes, centres = (t.to(device) for t in self.prior_boxes(priors))
        result = assign_in_chunks(self._assign_chunk, gt, a, self.max_elements, boxes, centres, priors.num_per_level)
        return ignore_crowd(result, priors, gt)

    def _assign_chunk(
        self,
        boxes: Tensor,
        centres: Tensor,
        num_per_level: list[int],
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_valid: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Prior boxes ``[A, 4]``, centres ``[A, 2]``; gts ``[b, G, ...]`` -> ``[b, A]`` fields."""
        ious = aligned_box_iou(gt_boxes[:, :, None, :], boxes[None, None]).float()  # [b, G, A]
        gt_ctr = (gt_boxes[..., :2] + gt_boxes[..., 2:]) * 0.5  # [b, G, 2]
        diff = centres[None, None] - gt_ctr[:, :, None, :]  # [b, G, A, 2]
        dist2 = diff[..., 0] * diff[..., 0] + diff[..., 1] * diff[..., 1]  # [b, G, A]
        # 1. candidates: the topk closest per level (stable sort: equal distances -> lower index)
        cand_parts = []
        start = 0
        for n in num_per_level:
            if n > 0:
                k = min(self.topk, n)
                order = torch.sort(dist2[..., start : start + n], dim=-1, stable=True).indices[..., :k]
                cand_parts.append(order + start)
            start += n
        cand = torch.cat(cand_parts, dim=-1)  # [b, G, K]
        cand_iou = ious.gather(-1, cand).double()
        # 2. adaptive threshold mean + unbiased std
        if cand.shape[-1] > 1:
            std, mean = torch.std_mean(cand_iou, dim=-1, correction=1)
        else:
            std, mean = torch.zeros_like(cand_iou[..., 0]), cand_iou[..., 0]
        thr = (mean + std)[..., None]
        # 3. centre strictly inside the gt (by more than center_eps)
        c = centres[cand]  # [b, G, K, 2]
        margin = (
            torch.stack(
                (
                    c[..., 0] - gt_boxes[..., 0, None],
                    c[..., 1] - gt_boxes[..., 1, None],
                    gt_boxes[..., 2, None] - c[..., 0],
                    gt_boxes[..., 3, None] - c[..., 1],
                ),
                dim=-1,
            )
            .min(dim=-1)
            .values
        )
        is_pos = (cand_iou >= thr) & (margin > self.center_eps) & gt_valid[..., None]
        pos = torch.zeros(ious.shape, dtype=torch.bool, device=ious.device)
        pos.scatter_(-1, cand, is_pos)  # candidates of one gt are distinct priors
        # 4. several gts: highest IoU wins (ties -> lowest gt index)
        masked = torch.where(pos, ious, torch.full((), -1.0, device=ious.device))
        best, gt_idx = masked.max(dim=1)  # [b, A]
        fg = pos.any(dim=1)
        gt_inds = torch.where(fg, gt_idx, torch.full_like(gt_idx, NEGATIVE))
        labels = torch.where(fg, gt_labels.gather(1, gt_idx), torch.full_like(gt_idx, -1))
        quality = torch.where(fg, best, torch.zeros_like(best))
        return gt_inds, labels, quality
