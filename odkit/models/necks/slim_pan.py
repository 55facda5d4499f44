"""SlimPAN: a light path-aggregation neck for CPU detectors (ShuffleNetV2 / small backbones).

All levels are first projected to one width by 1x1 ConvBNAct laterals; the top-down and bottom-up paths
fuse levels by resizing and *adding* (no concatenation), each sum refined by one depthwise-separable
3x3 convolution (``DWConv``: depthwise kxk + pointwise 1x1, each with BN and activation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from odkit.errors import ConfigError
from odkit.nn.conv import ConvBNAct, DWConv

UPSAMPLE_MODES = ("nearest", "bilinear")


class SlimPAN(nn.Module):
    """Light PAN on backbone maps (finest first) -> as many maps of ``out_channels`` (+ ``extra_levels``).

    With laterals ``L_i = conv1x1(C_i)`` (``n`` levels, finest ``i = 0``):

    * top-down: ``T_{n-1} = L_{n-1}``; ``T_i = DWConv(L_i + upsample(T_{i+1}, size of L_i))``;
    * bottom-up: ``P_0 = T_0``; ``P_i = DWConv(T_i + down_i(P_{i-1}))``, ``down_i`` a 3x3 stride-2 depthwise
      ConvBNAct (its output is resized to ``T_i`` when the sizes differ, i.e. input not divisible);
    * extra levels: ``P_{n-1+k} = DWConv(P_{n-2+k}, stride 2)`` for ``k = 1..extra_levels``.

    Args:
        in_channels: channels of the input maps, finest first (e.g. ``[116, 232, 464]``).
        out_channels: width of every output level (96).
        extra_levels: extra stride-2 levels appended after the last one (0).
        kernel_size: depthwise kernel of the refining DWConvs (3; 5 widens the receptive field cheaply).
        act: activation of all blocks (``"lrelu"``, ``"relu"``, ``"silu"``).
        upsample_mode: ``"nearest"`` or ``"bilinear"`` top-down resizing.
        in_strides: strides of the inputs; default consecutive powers of two ending at 32.

    Attributes:
        out_channels: ``[out_channels] * (len(in_channels) + extra_levels)``.
        strides: e.g. ``[8, 16, 32]`` (``[8, 16, 32, 64]`` with one extra level).
        size_divisor: the largest input stride; extra levels use padded stride-2 convs (``ceil(H / 2)``)
            and need no larger divisor.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 96,
        extra_levels: int = 0,
        kernel_size: int = 3,
        act: str = "lrelu",
        upsample_mode: str = "nearest",
        in_strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        if not in_channels or min(in_channels) <= 0:
            raise ConfigError(
                f"SlimPAN in_channels must be a non-empty list of positive ints, got {in_channels}"
            )
        if extra_levels < 0:
            raise ConfigError(f"SlimPAN extra_levels must be >= 0, got {extra_levels}")
        if upsample_mode not in UPSAMPLE_MODES:
            raise ConfigError(f"SlimPAN upsample_mode must be one of {UPSAMPLE_MODES}, got {upsample_mode!r}")
        n = len(in_channels)
        strides = (
            [int(s) for s in in_strides]
            if in_strides is not None
            else [32 // 2 ** (n - 1 - i) for i in range(n)]
        )
        if len(strides) != n:
            raise ConfigError(f"SlimPAN in_strides {strides} do not match in_channels {in_channels}")
        c = out_channels
        self.upsample_mode = upsample_mode
        self.laterals = nn.ModuleList(ConvBNAct(ci, c, 1, 1, act=act) for ci in in_channels)
        self.top_down = nn.ModuleList(DWConv(c, c, kernel_size, 1, act=act) for _ in range(n - 1))
        self.downsamples = nn.ModuleList(ConvBNAct(c, c, 3, 2, groups=c, act=act) for _ in range(n - 1))
        self.bottom_up = nn.ModuleList(DWConv(c, c, kernel_size, 1, act=act) for _ in range(n - 1))
        self.extra = nn.ModuleList(DWConv(c, c, kernel_size, 2, act=act) for _ in range(extra_levels))
        self.strides = strides + [strides[-1] * 2 ** (k + 1) for k in range(extra_levels)]
        self.out_channels = [c] * len(self.strides)
        self.size_divisor = max(strides)

    def _upsample(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if self.upsample_mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``feats``: ``[B, in_channels[i], H_i, W_i]`` finest first -> ``[B, out_channels, H_i, W_i]`` per level."""
        if len(feats) != len(self.laterals):
            raise ValueError(f"SlimPAN expects {len(self.laterals)} feature maps, got {len(feats)}")
        lat = [conv(f) for conv, f in zip(self.laterals, feats)]
        n = len(lat)
        td = [lat[-1]]  # coarsest first while building
        for i in range(n - 2, -1, -1):
            up = self._upsample(td[0], lat[i].shape[-2:])
            td.insert(0, self.top_down[i](lat[i] + up))
        outs = [td[0]]
        for i in range(1, n):
            down = self.downsamples[i - 1](outs[-1])
            if down.shape[-2:] != td[i].shape[-2:]:
                down = F.interpolate(down, size=td[i].shape[-2:], mode="nearest")
            outs.append(self.bottom_up[i - 1](td[i] + down))
        for conv in self.extra:
            outs.append(conv(outs[-1]))
        return outs
