"""ResNet-18/34/50/101 backbone with torchvision's parameter names (ImageNet weights load by name).

Stages and strides: stem (conv1, bn1, relu, maxpool; stride 4), ``layer1`` = C2 (stride 4),
``layer2`` = C3 (8), ``layer3`` = C4 (16), ``layer4`` = C5 (32). Bottleneck blocks put the stride on the
3x3 convolution (torchvision's "ResNet v1.5"). There is no ``fc``: a torchvision ImageNet state dict
loads with ``load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")})``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.staged import StagedBackbone, check_out_indices
from odkit.nn.norm import NormFactory, NormSpec, norm_factory

STAGE_NAMES = ("C2", "C3", "C4", "C5")
STAGE_STRIDES = (4, 8, 16, 32)


class BasicBlock(nn.Module):
    """Two 3x3 conv-norm layers plus identity (or 1x1 ``downsample``) shortcut; ``stride`` on ``conv1``."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm: NormFactory = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries ``stride``), 1x1 expand to ``4 * planes``, plus shortcut (ResNet v1.5)."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        norm: NormFactory = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = norm(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


# depth -> (block type, blocks per stage)
ARCH: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(StagedBackbone):
    """ResNet backbone returning a list of feature maps, finest first.

    Args:
        depth: 18, 34, 50 or 101.
        out_indices: indices into ``(C2, C3, C4, C5)`` (strides 4, 8, 16, 32) of the maps to return;
            default ``(1, 2, 3)`` = C3, C4, C5. Stages after the last requested one keep their parameters
            (so torchvision state dicts load strictly) but are not run.
        frozen_stages: ``-1`` freezes nothing, ``0`` the stem (conv1, bn1), ``k`` in 1..4 the stem and
            ``layer1`` .. ``layer{k}``. Frozen parameters get ``requires_grad=False`` and the frozen modules
            stay in eval mode after ``train()``.
        norm: ``"bn"`` (``nn.BatchNorm2d``, eps 1e-5, momentum 0.1: torchvision's), ``"frozen_bn"``
            (``FrozenBatchNorm2d``), ``"gn"`` (GroupNorm) or a ``num_features -> module`` callable
            (:func:`odkit.nn.norm.norm_factory`); ``norm_eps`` / ``norm_momentum`` override eps / momentum.
        norm_eval: keep every BatchNorm layer in eval mode during training (running statistics fixed;
            affine terms still train unless frozen).
        zero_init_residual: zero the last norm weight of each residual branch (``bn3`` / ``bn2``).

    Attributes:
        out_channels: channels of the returned maps, e.g. ``[512, 1024, 2048]`` for R50, ``[128, 256, 512]``
            for R18 with the default ``out_indices``.
        strides: their strides, e.g. ``[8, 16, 32]``.
        size_divisor: 32; input ``H`` and ``W`` divisible by it give exactly ``H / s`` x ``W / s`` maps.

    Input ``[B, 3, H, W]``; output map ``i`` is ``[B, out_channels[i], H / strides[i], W / strides[i]]``
    (rounded up when ``H`` or ``W`` is not divisible by 32).
    """

    size_divisor = 32

    def __init__(
        self,
        depth: int = 50,
        out_indices: Sequence[int] = (1, 2, 3),
        frozen_stages: int = -1,
        norm: NormSpec = "bn",
        norm_eval: bool = False,
        zero_init_residual: bool = False,
        norm_eps: float | None = None,
        norm_momentum: float | None = None,
    ) -> None:
        super().__init__()
        if depth not in ARCH:
            raise ConfigError(f"ResNet depth must be one of {sorted(ARCH)}, got {depth}")
        indices = check_out_indices(out_indices, 4, "ResNet", str(STAGE_NAMES))
        norm_fn = norm_factory(norm, norm_eps, norm_momentum, owner="ResNet")
        block, repeats = ARCH[depth]
        self.depth = depth
        self.out_indices = indices
        self.norm = norm

        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_fn(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        stage_channels = []
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), repeats)):
            layer = self._make_layer(block, in_channels, planes, n, 1 if i == 0 else 2, norm_fn)
            self.add_module(f"layer{i + 1}", layer)
            in_channels = planes * block.expansion
            stage_channels.append(in_channels)
        self.stage_channels = stage_channels
        self.out_channels = [stage_channels[i] for i in indices]
        self.strides = [STAGE_STRIDES[i] for i in indices]

        self._init_weights(zero_init_residual)
        self._set_staging(frozen_stages, norm_eval)

    @staticmethod
    def _make_layer(
        block: type[BasicBlock] | type[Bottleneck],
        in_channels: int,
        planes: int,
        n: int,
        stride: int,
        norm: NormFactory,
    ) -> nn.Sequential:
        out_channels = planes * block.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                norm(out_channels),
            )
        blocks: list[nn.Module] = [block(in_channels, planes, stride, downsample, norm)]
        blocks += [block(out_channels, planes, 1, None, norm) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                last = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
                if last is not None and getattr(last, "weight", None) is not None:
                    with torch.no_grad():
                        last.weight.zero_()  # a parameter of BatchNorm2d / GroupNorm, a buffer of FrozenBatchNorm2d

    def stages(self) -> list[nn.Module]:
        """Stage modules in order: ``[stem (conv1 + bn1), layer1, layer2, layer3, layer4]``."""
        stem = nn.ModuleList([self.conv1, self.bn1])  # a view for freezing; not registered
        return [stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        layers = (self.layer1, self.layer2, self.layer3, self.layer4)
        for i in range(self.out_indices[-1] + 1):
            x = layers[i](x)
            if i in self.out_indices:
                outs.append(x)
        return outs
