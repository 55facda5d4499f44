"""Pieces shared by the dense heads: convolution towers and the learnable per-level ``Scale``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from odkit.errors import ConfigError
from odkit.nn.norm import gn_groups


class Scale(nn.Module):
    """Multiply by a learnable scalar (one per pyramid level in FCOS / ATSS / GFL heads)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _norm(kind: str | None, channels: int) -> nn.Module | None:
    if kind is None or kind == "none":
        return None
    if kind == "gn":
        return nn.GroupNorm(gn_groups(channels), channels)  # the backbones' rule: 32, else 16, 8, ...
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    raise ConfigError(f"unknown head norm {kind!r}; expected none, gn or bn")


def conv_block(in_ch: int, out_ch: int, norm: str | None = None, depthwise: bool = False) -> nn.Sequential:
    """One tower block: ``3x3 conv [-> norm] -> ReLU`` (``[0]`` is the conv, torchvision's layout), or
    with ``depthwise`` a depthwise 3x3 + pointwise 1x1 pair with norm and ReLU after each."""
    if depthwise:
        layers: list[nn.Module] = [nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=norm in (None, "none"))]
        n = _norm(norm, in_ch)
        layers += ([n] if n is not None else []) + [nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(in_ch, out_ch, 1, bias=norm in (None, "none")))
    else:
        layers = [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=norm in (None, "none") or norm == "gn")]
    n = _norm(norm, out_ch)
    layers += ([n] if n is not None else []) + [nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def conv_tower(in_ch: int, ch: int, num_convs: int, norm: str | None = None, depthwise: bool = False) -> nn.Sequential:
    """``num_convs`` tower blocks (see :func:`conv_block`), the first from ``in_ch`` channels."""
    return nn.Sequential(*(conv_block(in_ch if i == 0 else ch, ch, norm, depthwise) for i in range(num_convs)))


def init_normal(module: nn.Module, std: float = 0.01) -> None:
    """Normal(0, std) weights and zero biases for every conv of ``module`` (dense-head init)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.0)
