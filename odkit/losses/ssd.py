"""SSD loss (Liu et al. 2016): softmax cross-entropy with hard negative mining, and smooth L1 on the
encoded offsets of the positives, both divided by the number of positives.

``hard_negative_mining`` keeps, per image, the ``neg_pos_ratio x (positives)`` background priors with
the highest classification loss (torchvision's ``SSD.compute_loss`` and the paper: 3:1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from odkit.losses.regression import smooth_l1_loss


def hard_negative_mining(cls_loss: Tensor, positive: Tensor, negative: Tensor, neg_pos_ratio: float = 3.0) -> Tensor:
    """Mask ``[B, A]`` of the negatives kept for the classification loss.

    Per image with ``P`` positives (``positive`` mask), the ``floor(neg_pos_ratio * P)`` priors of the
    ``negative`` mask (background; ignored priors are in neither mask) with the highest ``cls_loss``
    are kept (all of them when there are fewer). Ties keep the lower prior index. An image without
    positives keeps no negatives (torchvision's rule).
    """
    if cls_loss.shape != positive.shape or cls_loss.shape != negative.shape:
        raise ValueError(f"hard_negative_mining: shapes differ {tuple(cls_loss.shape)}, "
                         f"{tuple(positive.shape)}, {tuple(negative.shape)}")
    num_neg = torch.floor(neg_pos_ratio * positive.sum(1, keepdim=True).float())  # [B, 1]
    ranked = cls_loss.detach().masked_fill(~negative, -float("inf"))
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return negative & (rank < num_neg)


def ssd_loss(
    cls_logits: Tensor,
    deltas: Tensor,
    cls_targets: Tensor,
    box_targets: Tensor,
    positive: Tensor,
    negative: Tensor,
    num_pos: Tensor,
    neg_pos_ratio: float = 3.0,
    beta: float = 1.0,
) -> dict[str, Tensor]:
    """SSD loss terms.

    Args:
        cls_logits: ``[B, A, L]`` logits with the background at index 0.
        deltas: ``[B, A, 4]`` predicted offsets.
        cls_targets: ``[B, A]`` int64 logit index (0 = background).
        box_targets: ``[P, 4]`` encoded offsets of the positives, in ``positive.nonzero()`` order.
        positive, negative: ``[B, A]`` masks (background priors that are not ignored: ``negative``).
        num_pos: normaliser (positives, >= 1).
        neg_pos_ratio: negatives kept per positive (hard negative mining).
        beta: smooth L1 transition (torchvision: 1; 0 is the L1 loss).

    Returns ``{"loss_cls", "loss_box"}`` (sums divided by ``num_pos``).
    """
    ce = F.cross_entropy(cls_logits.flatten(0, 1), cls_targets.flatten(), reduction="none").view(cls_targets.shape)
    kept = hard_negative_mining(ce, positive, negative, neg_pos_ratio)
    loss_cls = (ce[positive].sum() + ce[kept].sum()) / num_pos
    loss_box = smooth_l1_loss(deltas[positive], box_targets, beta, reduction="sum") / num_pos
    return {"loss_cls": loss_cls, "loss_box": loss_box}
