"""YOLOv3 necks: the top-down path of YOLOv3 (Darknet-53) and of YOLOv3-tiny.

Convolutions are ``Conv -> BatchNorm -> LeakyReLU(0.1)``; upsampling is nearest x2. Inputs are
backbone maps finest first; outputs are finest first too (the head adds the 3x3 "bridge" convolution
and the 1x1 prediction of each level, as MMDetection's ``YOLOV3Neck`` / ``YOLOV3Head`` split them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from odkit.errors import ConfigError
from odkit.nn import ConvBNAct


def _conv(cin: int, cout: int, k: int) -> ConvBNAct:
    return ConvBNAct(cin, cout, k, 1, act="lrelu")


class DetectionBlock(nn.Module):
    """Five convolutions ``1x1 c, 3x3 2c, 1x1 c, 3x3 2c, 1x1 c``: ``[B, in, H, W] -> [B, c, H, W]``."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            _conv(in_channels, channels, 1), _conv(channels, 2 * channels, 3), _conv(2 * channels, channels, 1),
            _conv(channels, 2 * channels, 3), _conv(2 * channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class YOLOv3Neck(nn.Module):
    """YOLOv3's top-down path over ``L`` levels (C3, C4, C5 of Darknet-53: 256, 512, 1024 channels).

    The coarsest level goes through a :class:`DetectionBlock` to ``out_channels[-1]`` (512); each finer
    level ``i`` takes the level above, a 1x1 conv to ``out_channels[i]``, nearest x2 upsampling,
    concatenation with backbone map ``i`` and a DetectionBlock to ``out_channels[i]`` (256, 128).
    ``forward(feats)`` returns the DetectionBlock outputs, finest first.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int] = (128, 256, 512),
                 in_strides: Sequence[int] = (8, 16, 32)) -> None:
        super().__init__()
        cin, cout = [int(c) for c in in_channels], [int(c) for c in out_channels]
        if len(cin) != len(cout) or len(cin) < 1:
            raise ConfigError(f"YOLOv3Neck: {len(cin)} input levels but {len(cout)} output channel counts")
        n = len(cin)
        self.detect = nn.ModuleList()
        self.lateral = nn.ModuleList()
        for i in range(n):
            if i == n - 1:
                self.detect.append(DetectionBlock(cin[i], cout[i]))
            else:
                self.detect.append(DetectionBlock(cin[i] + cout[i], cout[i]))
                self.lateral.append(_conv(cout[i + 1], cout[i], 1))
        self.out_channels = cout
        self.strides = [int(s) for s in in_strides]
        self.size_divisor = 32

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        n = len(self.detect)
        outs: list[torch.Tensor] = [None] * n  # type: ignore[list-item]
        x = self.detect[n - 1](feats[n - 1])
        outs[n - 1] = x
        for i in range(n - 2, -1, -1):
            up = F.interpolate(self.lateral[i](x), scale_factor=2.0, mode="nearest")
            x = self.detect[i](torch.cat((up, feats[i]), 1))
            outs[i] = x
        return outs


class YOLOv3TinyNeck(nn.Module):
    """YOLOv3-tiny's neck on (C4 256 ch, C5 1024 ch): ``P5 = conv1x1(C5) -> 256`` and
    ``P4 = cat(up2(conv1x1(P5) -> 128), C4) -> 384`` channels. ``forward`` returns ``[P4, P5]``."""

    def __init__(self, in_channels: Sequence[int] = (256, 1024), channels: int = 256,
                 in_strides: Sequence[int] = (16, 32)) -> None:
        super().__init__()
        c4, c5 = (int(c) for c in in_channels)
        self.reduce = _conv(c5, channels, 1)
        self.lateral = _conv(channels, channels // 2, 1)
        self.out_channels = [channels // 2 + c4, channels]
        self.strides = [int(s) for s in in_strides]
        self.size_divisor = 32

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        c4, c5 = feats
        p5 = self.reduce(c5)
        up = F.interpolate(self.lateral(p5), scale_factor=2.0, mode="nearest")
        return [torch.cat((up, c4), 1), p5]
