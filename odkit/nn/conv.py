"""Convolution building blocks: ``ConvBNAct`` and the depthwise-separable ``DWConv``.

All blocks keep the spatial size for stride 1 ("same" padding for odd kernels) and divide it by the
stride otherwise. Feature maps are ``[B, C, H, W]`` tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.nn.norm import NormFactory

# YOLOX trains its BatchNorm layers with these settings (set in its model initialisation).
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def default_bn(channels: int) -> nn.Module:
    """The norm of odkit's conv blocks unless one is given: ``BatchNorm2d(eps=BN_EPS, momentum=BN_MOMENTUM)``."""
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def make_act(name: str | None) -> nn.Module:
    """Return an activation module by name: ``silu`` (default everywhere), ``relu``, ``lrelu``, ``none``."""
    if name is None or name == "none":
        return nn.Identity()
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "lrelu":
        return nn.LeakyReLU(0.1, inplace=True)
    raise ConfigError(f"unknown activation {name!r}; expected one of silu, relu, lrelu, none")


class ConvBNAct(nn.Module):
    """``Conv2d (no bias) -> norm -> activation`` (SiLU by default); the norm (child ``bn``) is
    ``norm(out_channels)``, by default BatchNorm2d with eps 1e-3 and momentum 0.03 (:func:`default_bn`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "silu",
        norm: NormFactory = default_bn,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            groups=groups,
            bias=False,
        )
        self.bn = norm(out_channels)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Depthwise-separable convolution: depthwise ``k x k`` ConvBNAct then pointwise ``1 x 1`` ConvBNAct."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: str | None = "silu",
        norm: NormFactory = default_bn,
    ) -> None:
        super().__init__()
        self.dconv = ConvBNAct(in_channels, in_channels, kernel_size, stride, groups=in_channels, act=act, norm=norm)
        self.pconv = ConvBNAct(in_channels, out_channels, 1, 1, act=act, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


def conv_or_dw(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    depthwise: bool = False,
    act: str | None = "silu",
    norm: NormFactory = default_bn,
) -> nn.Module:
    """A ``DWConv`` when ``depthwise`` else a plain ``ConvBNAct`` (the YOLOX "Conv" switch)."""
    if depthwise:
        return DWConv(in_channels, out_channels, kernel_size, stride, act=act, norm=norm)
    return ConvBNAct(in_channels, out_channels, kernel_size, stride, act=act, norm=norm)


def scale_width(channels: int, width: float) -> int:
    """Channel count after the width multiplier (``int(channels * width)``, YOLOX rounding)."""
    return int(channels * width)


def scale_depth(n: int, depth: float) -> int:
    """Number of repeated blocks after the depth multiplier (``max(round(n * depth), 1)``)."""
    return max(round(n * depth), 1)
