"""TensorFlow-style "same" padding for convolutions and max pooling (EfficientNet / EfficientDet ``tf_``
weights), and the symmetric padding of their PyTorch-native variants.

TensorFlow's ``SAME`` gives an output of ``ceil(size / stride)`` and, where the total padding is
odd, puts the extra pixel at the bottom / right. For stride 1 and odd kernels that is the symmetric
``(k - 1) // 2``, so only strided layers pad at run time (``Conv2dSame``, ``MaxPool2dSame``), from the
input's size. ``padding="symmetric"`` is PyTorch's usual ``((s - 1) + d (k - 1)) // 2`` on every side.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from odkit.errors import ConfigError

PADDINGS = ("same", "symmetric")


def same_pad_amount(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Total padding (pixels) of one side pair for TF ``SAME``: output ``ceil(size / stride)``."""
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def pad_same(x: Tensor, kernel: int, stride: int, dilation: int = 1, value: float = 0.0) -> Tensor:
    """``x`` ``[B, C, H, W]`` padded for TF ``SAME`` (the odd pixel at the bottom / right)."""
    ih, iw = int(x.shape[-2]), int(x.shape[-1])
    ph = same_pad_amount(ih, kernel, stride, dilation)
    pw = same_pad_amount(iw, kernel, stride, dilation)
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=value)


def _static(kernel: int, stride: int, dilation: int) -> bool:
    return stride == 1 and (dilation * (kernel - 1)) % 2 == 0


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF ``SAME`` padding computed from the input size (same parameter names)."""

    def forward(self, x: Tensor) -> Tensor:
        x = pad_same(x, self.kernel_size[0], self.stride[0], self.dilation[0])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MaxPool2dSame(nn.MaxPool2d):
    """Max pooling with TF ``SAME`` padding (padded with ``-inf``, so pads never win)."""

    def forward(self, x: Tensor) -> Tensor:
        k, s = int(self.kernel_size), int(self.stride)  # type: ignore[call-overload]
        return F.max_pool2d(pad_same(x, k, s, value=float("-inf")), k, s)


def check_padding(padding: str, owner: str) -> str:
    """``padding`` if it is one of :data:`PADDINGS`, else a ``ConfigError`` naming ``owner``."""
    if padding not in PADDINGS:
        raise ConfigError(f"{owner}: padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    return padding


def make_conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: str = "same",
              groups: int = 1, bias: bool = False, dilation: int = 1) -> nn.Conv2d:
    """A conv with ``padding`` ``"same"`` (TF; run-time padding only where it is not symmetric) or
    ``"symmetric"``; ``groups=in_channels`` for depthwise."""
    check_padding(padding, "make_conv")
    if padding == "same" and not _static(kernel, stride, dilation):
        return Conv2dSame(in_channels, out_channels, kernel, stride, 0, dilation, groups, bias)
    pad = ((stride - 1) + dilation * (kernel - 1)) // 2
    return nn.Conv2d(in_channels, out_channels, kernel, stride, pad, dilation, groups, bias)


def make_max_pool(kernel: int, stride: int, padding: str = "same") -> nn.Module:
    """Max pooling with ``padding`` ``"same"`` (TF) or ``"symmetric"``."""
    check_padding(padding, "make_max_pool")
    if padding == "same" and not _static(kernel, stride, 1):
        return MaxPool2dSame(kernel, stride)
    return nn.MaxPool2d(kernel, stride, ((stride - 1) + (kernel - 1)) // 2)
