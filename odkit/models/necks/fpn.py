"""Feature Pyramid Network (RetinaNet / FCOS style) with torchvision-compatible module names.

Module names follow torchvision's ``FeaturePyramidNetwork`` + ``LastLevelP6P7``: lateral 1x1 convs
``inner_blocks.{i}.0``, 3x3 output convs ``layer_blocks.{i}.0`` (the ``.0`` because torchvision wraps each
conv in a ``Conv2dNormActivation`` without norm and activation), extra levels ``extra_blocks.p6`` /
``extra_blocks.p7``. The keys of a torchvision detection checkpoint map by prefix:
``backbone.fpn.<name>`` -> ``<name>`` here (and ``backbone.body.<name>`` -> the ResNet).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from odkit.errors import ConfigError

EXTRA_SOURCES = ("p5", "c5")


def default_in_strides(num_levels: int, last_stride: int = 32) -> list[int]:
    """Strides of ``num_levels`` consecutive levels ending at ``last_stride``: 3 levels -> ``[8, 16, 32]``."""
    return [last_stride // 2 ** (num_levels - 1 - i) for i in range(num_levels)]


def _init_conv(conv: nn.Conv2d) -> None:
    # torchvision's FPN / LastLevelP6P7 initialisation
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class ExtraLevels(nn.Module):
    """Extra coarser levels by 3x3 stride-2 convs (padding 1), named ``p{level}`` (``p6``, ``p7``, ...).

    The first conv reads ``in_channels`` (P5 or C5), each next one the previous extra level, after a ReLU
    when ``relu`` (torchvision: ``p7 = conv(relu(p6))``; the returned P6 itself is not rectified).
    """

    def __init__(self, in_channels: int, out_channels: int, levels: Sequence[int], relu: bool = True) -> None:
        super().__init__()
        self.levels = [int(lvl) for lvl in levels]
        self.relu = relu
        for k, lvl in enumerate(self.levels):
            conv = nn.Conv2d(in_channels if k == 0 else out_channels, out_channels, 3, stride=2, padding=1)
            _init_conv(conv)
            self.add_module(f"p{lvl}", conv)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for k, lvl in enumerate(self.levels):
            if k > 0 and self.relu:
                x = F.relu(x)  # not in place: the previous level is returned unrectified
            x = getattr(self, f"p{lvl}")(x)
            outs.append(x)
        return outs


class FPN(nn.Module):
    """FPN on backbone maps ``(C_a, ..., C_b)`` (finest first) -> ``[P_a, ..., P_b, P_b+1, ...]``.

    Args:
        in_channels: channels of the input maps, finest first (e.g. ``[512, 1024, 2048]`` for R50 C3-C5).
        out_channels: channels of every output level (256).
        extra_levels: number of extra stride-2 levels after the last input level (2 = P6, P7).
        extra_source: ``"p5"``: the first extra conv reads the last FPN output (torchvision RetinaNet v1,
            FCOS: ``LastLevelP6P7(256, 256)``, ``use_P5`` true); ``"c5"``: it reads the last backbone map
            (original RetinaNet, torchvision RetinaNet v2: ``LastLevelP6P7(2048, 256)``).
        extra_relu: ReLU before every extra conv but the first (torchvision: P7 = conv(ReLU(P6))).
        in_strides: strides of the input maps; default consecutive powers of two ending at 32.

    Top-down path: ``inner_i = lateral_i(C_i) + nearest_upsample(inner_{i+1}, size of lateral_i)``,
    ``P_i = layer_i(inner_i)`` (3x3). Convs have biases, no norm, no activation; weights
    ``kaiming_uniform_(a=1)``, biases zero (as torchvision).

    Attributes:
        out_channels: ``[out_channels] * (len(in_channels) + extra_levels)``.
        strides: input strides followed by the extra levels' (e.g. ``[8, 16, 32, 64, 128]``).
        size_divisor: the largest *input* stride (32 for C3-C5). The extra levels do not need 128: their
            stride-2 convs have padding 1, so an extra level is ``ceil(previous / 2)`` (a 416 input gives
            P5 13, P6 7, P7 4), and priors must follow the actual map sizes.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 256,
        extra_levels: int = 2,
        extra_source: str = "p5",
        extra_relu: bool = True,
        in_strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        in_channels = [int(c) for c in in_channels]
        if not in_channels or min(in_channels) <= 0:
            raise ConfigError(f"FPN in_channels must be a non-empty list of positive ints, got {in_channels}")
        if extra_source not in EXTRA_SOURCES:
            raise ConfigError(f"FPN extra_source must be one of {EXTRA_SOURCES}, got {extra_source!r}")
        if extra_levels < 0:
            raise ConfigError(f"FPN extra_levels must be >= 0, got {extra_levels}")
        strides = list(in_strides) if in_strides is not None else default_in_strides(len(in_channels))
        if len(strides) != len(in_channels):
            raise ConfigError(f"FPN in_strides {strides} do not match in_channels {in_channels}")
        self.in_channels = in_channels
        self.extra_source = extra_source
        self.inner_blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(c, out_channels, 1)) for c in in_channels)
        self.layer_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1)) for _ in in_channels
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _init_conv(m)
        self.extra_blocks: ExtraLevels | None = None
        if extra_levels > 0:
            last_level = round(math.log2(strides[-1]))
            levels = [last_level + k + 1 for k in range(extra_levels)]
            source_channels = out_channels if extra_source == "p5" else in_channels[-1]
            self.extra_blocks = ExtraLevels(source_channels, out_channels, levels, relu=extra_relu)
        self.strides = strides + [strides[-1] * 2 ** (k + 1) for k in range(extra_levels)]
        self.out_channels = [out_channels] * len(self.strides)
        self.size_divisor = max(strides)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``feats``: ``[B, in_channels[i], H_i, W_i]`` finest first -> ``[B, out_channels, ...]`` per level."""
        if len(feats) != len(self.inner_blocks):
            raise ValueError(f"FPN expects {len(self.inner_blocks)} feature maps, got {len(feats)}")
        last = self.inner_blocks[-1](feats[-1])
        outs = [self.layer_blocks[-1](last)]
        for i in range(len(feats) - 2, -1, -1):
            lateral = self.inner_blocks[i](feats[i])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.layer_blocks[i](last))
        if self.extra_blocks is not None:
            outs += self.extra_blocks(outs[-1] if self.extra_source == "p5" else feats[-1])
        return outs
