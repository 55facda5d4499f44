"""MobileNetV3-Large / -Small trunk with torchvision's parameter names (ImageNet weights load by name).

Layout (``features``, an ``nn.Sequential``), Large at width 1.0:

====  =================================  ======  ========  ====================================
idx   layer                              stride  channels  note
====  =================================  ======  ========  ====================================
0     3x3 s2 conv, BN, hardswish         2       16        ``features.0.{0,1}``
1     bneck 3x3 (no expand)              2       16
2-3   bneck 3x3, first s2                4       24        2: strided (C1)
4-6   bneck 5x5 + SE, first s2           8       40        4: strided (C2)
7-12  bneck 3x3 hardswish (SE from 10)   16      80 / 112  7: strided (C3)
13    bneck 5x5 + SE s2 (expand 672)     32      160       C4; ``"13.expand"`` = 672 ch, stride 16
14-15 bneck 5x5 + SE                     32      160
16    1x1 conv, BN, hardswish            32      960       last conv (6 x 160)
====  =================================  ======  ========  ====================================

Small: 0 stem (16, s2), 1 (s4, SE), 2-3 (s8, 24), 4-8 (s16, 40 / 48), 9-11 (s32, 96; ``"9.expand"``
= 288 ch at stride 16), 12 last conv (576).

Inverted-residual block ``features.i.block``: ``0`` 1x1 expansion ConvNormAct (absent when the
expansion equals the input width, e.g. Large block 1), then the depthwise ConvNormAct, then
``SqueezeExcitation`` (``avgpool``, ``fc1``, ReLU, ``fc2``, hardsigmoid) when used, then the 1x1
projection (conv, norm; no activation). A residual is added when stride 1 and in == out.

Taking the features torchvision's detectors take:

- SSDLite320 (``ssdlite.py``'s ``SSDLiteFeatureExtractorMobileNet``, with ``reduced_tail=True``):
  ``out_indices=("13.expand", 16)`` -> the output of ``features[13].block[0]`` (the expansion conv of
  the strided C4 block; 672 ch at stride 16) and of ``features[16]`` (480 ch reduced, stride 32).
  torchvision's own module split (``features.0 = [*features[:13], features[13].block[0]]``,
  ``features.1 = [features[13].block[1:], *features[14:]]``) only renames keys: map
  ``backbone.features.0.<k>`` (k < 13) -> ``features.<k>``, ``backbone.features.0.13`` ->
  ``features.13.block.0``, ``backbone.features.1.0.<j>`` -> ``features.13.block.<j>`` (sliced
  Sequentials keep their child names, so ``j`` starts at 1),
  ``backbone.features.1.<m>`` (m >= 1) -> ``features.<13 + m>``.
- Faster R-CNN MobileNetV3-Large-FPN (``backbone_utils.py``'s ``_mobilenet_extractor``, ``fpn=True``):
  ``returned_layers = [num_stages - 2, num_stages - 1]`` over ``stage_indices = [0, 2, 4, 7, 13, 16]``,
  i.e. ``out_indices=(13, 16)``: the *output* of block 13 (160 ch) and of the last conv (960 ch), both
  at stride 32; ``norm="frozen_bn", norm_eps=1e-5`` (torchvision's ``FrozenBatchNorm2d``), and
  ``trainable_layers = t`` is ``frozen_stages = 5 - t`` (6 stages split at ``stage_indices``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.mobile_common import (
    ConvNormAct,
    FeatureTrunk,
    make_divisible,
)
from odkit.nn.norm import NormFactory, NormSpec, norm_factory


class BneckConfig(NamedTuple):
    """One inverted-residual block of Tables 1 / 2 of the MobileNetV3 paper (widths before scaling)."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    hardswish: bool
    stride: int


# (in, kernel, expanded, out, SE, hardswish, stride); the last three blocks are the "tail"
LARGE = (
    BneckConfig(16, 3, 16, 16, False, False, 1),
    BneckConfig(16, 3, 64, 24, False, False, 2),
    BneckConfig(24, 3, 72, 24, False, False, 1),
    BneckConfig(24, 5, 72, 40, True, False, 2),
    BneckConfig(40, 5, 120, 40, True, False, 1),
    BneckConfig(40, 5, 120, 40, True, False, 1),
    BneckConfig(40, 3, 240, 80, False, True, 2),
    BneckConfig(80, 3, 200, 80, False, True, 1),
    BneckConfig(80, 3, 184, 80, False, True, 1),
    BneckConfig(80, 3, 184, 80, False, True, 1),
    BneckConfig(80, 3, 480, 112, True, True, 1),
    BneckConfig(112, 3, 672, 112, True, True, 1),
    BneckConfig(112, 5, 672, 160, True, True, 2),
    BneckConfig(160, 5, 960, 160, True, True, 1),
    BneckConfig(160, 5, 960, 160, True, True, 1),
)
SMALL = (
    BneckConfig(16, 3, 16, 16, True, False, 2),
    BneckConfig(16, 3, 72, 24, False, False, 2),
    BneckConfig(24, 3, 88, 24, False, False, 1),
    BneckConfig(24, 5, 96, 40, True, True, 2),
    BneckConfig(40, 5, 240, 40, True, True, 1),
    BneckConfig(40, 5, 240, 40, True, True, 1),
    BneckConfig(40, 5, 120, 48, True, True, 1),
    BneckConfig(48, 5, 144, 48, True, True, 1),
    BneckConfig(48, 5, 288, 96, True, True, 2),
    BneckConfig(96, 5, 576, 96, True, True, 1),
    BneckConfig(96, 5, 576, 96, True, True, 1),
)
ARCHS = {"large": LARGE, "small": SMALL}
# default detection outputs (strides 8, 16, 32): the last block before each later strided block + last conv
DEFAULT_OUT = {"large": (6, 12, 16), "small": (3, 8, 12)}


