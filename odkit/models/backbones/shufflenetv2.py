"""ShuffleNetV2 backbone (x0.5 / x1.0 / x1.5 / x2.0) with torchvision's parameter names.

Layout: ``conv1`` (3x3 s2 conv, BN, ReLU as ``conv1.0`` / ``conv1.1``), 3x3 s2 max-pool, ``stage2`` (stride 8),
``stage3`` (16), ``stage4`` (32), optional ``conv5`` (1x1 conv, BN, ReLU). Each stage starts with a stride-2
unit with two branches (``branch1``: depthwise 3x3 s2, BN, 1x1, BN, ReLU; ``branch2``: 1x1, BN, ReLU,
depthwise 3x3, BN, 1x1, BN, ReLU) and continues with stride-1 units that split the channels in half and
transform one half with ``branch2``; outputs are concatenated and channel-shuffled (2 groups).
A torchvision ImageNet state dict loads by name minus ``fc.*`` (and minus ``conv5.*`` without ``with_conv5``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.staged import StagedBackbone, check_out_indices
from odkit.nn.norm import NormFactory, NormSpec, norm_factory

# widen factor -> channels of (conv1, stage2, stage3, stage4, conv5)
CHANNELS: dict[float, tuple[int, int, int, int, int]] = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
REPEATS = (4, 8, 4)
STAGE_STRIDES = (8, 16, 32)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups: ``[B, C, H, W] -> [B, C, H, W]``."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _dw(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


def _pw(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: ``[B, in, H, W] -> [B, out, H / stride, W / stride]`` (stride 1 needs in == out)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: NormFactory = nn.BatchNorm2d) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"ShuffleUnit stride must be 1 or 2, got {stride}")
        half = out_channels // 2
        if stride == 1 and in_channels != 2 * half:
            raise ConfigError(
                f"stride-1 ShuffleUnit needs in_channels == out_channels, got {in_channels}, {out_channels}"
            )
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(
                _dw(in_channels, stride),
                norm(in_channels),
                _pw(in_channels, half),
                norm(half),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            _pw(in_channels if stride > 1 else half, half),
            norm(half),
            nn.ReLU(inplace=True),
            _dw(half, stride),
            norm(half),
            _pw(half, half),
            norm(half),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            keep, x2 = x.chunk(2, dim=1)
            out = torch.cat((keep, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(StagedBackbone):
    """ShuffleNetV2 backbone returning a list of feature maps, finest first.

    Args:
        widen: width multiplier, one of 0.5, 1.0, 1.5, 2.0.
        out_indices: indices into ``(stage2, stage3, stage4)`` (strides 8, 16, 32); default all three.
        with_conv5: build ``conv5`` (1x1 conv to 1024 / 2048 channels, BN, ReLU) and apply it to the
            stage4 output, which is then returned in place of stage4 (needs index 2 in ``out_indices``).
        frozen_stages: ``-1`` nothing, ``0`` ``conv1``, ``k`` in 1..3 ``conv1`` and the first ``k`` stages;
            frozen parameters get ``requires_grad=False`` and stay in eval mode.
        norm: ``"bn"`` (BatchNorm2d, eps 1e-5, momentum 0.1: torchvision's), ``"frozen_bn"``, ``"gn"`` or a
            ``num_features -> module`` callable (:func:`odkit.nn.norm.norm_factory`); ``norm_eps`` /
            ``norm_momentum`` override eps / momentum.
        norm_eval: keep all BatchNorm layers in eval mode during training.

    Attributes:
        out_channels: e.g. ``[116, 232, 464]`` at x1.0 (last is 1024 with ``with_conv5``).
        strides: e.g. ``[8, 16, 32]``.
        size_divisor: 32.

    Input ``[B, 3, H, W]``; output ``i`` is ``[B, out_channels[i], H / strides[i], W / strides[i]]``.
    Parameter count at x1.0 with ``conv5`` is 1,253,604 (torchvision's 2,278,604 minus its 1000-class fc).
    """

    size_divisor = 32
    stage2: nn.Sequential
    stage3: nn.Sequential
    stage4: nn.Sequential

    def __init__(
        self,
        widen: float = 1.0,
        out_indices: Sequence[int] = (0, 1, 2),
        with_conv5: bool = False,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        norm: NormSpec = "bn",
        norm_eps: float | None = None,
        norm_momentum: float | None = None,
    ) -> None:
        super().__init__()
        if widen not in CHANNELS:
            raise ConfigError(f"ShuffleNetV2 widen must be one of {sorted(CHANNELS)}, got {widen}")
        indices = check_out_indices(out_indices, 3, "ShuffleNetV2", "(stage2, stage3, stage4)")
        if with_conv5 and indices[-1] != 2:
            raise ConfigError("ShuffleNetV2 with_conv5 needs stage4 (index 2) in out_indices")
        norm_fn = norm_factory(norm, norm_eps, norm_momentum, owner="ShuffleNetV2")
        channels = CHANNELS[widen]
        self.widen = widen
        self.out_indices = indices
        self.with_conv5 = with_conv5
        self.norm = norm

        self.conv1 = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, stride=2, padding=1, bias=False),
            norm_fn(channels[0]),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = channels[0]
        for k, (n, c) in enumerate(zip(REPEATS, channels[1:4])):
            units = [ShuffleUnit(in_channels, c, 2, norm_fn)] + [ShuffleUnit(c, c, 1, norm_fn) for _ in range(n - 1)]
            self.add_module(f"stage{k + 2}", nn.Sequential(*units))
            in_channels = c
        self.conv5: nn.Sequential | None = None
        if with_conv5:
            self.conv5 = nn.Sequential(
                _pw(in_channels, channels[4]), norm_fn(channels[4]), nn.ReLU(inplace=True)
            )
        stage_channels = list(channels[1:4])
        if with_conv5:
            stage_channels[2] = channels[4]
        self.out_channels = [stage_channels[i] for i in indices]
        self.strides = [STAGE_STRIDES[i] for i in indices]

        self._init_weights()
        self._set_staging(frozen_stages, norm_eval)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stages(self) -> list[nn.Module]:
        """``[conv1, stage2, stage3, stage4]`` (the order ``frozen_stages`` counts in)."""
        return [self.conv1, self.stage2, self.stage3, self.stage4]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.conv1(x))
        outs = []
        stages = (self.stage2, self.stage3, self.stage4)
        for i in range(self.out_indices[-1] + 1):
            x = stages[i](x)
            if i == 2 and self.conv5 is not None:
                x = self.conv5(x)
            if i in self.out_indices:
                outs.append(x)
        return outs
