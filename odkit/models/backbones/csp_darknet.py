"""CSPDarknet backbone (YOLOX / YOLOv5 style): Focus stem, dark2..dark5 stages, SPP in the last."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from odkit.models.backbones.staged import StagedBackbone, check_out_indices
from odkit.nn import BN_EPS, BN_MOMENTUM, SPP, CSPLayer, Focus, conv_or_dw, scale_depth, scale_width
from odkit.nn.norm import NormSpec, norm_factory

STAGES = ("stem", "dark2", "dark3", "dark4", "dark5")
STRIDES = {"stem": 2, "dark2": 4, "dark3": 8, "dark4": 16, "dark5": 32}
# YOLOX's (depth, width) multipliers and depthwise convolutions of each size
SIZES: dict[str, tuple[float, float, bool]] = {
    "nano": (0.33, 0.25, True), "tiny": (0.33, 0.375, False), "s": (0.33, 0.50, False),
    "m": (0.67, 0.75, False), "l": (1.0, 1.0, False), "x": (1.33, 1.25, False),
}


class CSPDarknet(StagedBackbone):
    """CSPDarknet-53 scaled by ``depth`` / ``width`` multipliers.

    Channels of the stages are ``64 * width * (1, 2, 4, 8, 16)``; stage depths ``3 * depth * (1, 3, 3, 1)``.

    Args:
        depth, width: YOLOX's multipliers (``SIZES``: nano 0.33 / 0.25 depthwise ... x 1.33 / 1.25).
        out_indices: indices into ``(stem, dark2, dark3, dark4, dark5)`` (strides 2, 4, 8, 16, 32;
            negative from the end) of the maps to return; default ``(2, 3, 4)``: dark3, dark4, dark5.
        depthwise: depthwise-separable 3x3 convolutions (YOLOX-nano).
        act: activation (``odkit.nn.make_act`` names).
        frozen_stages: ``-1`` none, ``k`` the stem and the first ``k`` stages (``stages()``).
        norm_eval: keep every BatchNorm in eval mode while training.
        norm: ``"bn"`` (BatchNorm2d, eps 1e-3, momentum 0.03: YOLOX's), ``"frozen_bn"``, ``"gn"`` or a
            ``num_features -> module`` callable (:func:`odkit.nn.norm.norm_factory`); ``norm_eps`` /
            ``norm_momentum`` override eps / momentum.

    ``forward`` returns the maps of ``out_indices`` as a tuple, shallowest first. Input ``H`` and ``W``
    must be multiples of 32.
    """

    size_divisor = 32

    def __init__(
        self,
        depth: float = 1.0,
        width: float = 1.0,
        out_indices: Sequence[int] = (2, 3, 4),
        depthwise: bool = False,
        act: str = "silu",
        frozen_stages: int = -1,
        norm_eval: bool = False,
        norm: NormSpec = "bn",
        norm_eps: float | None = None,
        norm_momentum: float | None = None,
    ) -> None:
        super().__init__()
        self.out_indices = check_out_indices(out_indices, len(STAGES), "CSPDarknet", str(STAGES))
        nf = norm_factory(norm, norm_eps, norm_momentum, bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM, owner="CSPDarknet")
        self.norm = norm
        c = scale_width(64, width)
        n = scale_depth(3, depth)
        self.stem = Focus(3, c, kernel_size=3, act=act, norm=nf)
        self.dark2 = nn.Sequential(
            conv_or_dw(c, c * 2, 3, 2, depthwise, act, nf),
            CSPLayer(c * 2, c * 2, n=n, depthwise=depthwise, act=act, norm=nf),
        )
        self.dark3 = nn.Sequential(
            conv_or_dw(c * 2, c * 4, 3, 2, depthwise, act, nf),
            CSPLayer(c * 4, c * 4, n=n * 3, depthwise=depthwise, act=act, norm=nf),
        )
        self.dark4 = nn.Sequential(
            conv_or_dw(c * 4, c * 8, 3, 2, depthwise, act, nf),
            CSPLayer(c * 8, c * 8, n=n * 3, depthwise=depthwise, act=act, norm=nf),
        )
        self.dark5 = nn.Sequential(
            conv_or_dw(c * 8, c * 16, 3, 2, depthwise, act, nf),
            SPP(c * 16, c * 16, act=act, norm=nf),
            CSPLayer(c * 16, c * 16, n=n, shortcut=False, depthwise=depthwise, act=act, norm=nf),
        )
        self.channels = {name: c * m for name, m in zip(STAGES, (1, 2, 4, 8, 16))}
        self.out_channels = [self.channels[STAGES[i]] for i in self.out_indices]
        self.strides = [STRIDES[STAGES[i]] for i in self.out_indices]
        self._set_staging(frozen_stages, norm_eval)

    def stages(self) -> list[nn.Module]:
        """``[stem, dark2, dark3, dark4, dark5]`` (the order ``frozen_stages`` counts in)."""
        return [self.stem, self.dark2, self.dark3, self.dark4, self.dark5]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for i, stage in enumerate(self.stages()[: self.out_indices[-1] + 1]):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
