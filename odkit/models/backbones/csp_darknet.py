"""CSPDarknet backbone (YOLOX / YOLOv5 style): Focus stem, dark2..dark5 stages, SPP in the last."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.nn import SPP, CSPLayer, Focus, conv_or_dw, scale_depth, scale_width

STAGES = ("stem", "dark2", "dark3", "dark4", "dark5")
STRIDES = {"stem": 2, "dark2": 4, "dark3": 8, "dark4": 16, "dark5": 32}


class CSPDarknet(nn.Module):
    """CSPDarknet-53 scaled by ``depth`` / ``width`` multipliers.

    Channels of the stages are ``64 * width * (1, 2, 4, 8, 16)``; stage depths ``3 * depth * (1, 3, 3, 1)``.
    ``forward`` returns the feature maps named in ``out_features`` (default dark3, dark4, dark5 at
    strides 8, 16, 32) as a tuple, shallowest first. Input ``H`` and ``W`` must be multiples of 32.
    """

    def __init__(
        self,
        depth: float = 1.0,
        width: float = 1.0,
        out_features: Sequence[str] = ("dark3", "dark4", "dark5"),
        depthwise: bool = False,
        act: str = "silu",
    ) -> None:
        super().__init__()
        for name in out_features:
            if name not in STAGES:
                raise ConfigError(
                    f"CSPDarknet out_features: unknown stage {name!r}; expected one of {STAGES}"
                )
        self.out_features = tuple(out_features)
        c = scale_width(64, width)
        n = scale_depth(3, depth)
        self.stem = Focus(3, c, kernel_size=3, act=act)
        self.dark2 = nn.Sequential(
            conv_or_dw(c, c * 2, 3, 2, depthwise, act),
            CSPLayer(c * 2, c * 2, n=n, depthwise=depthwise, act=act),
        )
        self.dark3 = nn.Sequential(
            conv_or_dw(c * 2, c * 4, 3, 2, depthwise, act),
            CSPLayer(c * 4, c * 4, n=n * 3, depthwise=depthwise, act=act),
        )
        self.dark4 = nn.Sequential(
            conv_or_dw(c * 4, c * 8, 3, 2, depthwise, act),
            CSPLayer(c * 8, c * 8, n=n * 3, depthwise=depthwise, act=act),
        )
        self.dark5 = nn.Sequential(
            conv_or_dw(c * 8, c * 16, 3, 2, depthwise, act),
            SPP(c * 16, c * 16, act=act),
            CSPLayer(c * 16, c * 16, n=n, shortcut=False, depthwise=depthwise, act=act),
        )
        self.channels = {name: c * m for name, m in zip(STAGES, (1, 2, 4, 8, 16))}
        self.out_channels = [self.channels[name] for name in self.out_features]
        self.strides = [STRIDES[name] for name in self.out_features]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for name in STAGES:
            x = getattr(self, name)(x)
            if name in self.out_features:
                outs.append(x)
        return tuple(outs)
