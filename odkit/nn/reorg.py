"""Darknet's ``[reorg]`` layer (YOLOv2's passthrough), exactly as ``reorg_cpu(..., forward=0)`` computes it.

Darknet's reorg is not a plain space-to-depth: with input ``[B, C, H, W]`` and stride ``s`` it reads the
input buffer as ``[B, C / s^2, H s, W s]`` and writes ``out[b, k, j, i] = x'[b, k % C', j s + o // s,
i s + o % s]`` with ``C' = C / s^2`` and ``o = k // C'``, into a buffer of ``[B, C, H, W]`` that the next
layer reads as ``[B, C s^2, H / s, W / s]``. Weights trained by darknet expect this channel order.
All reshapes and one permute: exportable to ONNX / OpenVINO.
"""

from __future__ import annotations

import torch
from torch import nn

from odkit.errors import ConfigError


def darknet_reorg(x: torch.Tensor, stride: int = 2) -> torch.Tensor:
    """``[B, C, H, W] -> [B, C s^2, H / s, W / s]`` in darknet's order (see the module docstring)."""
    b, c, h, w = x.shape
    s = int(stride)
    cp = c // (s * s)
    xv = x.reshape(b, cp, h, s, w, s)
    # xv[b, c2, j, dy, i, dx] = x'[b, c2, j*s + dy, i*s + dx]; out channel k = (dy*s + dx) * cp + c2
    out = xv.permute(0, 3, 5, 1, 2, 4).reshape(b, c, h, w)
    return out.reshape(b, c * s * s, h // s, w // s)


class Reorg(nn.Module):
    """:func:`darknet_reorg` as a module (``stride`` 2 in YOLOv2); input sides and channels must be
    multiples of ``stride`` (resp. ``stride^2``)."""

    def __init__(self, stride: int = 2) -> None:
        super().__init__()
        if int(stride) < 1:
            raise ConfigError(f"Reorg: stride must be >= 1, got {stride}")
        self.stride = int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return darknet_reorg(x, self.stride)
