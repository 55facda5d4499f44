"""Optimisers with weight decay applied to conv / linear weights only (not to norms or biases)."""

from __future__ import annotations

import torch
from torch import nn

from odkit.errors import ConfigError

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def split_decay_params(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(decay, no_decay)`` trainable parameters.

    No decay for: biases, every parameter of a normalisation layer, and any 0-d / 1-d parameter
    (scales, learnable temperatures). Decay for everything else (conv and linear weights).
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, _NORMS) or name == "bias" or p.ndim <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    return decay, no_decay


def build_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    nesterov: bool = True,
) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW with two parameter groups (decay / no decay).

    ``lr`` is the base learning rate (the schedule overwrites it every iteration);
    ``momentum`` is SGD's momentum or AdamW's beta1.
    """
    decay, no_decay = split_decay_params(model)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise ConfigError(f"unknown optimizer {name!r}; use 'sgd' or 'adamw'")
