"""Loss reduction and the positive-count normaliser of dense detectors (FCOS, RetinaNet, GFL)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from odkit.errors import ConfigError

REDUCTIONS = ("none", "sum", "mean")


def reduce_loss(loss: torch.Tensor, reduction: str = "none") -> torch.Tensor:
    """Reduce an element-wise loss: ``"none"`` (as is), ``"sum"`` or ``"mean"`` (over all elements)."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ConfigError(f"reduction {reduction!r} is not one of {REDUCTIONS}")


def reduce_num_pos(num: torch.Tensor) -> torch.Tensor:
    """The number of positives to divide a dense-detector loss by: mean over processes, then clamped at >= 1.

    ``num`` is a scalar tensor (any numeric dtype) holding this process's count. When a
    ``torch.distributed`` process group is initialised the count is summed with ``all_reduce`` and
    divided by the world size (every rank then uses the same normaliser); otherwise it is used as is.
    Returns a detached floating scalar tensor on ``num``'s device, never below 1.
    """
    out = num.detach().clone()
    if not out.is_floating_point():
        out = out.float()
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        if world > 1:
            dist.all_reduce(out, op=dist.ReduceOp.SUM)
            out = out / world
    return out.clamp(min=1.0)
