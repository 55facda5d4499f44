"""The first 20 convolutions of YOLOv1 (Redmon et al. 2016, Figure 3): the part pretrained on ImageNet.

Convolutions with bias and LeakyReLU(0.1), no normalisation (the paper's network; ``norm="bn"``
puts BatchNorm after each, as darknet's later ``yolov1.cfg``); 2x2 max-pools of stride 2:

- ``stem``: 7x7/2 64, pool (stride 4);
- ``stage1``: 3x3 192, pool (stride 8);
- ``stage2``: 1x1 128, 3x3 256, 1x1 256, 3x3 512, pool (stride 16);
- ``stage3``: {1x1 256, 3x3 512} x 4, 1x1 512, 3x3 1024, pool (stride 32);
- ``stage4``: {1x1 512, 3x3 1024} x 2 (stride 32, 1024 channels: 14 x 14 at 448 px).

The detection part (four more convolutions, the last of stride 2, and the fully connected layers)
is :class:`~odkit.models.heads.yolov1_head.YOLOv1Head`. ``forward`` returns ``(stage4,)``.
"""

from __future__ import annotations

import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.staged import StagedBackbone

STAGES = (
    ((64, 7, 2),),
    ((192, 3, 1),),
    ((128, 1, 1), (256, 3, 1), (256, 1, 1), (512, 3, 1)),
    ((256, 1, 1), (512, 3, 1)) * 4 + ((512, 1, 1), (1024, 3, 1)),
    ((512, 1, 1), (1024, 3, 1)) * 2,
)


class YOLOv1Net(StagedBackbone):
    """YOLOv1's 20-convolution trunk (see the module docstring); ``norm``: ``None`` (the paper) or ``"bn"``."""

    def __init__(self, norm: str | None = None, frozen_stages: int = -1, norm_eval: bool = False) -> None:
        super().__init__()
        if norm not in (None, "bn"):
            raise ConfigError(f"YOLOv1Net: norm must be None or 'bn', got {norm!r}")
        cin = 3
        names = ("stem", "stage1", "stage2", "stage3", "stage4")
        for i, (name, convs) in enumerate(zip(names, STAGES)):
            layers: list[nn.Module] = []
            for c, k, s in convs:
                layers.append(nn.Conv2d(cin, c, k, s, (k - 1) // 2, bias=norm is None))
                if norm == "bn":
                    layers.append(nn.BatchNorm2d(c))
                layers.append(nn.LeakyReLU(0.1))
                cin = c
            if i < 4:
                layers.append(nn.MaxPool2d(2, 2))
            self.add_module(name, nn.Sequential(*layers))
        self.out_channels = [1024]
        self.strides = [32]
        self.size_divisor = 32
        self._set_staging(frozen_stages, norm_eval)

    def stages(self) -> list[nn.Module]:
        return [self.stem, self.stage1, self.stage2, self.stage3, self.stage4]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for stage in self.stages():
            x = stage(x)
        return (x,)
