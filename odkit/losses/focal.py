"""Sigmoid focal loss (RetinaNet, Lin et al. 2017) on per-class logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from odkit.losses.normalize import reduce_loss


def sigmoid_focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """Focal loss ``-alpha_t * (1 - p_t)**gamma * log(p_t)`` of sigmoid logits, element-wise.

    ``logits`` and ``targets`` have the same shape (any, e.g. ``[N, C]``); ``targets`` are 0/1 floats
    (soft values in ``[0, 1]`` are accepted). ``p_t = p`` where the target is 1 and ``1 - p`` where it
    is 0; ``alpha_t = alpha`` on positives and ``1 - alpha`` on negatives; ``alpha < 0`` disables the
    weighting (``gamma = 0, alpha < 0`` is plain BCE). The log term is BCE-with-logits and
    ``1 - p_t`` is formed from ``sigmoid(x)`` and ``sigmoid(-x)``, so large logits stay finite.
    ``reduction``: none (same shape as ``logits``), sum or mean.
    """
    targets = targets.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    q = torch.sigmoid(-logits)  # 1 - p without cancellation
    one_minus_pt = p * (1.0 - targets) + q * targets
    loss = ce * one_minus_pt.pow(gamma) if gamma != 0 else ce
    if alpha >= 0:
        loss = loss * (alpha * targets + (1.0 - alpha) * (1.0 - targets))
    return reduce_loss(loss, reduction)
