"""The prepared inference model: a frozen copy of a detector with BatchNorm folded into the
preceding convolutions, re-parameterisable blocks switched to their deploy form, channels_last
weights, eval mode fixed, and optionally ``torch.compile``.

Folding is generic and only where it is provably the same computation:

- a ``Conv2d`` directly followed by a ``BatchNorm2d`` / :class:`~odkit.nn.norm.FrozenBatchNorm2d`
  in an ``nn.Sequential``;
- odkit's conv blocks (:class:`~odkit.nn.conv.ConvBNAct`: ``act(bn(conv(x)))``);
- any module that names its pairs in a ``fuse_pairs`` attribute (``(("conv1", "bn1"), ...)``:
  the module's forward applies the norm right after the conv, nothing in between).

A module offering ``switch_to_deploy()`` (RepVGG-style blocks) is switched first. The folded norm
becomes ``nn.Identity``. With ``w' = w * g / sqrt(v + eps)`` and ``b' = (b - m) * g / sqrt(v + eps)
+ beta`` per output channel (computed in float64), outputs match the unfolded eval-mode model to
float32 rounding.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from odkit.nn.conv import ConvBNAct
from odkit.nn.norm import FrozenBatchNorm2d

log = logging.getLogger(__name__)

_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and isinstance(bn, _NORMS)
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
        and not (isinstance(bn, nn.BatchNorm2d) and bn.training)
    )


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.Module) -> nn.Conv2d:
    """A new ``Conv2d`` (with bias) computing ``bn(conv(x))`` of the eval-mode norm ``bn``
    (``nn.BatchNorm2d`` or ``FrozenBatchNorm2d``)."""
    w = conv.weight.double()
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + float(bn.eps))
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(w * scale.view(-1, 1, 1, 1))
    fused.bias.copy_((bias - mean) * scale + beta)
    return fused


def _fold_pair(parent: nn.Module, conv_name: str, bn_name: str) -> bool:
    conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
    if conv is None or bn is None or not _foldable(conv, bn):
        return False
    setattr(parent, conv_name, fold_conv_bn(conv, bn))
    setattr(parent, bn_name, nn.Identity())
    return True


def fold_batchnorm(model: nn.Module) -> int:
    """Fold eval-mode norms into their convolutions in place (see the module docstring for where);
    returns the number of folded pairs. Switch the model to eval mode first."""
    n = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            names = list(module._modules)
            for a, b in zip(names[:-1], names[1:]):
                n += _fold_pair(module, a, b)
        elif isinstance(module, ConvBNAct):
            n += _fold_pair(module, "conv", "bn")
        for conv_name, bn_name in getattr(module, "fuse_pairs", ()) or ():
            n += _fold_pair(module, conv_name, bn_name)
    return n


_ACT_ATTR = {nn.SiLU: "swish", nn.ReLU: "relu"}


def _pointwise_conv_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class ConvAct(nn.Module):
    """``act(conv(x))`` as one oneDNN call with the activation fused (``swish`` = SiLU, ``relu``)
    for float32 CPU input; any other input runs the plain ``conv`` then ``act``. Inference only."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.act = conv, act
        self.attr = _ACT_ATTR[type(act)]
        self.use_fused = True  # False: plain conv then act (export, tracing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if (self.use_fused and x.device.type == "cpu" and x.dtype == torch.float32 == c.weight.dtype
                and not torch.is_grad_enabled() and not torch.jit.is_tracing()
                and not torch.compiler.is_compiling() and not torch.onnx.is_in_onnx_export()):
            return torch.ops.mkldnn._convolution_pointwise(
                x, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups, self.attr, [], "")
        return self.act(c(x))


def fuse_conv_activations(model: nn.Module) -> int:
    """Replace each folded conv block (``ConvBNAct`` whose norm is folded, SiLU or ReLU activation)
    by a :class:`ConvAct` (activation fused into the oneDNN convolution); returns the count. CPU
    inference only (not exportable): used for the Predictor and val, never for export."""
    if not _pointwise_conv_available():
        return 0
    n = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if (isinstance(child, ConvBNAct) and isinstance(child.bn, nn.Identity)
                    and type(child.conv) is nn.Conv2d and type(child.act) in _ACT_ATTR
                    and child.conv.padding_mode == "zeros"):
                setattr(module, name, ConvAct(child.conv, child.act))
                n += 1
    return n


