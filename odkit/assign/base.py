"""What every assigner takes and returns: ``Priors``, the padded ``GTBatch``, the ``Assigner`` protocol.

An assigner maps priors (points, anchor boxes) of a batch to gt boxes and returns a batched
:class:`~odkit.assign.result.AssignResult` (``[B, A]`` fields). Dense heads build ``Priors`` once
per forward and a ``GTBatch`` once per batch, so any assigner can be swapped in:
``RetinaNetHead(assigner=ATSSAssigner())`` is a constructor argument, not a new class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from odkit.assign.result import IGNORE, NEGATIVE, AssignResult
from odkit.errors import DataError


@dataclass
class Priors:
    """Priors of all pyramid levels, concatenated level by level (row-major within a level).

    Attributes:
        points: ``[A, 2]`` float prior centres ``(x, y)`` in input pixels.
        strides: ``[A]`` float stride (pixels) of each prior's level.
        levels: ``[A]`` int64 level index (0 = finest level).
        num_per_level: number of priors on each level (sums to ``A``).
        grid: ``[A, 2]`` float integer cell ``(gx, gy)`` of each prior on its level.
        anchors: ``[A, 4]`` xyxy anchor boxes in input pixels, or ``None`` for anchor-free heads.
            With ``k`` anchors per location, prior ``(y * W + x) * k + a`` of a level is anchor ``a``
            of cell ``(x, y)``; ``points``, ``grid`` and ``strides`` repeat per anchor.
        nominal_strides: ``[A]`` the head's declared stride of each prior's level (8, 16, ..., 128),
            or ``None`` when equal to ``strides``. They differ when the head takes its strides from
            the input (torchvision's rule ``input // feature``: 59 and 104 px on P6 / P7 at 416);
            rules written in strides of a level (FCOS centre sampling) use the nominal one.
    """

    points: Tensor
    strides: Tensor
    levels: Tensor
    num_per_level: list[int]
    grid: Tensor
    anchors: Tensor | None = None
    nominal_strides: Tensor | None = None

    @property
    def num_priors(self) -> int:
        return int(self.points.shape[0])

    def take(self, idx: Tensor) -> Priors:
        """The priors at rows ``idx`` (``num_per_level`` becomes ``[len(idx)]``)."""
        return Priors(
            self.points[idx],
            self.strides[idx],
            self.levels[idx],
            [int(idx.numel())],
            self.grid[idx],
            None if self.anchors is None else self.anchors[idx],
            None if self.nominal_strides is None else self.nominal_strides[idx],
        )

    def level(self, i: int) -> Priors:
        """The priors of pyramid level ``i``."""
        start = sum(self.num_per_level[:i])
        sl = slice(start, start + self.num_per_level[i])
        return Priors(
            self.points[sl],
            self.strides[sl],
            self.levels[sl],
            [self.num_per_level[i]],
            self.grid[sl],
            None if self.anchors is None else self.anchors[sl],
            None if self.nominal_strides is None else self.nominal_strides[sl],
        )

    def level_strides(self) -> Tensor:
        """``[A]`` nominal stride of each prior's level (``strides`` when no nominal one is set)."""
        return self.strides if self.nominal_strides is None else self.nominal_strides

    def boxes_or_points(self) -> Tensor:
        """Anchor boxes ``[A, 4]`` when present, else zero-size boxes at the points."""
        if self.anchors is not None:
            return self.anchors
        return torch.cat((self.points, self.points), dim=1)


@dataclass
class GTBatch:
    """Gt boxes of a batch padded to the largest count ``G``.

    Attributes:
        boxes: ``[B, G, 4]`` float32 xyxy, input pixels (zeros in padding).
        labels: ``[B, G]`` int64 classes 0..C-1 (0 in padding).
        valid: ``[B, G]`` bool, True for real gts that take part in matching.
        crowd: ``[B, G]`` bool, True for crowd (ignore-region) boxes; these are not ``valid``:
            assigners do not match priors to them, :func:`ignore_crowd` marks priors that fall
            inside them as ``IGNORE``.
    """

    boxes: Tensor
    labels: Tensor
    valid: Tensor
    crowd: Tensor

    @property
    def batch_size(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def max_gts(self) -> int:
        return int(self.boxes.shape[1])

    @property
    def num_gts(self) -> Tensor:
        """``[B]`` int64 count of valid (non-crowd) gts per image."""
        return self.valid.sum(1)

    @classmethod
    def from_targets(
        cls,
        targets: Sequence[Mapping[str, Tensor]],
        num_classes: int,
        device: torch.device | str | None = None,
        batch_size: int | None = None,
        label_offset: int = 0,
    ) -> GTBatch:
        """Pad a list of ``{"boxes" [N,4] xyxy px, "labels" [N], optional "iscrowd" [N]}`` targets.

        ``label_offset``: the labels number object class ``c`` as ``c + label_offset`` (1 for a
        head with ``background_slot``); the batch holds ``c``. Raises ``DataError`` when the number
        of targets differs from ``batch_size``, when boxes and labels disagree in count, or when a
        label is outside ``label_offset..label_offset + num_classes - 1``.
        """
        if batch_size is not None and len(targets) != batch_size:
            raise DataError(f"loss: {len(targets)} targets for a batch of {batch_size} images")
        b = len(targets)
        g = max([int(torch.as_tensor(t["boxes"]).reshape(-1, 4).shape[0]) for t in targets] + [0])
        boxes = torch.zeros((b, g, 4), dtype=torch.float32, device=device)
        labels = torch.zeros((b, g), dtype=torch.long, device=device)
        valid = torch.zeros((b, g), dtype=torch.bool, device=device)
        crowd = torch.zeros((b, g), dtype=torch.bool, device=device)
        for i, t in enumerate(targets):
            bx = torch.as_tensor(t["boxes"], device=device).float().reshape(-1, 4)
            n = int(bx.shape[0])
            if n == 0:
                continue
            lab = torch.as_tensor(t["labels"], device=device).long().reshape(-1)
            if lab.numel() != n:
                raise DataError(f"loss: image {i} of the batch has {n} boxes but {lab.numel()} labels")
            if int(lab.min()) < label_offset or int(lab.max()) >= num_classes + label_offset:
                raise DataError(
                    f"loss: image {i} of the batch has labels outside {label_offset}.."
                    f"{num_classes + label_offset - 1} (min {int(lab.min())}, max {int(lab.max())})"
                    + (" (label 0 is the background slot)" if label_offset else "")
                )
            lab = lab - label_offset
            is_crowd = torch.zeros(n, dtype=torch.bool, device=device)
            if t.get("iscrowd") is not None:
                is_crowd = torch.as_tensor(t["iscrowd"], device=device).reshape(-1).bool()
                if is_crowd.numel() != n:
                    raise DataError(f"loss: image {i} of the batch has {n} boxes but {is_crowd.numel()} iscrowd flags")
            boxes[i, :n] = bx
            labels[i, :n] = lab
            valid[i, :n] = ~is_crowd
            crowd[i, :n] = is_crowd
        return cls(boxes, labels, valid, crowd)

    def matched_boxes(self, result: AssignResult) -> Tensor:
        """``[B, A, 4]`` gt box of each prior's match (zeros where not foreground)."""
        idx = result.gt_inds.clamp(min=0)
        if self.max_gts == 0:
            return torch.zeros((*idx.shape, 4), dtype=self.boxes.dtype, device=self.boxes.device)
        out = torch.gather(self.boxes, 1, idx[..., None].expand(*idx.shape, 4))
        return out * (result.gt_inds >= 0)[..., None].to(out.dtype)


@runtime_checkable
class Assigner(Protocol):
    """One protocol for every label assigner.

    ``assign(priors, gt, pred_boxes=None, pred_scores=None)`` returns a batched ``AssignResult``
    (``[B, A]``). ``pred_boxes`` (``[B, A, 4]`` xyxy input pixels) and ``pred_scores``
    (``[B, A, C]`` probabilities), both detached, are handed over only when ``needs_predictions``
    (SimOTA, the YOLO grid assigner's ignore rule, max-IoU on predicted boxes).
    ``requires_anchors``: the assigner matches anchor boxes, so anchor-free heads refuse it when
    they are built (:func:`odkit.assign.registry.check_assigner`).
    """

    needs_predictions: bool
    requires_anchors: bool

    def assign(
        self,
        priors: Priors,
        gt: GTBatch,
        pred_boxes: Tensor | None = None,
        pred_scores: Tensor | None = None,
    ) -> AssignResult: ...


def assign_in_chunks(
    fn: Callable[..., tuple[Tensor, Tensor, Tensor]], gt: GTBatch, num_priors: int, max_elements: int, *shared: Any
) -> AssignResult:
    """Run ``fn(*shared, boxes, labels, valid)`` on chunks of the batch (padded gts ``[b, G, ...]``)
    small enough that no ``[b, G, A]`` intermediate exceeds ``max_elements``, and join the chunks'
    ``(gt_inds, labels, quality)`` into one batched ``AssignResult``."""
    b, g = gt.batch_size, gt.max_gts
    chunk = max(1, int(max_elements) // max(1, g * num_priors))
    parts = [
        fn(*shared, gt.boxes[i : i + chunk].float(), gt.labels[i : i + chunk].long(), gt.valid[i : i + chunk].bool())
        for i in range(0, b, chunk)
    ]
    gt_inds, labels, quality = (torch.cat(t, 0) for t in zip(*parts))
    return AssignResult(gt_inds, labels, quality, gt.num_gts)


def empty_result(batch: int, num_priors: int, gt: GTBatch) -> AssignResult:
    """An all-negative batched result (images without gts)."""
    device = gt.boxes.device
    return AssignResult(
        gt_inds=torch.full((batch, num_priors), NEGATIVE, dtype=torch.long, device=device),
        labels=torch.full((batch, num_priors), -1, dtype=torch.long, device=device),
        quality=torch.zeros((batch, num_priors), dtype=torch.float32, device=device),
        num_gts=gt.num_gts.to(device),
    )


def ignore_crowd(result: AssignResult, priors: Priors, gt: GTBatch, iof_thr: float = 0.5) -> AssignResult:
    """Mark background priors that overlap a crowd box as ``IGNORE``.

    A prior overlaps when its anchor box lies at least ``iof_thr`` inside the crowd box (intersection
    over the anchor's area) or, for anchor-free priors, when its point lies inside the crowd box.
    Foreground priors keep their match. Returns ``result`` (modified in place).
    """
    if not bool(gt.crowd.any()):
        return result
    boxes = gt.boxes[:, None, :, :]  # [B, 1, G, 4]
    if priors.anchors is not None:
        a = priors.anchors[None, :, None, :]  # [1, A, 1, 4]
        iw = (torch.minimum(a[..., 2], boxes[..., 2]) - torch.maximum(a[..., 0], boxes[..., 0])).clamp(min=0)
        ih = (torch.minimum(a[..., 3], boxes[..., 3]) - torch.maximum(a[..., 1], boxes[..., 1])).clamp(min=0)
        area = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])).clamp(min=1e-6)
        inside = (iw * ih / area) >= iof_thr
    else:
        p = priors.points[None, :, None, :]
        inside = (p[..., 0] > boxes[..., 0]) & (p[..., 0] < boxes[..., 2])
        inside &= (p[..., 1] > boxes[..., 1]) & (p[..., 1] < boxes[..., 3])
    hit = (inside & gt.crowd[:, None, :]).any(-1)  # [B, A]
    result.gt_inds[hit & (result.gt_inds == NEGATIVE)] = IGNORE
    return result