class SqueezeExcitation(nn.Module):
    """``x * hardsigmoid(fc2(relu(fc1(avgpool(x)))))``; ``fc1`` / ``fc2`` are 1x1 convs with bias."""

    def __init__(self, channels: int, squeeze_channels: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class InvertedResidual(nn.Module):
    """MobileNetV3 bneck: ``[B, in, H, W] -> [B, out, H / stride, W / stride]`` (``block`` Sequential)."""

    def __init__(self, in_channels: int, kernel: int, expanded: int, out_channels: int, use_se: bool,
                 hardswish: bool, stride: int, dilation: int, norm: NormFactory) -> None:
        super().__init__()
        act = nn.Hardswish if hardswish else nn.ReLU
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.is_strided = stride > 1
        self.stride = 1 if dilation > 1 else stride
        self.out_channels = out_channels
        self.expanded_channels = expanded if expanded != in_channels else None
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvNormAct(in_channels, expanded, 1, norm, act))
        layers.append(ConvNormAct(expanded, expanded, kernel, norm, act, stride=self.stride, groups=expanded,
                                  dilation=dilation))
        if use_se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4, 8)))
        layers.append(ConvNormAct(expanded, out_channels, 1, norm, None))
        self.block = nn.Sequential(*layers)

    def split_expand(self) -> tuple[nn.Module, nn.Module]:
        """``(expansion conv, rest of the block)``; only for expanding blocks."""
        return self.block[0], self.block[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y + x if self.use_res_connect else y


class MobileNetV3(FeatureTrunk):
    """MobileNetV3 trunk (no classifier) returning the maps of ``out_indices``, in order.

    Args:
        arch: ``"large"`` or ``"small"``.
        width_mult: channel multiplier (channels rounded by ``make_divisible(c * width_mult, 8)``).
        reduced_tail: halve the channels of the last three blocks and the last conv (Table 6 of the
            paper; torchvision's SSDLite320 uses it when not starting from ImageNet weights).
        dilated: dilation 2 (stride 1) in the last three blocks: the stride stays 16 after block 12 (L).
        out_indices: ``features`` indices whose outputs are returned (negative ones count from the end),
            or ``"<i>.expand"`` for the output of block ``i``'s 1x1 expansion conv (see the module
            docstring). Default: strides 8, 16, 32 (Large ``(6, 12, 16)``, Small ``(3, 8, 12)``).
        norm: ``"bn"`` (BatchNorm2d, eps 0.001 and momentum 0.01 as torchvision's default),
            ``"frozen_bn"`` (FrozenBatchNorm2d with the eps of ``"bn"``), ``"gn"`` or a ``num_features ->
            module`` callable (:func:`odkit.nn.norm.norm_factory`).
        norm_eps, norm_momentum: override eps / momentum (e.g. SSDLite's 0.001 / 0.03; Faster R-CNN's
            1e-5 / 0.1, torchvision's plain ``nn.BatchNorm2d`` and ``FrozenBatchNorm2d``).
        frozen_stages: stages split at the strided blocks (``stage_starts``, torchvision's
            ``stage_indices``): ``-1`` none, ``k`` the first ``k + 1``.
        norm_eval: keep every BatchNorm in eval mode during training.

    Attributes: ``out_channels``, ``strides`` (of the returned maps), ``layer_strides`` (of every
    ``features[i]``), ``stage_starts``, ``size_divisor`` (32). Input ``[B, 3, H, W]`` (ImageNet-normalised
    RGB for torchvision weights). Large at width 1.0 has 2,971,952 parameters (torchvision's
    5,483,032 minus its classifier).
    """

    def __init__(
        self,
        arch: str = "large",
        width_mult: float = 1.0,
        reduced_tail: bool = False,
        dilated: bool = False,
        out_indices: Sequence[int | str] | None = None,
        norm: NormSpec = "bn",
        norm_eps: float | None = None,
        norm_momentum: float | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError(f"MobileNetV3 arch must be one of {sorted(ARCHS)}, got {arch!r}")
        if width_mult <= 0:
            raise ConfigError(f"MobileNetV3 width_mult must be positive, got {width_mult}")
        norm_fn = norm_factory(norm, norm_eps, norm_momentum, bn_eps=0.001, bn_momentum=0.01, owner="MobileNetV3")
        self.arch = arch
        setting = ARCHS[arch]
        tail = len(setting) - 3

        def ch(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        layers: list[nn.Module] = [ConvNormAct(3, ch(setting[0].in_channels), 3, norm_fn, nn.Hardswish, stride=2)]
        for k, cfg in enumerate(setting):
            div_in = 2 if reduced_tail and k > tail else 1
            div_out = 2 if reduced_tail and k >= tail else 1
            layers.append(InvertedResidual(
                ch(cfg.in_channels // div_in), cfg.kernel, ch(cfg.expanded // div_in),
                ch(cfg.out_channels // div_out), cfg.use_se, cfg.hardswish, cfg.stride,
                2 if dilated and k >= tail else 1, norm_fn,
            ))
        last_in = layers[-1].out_channels
        layers.append(ConvNormAct(last_in, 6 * last_in, 1, norm_fn, nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self._init_weights()
        self._setup(DEFAULT_OUT[arch] if out_indices is None else out_indices, frozen_stages, norm_eval)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
