"""``AssignResult``: the one output format of every label assigner in odkit."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Values of ``AssignResult.gt_inds`` that are not gt indices.
NEGATIVE = -1
IGNORE = -2


@dataclass
class AssignResult:
    """Per-prior assignment of one image (``[A]`` fields) or a batch (``[B, A]`` fields).

    Attributes:
        gt_inds: int64, index (0-based, into that image's gt list) of the gt a prior is matched to;
            ``-1`` (``NEGATIVE``) for a background prior, ``-2`` (``IGNORE``) for a prior that takes
            part in no loss.
        labels: int64, class (0..C-1) of the matched gt; ``-1`` where the prior is not foreground.
        quality: float32, the regression quality target of a foreground prior (for SimOTA: the IoU
            between the prior's predicted box and its matched gt, used as the soft class target);
            ``0`` elsewhere.
        num_gts: int64 ``[]`` or ``[B]``, number of (valid) gt boxes of each image.
    """

    gt_inds: torch.Tensor
    labels: torch.Tensor
    quality: torch.Tensor
    num_gts: torch.Tensor

    @property
    def pos_mask(self) -> torch.Tensor:
        """Boolean mask of foreground priors."""
        return self.gt_inds >= 0

    @property
    def neg_mask(self) -> torch.Tensor:
        """Boolean mask of background priors."""
        return self.gt_inds == NEGATIVE

    @property
    def num_pos(self) -> int:
        """Number of foreground priors (over the whole batch for batched results)."""
        return int(self.pos_mask.sum())

    def __getitem__(self, i: int) -> AssignResult:
        """The result of image ``i`` of a batched result."""
        return AssignResult(self.gt_inds[i], self.labels[i], self.quality[i], self.num_gts[i])
