"""CenterNet's upsampling neck: from the backbone's last map (stride 32) to one stride-4 map.

``CTResNetNeck`` as MMDetection builds it without deformable convolutions: three stages of a 3x3 conv
+ BatchNorm + ReLU, then a 4x4 stride-2 transposed conv + BatchNorm + ReLU (``deconv``), to 256, 128,
64 channels (ResNet-18: 512 in). The light variant (``upsample="nearest"``) replaces the transposed
conv by nearest 2x upsampling and adds the backbone's stride-16 and stride-8 maps through 1x1
lateral convs (``skips``), which trains faster from scratch.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from odkit.errors import ConfigError


def _cbr(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class CenterNetNeck(nn.Module):
    """Upsampling neck (see the module docstring).

    Args:
        in_channels: the backbone's output channels (the last one is upsampled; with ``skips`` the
            two before it are added at strides 16 and 8).
        channels: output channels of the three stages.
        upsample: ``"deconv"`` (4x4 transposed conv, MMDetection's) or ``"nearest"``.
        skips: add the earlier backbone maps (1x1 conv + BatchNorm) after the first two stages.
        depthwise: the stages' 3x3 convs depthwise + 1x1 (light variant).
    """

    def __init__(self, in_channels: Sequence[int], channels: Sequence[int] = (256, 128, 64),
                 upsample: str = "deconv", skips: bool = False, depthwise: bool = False) -> None:
        super().__init__()
        if upsample not in ("deconv", "nearest"):
            raise ConfigError(f"CenterNetNeck upsample must be 'deconv' or 'nearest', got {upsample!r}")
        if len(channels) != 3:
            raise ConfigError(f"CenterNetNeck takes three stage widths, got {list(channels)}")
        if skips and len(in_channels) < 3:
            raise ConfigError("CenterNetNeck skips need the backbone's stride 8, 16, 32 maps")
        self.skips = bool(skips)
        cin = int(in_channels[-1])
        self.stages = nn.ModuleList()
        self.laterals = nn.ModuleList()
        for i, c in enumerate(channels):
            conv = nn.Sequential(_cbr(cin, cin, 3, groups=cin), _cbr(cin, c, 1)) if depthwise else _cbr(cin, c, 3)
            if upsample == "deconv":
                up = nn.Sequential(nn.ConvTranspose2d(c, c, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(c),
                                   nn.ReLU(inplace=True))
            else:
                up = nn.Upsample(scale_factor=2.0, mode="nearest")
            self.stages.append(nn.Sequential(conv, up))
            if self.skips and i < 2:
                self.laterals.append(nn.Sequential(nn.Conv2d(int(in_channels[-2 - i]), c, 1, bias=False),
                                                   nn.BatchNorm2d(c)))
            cin = c
        self.out_channels = [int(channels[-1])]
        self.strides = [4]

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        x = feats[-1]
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if self.skips and i < 2:
                x = x + self.laterals[i](feats[-2 - i])
        return [x]
