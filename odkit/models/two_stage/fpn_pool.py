"""FPN whose extra top level is a stride-2 max-pool of the last output (torchvision's
``LastLevelMaxPool``: ``pool = max_pool2d(P_last, 1, 2)``), the Faster R-CNN neck. Parameter names
are :class:`~odkit.models.necks.fpn.FPN`'s (torchvision's ``inner_blocks`` / ``layer_blocks``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from odkit.models.necks.fpn import FPN


class FPNMaxPool(FPN):
    """``FPN(in_channels, out_channels, extra_levels=0)`` plus one max-pooled level (stride x2)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256,
                 in_strides: Sequence[int] | None = None) -> None:
        super().__init__(in_channels, out_channels, extra_levels=0, in_strides=in_strides)
        self.strides = self.strides + [self.strides[-1] * 2]
        self.out_channels = self.out_channels + [out_channels]

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        outs = super().forward(feats)
        return outs + [F.max_pool2d(outs[-1], 1, 2, 0)]
