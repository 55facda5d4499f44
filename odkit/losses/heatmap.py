"""CenterNet's penalty-reduced focal loss on Gaussian heatmaps (CornerNet / CenterNet ``_neg_loss``)."""

from __future__ import annotations

import torch
from torch import Tensor


def penalty_reduced_focal_loss(logits: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0,
                               eps: float = 1e-4) -> Tensor:
    """``-(sum_pos (1 - p)^alpha log p + sum_neg (1 - y)^beta p^alpha log(1 - p)) / max(1, num_pos)``.

    ``logits`` and ``target`` ``[B, C, H, W]``; ``p = clamp(sigmoid(logits), eps, 1 - eps)`` as
    CenterNet clamps it; positives are the cells where the target is exactly 1, every other cell is a
    negative weighted down by ``(1 - y)^beta`` near a peak. Without positives the negative sum alone
    (CenterNet's rule)."""
    p = torch.sigmoid(logits.float()).clamp(eps, 1 - eps)
    target = target.float()
    pos = target.eq(1).float()
    neg = 1.0 - pos
    pos_loss = (torch.log(p) * torch.pow(1 - p, alpha) * pos).sum()
    neg_loss = (torch.log(1 - p) * torch.pow(p, alpha) * torch.pow(1 - target, beta) * neg).sum()
    num_pos = pos.sum()
    return -(pos_loss + neg_loss) / num_pos.clamp(min=1.0)
