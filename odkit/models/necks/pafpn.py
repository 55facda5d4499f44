"""PAFPN neck (YOLOX): top-down FPN path then bottom-up PAN path, fused with CSP layers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from odkit.nn import ConvBNAct, CSPLayer, conv_or_dw, scale_depth


class PAFPN(nn.Module):
    """Three-level PAFPN on backbone features ``(C3, C4, C5)`` (strides 8, 16, 32).

    ``in_channels`` are the actual (already width-scaled) channels of C3, C4, C5; the outputs
    ``(P3, P4, P5)`` keep those channel counts. ``depth`` scales the CSP layers (``3 * depth`` blocks).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        depth: float = 1.0,
        depthwise: bool = False,
        act: str = "silu",
    ) -> None:
        super().__init__()
        c3, c4, c5 = (int(c) for c in in_channels)
        n = scale_depth(3, depth)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        # top-down
        self.lateral_conv0 = ConvBNAct(c5, c4, 1, 1, act=act)
        self.C3_p4 = CSPLayer(2 * c4, c4, n, shortcut=False, depthwise=depthwise, act=act)
        self.reduce_conv1 = ConvBNAct(c4, c3, 1, 1, act=act)
        self.C3_p3 = CSPLayer(2 * c3, c3, n, shortcut=False, depthwise=depthwise, act=act)
        # bottom-up
        self.bu_conv2 = conv_or_dw(c3, c3, 3, 2, depthwise, act)
        self.C3_n3 = CSPLayer(2 * c3, c4, n, shortcut=False, depthwise=depthwise, act=act)
        self.bu_conv1 = conv_or_dw(c4, c4, 3, 2, depthwise, act)
        self.C3_n4 = CSPLayer(2 * c4, c5, n, shortcut=False, depthwise=depthwise, act=act)
        self.out_channels = [c3, c4, c5]

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x3, x4, x5 = feats
        fpn5 = self.lateral_conv0(x5)  # stride 32, c4
        f4 = self.C3_p4(torch.cat((self.upsample(fpn5), x4), dim=1))  # stride 16, c4
        fpn4 = self.reduce_conv1(f4)  # stride 16, c3
        p3 = self.C3_p3(torch.cat((self.upsample(fpn4), x3), dim=1))  # stride 8, c3
        p4 = self.C3_n3(torch.cat((self.bu_conv2(p3), fpn4), dim=1))  # stride 16, c4
        p5 = self.C3_n4(torch.cat((self.bu_conv1(p4), fpn5), dim=1))  # stride 32, c5
        return p3, p4, p5
