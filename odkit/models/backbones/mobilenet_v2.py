"""MobileNetV2 trunk with torchvision's parameter names (ImageNet weights load by name).

Layout (``features``), width 1.0:

=====  ========================================  ======  ========
idx    layer                                     stride  channels
=====  ========================================  ======  ========
0      3x3 s2 conv, BN, ReLU6                    2       32
1      inverted residual, expansion 1            2       16
2-3    expansion 6, first s2                     4       24
4-6    expansion 6, first s2                     8       32
7-10   expansion 6, first s2                     16      64
11-13  expansion 6                               16      96
14-16  expansion 6, first s2                     32      160
17     expansion 6                               32      320
18     1x1 conv, BN, ReLU6                       32      1280
=====  ========================================  ======  ========

Block ``features.i.conv``: ``0`` 1x1 expansion ConvNormAct with ReLU6 (absent for expansion 1), the
3x3 depthwise ConvNormAct with ReLU6, then the linear 1x1 projection as a plain ``Conv2d`` and a norm
(``conv.2`` / ``conv.3``; ``conv.1`` / ``conv.2`` without expansion). Residual when stride 1 and in == out.
SSDLite-MobileNetV2 (the MobileNetV2 paper, section 6.3) takes ``out_indices=("14.expand", 18)``:
the 576-channel expansion conv of block 14 (stride 16) and the last conv (1280, stride 32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.mobile_common import (
    ConvNormAct,
    FeatureTrunk,
    make_divisible,
)
from odkit.nn.norm import NormFactory, NormSpec, norm_factory

# expansion t, channels c, repeats n, first stride s
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
           (6, 320, 1, 1))
DEFAULT_OUT = (6, 13, 18)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: ``[B, in, H, W] -> [B, out, H / stride, W / stride]`` (``conv`` Sequential)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int,
                 norm: NormFactory, dilation: int = 1) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.is_strided = stride > 1
        self.stride = 1 if dilation > 1 else stride
        self.out_channels = out_channels
        self.expanded_channels = hidden if expand_ratio != 1 else None
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvNormAct(in_channels, hidden, 1, norm, nn.ReLU6))
        layers += [
            ConvNormAct(hidden, hidden, 3, norm, nn.ReLU6, stride=self.stride, groups=hidden, dilation=dilation),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            norm(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def split_expand(self) -> tuple[nn.Module, nn.Module]:
        """``(expansion conv, rest of the block)``; only for expanding blocks."""
        return self.conv[0], self.conv[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + x if self.use_res_connect else y


class MobileNetV2(FeatureTrunk):
    """MobileNetV2 trunk (no classifier) returning the maps of ``out_indices``, in order.

    Args:
        width_mult: channel multiplier (``make_divisible(c * width_mult, round_nearest)``; the last conv
            keeps at least 1280).
        round_nearest: channel rounding divisor (8).
        out_indices: ``features`` indices (negative from the end) or ``"<i>.expand"`` (the expansion conv
            of block ``i``); default ``(6, 13, 18)``: strides 8, 16, 32 with 32, 96, 1280 channels.
        dilated: dilation 2 instead of stride 2 in the last strided group (blocks 14-17; stride 16 after).
        norm: ``"bn"`` (BatchNorm2d, eps 1e-5 and momentum 0.1: torchvision's default), ``"frozen_bn"``,
            ``"gn"`` or a ``num_features -> module`` callable (:func:`odkit.nn.norm.norm_factory`);
            ``norm_eps`` / ``norm_momentum`` override eps / momentum.
        frozen_stages, norm_eval: as :class:`~odkit.models.backbones.mobile_common.FeatureTrunk`
            (stages start at features 0, 2, 4, 7, 14, 18).

    Parameter count at width 1.0: 2,223,872 (torchvision's 3,504,872 minus its 1000-class classifier).
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        round_nearest: int = 8,
        out_indices: Sequence[int | str] | None = None,
        dilated: bool = False,
        norm: NormSpec = "bn",
        norm_eps: float | None = None,
        norm_momentum: float | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ConfigError(f"MobileNetV2 width_mult must be positive, got {width_mult}")
        norm_fn = norm_factory(norm, norm_eps, norm_momentum, bn_eps=1e-5, bn_momentum=0.1, owner="MobileNetV2")
        in_channels = make_divisible(32 * width_mult, round_nearest)
        last = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        layers: list[nn.Module] = [ConvNormAct(3, in_channels, 3, norm_fn, nn.ReLU6, stride=2)]
        for g, (t, c, n, s) in enumerate(SETTING):
            out_channels = make_divisible(c * width_mult, round_nearest)
            dilation = 2 if dilated and g >= 5 else 1
            for i in range(n):
                layers.append(InvertedResidual(in_channels, out_channels, s if i == 0 else 1, t, norm_fn, dilation))
                in_channels = out_channels
        layers.append(ConvNormAct(in_channels, last, 1, norm_fn, nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self._init_weights()
        self._setup(DEFAULT_OUT if out_indices is None else out_indices, frozen_stages, norm_eval)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
