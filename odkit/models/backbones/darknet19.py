"""Darknet-19 (YOLOv2, Redmon & Farhadi 2017): darknet's ``darknet19_448.cfg`` / ``yolov2.cfg`` layers 0-22.

Every convolution is ``Conv (no bias) -> norm -> LeakyReLU(0.1)`` (:class:`odkit.nn.ConvBNAct`); 2x2
max-pools of stride 2 halve the map. Stages (darknet layer numbers in brackets):

- ``stem``: 3x3 32 [0];
- ``stage1``: pool, 3x3 64 [1-2] (stride 2);
- ``stage2``: pool, 3x3 128, 1x1 64, 3x3 128 [3-6] (stride 4);
- ``stage3``: pool, 3x3 256, 1x1 128, 3x3 256 [7-10] (stride 8);
- ``stage4``: pool, 3x3 512, 1x1 256, 3x3 512, 1x1 256, 3x3 512 [11-16] (stride 16);
- ``stage5``: pool, 3x3 1024, 1x1 512, 3x3 1024, 1x1 512, 3x3 1024 [17-22] (stride 32).

18 convolutions, 19,817,376 parameters (BatchNorm included); the order of its modules is the order
of darknet's layers, so ``darknet19_448.conv.23`` loads into it. Maps are ``[B, C, H, W]``; inputs
must be multiples of 32.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from odkit.models.backbones.darknet import _DarknetTrunk, _norm_fn
from odkit.models.backbones.staged import check_out_indices
from odkit.nn import ConvBNAct
from odkit.nn.norm import NormSpec

# (channels, kernel) of the convolutions of stages 1-5, each after a 2x2 max-pool.
DARKNET19_STAGES = (
    ((64, 3),),
    ((128, 3), (64, 1), (128, 3)),
    ((256, 3), (128, 1), (256, 3)),
    ((512, 3), (256, 1), (512, 3), (256, 1), (512, 3)),
    ((1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)),
)


class Darknet19(_DarknetTrunk):
    """Darknet-19 without its classifier. ``forward`` returns the outputs of the stages in
    ``out_indices`` (0-based over ``stage1..stage5`` at strides 2..32; default ``(3, 4)``: 512 channels
    at stride 16, YOLOv2's passthrough source, and 1024 at stride 32), finest first. ``frozen_stages``,
    ``norm_eval``, ``norm``, ``norm_eps``, ``norm_momentum`` as :class:`~odkit.models.backbones.darknet.Darknet53`."""

    def __init__(self, out_indices: Sequence[int] = (3, 4), frozen_stages: int = -1, norm_eval: bool = False,
                 norm: NormSpec = "bn", norm_eps: float | None = None, norm_momentum: float | None = None) -> None:
        super().__init__()
        self.out_indices = check_out_indices(out_indices, 5, "Darknet19", "stage1..stage5")
        norm_fn = _norm_fn(norm, norm_eps, norm_momentum, "Darknet19")
        self.norm = norm
        self.stem = ConvBNAct(3, 32, 3, act="lrelu", norm=norm_fn)
        cin = 32
        for i, convs in enumerate(DARKNET19_STAGES):
            layers: list[nn.Module] = [nn.MaxPool2d(2, 2)]
            for c, k in convs:
                layers.append(ConvBNAct(cin, c, k, act="lrelu", norm=norm_fn))
                cin = c
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
        chans = [convs[-1][0] for convs in DARKNET19_STAGES]
        self.out_channels = [chans[i] for i in self.out_indices]
        self.strides = [2 ** (i + 1) for i in self.out_indices]
        self.size_divisor = 32
        self._set_staging(frozen_stages, norm_eval)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return super().forward(x)
