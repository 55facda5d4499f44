"""Normalisation layers of the backbones: one ``norm`` setting, ``FrozenBatchNorm2d``, freezing.

Every backbone takes ``norm`` with one meaning (:func:`norm_factory`): ``"bn"`` (``nn.BatchNorm2d`` with
the backbone's reference eps / momentum), ``"frozen_bn"`` (:class:`FrozenBatchNorm2d`: statistics and
affine terms fixed buffers, the eps of ``"bn"``), ``"gn"`` (``nn.GroupNorm``, :func:`gn_groups` groups),
``None`` (no normalisation; only where the architecture has a variant without, e.g. VGG) or a callable
``num_features -> module``.

``FrozenBatchNorm2d`` is a BatchNorm2d whose affine parameters and running statistics are fixed
buffers (never trained, never updated). It uses ``eps = 1e-5`` by default, the value of
``torchvision.ops.misc.FrozenBatchNorm2d`` (and of ``nn.BatchNorm2d``), which torchvision's detection
models (RetinaNet, FCOS, Faster R-CNN) use with pretrained backbones. Very old torchvision releases
(<= 0.5) used ``eps = 0``; pass ``eps=0.0`` to reproduce those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from odkit.errors import ConfigError

NORMS = ("bn", "frozen_bn", "gn")
NormFactory = Callable[[int], nn.Module]
# what a backbone's ``norm`` may be: one of NORMS, None (no norm, where the backbone allows it) or a factory
NormSpec = str | NormFactory | None
GN_MAX_GROUPS = 32
GN_EPS = 1e-5


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


def gn_groups(channels: int, max_groups: int = GN_MAX_GROUPS) -> int:
    """GroupNorm groups for ``channels``: the largest power of two up to ``max_groups`` (32) dividing
    ``channels`` (32 when it divides; 48 channels -> 16, 24 -> 8, 58 -> 2, odd counts -> 1); the rule
    of the dense heads' GN towers too."""
    groups = 1
    while groups * 2 <= max_groups and channels % (groups * 2) == 0:
        groups *= 2
    return groups


def norm_factory(
    norm: NormSpec,
    eps: float | None = None,
    momentum: float | None = None,
    *,
    bn_eps: float = 1e-5,
    bn_momentum: float = 0.1,
    owner: str = "backbone",
) -> NormFactory:
    """The ``num_features -> module`` factory of a ``norm`` setting (the one rule of every backbone).

    - ``"bn"``: ``nn.BatchNorm2d(eps, momentum)``; unset ``eps`` / ``momentum`` are the backbone's
      reference values ``bn_eps`` / ``bn_momentum`` (torchvision's 1e-5 / 0.1 unless it says otherwise).
    - ``"frozen_bn"``: :class:`FrozenBatchNorm2d` with the eps ``"bn"`` would use, so a state dict
      trained with ``"bn"`` gives the same outputs as that BatchNorm in eval mode.
    - ``"gn"``: ``nn.GroupNorm(gn_groups(C), C, eps)``, eps 1e-5 unless given.
    - a callable: used as given (``eps`` / ``momentum`` ignored).

    ``None`` (no norm layers) is for the caller to handle where the architecture has such a variant
    (VGG); here it is a ``ConfigError``, as is any other value, naming ``owner``.
    """
    if norm is None:
        raise ConfigError(f"{owner}: norm=None is not supported (the architecture has no variant without "
                          f"normalisation); use one of {', '.join(NORMS)} or a callable")
    if callable(norm):
        return norm
    bn_eps = bn_eps if eps is None else float(eps)
    if norm == "bn":
        bn_momentum = bn_momentum if momentum is None else float(momentum)
        return lambda c: nn.BatchNorm2d(c, eps=bn_eps, momentum=bn_momentum)
    if norm == "frozen_bn":
        return lambda c: FrozenBatchNorm2d(c, eps=bn_eps)
    if norm == "gn":
        gn_eps = GN_EPS if eps is None else float(eps)
        return lambda c: nn.GroupNorm(gn_groups(c), c, eps=gn_eps)
    raise ConfigError(f"{owner}: unknown norm {norm!r}; expected one of {', '.join(map(repr, NORMS))} or a "
                      f"num_features -> module callable")


def make_norm(norm: NormSpec, num_features: int, eps: float | None = None, momentum: float | None = None) -> nn.Module:
    """One norm layer of ``num_features`` channels (:func:`norm_factory` with torchvision's BatchNorm
    defaults, eps 1e-5 and momentum 0.1)."""
    return norm_factory(norm, eps, momentum)(num_features)


def freeze(module: nn.Module) -> None:
    """Set ``requires_grad = False`` on all parameters of ``module`` and put it in eval mode."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


def set_bn_eval(module: nn.Module) -> None:
    """Put every BatchNorm layer inside ``module`` in eval mode (running statistics stop updating;
    GroupNorm and FrozenBatchNorm2d have none)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
