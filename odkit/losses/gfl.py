"""Generalized Focal Loss (Li et al. 2020): quality focal loss, distribution focal loss, integral decoding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from odkit.errors import ConfigError
from odkit.losses.normalize import reduce_loss


def quality_focal_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor,
    beta: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """Quality focal loss of joint class-quality logits, per element ``[N, C]``.

    Args:
        logits: ``[N, C]`` class logits (sigmoid gives the joint class/IoU score ``s``).
        labels: ``[N]`` int64 class index; ``-1`` or ``C`` (any value outside ``[0, C)``) is background.
        scores: ``[N]`` float quality (IoU) target of each sample in ``[0, 1]``; read only at positives.
        beta: focusing exponent.
        reduction: ``"none"`` returns the **per-element** loss ``[N, C]`` (sum over ``dim=1`` for
            MMDetection's per-sample ``[N]`` form), ``"sum"`` or ``"mean"`` (over all ``N * C`` elements).

    Every element is ``BCE(logit, y) * |y - s|**beta`` with ``y = score`` at a positive's own class and
    ``y = 0`` elsewhere (so negatives are ``BCE(logit, 0) * s**beta``).
    """
    if logits.dim() != 2:
        raise ConfigError(f"quality_focal_loss: logits must be [N, C], got {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    labels = labels.long()
    valid = (labels >= 0) & (labels < num_classes)
    onehot = F.one_hot(torch.where(valid, labels, 0), num_classes).bool() & valid[:, None]
    soft = torch.where(onehot, scores.to(logits.dtype)[:, None], torch.zeros_like(logits))
    ce = F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
    modulator = (soft - torch.sigmoid(logits)).abs()
    loss = ce * modulator.pow(beta) if beta != 0 else ce
    return reduce_loss(loss, reduction)


def distribution_focal_loss(
    pred: torch.Tensor, target: torch.Tensor, reduction: str = "none"
) -> torch.Tensor:
    """Distribution focal loss of one side's bin logits ``pred [N, n_bins]`` against ``target [N]``.

    ``target`` is a float distance in bin units within ``[0, n_bins - 1]``; with ``l = floor(t)``
    and ``r = l + 1`` the loss is ``CE(pred, l) * (r - t) + CE(pred, r) * (t - l)`` (an integer target
    is the plain cross-entropy to that bin; ``t = n_bins - 1`` uses ``l = n_bins - 2``).
    ``reduction``: none (``[N]``), sum or mean.
    """
    n_bins = pred.shape[-1]
    if n_bins < 2:
        raise ConfigError(f"distribution_focal_loss: need at least 2 bins, got {n_bins}")
    t = target.to(pred.dtype)
    left = t.floor().long().clamp(0, n_bins - 2)
    right = left + 1
    w_left = right.to(pred.dtype) - t
    w_right = t - left.to(pred.dtype)
    logp = F.log_softmax(pred, dim=-1)
    ce_left = -logp.gather(-1, left[..., None])[..., 0]
    ce_right = -logp.gather(-1, right[..., None])[..., 0]
    return reduce_loss(ce_left * w_left + ce_right * w_right, reduction)


def distribution_to_distance(pred: torch.Tensor, reg_max: int = 16) -> torch.Tensor:
    """GFL decoding: expected distance ``sum_i softmax(p)_i * i`` of each side.

    ``pred`` is ``[..., 4 * (reg_max + 1)]`` logits, the four sides (l, t, r, b) each ``reg_max + 1``
    consecutive bins (reg_max 16 gives 17 bins); returns ``[..., 4]`` distances in bin units
    (``[0, reg_max]``; multiply by the stride for pixels).
    """
    n_bins = reg_max + 1
    if pred.shape[-1] != 4 * n_bins:
        raise ConfigError(
            f"distribution_to_distance: last dim {pred.shape[-1]} is not 4 * (reg_max + 1) = {4 * n_bins}"
        )
    prob = F.softmax(pred.reshape(*pred.shape[:-1], 4, n_bins), dim=-1)
    bins = torch.arange(n_bins, dtype=prob.dtype, device=prob.device)
    return (prob * bins).sum(-1)


class Integral(nn.Module):
    """Module form of :func:`distribution_to_distance` (``[..., 4 * (reg_max + 1)] -> [..., 4]``)."""

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = reg_max

    def forward(self, pred: torch.Tensor) -> torch.Tensor:
        return distribution_to_distance(pred, self.reg_max)
