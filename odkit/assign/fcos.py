"""FCOS label assignment: points inside a gt (or its centre region) whose box size fits their level.

Coordinates are input pixels; gt boxes xyxy (continuous, width = ``x2 - x1``); a prior is its point
``(x, y) = priors.points`` on level ``priors.levels`` with stride ``s = priors.strides``. Per image,
for a prior and a valid gt (padding and crowd gts take no part), with the regression distances
``l = x - x1``, ``t = y - y1``, ``r = x2 - x``, ``b = y2 - y`` to the full gt box:

1. Inside test, strict:

   * ``center_sampling=False``: ``min(l, t, r, b) > 0`` (point strictly inside the gt box);
   * ``center_sampling=True``: the point lies strictly inside the centre region, the square of
     half-side ``R = center_radius * s`` (``s`` the level's nominal stride, ``priors.level_strides()``:
     8, 16, ..., 128 whatever the input size, as torchvision and the paper) around the gt centre ``((x1 + x2) / 2, (y1 + y2) / 2)``
     clipped to the gt box: ``max(|x - cx|, |y - cy|) < R`` and ``min(l, t, r, b) > 0``. This is
     torchvision's arithmetic; MMDetection's ``max(cx - R, x1) < x < min(cx + R, x2)`` is the same
     rule but rounds differently when a point is at the region's edge (e.g. ``|x - cx| = R`` up to
     the float32 rounding of the gt coordinates).

2. Scale test: ``lo <= max(l, t, r, b) <= hi`` with ``(lo, hi) = regress_ranges[level]`` (both ends
   inclusive, as in FCOS and MMDetection); with ``inclusive_ranges=False`` both ends are excluded,
   ``lo < max(l, t, r, b) < hi`` (torchvision's ``FCOS``: a point whose largest distance is exactly
   64, 128, 256 or 512 px is then on no level, e.g. a P4 point at the centre column of a 230 px box).
3. A prior passing both tests for several gts goes to the gt of smallest area
   ``(x2 - x1) * (y2 - y1)``; equal areas: the lowest gt index. Priors passing for none are negative.
4. :func:`~odkit.assign.base.ignore_crowd`: negative points strictly inside a crowd box (negative
   anchors at least half inside one, when the priors carry anchors) become ``IGNORE``.

``quality`` is the FCOS centerness target of the matched gt,
``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` in (0, 1] (always defined: a positive point
lies strictly inside its gt), 0 for non-positives. ``labels`` is the matched gt's class, -1 elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from odkit.assign.base import GTBatch, Priors, assign_in_chunks, empty_result, ignore_crowd
from odkit.assign.result import NEGATIVE, AssignResult
from odkit.errors import ConfigError

INF = math.inf
DEFAULT_REGRESS_RANGES: tuple[tuple[float, float], ...] = (
    (-1, 64),
    (64, 128),
    (128, 256),
    (256, 512),
    (512, INF),
)


class FCOSAssigner:
    """FCOS assigner; see the module docstring for the exact rule.

    Args:
        regress_ranges: ``(lo, hi)`` pixel range of ``max(l, t, r, b)`` for each level
            (``priors.levels`` indexes it).
        center_sampling: restrict positives to the centre region of each gt.
        center_radius: half-side of the centre region in strides of the prior's level.
        inclusive_ranges: both ends of each regress range belong to it (FCOS, MMDetection); ``False``:
            neither does (torchvision).
        max_elements: images are processed in chunks so that no ``[b, G, A]`` intermediate has more
            elements than this.
    """

    needs_predictions: bool = False  # uses neither ``pred_boxes`` nor ``pred_scores``
    requires_anchors: bool = False  # works on points as well as on anchor boxes

    def __init__(
        self,
        regress_ranges: Sequence[Sequence[float]] = DEFAULT_REGRESS_RANGES,
        center_sampling: bool = True,
        center_radius: float = 1.5,
        inclusive_ranges: bool = True,
        max_elements: int = 1 << 24,
    ) -> None:
        ranges = [tuple(float(v) for v in r) for r in regress_ranges]
        if not ranges or any(len(r) != 2 or r[0] > r[1] for r in ranges):
            raise ConfigError(f"FCOSAssigner: regress_ranges must be (low, high) pairs, got {regress_ranges}")
        if center_radius <= 0:
            raise ConfigError(f"FCOSAssigner: center_radius must be positive, got {center_radius}")
        self.regress_ranges: list[tuple[float, ...]] = ranges
        self.center_sampling = bool(center_sampling)
        self.center_radius = float(center_radius)
        self.inclusive_ranges = bool(inclusive_ranges)
        self.max_elements = int(max_elements)

    @torch.no_grad()
    def assign(
        self,
        priors: Priors,
        gt: GTBatch,
        pred_boxes: Tensor | None = None,
        pred_scores: Tensor | None = None,
    ) -> AssignResult:
        """Assign prior points to gts.

        Args:
            priors: ``points`` ``[A, 2]`` px, ``strides`` ``[A]``, ``levels`` ``[A]``.
            gt: padded gts ``[B, G]``.
            pred_boxes, pred_scores: unused.

        Returns:
            ``AssignResult`` with ``[B, A]`` fields; ``quality`` is the centerness target.

        Raises:
            ConfigError: when the priors have more levels than ``regress_ranges``.
        """
        b, a, g = gt.batch_size, priors.num_priors, gt.max_gts
        num_levels = len(priors.num_per_level)
        if a > 0:
            num_levels = max(num_levels, int(priors.levels.max()) + 1)
        if num_levels > len(self.regress_ranges):
            raise ConfigError(
                f"FCOSAssigner: priors have {num_levels} levels but regress_ranges has {len(self.regress_ranges)}"
            )
        if g == 0 or a == 0:
            return ignore_crowd(empty_result(b, a, gt), priors, gt)
        device = gt.boxes.device
        ranges = torch.tensor(self.regress_ranges, dtype=torch.float32, device=device)[
            priors.levels.to(device)
        ]
        points = priors.points.to(device).float()
        strides = priors.level_strides().to(device).float()
        result = assign_in_chunks(self._assign_chunk, gt, a, self.max_elements, points, strides, ranges)
        return ignore_crowd(result, priors, gt)

    def _assign_chunk(
        self,
        points: Tensor,
        strides: Tensor,
        ranges: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_valid: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Points ``[A, 2]``, strides ``[A]``, ranges ``[A, 2]``; gts ``[b, G, ...]`` -> ``[b, A]`` fields."""
        a = points.shape[0]
        px = points[:, 0].view(1, 1, a)
        py = points[:, 1].view(1, 1, a)
        x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))  # [b, G, 1]
        dist = torch.stack((px - x1, py - y1, x2 - px, y2 - py), dim=-1)  # [b, G, A, 4] = l, t, r, b
        inside = dist.min(dim=-1).values > 0
        if self.center_sampling:  # torchvision's arithmetic: |x - cx| < R (not cx - R < x), same bits at the edge
            rad = self.center_radius * strides.view(1, 1, a)
            cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
            inside &= torch.maximum((px - cx).abs(), (py - cy).abs()) < rad
        max_dist = dist.max(dim=-1).values  # [b, G, A]
        lo, hi = ranges[:, 0].view(1, 1, a), ranges[:, 1].view(1, 1, a)
        in_range = (max_dist >= lo) & (max_dist <= hi) if self.inclusive_ranges else (max_dist > lo) & (max_dist < hi)
        ok = inside & in_range & gt_valid[..., None]
        area = (x2 - x1) * (y2 - y1)  # [b, G, 1]
        area = torch.where(ok, area, torch.full((), INF, device=area.device))
        min_area, gt_idx = area.min(dim=1)  # [b, A]; ties -> lowest gt index
        fg = torch.isfinite(min_area)
        gt_inds = torch.where(fg, gt_idx, torch.full_like(gt_idx, NEGATIVE))
        labels = torch.where(fg, gt_labels.gather(1, gt_idx), torch.full_like(gt_idx, -1))
        d = dist.gather(1, gt_idx[:, None, :, None].expand(-1, 1, -1, 4))[:, 0]  # [b, A, 4]
        lr, tb = d[..., 0::2], d[..., 1::2]
        ratio = (lr.min(-1).values / lr.max(-1).values.clamp(min=1e-12)) * (
            tb.min(-1).values / tb.max(-1).values.clamp(min=1e-12)
        )
        quality = torch.where(fg, ratio.clamp(min=0).sqrt(), torch.zeros_like(min_area))
        return gt_inds, labels, quality
