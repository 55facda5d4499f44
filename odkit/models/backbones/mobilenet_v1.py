"""MobileNetV1 trunk: a 3x3 s2 conv then 13 depthwise-separable blocks (``odkit.nn.DWConv``).

Layout (``features``), width 1.0: ``0`` 3x3 s2 ConvBNAct (32), ``1`` DWConv 64, ``2``-``3`` 128 (2 s2),
``4``-``5`` 256 (4 s2), ``6``-``11`` 512 (6 s2), ``12``-``13`` 1024 (12 s2). Strides after each index:
2, 2, 4, 4, 8, 8, 16 x 6, 32, 32. Activations are ReLU, BatchNorm eps 1e-3 (``odkit.nn`` defaults).
torchvision has no MobileNetV1; there are no ImageNet weights to map. Without a classifier the
trunk has 3,206,976 parameters at width 1.0 (the paper's 4.2M counts the 1000-class fc,
1,025,000, and the BatchNorm running statistics are buffers).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.mobile_common import FeatureTrunk, make_divisible
from odkit.nn.conv import BN_EPS, BN_MOMENTUM, ConvBNAct, DWConv
from odkit.nn.norm import NormSpec, norm_factory

# (out channels, stride) of the 13 depthwise-separable blocks
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
          (512, 1), (1024, 2), (1024, 1))
DEFAULT_OUT = (5, 11, 13)


def _tag(layer: nn.Module, out_channels: int, stride: int) -> nn.Module:
    layer.out_channels = out_channels
    layer.stride = stride
    layer.is_strided = stride > 1
    return layer


class MobileNetV1(FeatureTrunk):
    """MobileNetV1 trunk returning the maps of ``out_indices`` (``features`` indices, negative from the end).

    Args:
        width_mult: channel multiplier (``make_divisible(c * width_mult, 8)``).
        out_indices: default ``(5, 11, 13)``: strides 8, 16, 32 with 256, 512, 1024 channels.
        act: activation of every ConvBNAct (``"relu"``; ``odkit.nn.make_act`` names).
        norm: ``"bn"`` (BatchNorm2d, eps 1e-3, momentum 0.03: ``odkit.nn``'s), ``"frozen_bn"``, ``"gn"`` or
            a ``num_features -> module`` callable (:func:`odkit.nn.norm.norm_factory`); ``norm_eps`` /
            ``norm_momentum`` override eps / momentum.
        frozen_stages, norm_eval: as :class:`~odkit.models.backbones.mobile_common.FeatureTrunk`
            (stages start at features 0, 2, 4, 6, 12, 13).
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        out_indices: Sequence[int] | None = None,
        act: str = "relu",
        frozen_stages: int = -1,
        norm_eval: bool = False,
        norm: NormSpec = "bn",
        norm_eps: float | None = None,
        norm_momentum: float | None = None,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ConfigError(f"MobileNetV1 width_mult must be positive, got {width_mult}")
        norm_fn = norm_factory(norm, norm_eps, norm_momentum, bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM,
                               owner="MobileNetV1")
        in_channels = make_divisible(32 * width_mult, 8)
        layers = [_tag(ConvBNAct(3, in_channels, 3, 2, act=act, norm=norm_fn), in_channels, 2)]
        for c, s in BLOCKS:
            out_channels = make_divisible(c * width_mult, 8)
            layers.append(_tag(DWConv(in_channels, out_channels, 3, s, act=act, norm=norm_fn), out_channels, s))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self._setup(DEFAULT_OUT if out_indices is None else out_indices, frozen_stages, norm_eval)
