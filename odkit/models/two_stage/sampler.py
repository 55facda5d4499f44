"""Balanced positive / negative sampling of assigned priors (Faster R-CNN's RPN and RoI head)."""

from __future__ import annotations

import torch
from torch import Tensor

from odkit.assign.result import NEGATIVE
from odkit.errors import ConfigError


class BalancedSampler:
    """Per image, draw at most ``num`` priors of which at most ``round_down(num * pos_fraction)`` are
    positive; negatives fill the rest (torchvision's ``BalancedPositiveNegativeSampler``).

    With ``P`` positives and ``N`` negatives in an image: ``n_pos = min(P, int(num * pos_fraction))``
    and ``n_neg = min(N, num - n_pos)``, drawn uniformly without replacement. ``IGNORE`` priors
    (``gt_inds == -2``) and priors excluded by ``valid`` are never drawn.
    """

    def __init__(self, num: int = 256, pos_fraction: float = 0.5) -> None:
        if int(num) < 1:
            raise ConfigError(f"BalancedSampler: num must be >= 1, got {num}")
        if not 0.0 < float(pos_fraction) <= 1.0:
            raise ConfigError(f"BalancedSampler: pos_fraction must be in (0, 1], got {pos_fraction}")
        self.num = int(num)
        self.pos_fraction = float(pos_fraction)

    def __repr__(self) -> str:
        return f"BalancedSampler(num={self.num}, pos_fraction={self.pos_fraction})"

    @torch.no_grad()
    def sample(self, gt_inds: Tensor, valid: Tensor | None = None,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Boolean masks ``(pos, neg)`` ``[B, A]`` of the drawn positives and negatives of
        ``gt_inds`` ``[B, A]`` (an :class:`~odkit.assign.result.AssignResult`'s field)."""
        pos_all = gt_inds >= 0
        neg_all = gt_inds == NEGATIVE
        if valid is not None:
            pos_all &= valid
            neg_all &= valid
        pos = torch.zeros_like(pos_all)
        neg = torch.zeros_like(neg_all)
        max_pos = int(self.num * self.pos_fraction)
        for b in range(gt_inds.shape[0]):
            p = pos_all[b].nonzero().squeeze(1)
            n = neg_all[b].nonzero().squeeze(1)
            n_pos = min(int(p.numel()), max_pos)
            n_neg = min(int(n.numel()), self.num - n_pos)
            p = p[torch.randperm(p.numel(), device=p.device, generator=generator)[:n_pos]] if n_pos else p[:0]
            n = n[torch.randperm(n.numel(), device=n.device, generator=generator)[:n_neg]] if n_neg else n[:0]
            pos[b, p] = True
            neg[b, n] = True
        return pos, neg
