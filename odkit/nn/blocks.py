"""Composite blocks of CSP-style detectors: Focus, SPP / SPPF, Bottleneck and CSPLayer.

Each takes ``norm`` (a ``num_features -> module`` factory, default :func:`~odkit.nn.conv.default_bn`)
for every ConvBNAct inside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from odkit.nn.conv import ConvBNAct, conv_or_dw, default_bn
from odkit.nn.norm import NormFactory


class Focus(nn.Module):
    """Space-to-depth stem: ``[B, C, H, W] -> [B, 4C, H/2, W/2]`` then a ConvBNAct.

    The four pixel phases are stacked in the order (even row, even col), (odd row, even col),
    (even row, odd col), (odd row, odd col). ``H`` and ``W`` must be even.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, act: str = "silu",
        norm: NormFactory = default_bn,
    ) -> None:
        super().__init__()
        self.conv = ConvBNAct(in_channels * 4, out_channels, kernel_size, stride, act=act, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top_left = x[..., ::2, ::2]
        bot_left = x[..., 1::2, ::2]
        top_right = x[..., ::2, 1::2]
        bot_right = x[..., 1::2, 1::2]
        return self.conv(torch.cat((top_left, bot_left, top_right, bot_right), dim=1))


class SPP(nn.Module):
    """Spatial pyramid pooling (YOLOv3-SPP / YOLOX): 1x1 conv to half width, parallel stride-1 max-pools
    (kernels 5, 9, 13) concatenated with the input, then a 1x1 conv to ``out_channels``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_sizes: Sequence[int] = (5, 9, 13),
        act: str = "silu",
        norm: NormFactory = default_bn,
    ) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = ConvBNAct(in_channels, hidden, 1, 1, act=act, norm=norm)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = ConvBNAct(hidden * (len(kernel_sizes) + 1), out_channels, 1, 1, act=act, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.pools], dim=1))


class SPPF(nn.Module):
    """Fast SPP (YOLOv5): three chained ``k x k`` max-pools (k=5 equals SPP 5/9/13 exactly)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, act: str = "silu",
                 norm: NormFactory = default_bn) -> None:
        super().__init__()
        hidden = in_channels // 2
        self.conv1 = ConvBNAct(in_channels, hidden, 1, 1, act=act, norm=norm)
        self.pool = nn.MaxPool2d(kernel_size, stride=1, padding=kernel_size // 2)
        self.conv2 = ConvBNAct(hidden * 4, out_channels, 1, 1, act=act, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        y3 = self.pool(y2)
        return self.conv2(torch.cat((x, y1, y2, y3), dim=1))


class Bottleneck(nn.Module):
    """Residual bottleneck: 1x1 ConvBNAct to ``out*expansion`` then 3x3 (depthwise-separable if asked);
    the input is added back when ``shortcut`` and the channel counts match."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        shortcut: bool = True,
        expansion: float = 0.5,
        depthwise: bool = False,
        act: str = "silu",
        norm: NormFactory = default_bn,
    ) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvBNAct(in_channels, hidden, 1, 1, act=act, norm=norm)
        self.conv2 = conv_or_dw(hidden, out_channels, 3, 1, depthwise=depthwise, act=act, norm=norm)
        self.use_add = shortcut and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    """Cross-stage-partial layer (YOLOX / YOLOv5 "C3"): two 1x1 branches of ``out*expansion`` channels,
    ``n`` bottlenecks on the first, concatenation, then a 1x1 ConvBNAct to ``out_channels``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        n: int = 1,
        shortcut: bool = True,
        expansion: float = 0.5,
        depthwise: bool = False,
        act: str = "silu",
        norm: NormFactory = default_bn,
    ) -> None:
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvBNAct(in_channels, hidden, 1, 1, act=act, norm=norm)
        self.conv2 = ConvBNAct(in_channels, hidden, 1, 1, act=act, norm=norm)
        self.conv3 = ConvBNAct(2 * hidden, out_channels, 1, 1, act=act, norm=norm)
        self.m = nn.Sequential(
            *(Bottleneck(hidden, hidden, shortcut, 1.0, depthwise=depthwise, act=act, norm=norm) for _ in range(n))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.cat((self.m(self.conv1(x)), self.conv2(x)), dim=1))
