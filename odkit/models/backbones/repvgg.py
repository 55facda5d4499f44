"""RepVGG backbone (A0 / A1 / A2 / B0 / B1) with structural re-parameterisation.

Training form: every block is ``relu(bn(conv3x3(x)) + bn(conv1x1(x)) [+ bn(x)])`` (``rbr_dense``,
``rbr_1x1``, ``rbr_identity``; the identity branch only when stride 1 and in == out), the parameter
names of the RepVGG reference code. ``switch_to_deploy()`` folds each block's three branches and their
BatchNorms (running statistics) into one biased 3x3 conv ``rbr_reparam``: the deploy model is a plain
stack of 3x3 convs and ReLUs whose outputs equal the training model's in eval mode.

Stages: ``stage0`` (one block, stride 2), ``stage1`` .. ``stage4`` (first block stride 2; strides 4, 8,
16, 32). Widths ``min(64, 64a)``, ``64a``, ``128a``, ``256a``, ``512b``. Only batch norms
(``norm="bn"`` / ``"frozen_bn"``) fold: with GroupNorm (``"gn"``) the blocks keep their training form. RepVGG-A0 has 9.11M parameters
with a 1000-class fc (7,827,968 + 1,281,000 = 9,108,968) and 8.31M in deploy form (8,309,384; the
paper's figures).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.staged import StagedBackbone, check_out_indices
from odkit.nn.norm import FrozenBatchNorm2d, NormFactory, NormSpec, norm_factory

log = logging.getLogger(__name__)

# name -> (blocks per stage 1..4, width multiplier a, width multiplier b)
ARCHS: dict[str, tuple[tuple[int, int, int, int], float, float]] = {
    "A0": ((2, 4, 14, 1), 0.75, 2.5),
    "A1": ((2, 4, 14, 1), 1.0, 2.5),
    "A2": ((2, 4, 14, 1), 1.5, 2.75),
    "B0": ((4, 6, 16, 1), 1.0, 2.5),
    "B1": ((4, 6, 16, 1), 2.0, 4.0),
}
STAGE_STRIDES = (4, 8, 16, 32)


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int,
             norm: NormFactory) -> nn.Sequential:
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                     groups=groups, bias=False))
    seq.add_module("bn", norm(out_channels))
    return seq


def _foldable(norm: nn.Module | None) -> bool:
    return norm is None or isinstance(norm, (nn.BatchNorm2d, FrozenBatchNorm2d))


def fuse_bn(kernel: torch.Tensor, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv (no bias) -> bn`` (eval ``BatchNorm2d`` or ``FrozenBatchNorm2d``) as one conv: kernel scaled
    by ``gamma / std``, bias ``beta - mean * gamma / std``; returns ``(kernel, bias)``."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class RepVGGBlock(nn.Module):
    """``[B, in, H, W] -> [B, out, H / stride, W / stride]``: three branches (training) or one 3x3 conv
    (``deploy``), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1,
                 deploy: bool = False, norm: NormFactory = nn.BatchNorm2d) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.deploy = deploy
        self.nonlinearity = nn.ReLU()
        if deploy:
            self.rbr_reparam = nn.Conv2d(in_channels, out_channels, 3, stride, 1, groups=groups, bias=True)
            return
        use_identity = stride == 1 and in_channels == out_channels
        self.rbr_identity = norm(in_channels) if use_identity else None
        self.rbr_dense = _conv_bn(in_channels, out_channels, 3, stride, groups, norm)
        self.rbr_1x1 = _conv_bn(in_channels, out_channels, 1, stride, groups, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.nonlinearity(self.rbr_reparam(x))
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            y = y + self.rbr_identity(x)
        return self.nonlinearity(y)

    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivalent 3x3 kernel ``[out, in / groups, 3, 3]`` and bias ``[out]`` (eval-mode BN)."""
        k3, b3 = fuse_bn(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        k1, b1 = fuse_bn(self.rbr_1x1.conv.weight, self.rbr_1x1.bn)
        kernel, bias = k3 + F.pad(k1, [1, 1, 1, 1]), b3 + b1
        if self.rbr_identity is not None:
            per_group = self.in_channels // self.groups
            ident = torch.zeros_like(k3)
            idx = torch.arange(self.in_channels)
            ident[idx, idx % per_group, 1, 1] = 1.0
            ki, bi = fuse_bn(ident, self.rbr_identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    @property
    def can_fuse(self) -> bool:
        """Whether every branch norm is a batch norm (GroupNorm depends on the input: no fusion)."""
        return self.deploy or all(_foldable(n) for n in (self.rbr_dense.bn, self.rbr_1x1.bn, self.rbr_identity))

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Replace the three branches by the fused ``rbr_reparam`` conv (in place; idempotent). A block
        whose norms are not batch norms (``can_fuse`` False) keeps its training form."""
        if self.deploy or not self.can_fuse:
            return
        kernel, bias = self.fused_kernel_bias()
        conv = self.rbr_dense.conv
        self.rbr_reparam = nn.Conv2d(conv.in_channels, conv.out_channels, 3, conv.stride, 1,
                                     groups=conv.groups, bias=True).to(kernel)
        self.rbr_reparam.weight.copy_(kernel)
        self.rbr_reparam.bias.copy_(bias)
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity
        self.deploy = True


class RepVGG(StagedBackbone):
    """RepVGG backbone returning a list of feature maps, finest first.

    Args:
        arch: ``"A0"``, ``"A1"``, ``"A2"``, ``"B0"`` or ``"B1"``.
        out_indices: indices into ``(stage1, stage2, stage3, stage4)`` (strides 4, 8, 16, 32); default
            ``(1, 2, 3)``.
        deploy: build the fused form directly (to load weights saved after ``switch_to_deploy()``; no
            norm layers then, and ``norm`` must be a batch norm).
        frozen_stages: ``-1`` none, ``0`` ``stage0``, ``k`` in 1..4 ``stage0`` .. ``stage{k}``.
        norm: ``"bn"`` (BatchNorm2d, eps 1e-5, momentum 0.1), ``"frozen_bn"``, ``"gn"`` (no fusion) or a
            ``num_features -> module`` callable (:func:`odkit.nn.norm.norm_factory`); ``norm_eps`` /
            ``norm_momentum`` override eps / momentum.
        norm_eval: keep BatchNorm layers in eval mode during training.

    Attributes: ``out_channels`` (A0: ``[96, 192, 1280]``), ``strides`` (``[8, 16, 32]``), ``size_divisor``
    32. Input ``[B, 3, H, W]``; output ``i`` is ``[B, out_channels[i], H / strides[i], W / strides[i]]``.
    """

    size_divisor = 32

    def __init__(
        self,
        arch: str = "A0",
        out_indices: Sequence[int] = (1, 2, 3),
        deploy: bool = False,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        norm: NormSpec = "bn",
        norm_eps: float | None = None,
        norm_momentum: float | None = None,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ConfigError(f"RepVGG arch must be one of {sorted(ARCHS)}, got {arch!r}")
        indices = check_out_indices(out_indices, 4, "RepVGG", "stages 1..4")
        norm_fn = norm_factory(norm, norm_eps, norm_momentum, owner="RepVGG")
        if deploy and norm == "gn":
            raise ConfigError("RepVGG deploy=True: a GroupNorm RepVGG has no fused form (use norm='bn')")
        blocks, a, b = ARCHS[arch]
        self.arch, self.out_indices, self.deploy, self.norm = arch, indices, deploy, norm
        in_channels = min(64, int(64 * a))
        self.stage0 = RepVGGBlock(3, in_channels, 2, deploy=deploy, norm=norm_fn)
        widths = (int(64 * a), int(128 * a), int(256 * a), int(512 * b))
        for k, (n, width) in enumerate(zip(blocks, widths)):
            layers = [RepVGGBlock(in_channels if j == 0 else width, width, 2 if j == 0 else 1, deploy=deploy,
                                  norm=norm_fn) for j in range(n)]
            self.add_module(f"stage{k + 1}", nn.Sequential(*layers))
            in_channels = width
        self.out_channels = [widths[i] for i in indices]
        self.strides = [STAGE_STRIDES[i] for i in indices]
        self._set_staging(frozen_stages, norm_eval)

    def stages(self) -> list[nn.Module]:
        """``[stage0, stage1, stage2, stage3, stage4]``."""
        return [self.stage0, self.stage1, self.stage2, self.stage3, self.stage4]

    def switch_to_deploy(self) -> RepVGG:
        """Fuse every block into its single 3x3 conv (uses BN running statistics); returns ``self``.
        Blocks with norms that are not batch norms (``norm="gn"``) keep their training form (logged)."""
        blocks = [m for m in self.modules() if isinstance(m, RepVGGBlock)]
        if not all(m.can_fuse for m in blocks):
            log.warning("RepVGG-%s with norm=%r: its norm layers cannot be folded; the blocks keep their "
                        "training form", self.arch, self.norm)
            return self
        for m in blocks:
            m.switch_to_deploy()
        self.deploy = True
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stage0(x)
        outs = []
        stages = self.stages()[1:]
        for i in range(self.out_indices[-1] + 1):
            x = stages[i](x)
            if i in self.out_indices:
                outs.append(x)
        return outs
