"""YOLOv2 necks: the passthrough of ``yolov2.cfg`` and the single-map neck of ``yolov2-tiny.cfg``.

Convolutions are ``Conv -> BatchNorm -> LeakyReLU(0.1)`` (:class:`odkit.nn.ConvBNAct`). Inputs are
backbone maps finest first; both necks output one map at stride 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.nn import ConvBNAct
from odkit.nn.reorg import Reorg


class YOLOv2Neck(nn.Module):
    """YOLOv2's passthrough on (C4 512 ch at stride 16, C5 1024 ch at stride 32), darknet layers 23-28:
    ``p5 = conv3x3(conv3x3(C5))`` (``channels``), ``pt = reorg(conv1x1(C4) -> passthrough)`` (darknet's
    reorg, stride 2: ``4 x passthrough`` channels at stride 32) and the output ``cat(pt, p5)``
    (``4 passthrough + channels`` = 1280 channels)."""

    def __init__(self, in_channels: Sequence[int] = (512, 1024), channels: int = 1024, passthrough: int = 64,
                 in_strides: Sequence[int] = (16, 32)) -> None:
        super().__init__()
        if len(in_channels) != 2:
            raise ConfigError(f"YOLOv2Neck: expects two backbone maps (stride 16 and 32), got {len(in_channels)}")
        c4, c5 = (int(c) for c in in_channels)
        self.conv1 = ConvBNAct(c5, channels, 3, act="lrelu")
        self.conv2 = ConvBNAct(channels, channels, 3, act="lrelu")
        self.passthrough = ConvBNAct(c4, passthrough, 1, act="lrelu")
        self.reorg = Reorg(2)
        self.out_channels = [4 * passthrough + channels]
        self.strides = [int(in_strides[-1])]
        self.size_divisor = 32

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        c4, c5 = feats
        p5 = self.conv2(self.conv1(c5))
        return [torch.cat((self.reorg(self.passthrough(c4)), p5), 1)]


class LastLevel(nn.Module):
    """The coarsest backbone map as the only level (YOLOv2-tiny: the head's 3x3 conv follows)."""

    def __init__(self, in_channels: Sequence[int], in_strides: Sequence[int]) -> None:
        super().__init__()
        self.out_channels = [int(in_channels[-1])]
        self.strides = [int(in_strides[-1])]
        self.size_divisor = 32

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [feats[-1]]