def switch_to_deploy(model: nn.Module) -> int:
    """Call ``switch_to_deploy()`` on every module that offers it (RepVGG-style re-parameterisation);
    returns how many were switched."""
    n = 0
    for module in list(model.modules()):
        fn = getattr(module, "switch_to_deploy", None)
        if callable(fn):
            fn()
            n += 1
    return n


def prepare_inference_model(
    model: nn.Module,
    channels_last: bool = True,
    fuse: bool = True,
    compile: bool = False,
    device: str | torch.device | None = None,
    fuse_activations: bool = False,
) -> nn.Module:
    """A prepared inference copy of ``model`` (the original is not modified): eval mode, no grads,
    deploy-form blocks, BatchNorm folded (``fuse``), channels_last weights, on ``device``.

    ``fuse_activations``: also fuse SiLU/ReLU into the folded convolutions (one oneDNN call per conv
    block, :func:`fuse_conv_activations`; CPU, not exportable; ignored with ``compile``).
    ``compile``: wrap the network part (backbone, neck, head) in ``torch.compile``; where that is
    not possible (no C compiler, unsupported op) the model stays eager and a warning says why
    (the first call triggers the compilation; :func:`compile_or_eager` checks it on an example).
    """
    net = copy.deepcopy(model).eval()
    uncompile(net)  # a copy of a compiled training model must run its own (eager) modules
    if device is not None:
        net.to(device)
    if fuse:
        switch_to_deploy(net)
        folded = fold_batchnorm(net)
        fused = fuse_conv_activations(net) if fuse_activations and not compile else 0
        for m in net.modules():  # a copy of an already prepared model follows this call's choice
            if isinstance(m, ConvAct):
                m.use_fused = bool(fuse_activations and not compile)
        log.debug("prepared inference model: %d norm layers folded, %d activations fused", folded, fused)
    for p in net.parameters():
        p.requires_grad_(False)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    net.prepared_for_inference = True  # type: ignore[assignment]
    if compile:
        net = compile_network(net)
    return net


def compile_network(net: nn.Module) -> nn.Module:
    """Compile ``net``'s backbone, neck and head forward passes (a Detector's network part; the
    decoding and NMS stay eager). Returns ``net`` (changed in place); unchanged with a warning when
    ``torch.compile`` is unavailable."""
    if not hasattr(torch, "compile"):
        log.warning("--compile: this torch has no torch.compile; running eager")
        return net
    parts = [n for n in ("backbone", "neck", "head") if isinstance(getattr(net, n, None), nn.Module)]
    if not parts:
        log.warning("--compile: %s has no backbone/neck/head; running eager", type(net).__name__)
        return net
    for name in parts:
        mod = getattr(net, name)
        mod.forward = torch.compile(mod.forward, dynamic=False)
        mod._odkit_compiled = True
    net.compiled = True  # type: ignore[assignment]
    return net


def uncompile(net: nn.Module) -> nn.Module:
    """Undo :func:`compile_network` in place (the modules run their own eager ``forward`` again).
    Needed after ``copy.deepcopy`` of a compiled model: the copied compiled function still calls
    the original's modules."""
    for mod in net.modules():
        if mod.__dict__.pop("_odkit_compiled", False):
            mod.__dict__.pop("forward", None)
    if "compiled" in net.__dict__:
        net.compiled = False  # type: ignore[assignment]
    return net


def compile_or_eager(net: nn.Module, example: Callable[[nn.Module], Any]) -> nn.Module:
    """Run ``example(net)`` once (triggering the compilation of a compiled ``net``); on failure
    (no C compiler, unsupported operation) log why and return the eager form of ``net``."""
    try:
        example(net)
    except Exception as e:  # noqa: BLE001 - any compiler failure means: fall back to eager
        if not getattr(net, "compiled", False):
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.warning("--compile failed (%s: %s); running eager", type(e).__name__, reason[:200])
        uncompile(net)
    return net
