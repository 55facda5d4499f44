"""Mask R-CNN's mask loss (torchvision's ``maskrcnn_loss``): per-pixel binary cross-entropy of each
positive RoI's mask logits in the column of its gt class against its ``M x M`` target, averaged over
every pixel of every positive RoI."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mask_loss"]


def mask_loss(logits: Tensor, columns: Tensor, targets: Tensor) -> Tensor:
    """``logits`` ``[K, L, M, M]`` (one mask per class column), ``columns`` ``[K]`` the gt column of
    each positive RoI, ``targets`` ``[K, M, M]`` in [0, 1] -> mean BCE-with-logits (a zero that keeps
    the graph when ``K == 0``)."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    picked = logits[torch.arange(columns.shape[0], device=columns.device), columns]
    return F.binary_cross_entropy_with_logits(picked.float(), targets.to(torch.float32))
