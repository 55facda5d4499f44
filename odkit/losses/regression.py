"""Box-regression losses of dense detectors: smooth L1, L1, and FCOS centerness (GIoU: ``odkit.losses.iou``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from odkit.losses.normalize import reduce_loss


def smooth_l1_loss(
    pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0 / 9.0, reduction: str = "none"
) -> torch.Tensor:
    """Element-wise smooth L1: ``0.5 * d**2 / beta`` where ``d = |pred - target| < beta``, else ``d - beta / 2``.

    Same shape for ``pred`` and ``target``; ``beta = 0`` is the L1 loss. ``reduction``: none, sum or mean.
    """
    diff = (pred - target).abs()
    if beta <= 0:
        return reduce_loss(diff, reduction)
    loss = torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
    return reduce_loss(loss, reduction)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """Element-wise ``|pred - target|`` (same shapes). ``reduction``: none, sum or mean."""
    return reduce_loss((pred - target).abs(), reduction)


def centerness_targets(ltrb: torch.Tensor) -> torch.Tensor:
    """FCOS centerness ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of ``[N, 4]`` distances -> ``[N]``.

    ``ltrb`` are a point's distances to the left, top, right and bottom sides of its box (>= 0 inside
    the box; negatives are clamped to 0). A degenerate side pair (both 0) gives 0. Values lie in ``[0, 1]``.
    """
    d = ltrb.clamp(min=0)
    tiny = torch.finfo(d.dtype).tiny
    lr, tb = d[..., 0::2], d[..., 1::2]
    ratio_lr = lr.min(-1).values / lr.max(-1).values.clamp(min=tiny)
    ratio_tb = tb.min(-1).values / tb.max(-1).values.clamp(min=tiny)
    return torch.sqrt(ratio_lr * ratio_tb)


def centerness_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """BCE-with-logits of centerness ``logits`` against soft ``targets`` in ``[0, 1]`` (same shape, e.g. ``[N]``).

    ``reduction``: none, sum or mean.
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return reduce_loss(loss, reduction)
