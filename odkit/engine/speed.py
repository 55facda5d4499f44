"""Training-step speed settings that leave what is learned unchanged: out-of-place activations
(an in-place SiLU/ReLU after a norm makes autograd keep a copy of its input), foreach optimiser
updates, and the optional ``torch.compile`` of the network part (backbone, neck, head; the loss
and the assignment stay eager)."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def out_of_place_activations(model: nn.Module) -> int:
    """Set ``inplace=False`` on SiLU / ReLU / LeakyReLU / Hardswish modules (same values; autograd
    then saves the input itself instead of a copy of it). Returns how many were changed."""
    n = 0
    for m in model.modules():
        if isinstance(m, (nn.SiLU, nn.ReLU, nn.LeakyReLU, nn.Hardswish, nn.ReLU6)) and m.inplace:
            m.inplace = False
            n += 1
    return n


def foreach_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Use the multi-tensor (foreach) update of ``optimizer`` where it has one (same arithmetic
    per element as the per-parameter loop, far fewer operator calls)."""
    for group in optimizer.param_groups:
        if "foreach" in group:
            group["foreach"] = True


def prepare_training_model(model: nn.Module) -> nn.Module:
    """Apply the speed settings that do not change results to ``model`` in place."""
    out_of_place_activations(model)
    return model


def compile_for_training(model: nn.Module) -> nn.Module:
    """``torch.compile`` the network part of ``model`` in place (see
    :func:`odkit.models.fuse.compile_network`); call after any ``copy.deepcopy`` of the model (EMA).
    The first training step compiles (minutes on a small CPU); where that fails, see
    :func:`check_compiled_step`."""
    from odkit.models.fuse import compile_network

    return compile_network(model)
