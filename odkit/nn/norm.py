"""Normalisation helpers for ImageNet-pretrained backbones: ``FrozenBatchNorm2d``, ``make_norm``, freezing.

``FrozenBatchNorm2d`` is a BatchNorm2d whose affine parameters and running statistics are fixed
buffers (never trained, never updated). It uses ``eps = 1e-5`` by default, the value of
``torchvision.ops.misc.FrozenBatchNorm2d`` (and of ``nn.BatchNorm2d``), which torchvision's detection
models (RetinaNet, FCOS, Faster R-CNN) use with pretrained backbones. Very old torchvision releases
(<= 0.5) used ``eps = 0``; pass ``eps=0.0`` to reproduce those.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from odkit.errors import ConfigError

NORMS = ("bn", "frozen_bn")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine terms: ``y = (x - mean) / sqrt(var + eps) * w + b``.

    Buffers ``weight``, ``bias``, ``running_mean``, ``running_var`` (shape ``[C]``) carry the same names as
    ``nn.BatchNorm2d``'s, so BatchNorm state dicts load directly (``num_batches_tracked`` is dropped).
    Input and output are ``[B, C, H, W]``; the result equals ``nn.BatchNorm2d`` in eval mode.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        """A frozen copy of ``bn``'s current affine terms and running statistics (same eps)."""
        frozen = cls(bn.num_features, eps=bn.eps)
        source = bn.weight if bn.affine else bn.running_mean
        if source is not None:
            frozen = frozen.to(device=source.device, dtype=source.dtype)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.running_mean is not None and bn.running_var is not None:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
        return frozen

    @classmethod
    def convert(cls, module: nn.Module) -> nn.Module:
        """Replace every ``nn.BatchNorm2d`` in ``module`` (recursively) by a ``FrozenBatchNorm2d`` copy.

        Returns the converted module (a new object only when ``module`` itself is a BatchNorm2d).
        """
        if isinstance(module, nn.BatchNorm2d):
            return cls.from_batchnorm(module)
        for name, child in module.named_children():
            new = cls.convert(child)
            if new is not child:
                setattr(module, name, new)
        return module


def make_norm(norm: str, num_features: int) -> nn.Module:
    """``"bn"``: ``nn.BatchNorm2d`` (torchvision defaults eps 1e-5, momentum 0.1); ``"frozen_bn"``: frozen."""
    if norm == "bn":
        return nn.BatchNorm2d(num_features)
    if norm == "frozen_bn":
        return FrozenBatchNorm2d(num_features)
    raise ConfigError(f"unknown norm {norm!r}; expected one of {NORMS}")


def freeze(module: nn.Module) -> None:
    """Set ``requires_grad = False`` on all parameters of ``module`` and put it in eval mode."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


def set_bn_eval(module: nn.Module) -> None:
    """Put every BatchNorm layer inside ``module`` in eval mode (running statistics stop updating)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
