"""VGG-11/13/16/19 trunk (``features`` only) with torchvision's parameter names and indices.

``features`` is torchvision's ``nn.Sequential`` exactly: per configuration entry a 3x3 conv (bias,
padding 1) [+ a norm layer unless ``norm=None``] + ReLU, and a 2x2 s2 max-pool after each of the 5
blocks. ``norm=None`` (the default) is torchvision's ``vgg16``, ``norm="bn"`` its ``vgg16_bn``.
VGG16 (no norm) indices:

=======  ======================================  ======  ========
index    layer                                   stride  channels
=======  ======================================  ======  ========
0, 2     conv1_1, conv1_2 (ReLU at +1)           1       64
4        pool1                                   2
5, 7     conv2_1, conv2_2                        2       128
9        pool2                                   4
10-14    conv3_1 .. conv3_3 (ReLU at 15)         4       256
16       pool3                                   8
17-21    conv4_1 .. conv4_3 (ReLU at 22)         8       512
23       pool4                                   16
24-28    conv5_1 .. conv5_3 (ReLU at 29)         16      512
30       pool5                                   32
=======  ======================================  ======  ========

``VGG.layer_index("conv4_3")`` gives a conv's index (its ReLU is the index + 1, + 2 with BN).
SSD300 takes the ReLU of conv4_3 (``out_indices=(22,)``) and sets ``features[16].ceil_mode = True``
(pool3) so that 300 px inputs give 38x38 maps; it then replaces pool5 (index 30) with its own
pool5 / conv6 / conv7. A torchvision ImageNet ``vgg16`` state dict loads by name minus
``classifier.*``. VGG16's ``features`` has 14,714,688 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.staged import StagedBackbone, check_out_indices
from odkit.nn.norm import NormSpec, norm_factory

# depth -> convs per block (torchvision's configurations A, B, D, E)
CONVS: dict[int, tuple[int, ...]] = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3),
                                     19: (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)


class VGG(StagedBackbone):
    """VGG trunk returning the outputs of ``features[i]`` for ``i`` in ``out_indices``, in order.

    Args:
        depth: 11, 13, 16 or 19.
        norm: ``None`` (default: no norm, torchvision's ``vgg*``), ``"bn"`` (BatchNorm2d eps 1e-5, momentum
            0.1 after each conv: ``vgg*_bn``; indices shift accordingly), ``"frozen_bn"``, ``"gn"`` or a
            ``num_features -> module`` callable (:func:`odkit.nn.norm.norm_factory`); ``norm_eps`` /
            ``norm_momentum`` override eps / momentum.
        out_indices: increasing ``features`` indices (negative ones count from the end); default the
            outputs of pool3, pool4, pool5 (strides 8, 16, 32; ``(16, 23, 30)`` for VGG16).
        frozen_stages: ``-1`` none, ``k`` in 0..4 the first ``k + 1`` conv blocks (each with its pool).
        norm_eval: keep BatchNorm layers in eval mode during training (with ``norm="bn"`` only).

    Attributes: ``out_channels``, ``strides`` of the returned maps; ``layer_strides`` and
    ``layer_channels`` of every ``features[i]``; ``size_divisor`` 32. Input ``[B, 3, H, W]``.
    """

    size_divisor = 32

    def __init__(
        self,
        depth: int = 16,
        norm: NormSpec = None,
        out_indices: Sequence[int] | None = None,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        norm_eps: float | None = None,
        norm_momentum: float | None = None,
    ) -> None:
        super().__init__()
        if depth not in CONVS:
            raise ConfigError(f"VGG depth must be one of {sorted(CONVS)}, got {depth}")
        norm_fn = None if norm is None else norm_factory(norm, norm_eps, norm_momentum, owner="VGG")
        self.depth = depth
        self.norm = norm
        layers: list[nn.Module] = []
        self.layer_strides: list[int] = []
        self.layer_channels: list[int] = []
        self._names: dict[str, int] = {}
        self.block_ends: list[int] = []  # index of each block's pool
        in_channels, stride = 3, 1

        def add(layer: nn.Module) -> None:
            layers.append(layer)
            self.layer_strides.append(stride)
            self.layer_channels.append(in_channels)

        for b, (n, width) in enumerate(zip(CONVS[depth], WIDTHS)):
            for j in range(n):
                self._names[f"conv{b + 1}_{j + 1}"] = len(layers)
                conv = nn.Conv2d(in_channels, width, 3, padding=1)
                in_channels = width
                add(conv)
                if norm_fn is not None:
                    add(norm_fn(width))
                add(nn.ReLU(inplace=True))
            self._names[f"pool{b + 1}"] = len(layers)
            stride *= 2
            add(nn.MaxPool2d(kernel_size=2, stride=2))
            self.block_ends.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)

        n_layers = len(layers)
        default = self.block_ends[2:]
        indices = check_out_indices(default if out_indices is None else out_indices, n_layers, "VGG", "features")
        self.out_indices = indices
        self.out_channels = [self.layer_channels[i] for i in indices]
        self.strides = [self.layer_strides[i] for i in indices]
        self._init_weights()
        self._set_staging(frozen_stages, norm_eval)

    def layer_index(self, name: str) -> int:
        """``features`` index of ``"conv<b>_<j>"`` or ``"pool<b>"`` (1-based, as in the VGG paper)."""
        if name not in self._names:
            raise ConfigError(f"VGG{self.depth} has no layer {name!r}; known: {', '.join(self._names)}")
        return self._names[name]

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stages(self) -> list[nn.Module]:
        """The 5 conv blocks of ``features``, each ending with its pool."""
        bounds = [0] + [e + 1 for e in self.block_ends]
        return [self.features[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, H, W]`` -> ``[B, out_channels[i], H / strides[i], W / strides[i]]`` per index."""
        outs = []
        for i in range(self.out_indices[-1] + 1):
            x = self.features[i](x)
            if i in self.out_indices:
                outs.append(x)
        return outs
