"""Exponential moving average of model weights with a warm-up ramp.

The EMA decay grows from 0 towards ``decay`` as ``decay * (1 - exp(-updates / tau))``, so the
average follows the raw weights closely early in training (when they change fast) and becomes a
long average later. For short runs, :func:`ema_params_for` picks a shorter ``tau`` and a smaller
``decay`` so that the averaging window stays a fraction of the run.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DistributedDataParallel / DataParallel wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def ema_params_for(total_updates: int, decay: float = 0.9998, tau: float = 2000.0) -> tuple[float, float]:
    """EMA ``(decay, tau)`` suited to a run of ``total_updates`` optimiser steps.

    Long runs keep the YOLOX / Ultralytics defaults (0.9998, 2000). A short run gets an
    averaging window of about ``total_updates / 20`` steps and a ramp of ``total_updates / 15``,
    otherwise the average would still be dominated by early weights when training ends.
    """
    total = max(int(total_updates), 1)
    window = max(total / 20.0, 1.0)
    short_decay = 1.0 - 1.0 / window
    short_tau = min(max(total / 15.0, 5.0), tau)
    return min(decay, short_decay), short_tau


def _state_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The tensors of ``module.state_dict()`` (parameters and persistent buffers, each once), in
    module order, without building the dict (a few ms per call on a detector)."""
    out, seen = [], set()
    for m in module.modules():
        skip = m._non_persistent_buffers_set
        for t in (*m._parameters.values(), *(b for k, b in m._buffers.items() if k not in skip)):
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                out.append(t)
    return out


class ModelEMA:
    """Keeps ``ema`` (a frozen copy of the model) as a moving average of the model's weights.

    Floating-point parameters and buffers are averaged; integer buffers (BatchNorm's
    ``num_batches_tracked``) are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, tau: float = 2000.0, updates: int = 0):
        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.tau = float(tau)
        self.updates = int(updates)

    def current_decay(self) -> float:
        """The decay used by the next-but-current update (after ``self.updates`` updates)."""
        return self.decay * (1.0 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the model's current weights into the average."""
        self.updates += 1
        d = self.current_decay()
        avg, src = [], []
        for v, m in zip(_state_tensors(self.ema), _state_tensors(unwrap(model)), strict=True):
            if v.dtype.is_floating_point:
                avg.append(v)
                src.append(m.detach().to(v.dtype))
            else:
                v.copy_(m)
        # one multi-tensor call per operation (the same element-wise arithmetic as a loop of
        # v.mul_(d).add_(src, alpha=1 - d))
        if avg:
            torch._foreach_mul_(avg, d)
            torch._foreach_add_(avg, src, alpha=1.0 - d)

    def set_params(self, decay: float, tau: float) -> None:
        """Change decay / ramp (used when the schedule is re-planned); keeps the update count."""
        self.decay, self.tau = float(decay), float(tau)

    def state_dict(self) -> dict[str, Any]:
        return {
            "ema": self.ema.state_dict(),
            "decay": self.decay,
            "tau": self.tau,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state["ema"])
        self.decay = float(state["decay"])
        self.tau = float(state["tau"])
        self.updates = int(state["updates"])
