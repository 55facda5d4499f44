"""Darknet-53 (YOLOv3, Redmon & Farhadi 2018) and the YOLOv3-tiny trunk.

Every convolution is ``Conv (no bias) -> norm -> LeakyReLU(0.1)`` (:class:`odkit.nn.ConvBNAct` with
``act="lrelu"``; ``norm="bn"``: BatchNorm2d eps 1e-3, momentum 0.03, ``odkit.nn``'s). Darknet-53: a 3x3 stem of 32 channels, then five stages, each a 3x3 stride-2
convolution doubling the channels followed by ``(1, 2, 8, 8, 4)`` residual blocks (1x1 to half the
channels, 3x3 back, plus the input). Without the classifier it has 40,584,928 parameters.

The tiny trunk (darknet's ``yolov3-tiny.cfg``): 3x3 convolutions of 16, 32, ..., 1024 channels with a
2x2 max-pool after each of the first six (the sixth with stride 1 and one pixel of zero padding on the
right and bottom, so the map keeps its size). Feature maps are ``[B, C, H, W]``; inputs must be
multiples of 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.staged import StagedBackbone, check_out_indices
from odkit.nn import BN_EPS, BN_MOMENTUM, ConvBNAct
from odkit.nn.conv import default_bn
from odkit.nn.norm import NormFactory, NormSpec, norm_factory

DARKNET53_BLOCKS = (1, 2, 8, 8, 4)


def _conv(cin: int, cout: int, k: int, stride: int = 1, norm: NormFactory = default_bn) -> ConvBNAct:
    return ConvBNAct(cin, cout, k, stride, act="lrelu", norm=norm)


class DarknetResBlock(nn.Module):
    """``x + conv3x3(conv1x1(x))`` with the 1x1 to ``channels // 2``: ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, channels: int, norm: NormFactory = default_bn) -> None:
        super().__init__()
        self.conv1 = _conv(channels, channels // 2, 1, norm=norm)
        self.conv2 = _conv(channels // 2, channels, 3, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


def _norm_fn(norm: NormSpec, eps: float | None, momentum: float | None, owner: str) -> NormFactory:
    return norm_factory(norm, eps, momentum, bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM, owner=owner)


class _DarknetTrunk(StagedBackbone):
    """A stem and ``stage1..stage5``; ``forward`` returns the stages in ``out_indices``, finest first."""

    out_indices: tuple[int, ...] = ()

    def stages(self) -> list[nn.Module]:
        return [self.stem] + [getattr(self, f"stage{i + 1}") for i in range(5)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages()[1:]):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class Darknet53(_DarknetTrunk):
    """Darknet-53. ``forward`` returns the outputs of the stages in ``out_indices`` (0-based over
    ``stage1..stage5`` at strides 2, 4, 8, 16, 32, negative from the end; default ``(2, 3, 4)``: C3, C4,
    C5 with 256, 512, 1024 channels), finest first. ``frozen_stages = n`` freezes the stem and the first
    ``n`` stages; ``norm_eval`` keeps every BatchNorm in eval mode while training. ``norm``: ``"bn"``
    (eps 1e-3, momentum 0.03), ``"frozen_bn"``, ``"gn"`` or a ``num_features -> module`` callable
    (:func:`odkit.nn.norm.norm_factory`); ``norm_eps`` / ``norm_momentum`` override eps / momentum."""

    def __init__(self, out_indices: Sequence[int] = (2, 3, 4), frozen_stages: int = -1,
                 norm_eval: bool = False, norm: NormSpec = "bn", norm_eps: float | None = None,
                 norm_momentum: float | None = None) -> None:
        super().__init__()
        self.out_indices = check_out_indices(out_indices, 5, "Darknet53", "stage1..stage5")
        norm_fn = _norm_fn(norm, norm_eps, norm_momentum, "Darknet53")
        self.norm = norm
        self.stem = _conv(3, 32, 3, norm=norm_fn)
        chans = [32 * 2 ** (i + 1) for i in range(5)]
        cin = 32
        for i, (c, n) in enumerate(zip(chans, DARKNET53_BLOCKS)):
            layers = [_conv(cin, c, 3, 2, norm_fn)] + [DarknetResBlock(c, norm_fn) for _ in range(n)]
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
            cin = c
        self.out_channels = [chans[i] for i in self.out_indices]
        self.strides = [2 ** (i + 1) for i in self.out_indices]
        self.size_divisor = 32
        self._set_staging(frozen_stages, norm_eval)


class DarknetTiny(_DarknetTrunk):
    """The YOLOv3-tiny (and YOLOv2-tiny) trunk. Stages: ``stem`` (conv 16, stride 1), ``stage1..stage4`` (max-pool 2/2 then
    conv 32, 64, 128, 256: strides 2..16), ``stage5`` (max-pool 2/2, conv 512, zero-pad + max-pool 2/1,
    conv 1024: stride 32). ``forward`` returns the stages in ``out_indices`` (0-based over
    ``stage1..stage5``, negative from the end; default ``(3, 4)``: 256 channels at stride 16 and 1024
    at stride 32, YOLOv3-tiny's; ``(2, 3, 4)`` adds stage3, 128 channels at stride 8). ``frozen_stages``,
    ``norm_eval``, ``norm``, ``norm_eps``, ``norm_momentum`` as :class:`Darknet53`. ``pool_pad``: how the
    stride-1 max-pool pads its right column and bottom row: ``"zero"`` (YOLOv3-tiny's zero padding, as
    PyTorch darknet readers do) or ``"edge"`` (darknet's own max-pool, whose outside values are
    ``-FLT_MAX``: the same as repeating the edge; YOLOv2-tiny)."""

    def __init__(self, out_indices: Sequence[int] = (3, 4), frozen_stages: int = -1, norm_eval: bool = False,
                 norm: NormSpec = "bn", norm_eps: float | None = None, norm_momentum: float | None = None,
                 pool_pad: str = "zero") -> None:
        super().__init__()
        self.out_indices = check_out_indices(out_indices, 5, "DarknetTiny", "stage1..stage5")
        norm_fn = _norm_fn(norm, norm_eps, norm_momentum, "DarknetTiny")
        self.norm = norm
        self.stem = _conv(3, 16, 3, norm=norm_fn)
        chans = (32, 64, 128, 256)
        cin = 16
        for i, c in enumerate(chans):
            self.add_module(f"stage{i + 1}", nn.Sequential(nn.MaxPool2d(2, 2), _conv(cin, c, 3, norm=norm_fn)))
            cin = c
        if pool_pad not in ("zero", "edge"):
            raise ConfigError(f"DarknetTiny: pool_pad must be 'zero' or 'edge', got {pool_pad!r}")
        pad = nn.ZeroPad2d((0, 1, 0, 1)) if pool_pad == "zero" else nn.ReplicationPad2d((0, 1, 0, 1))
        self.stage5 = nn.Sequential(nn.MaxPool2d(2, 2), _conv(256, 512, 3, norm=norm_fn), pad,
                                    nn.MaxPool2d(2, 1), _conv(512, 1024, 3, norm=norm_fn))
        all_chans = (*chans, 1024)
        self.out_channels = [all_chans[i] for i in self.out_indices]
        self.strides = [2 ** (i + 1) for i in self.out_indices]
        self.size_divisor = 32
        self._set_staging(frozen_stages, norm_eval)
