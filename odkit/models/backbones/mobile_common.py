"""Pieces shared by the torchvision-layout mobile trunks (MobileNetV2, MobileNetV3).

- ``ConvNormAct``: ``nn.Sequential(conv, norm[, act])`` with child names ``0`` / ``1`` / ``2``, the
  layout of torchvision's ``Conv2dNormActivation`` (so ``features.0.0.weight`` is the stem conv).
- ``make_divisible``: torchvision's channel rounding under a width multiplier.
- ``FeatureTrunk``: a ``features`` ``nn.Sequential`` returning the outputs of chosen indices, and of
  the expansion conv inside an inverted-residual block (``"13.expand"``), with frozen stages split at
  the strided blocks exactly as torchvision's ``trainable_layers`` counts them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.staged import StagedBackbone
from odkit.nn.norm import NormFactory


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``, default ``divisor``)
    without going below 90% of ``value`` (torchvision's / TF-slim's ``_make_divisible``)."""
    min_value = divisor if min_value is None else min_value
    out = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if out < 0.9 * value:
        out += divisor
    return out


class ConvNormAct(nn.Sequential):
    """``Conv2d (no bias) -> norm -> act`` as children ``0``, ``1``, ``2`` (no ``2`` when ``act`` is None).

    "Same" padding ``(k - 1) // 2 * dilation``; ``[B, in, H, W] -> [B, out, H / stride, W / stride]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        norm: NormFactory,
        act: Callable[[], nn.Module] | None,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2 * dilation,
                      dilation=dilation, groups=groups, bias=False),
            norm(out_channels),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)
        self.out_channels = out_channels
        self.stride = stride


def _parse_index(item: int | str, n: int) -> tuple[int, bool]:
    """``5`` -> ``(5, False)``; ``"13.expand"`` -> ``(13, True)``; negative ints count from the end."""
    if isinstance(item, str):
        head, _, tail = item.partition(".")
        if tail != "expand" or not head.lstrip("-").isdigit():
            raise ConfigError(f"out_indices entry {item!r}: expected an int or '<index>.expand'")
        index, expand = int(head), True
    else:
        index, expand = int(item), False
    if index < 0:
        index += n
    if not 0 <= index < n:
        raise ConfigError(f"out_indices entry {item!r} is outside features[0..{n - 1}]")
    return index, expand


class FeatureTrunk(StagedBackbone):
    """Base of the mobile trunks: ``self.features`` (an ``nn.Sequential``) run up to the last requested
    output. Subclasses build ``features``, then call ``_setup(out_indices, frozen_stages, norm_eval)``.

    Each ``features[i]`` carries ``out_channels`` and ``stride`` (its own effective stride, 1 when
    dilated); inverted-residual blocks also carry ``is_strided`` (stride 2 in the architecture, even
    when dilated), ``use_res_connect``, ``expanded_channels`` (``None`` when the block does not
    expand) and ``split_expand() -> (expansion conv, rest of the block)``.

    Stages (``stages()``, counted by ``frozen_stages``) split ``features`` before each stride-2 block,
    the last stage being the final layer alone: torchvision's ``stage_indices``. torchvision's
    ``trainable_layers = t`` equals ``frozen_stages = len(stages()) - 1 - t``.
    """

    size_divisor = 32
    features: nn.Sequential

    def _setup(self, out_indices: Sequence[int | str], frozen_stages: int, norm_eval: bool) -> None:
        n = len(self.features)
        parsed = [_parse_index(i, n) for i in out_indices]
        if not parsed or parsed != sorted(set(parsed), key=lambda p: (p[0], not p[1])):
            raise ConfigError(f"out_indices must be non-empty and increasing (expand before its block), "
                              f"got {list(out_indices)}")
        for index, expand in parsed:
            if expand and getattr(self.features[index], "expanded_channels", None) is None:
                raise ConfigError(f"out_indices entry '{index}.expand': features[{index}] has no expansion conv")
        self.out_indices = parsed
        strides, stride = [], 1
        for layer in self.features:
            stride *= getattr(layer, "stride", 1)
            strides.append(stride)
        self.layer_strides = strides
        self.out_channels = [
            self.features[i].expanded_channels if e else self.features[i].out_channels for i, e in parsed
        ]
        # the expansion conv runs at the block's input resolution
        self.strides = [strides[i] // (self.features[i].stride if e else 1) for i, e in parsed]
        starts = [0] + [i for i, m in enumerate(self.features) if getattr(m, "is_strided", False)] + [n - 1]
        self.stage_starts = sorted(set(starts))
        self._set_staging(frozen_stages, norm_eval)

    def stages(self) -> list[nn.Module]:
        """``features`` split before each strided block (the final layer alone last)."""
        bounds = [*self.stage_starts, len(self.features)]
        return [self.features[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, H, W]`` -> the requested maps, in ``out_indices`` order."""
        outs: list[torch.Tensor] = []
        wanted = self.out_indices
        k = 0
        for i in range(wanted[-1][0] + 1):
            layer = self.features[i]
            if k < len(wanted) and wanted[k] == (i, True):
                expand, rest = layer.split_expand()
                y = expand(x)
                outs.append(y)
                k += 1
                y = rest(y)
                x = y + x if layer.use_res_connect else y
            else:
                x = layer(x)
            if k < len(wanted) and wanted[k] == (i, False):
                outs.append(x)
                k += 1
        return outs
