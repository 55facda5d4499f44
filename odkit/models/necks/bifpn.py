"""BiFPN (Tan et al. 2020, EfficientDet): bidirectional weighted feature pyramid over P3-P7, with
effdet's parameter names.

P6 and P7 come from the last backbone map: ``resample.3`` (1x1 conv + BatchNorm to the BiFPN width,
then a 3x3 stride-2 max pool) and ``resample.4`` (max pool). Each of ``repeats`` cells (``cell.i``) has
eight nodes (``fnode.j``): the top-down path P6' .. P3'' and the bottom-up path P4'' .. P7''. A node
resamples its inputs to its level (``combine.resample.<input>``: a 1x1 conv + BatchNorm where the
input's channels differ, 2x nearest upsampling or a 3x3 stride-2 max pool), sums them with fast
normalised fusion (``relu(w_i) / (sum_j relu(w_j) + 1e-4)``, ``combine.edge_weights``), then applies
SiLU and a depthwise-separable 3x3 conv + BatchNorm (``after_combine.conv``). Input sides must be
multiples of 128 (P7's stride), so every resampling is an exact factor of 2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from odkit.errors import ConfigError
from odkit.nn.same_pad import check_padding, make_conv, make_max_pool

NUM_LEVELS = 5  # P3 .. P7
FUSION = ("fastattn", "sum")


def bifpn_nodes(num_levels: int = NUM_LEVELS) -> list[tuple[int, tuple[int, ...]]]:
    """``(level index, input ids)`` of one cell's nodes (effdet's ``bifpn_config``): ids ``0 ..
    num_levels - 1`` are the cell's inputs P3..P7, each node's output gets the next id."""
    ids = {i: [i] for i in range(num_levels)}
    nodes, nid = [], num_levels
    for i in range(num_levels - 2, -1, -1):  # top-down
        nodes.append((i, (ids[i][-1], ids[i + 1][-1])))
        ids[i].append(nid)
        nid += 1
    for i in range(1, num_levels):  # bottom-up
        nodes.append((i, (*ids[i], ids[i - 1][-1])))
        ids[i].append(nid)
        nid += 1
    return nodes


class ConvBN(nn.Module):
    """1x1 conv (bias: ``bias``) + BatchNorm (effdet's ``ConvBnAct2d`` without activation)."""

    def __init__(self, cin: int, cout: int, padding: str, bias: bool, norm: nn.Module) -> None:
        super().__init__()
        self.conv = make_conv(cin, cout, 1, padding=padding, bias=bias)
        self.bn = norm(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class SeparableConv(nn.Module):
    """Depthwise 3x3 ``conv_dw`` + pointwise ``conv_pw`` (+ optional ``bn``, + optional SiLU)."""

    def __init__(self, cin: int, cout: int, padding: str, bias: bool, norm: nn.Module | None = None,
                 act: bool = False) -> None:
        super().__init__()
        self.conv_dw = make_conv(cin, cin, 3, padding=padding, groups=cin)
        self.conv_pw = make_conv(cin, cout, 1, padding=padding, bias=bias)
        self.bn = norm(cout) if norm is not None else None
        self.act = nn.SiLU() if act else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_pw(self.conv_dw(x))
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x) if self.act is not None else x


def resample(cin: int, cout: int, scale: int, padding: str, bias: bool, norm: nn.Module) -> nn.Sequential:
    """effdet's ``ResampleFeatureMap``: optional 1x1 ``conv`` (channels), then ``downsample`` (``scale``
    -1: 3x3 stride-2 max pool) or ``upsample`` (``scale`` 1: 2x nearest)."""
    seq = nn.Sequential()
    if cin != cout:
        seq.add_module("conv", ConvBN(cin, cout, padding, bias, norm))
    if scale < 0:
        seq.add_module("downsample", make_max_pool(3, 2, padding))
    elif scale > 0:
        seq.add_module("upsample", nn.Upsample(scale_factor=2.0, mode="nearest"))
    return seq


class Combine(nn.Module):
    """Resample the inputs of one node to its level and fuse them."""

    def __init__(self, inputs: Sequence[tuple[int, int, int]], cout: int, padding: str, bias: bool,
                 norm: nn.Module, fusion: str) -> None:
        super().__init__()
        self.inputs_offsets = [i for i, _, _ in inputs]
        self.fusion = fusion
        self.resample = nn.ModuleDict({str(i): resample(c, cout, s, padding, bias, norm) for i, c, s in inputs})
        self.edge_weights = nn.Parameter(torch.ones(len(inputs))) if fusion == "fastattn" else None

    def forward(self, x: list[Tensor]) -> Tensor:
        nodes = [m(x[i]) for i, m in zip(self.inputs_offsets, self.resample.values())]
        if self.edge_weights is None:
            return torch.stack(nodes, dim=-1).sum(-1)
        w = torch.relu(self.edge_weights.to(nodes[0].dtype))
        total = w.sum()
        return torch.stack([(n * w[i]) / (total + 0.0001) for i, n in enumerate(nodes)], dim=-1).sum(-1)


class Fnode(nn.Module):
    """One BiFPN node: ``combine`` then ``after_combine`` (SiLU, separable conv + BatchNorm)."""

    def __init__(self, combine: Combine, cout: int, padding: str, bias: bool, norm: nn.Module) -> None:
        super().__init__()
        self.combine = combine
        self.after_combine = nn.Sequential()
        self.after_combine.add_module("act", nn.SiLU())
        self.after_combine.add_module("conv", SeparableConv(cout, cout, padding, bias, norm))

    def forward(self, x: list[Tensor]) -> Tensor:
        return self.after_combine(self.combine(x))


class BiFPNLayer(nn.Module):
    """One BiFPN cell: P3..P7 in (channels ``in_channels``), P3..P7 out (``channels`` each)."""

    def __init__(self, in_channels: Sequence[int], channels: int, padding: str, bias: bool, norm: nn.Module,
                 fusion: str) -> None:
        super().__init__()
        n = len(in_channels)
        chans, levels = list(in_channels), list(range(n))
        self.num_levels = n
        self.fnode = nn.ModuleList()
        for level, offsets in bifpn_nodes(n):
            inputs = [(i, chans[i], levels[i] - level) for i in offsets]  # scale: +1 up, -1 down
            inputs = [(i, c, 1 if d > 0 else -1 if d < 0 else 0) for i, c, d in inputs]
            self.fnode.append(Fnode(Combine(inputs, channels, padding, bias, norm, fusion), channels, padding,
                                    bias, norm))
            chans.append(channels)
            levels.append(level)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        x = list(x)
        for fn in self.fnode:
            x.append(fn(x))
        return x[-self.num_levels:]


class BiFPN(nn.Module):
    """BiFPN neck (see the module docstring).

    Args:
        in_channels: channels of the backbone's C3, C4, C5.
        channels: BiFPN width (EfficientDet D0 64, D1 88, D2 112).
        repeats: cells (D0 3, D1 4, D2 5).
        in_strides: the backbone's strides (8, 16, 32).
        padding: ``"same"`` (TensorFlow) or ``"symmetric"``.
        redundant_bias: biases on the convs followed by BatchNorm (the TF models have them).
        norm_eps, norm_momentum: BatchNorm settings (effdet's 1e-3 / 0.01).
        fusion: ``"fastattn"`` (fast normalised fusion) or ``"sum"``.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 64, repeats: int = 3,
                 in_strides: Sequence[int] = (8, 16, 32), padding: str = "same", redundant_bias: bool = True,
                 norm_eps: float = 1e-3, norm_momentum: float = 0.01, fusion: str = "fastattn") -> None:
        super().__init__()
        check_padding(padding, "BiFPN")
        if fusion not in FUSION:
            raise ConfigError(f"BiFPN fusion must be one of {', '.join(FUSION)}, got {fusion!r}")
        if len(in_channels) != 3 or list(in_strides) != [8, 16, 32]:
            raise ConfigError(f"BiFPN takes C3, C4, C5 at strides 8, 16, 32; got channels {list(in_channels)} "
                              f"at strides {list(in_strides)}")
        if int(repeats) < 1:
            raise ConfigError(f"BiFPN repeats must be >= 1, got {repeats}")

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c, eps=norm_eps, momentum=norm_momentum)

        self.resample = nn.ModuleDict()
        chans = list(in_channels)
        for level in range(len(in_channels), NUM_LEVELS):
            self.resample[str(level)] = resample(chans[-1], channels, -1, padding, redundant_bias, norm)
            chans.append(channels)
        self.cell = nn.Sequential()
        for r in range(int(repeats)):
            self.cell.add_module(str(r), BiFPNLayer(chans, channels, padding, redundant_bias, norm, fusion))
            chans = [channels] * NUM_LEVELS
        self.out_channels = [channels] * NUM_LEVELS
        self.strides = [8, 16, 32, 64, 128]
        self.size_divisor = 128

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        x = list(feats)
        for m in self.resample.values():
            x.append(m(x[-1]))
        for layer in self.cell:
            x = layer(x)
        return x
