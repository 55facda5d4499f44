"""SimOTA label assignment (YOLOX): a dynamic number of lowest-cost priors per gt.

Per image, with priors at centres ``c`` (pixels) and strides ``s``:

1. Candidates: priors whose centre lies strictly inside some gt box, or strictly within
   ``center_radius * s`` (2.5 strides) of some gt centre (a square region).
2. Cost of (gt, prior) = ``cls_weight * BCE(score, one_hot(gt_label)).sum(classes)``
   + ``iou_weight * -log(IoU(gt, predicted box) + 1e-8)`` + ``1e5`` unless the prior is inside
   BOTH the gt box and the gt's centre region. ``score`` is the joint class probability
   (YOLOX: ``sqrt(sigmoid(cls) * sigmoid(obj))``). Non-candidates are never matched.
3. Dynamic k of each gt = ``max(int(sum of its top-10 candidate IoUs)), 1)``; the gt takes its k
   cheapest priors.
4. A prior taken by several gts goes to the gt with the lowest cost for it.

The matched IoU becomes ``AssignResult.quality`` (YOLOX's soft class target). Everything is batched
over images with gts padded to the largest count (``gt.valid`` marks real gts); the batch is cut
into chunks so that no ``[b, G, A]`` intermediate exceeds ``max_elements``.

Prior centres are ``priors.points``: for YOLOX exactly ``(grid + 0.5) * stride``. Crowd gts take no
part in matching; afterwards :func:`~odkit.assign.base.ignore_crowd` turns negative priors whose
centre lies strictly inside a crowd box into ``IGNORE``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from odkit.assign.base import GTBatch, Priors, ignore_crowd
from odkit.assign.result import NEGATIVE, AssignResult
from odkit.errors import ConfigError
from odkit.ops import aligned_box_iou

OUTSIDE_COST = 1e5


def grid_levels(centers: Tensor, strides: Tensor) -> list[tuple[int, int, int]] | None:
    """``(offset, rows, cols)`` of each level when the priors are level after level of full grids in
    row-major order (each row one y, each column one x, one stride per level: YOLOX's priors);
    None otherwise."""
    a = centers.shape[0]
    if a == 0:
        return None
    change = (strides[1:] != strides[:-1]).nonzero().squeeze(1) + 1
    bounds = [0, *change.tolist(), a]
    levels = []
    for o, e in zip(bounds[:-1], bounds[1:]):
        pts = centers[o:e]
        w = int((pts[:, 1] != pts[0, 1]).nonzero()[:1].sum()) or (e - o)  # points in the first row
        if (e - o) % w:
            return None
        grid = pts.view((e - o) // w, w, 2)
        if not (torch.equal(grid[:, :, 0], grid[:1, :, 0].expand_as(grid[:, :, 0]))
                and torch.equal(grid[:, :, 1], grid[:, :1, 1].expand_as(grid[:, :, 1]))):
            return None
        levels.append((o, (e - o) // w, w))
    return levels


class SimOTAAssigner:
    """SimOTA assigner; see the module docstring for the exact rule."""

    needs_predictions: bool = True  # needs ``pred_boxes`` and ``pred_scores``
    requires_anchors: bool = False  # works on points as well as on anchor boxes

    def __init__(
        self,
        center_radius: float = 2.5,
        candidate_topk: int = 10,
        iou_weight: float = 3.0,
        cls_weight: float = 1.0,
        max_elements: int = 1 << 24,
    ) -> None:
        self.center_radius = float(center_radius)
        self.candidate_topk = int(candidate_topk)
        self.iou_weight = float(iou_weight)
        self.cls_weight = float(cls_weight)
        self.max_elements = int(max_elements)

    @torch.no_grad()
    def assign(
        self,
        priors: Priors,
        gt: GTBatch,
        pred_boxes: Tensor | None = None,
        pred_scores: Tensor | None = None,
    ) -> AssignResult:
        """Assign priors to gts (the :class:`~odkit.assign.base.Assigner` protocol).

        Args:
            priors: ``points`` ``[A, 2]`` prior centres (px) and ``strides`` ``[A]`` (px).
            gt: padded gts ``[B, G]``.
            pred_boxes: ``[B, A, 4]`` predicted xyxy boxes, input pixels.
            pred_scores: ``[B, A, C]`` joint class probabilities in [0, 1].

        Returns:
            ``AssignResult`` with ``[B, A]`` fields.
        """
        if not isinstance(priors, Priors) or not isinstance(gt, GTBatch):
            raise ConfigError("SimOTAAssigner.assign: expected assign(priors, gt, pred_boxes, pred_scores)")
        if pred_boxes is None or pred_scores is None:
            raise ConfigError("SimOTAAssigner.assign: pred_boxes and pred_scores are required")
        result = self._assign_tensors(
            pred_boxes, pred_scores, priors.points, priors.strides, gt.boxes, gt.labels, gt.valid
        )
        return ignore_crowd(result, priors, gt)

    @torch.no_grad()
    def _assign_tensors(
        self,
        pred_boxes: torch.Tensor,
        pred_scores: torch.Tensor,
        prior_centers: torch.Tensor,
        prior_strides: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_valid: torch.Tensor | None = None,
    ) -> AssignResult:
        """Assign priors to gts given as plain tensors (the form behind :meth:`assign`).

        Args:
            pred_boxes: ``[B, A, 4]`` (or ``[A, 4]``) predicted xyxy boxes, input pixels.
            pred_scores: ``[B, A, C]`` (or ``[A, C]``) joint class probabilities in [0, 1].
            prior_centers: ``[A, 2]`` prior centres ``(x, y)`` in input pixels.
            prior_strides: ``[A]`` prior strides in pixels.
            gt_boxes: ``[B, G, 4]`` (or ``[G, 4]``) gt xyxy boxes, input pixels, padded.
            gt_labels: ``[B, G]`` (or ``[G]``) int64 classes.
            gt_valid: ``[B, G]`` bool, False for padding (default: all valid).

        Returns:
            ``AssignResult`` with ``[B, A]`` fields (``[A]`` for unbatched input).
        """
        unbatched = pred_boxes.dim() == 2
        if unbatched:
            pred_boxes, pred_scores = pred_boxes[None], pred_scores[None]
            gt_boxes, gt_labels = gt_boxes[None], gt_labels[None]
            gt_valid = None if gt_valid is None else gt_valid[None]
        b, a = pred_boxes.shape[:2]
        if pred_scores.shape[:2] != (b, a) or prior_centers.shape != (a, 2) or prior_strides.shape != (a,):
            raise ConfigError(
                f"SimOTAAssigner.assign: inconsistent shapes pred_boxes {tuple(pred_boxes.shape)}, "
                f"pred_scores {tuple(pred_scores.shape)}, prior_centers {tuple(prior_centers.shape)}, "
                f"prior_strides {tuple(prior_strides.shape)}"
            )
        g = gt_boxes.shape[1]
        if gt_valid is None:
            gt_valid = torch.ones(gt_boxes.shape[:2], dtype=torch.bool, device=gt_boxes.device)
        gt_valid = gt_valid.bool()
        if gt_boxes.shape != (b, g, 4) or gt_labels.shape != (b, g) or gt_valid.shape != (b, g):
            raise ConfigError(
                f"SimOTAAssigner.assign: gt_boxes {tuple(gt_boxes.shape)}, gt_labels {tuple(gt_labels.shape)}, "
                f"gt_valid {tuple(gt_valid.shape)} do not match batch {b}"
            )
        if g == 0:
            device = pred_boxes.device
            result = AssignResult(
                gt_inds=torch.full((b, a), NEGATIVE, dtype=torch.long, device=device),
                labels=torch.full((b, a), -1, dtype=torch.long, device=device),
                quality=torch.zeros((b, a), dtype=torch.float32, device=device),
                num_gts=torch.zeros(b, dtype=torch.long, device=device),
            )
        else:
            chunk = max(1, self.max_elements // max(1, g * a))
            parts = [
                self._assign_chunk(
                    pred_boxes[i : i + chunk].float(),
                    pred_scores[i : i + chunk].float(),
                    prior_centers.float(),
                    prior_strides.float(),
                    gt_boxes[i : i + chunk].float(),
                    gt_labels[i : i + chunk].long(),
                    gt_valid[i : i + chunk],
                )
                for i in range(0, b, chunk)
            ]
            result = AssignResult(*(torch.cat(t, 0) for t in zip(*parts)))
        return result[0] if unbatched else result

    def _assign_chunk(
        self,
        pred_boxes: torch.Tensor,
        scores: torch.Tensor,
        centers: torch.Tensor,
        strides: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image by image, on each image's valid gts and candidate priors only (the padding and the
        priors no gt can take never enter the cost); the values are those of the batched rule."""
        b, a, _ = scores.shape
        device = scores.device
        levels = grid_levels(centers, strides)
        gt_inds = torch.full((b, a), NEGATIVE, dtype=torch.long, device=device)
        labels = torch.full((b, a), -1, dtype=torch.long, device=device)
        quality = torch.zeros((b, a), dtype=torch.float32, device=device)
        for i in range(b):
            rows = gt_valid[i].nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            found = self._assign_image(pred_boxes[i], scores[i], centers, strides, gt_boxes[i, rows],
                                       gt_labels[i, rows], levels)
            if found is None:
                continue
            cols, gi, q = found
            gt_inds[i, cols] = rows[gi]
            labels[i, cols] = gt_labels[i, rows[gi]]
            quality[i, cols] = q.float()
        return gt_inds, labels, quality, gt_valid.sum(1)

    def _regions(self, gt_boxes: Tensor, centers: Tensor, strides: Tensor) -> tuple[Tensor, Tensor]:
        """``[g, a]`` bool: prior centre strictly inside the gt box / the gt's centre square.

        "u - v > 0" is written "u > v": for IEEE floats (with subnormals) a rounded difference is 0
        only for equal numbers, so both tests agree everywhere."""
        cx, cy = centers[:, 0], centers[:, 1]  # [a]
        x1, y1, x2, y2 = (gt_boxes[:, i, None] for i in range(4))  # [g, 1]
        in_box = (cx > x1) & (x2 > cx) & (cy > y1) & (y2 > cy)
        r = self.center_radius * strides
        gcx, gcy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
        in_ctr = (cx > gcx - r) & (gcx + r > cx) & (cy > gcy - r) & (gcy + r > cy)
        return in_box, in_ctr

    def _regions_grid(self, gt_boxes: Tensor, centers: Tensor, strides: Tensor,
                      levels: list[tuple[int, int, int]]) -> tuple[Tensor, Tensor]:
        """:meth:`_regions` for grid priors: the same comparisons on each level's distinct x
        (``[g, cols]``) and y (``[g, rows]``), combined by an outer AND."""
        x1, y1, x2, y2 = (gt_boxes[:, i, None] for i in range(4))  # [g, 1]
        gcx, gcy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
        boxes, ctrs = [], []
        for o, rows, cols in levels:
            xs = centers[o : o + cols, 0]  # [cols]
            ys = centers[o : o + rows * cols : cols, 1]  # [rows]
            r = self.center_radius * strides[o : o + 1]  # the same float as for every prior of the level
            bx, by = (xs > x1) & (x2 > xs), (ys > y1) & (y2 > ys)
            cx_, cy_ = (xs > gcx - r) & (gcx + r > xs), (ys > gcy - r) & (gcy + r > ys)
            boxes.append((by[:, :, None] & bx[:, None, :]).flatten(1))
            ctrs.append((cy_[:, :, None] & cx_[:, None, :]).flatten(1))
        return torch.cat(boxes, 1), torch.cat(ctrs, 1)

    def _assign_image(
        self,
        pred_boxes: torch.Tensor,
        scores: torch.Tensor,
        centers: torch.Tensor,
        strides: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        levels: list[tuple[int, int, int]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """One image with ``g`` (valid) gts: ``(priors [P], their gt [P] (0..g-1), IoU [P])`` of the
        foreground priors, or ``None`` when no prior is a candidate. ``levels``: the priors' grid
        layout (:func:`grid_levels`), which makes the geometry tests separable in x and y."""
        a, num_classes = scores.shape
        g = gt_boxes.shape[0]
        # 1. geometry
        in_box, in_ctr = (self._regions_grid(gt_boxes, centers, strides, levels) if levels
                          else self._regions(gt_boxes, centers, strides))
        cols = (in_box | in_ctr).any(0).nonzero().squeeze(1)  # the candidate priors
        n = cols.numel()
        if n == 0:
            return None
        in_both = (in_box & in_ctr)[:, cols]  # [g, n]
        # 2. cost
        ious = aligned_box_iou(gt_boxes[:, None, :], pred_boxes[cols][None, :, :])  # [g, n]
        iou_cost = -torch.log(ious + 1e-8)
        # class cost = BCE(p, one_hot(label)).sum(classes)
        #            = sum_c -log(1 - p_c)  +  (-log p_label) - (-log(1 - p_label))
        # logs are clamped at -100 like torch's binary_cross_entropy
        p_cand = scores[cols].clamp(0.0, 1.0)  # [n, C]
        p_gt = p_cand[:, gt_labels.clamp(0, num_classes - 1)].t()  # [g, n] p of the gt class
        neg_sum = -torch.log1p(-p_cand).clamp(min=-100.0).sum(-1)  # [n]
        cls_cost = neg_sum[None, :] - torch.log(p_gt).clamp(min=-100.0) + torch.log1p(-p_gt).clamp(min=-100.0)
        cost = self.cls_weight * cls_cost + self.iou_weight * iou_cost + OUTSIDE_COST * (~in_both).float()
        # 3. dynamic k: the top candidate_topk IoUs (non-candidates count as IoU 0)
        k_cand = min(self.candidate_topk, a)
        top = ious if n >= k_cand else torch.cat([ious, ious.new_zeros(g, k_cand - n)], 1)
        dynamic_k = top.topk(k_cand, dim=-1).values.sum(-1).int().clamp(min=1)  # [g]
        k_max = min(int(dynamic_k.max()), n)
        _, order = cost.topk(k_max, dim=-1, largest=False)  # [g, k_max]
        take = torch.arange(k_max, device=cost.device).view(1, k_max) < dynamic_k[:, None]
        matching = torch.zeros((g, n), dtype=torch.bool, device=cost.device)
        matching.scatter_(-1, order, take.expand_as(order))
        # 4. resolve priors claimed by several gts: cheapest gt wins
        n_match = matching.sum(0)  # [n]
        gt_idx = (matching * torch.arange(g, device=cost.device)[:, None]).sum(0)
        multi = (n_match > 1).nonzero().squeeze(1)
        if multi.numel():
            gt_idx[multi] = cost[:, multi].argmin(dim=0)
        fg = (n_match > 0).nonzero().squeeze(1)
        gi = gt_idx[fg]
        return cols[fg], gi, ious[gi, fg]
