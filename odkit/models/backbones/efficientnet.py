"""EfficientNet-B0..B2 (Tan & Le 2019) as a detection backbone, with timm's parameter names.

The trunk is timm's ``efficientnet_bN`` / ``tf_efficientnet_bN`` without its head: ``conv_stem`` +
``bn1`` (SiLU), then seven stages ``blocks.i`` of MBConv blocks: a depthwise-separable block in
stage 0 (``conv_dw``, ``bn1``, ``se``, ``conv_pw``, ``bn2``) and inverted residuals after it
(``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``se``, ``conv_pwl``, ``bn3``), each with squeeze-excitation
(``se.conv_reduce`` / ``se.conv_expand``, a quarter of the block's input channels) and drop-connect
(stochastic depth growing linearly with the block index up to ``drop_path_rate``) on its residual.
Widths and depths follow the compound multipliers (B0 1.0 / 1.0, B1 1.0 / 1.1, B2 1.1 / 1.2) with
timm's rounding, so timm and effdet state dicts load by name.

``padding="same"`` is TensorFlow's (the ``tf_`` weights; BatchNorm eps 1e-3), ``"symmetric"`` PyTorch's
(timm's own ``efficientnet_bN``; eps 1e-5). Outputs: the ends of stages 0, 1, 2, 4, 6 (strides 2, 4,
8, 16, 32); ``out_indices`` default ``(2, 3, 4)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from odkit.errors import ConfigError
from odkit.models.backbones.staged import StagedBackbone, check_out_indices
from odkit.nn.norm import NormSpec, norm_factory
from odkit.nn.same_pad import check_padding, make_conv

# stage: (block kind, repeats, kernel, stride, expansion, out channels); SE ratio 0.25 everywhere
ARCH = (("ds", 1, 3, 1, 1, 16), ("ir", 2, 3, 2, 6, 24), ("ir", 2, 5, 2, 6, 40), ("ir", 3, 3, 2, 6, 80),
        ("ir", 3, 5, 1, 6, 112), ("ir", 4, 5, 2, 6, 192), ("ir", 1, 3, 1, 6, 320))
# variant: (width multiplier, depth multiplier)
VARIANTS = {"b0": (1.0, 1.0), "b1": (1.0, 1.1), "b2": (1.1, 1.2)}
OUTPUT_STAGES = (0, 1, 2, 4, 6)
SE_RATIO = 0.25


def round_channels(channels: float, multiplier: float, divisor: int = 8) -> int:
    """timm's ``round_channels``: ``channels * multiplier`` to a multiple of ``divisor`` (never below 90 %)."""
    v = channels * multiplier
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: zero whole samples with probability ``rate`` and rescale the others."""
    if rate <= 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class SqueezeExcite(nn.Module):
    """``x * sigmoid(expand(silu(reduce(mean(x)))))`` (timm's names)."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = nn.SiLU()
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(s)


class MBConv(nn.Module):
    """One EfficientNet block: depthwise-separable (``expand == 1`` in stage 0) or inverted residual,
    with squeeze-excitation and a drop-connect residual when shapes allow."""

    def __init__(self, kind: str, cin: int, cout: int, kernel: int, stride: int, expand: int, norm: nn.Module,
                 padding: str, drop_rate: float) -> None:
        super().__init__()
        self.kind = kind
        self.has_skip = stride == 1 and cin == cout
        self.drop_rate = float(drop_rate)
        mid = cin * expand
        self.act = nn.SiLU()
        if kind == "ir":
            self.conv_pw = make_conv(cin, mid, 1, padding=padding)
            self.bn1 = norm(mid)
            self.conv_dw = make_conv(mid, mid, kernel, stride, padding, groups=mid)
            self.bn2 = norm(mid)
            self.se = SqueezeExcite(mid, round(mid * (SE_RATIO / expand)))
            self.conv_pwl = make_conv(mid, cout, 1, padding=padding)
            self.bn3 = norm(cout)
        else:
            self.conv_dw = make_conv(cin, cin, kernel, stride, padding, groups=cin)
            self.bn1 = norm(cin)
            self.se = SqueezeExcite(cin, round(cin * SE_RATIO))
            self.conv_pw = make_conv(cin, cout, 1, padding=padding)
            self.bn2 = norm(cout)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "ir":
            y = self.act(self.bn1(self.conv_pw(x)))
            y = self.act(self.bn2(self.conv_dw(y)))
            y = self.bn3(self.conv_pwl(self.se(y)))
        else:
            y = self.act(self.bn1(self.conv_dw(x)))
            y = self.bn2(self.conv_pw(self.se(y)))
        if self.has_skip:
            y = drop_path(y, self.drop_rate, self.training) + x
        return y


class EfficientNet(StagedBackbone):
    """EfficientNet trunk (see the module docstring).

    Args:
        variant: ``"b0"``, ``"b1"`` or ``"b2"``.
        padding: ``"same"`` (TensorFlow, the ``tf_`` weights) or ``"symmetric"``.
        out_indices: outputs to return, into the ends of stages 0, 1, 2, 4, 6 (strides 2..32).
        drop_path_rate: drop-connect rate of the last block (block ``i`` of ``n``: ``rate * i / n``).
        norm, norm_eps, norm_momentum: the common ``norm`` rule; BatchNorm eps 1e-3 with "same"
            padding (TensorFlow), 1e-5 otherwise, momentum 0.1 (timm's).
        frozen_stages, norm_eval: the common backbone arguments (stages: stem, then ``blocks.0..6``).
    """

    def __init__(self, variant: str = "b0", padding: str = "same", out_indices: Sequence[int] = (2, 3, 4),
                 drop_path_rate: float = 0.2, norm: NormSpec = "bn", norm_eps: float | None = None,
                 norm_momentum: float | None = None, frozen_stages: int = -1, norm_eval: bool = False) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"EfficientNet variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        check_padding(padding, "EfficientNet")
        self.variant, self.padding = variant, padding
        width, depth = VARIANTS[variant]
        make_norm = norm_factory(norm, norm_eps, norm_momentum, bn_eps=1e-3 if padding == "same" else 1e-5,
                                 bn_momentum=0.1, owner="EfficientNet")
        stem = round_channels(32, width)
        self.conv_stem = make_conv(3, stem, 3, 2, padding)
        self.bn1 = make_norm(stem)
        self.act1 = nn.SiLU()
        repeats = [int(math.ceil(r * depth)) for _, r, *_ in ARCH]
        total, idx, cin = sum(repeats), 0, stem
        self.blocks = nn.ModuleList()
        channels = []
        for (kind, _, k, s, e, c), n in zip(ARCH, repeats):
            cout = round_channels(c, width)
            stage = nn.Sequential()
            for j in range(n):
                stage.append(MBConv(kind, cin, cout, k, s if j == 0 else 1, e, make_norm, padding,
                                    drop_path_rate * idx / total))
                cin, idx = cout, idx + 1
            self.blocks.append(stage)
            channels.append(cout)
        all_strides = (2, 4, 8, 16, 32)
        self.out_indices = check_out_indices(out_indices, len(OUTPUT_STAGES), "EfficientNet",
                                             "the ends of stages 0, 1, 2, 4, 6")
        self.out_channels = [channels[OUTPUT_STAGES[i]] for i in self.out_indices]
        self.strides = [all_strides[i] for i in self.out_indices]
        self._set_staging(frozen_stages, norm_eval)

    def stages(self) -> list[nn.Module]:
        """The stem (``conv_stem`` + ``bn1``), then ``blocks.0`` .. ``blocks.6``."""
        return [nn.Sequential(self.conv_stem, self.bn1), *self.blocks]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.act1(self.bn1(self.conv_stem(x)))
        wanted = {OUTPUT_STAGES[i] for i in self.out_indices}
        outs = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in wanted:
                outs.append(x)
            if i >= max(wanted):
                break
        return outs
