"""Learning-rate schedule: linear warm-up, then cosine, linear or step decay, set per iteration.

The schedule is a pure function of the iteration index, so it can be re-planned (for a
wall-clock budget) by changing ``total_iters`` and restored exactly from a checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from odkit.errors import ConfigError


@dataclass
class LRSchedule:
    """``lr(it)`` for iteration ``it`` (0-based) of a run of ``total_iters`` iterations.

    - warm-up: ``it < warmup_iters``: lr rises linearly from ``base_lr * warmup_ratio`` to
      ``base_lr``;
    - then ``kind="cos"``: ``min + (base - min) * (1 + cos(pi * t)) / 2`` with ``t`` the fraction of
      the post-warm-up iterations done, or ``kind="linear"``: straight line from base to min;
      ``min = base_lr * min_lr_ratio``; after ``total_iters`` the lr stays at the minimum;
    - or ``kind="step"``: ``base_lr * gamma ** k`` with ``k`` the number of ``steps`` (fractions of
      ``total_iters``, e.g. ``[0.667, 0.917]`` = epochs 8 and 11 of a 12-epoch run) already reached:
      iteration ``it`` is past step ``f`` when ``it >= round(f * total_iters)``.

    Steps are fractions, so :meth:`replan` moves the steps not yet reached with the run's length;
    a step already reached stays where it was (``reached``, absolute iterations), so re-planning
    never raises the lr again.
    """

    base_lr: float
    total_iters: int
    warmup_iters: int = 0
    kind: str = "cos"
    min_lr_ratio: float = 0.05
    warmup_ratio: float = 0.0
    steps: list[float] = field(default_factory=list)
    gamma: float = 0.1
    reached: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in ("cos", "linear", "step"):
            raise ConfigError(f"unknown lr schedule {self.kind!r}; use 'cos', 'linear' or 'step'")
        if self.base_lr <= 0:
            raise ConfigError(f"learning rate must be positive, got {self.base_lr}")
        self.steps = [float(f) for f in self.steps]
        if any(not 0.0 < f < 1.0 for f in self.steps) or self.steps != sorted(self.steps):
            raise ConfigError(f"lr steps must be increasing fractions of the run in (0, 1), got {self.steps}")
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"lr gamma must be in (0, 1], got {self.gamma}")

    def milestones(self) -> list[int]:
        """Iterations at which the step schedule multiplies the lr by ``gamma``."""
        fixed = [int(m) for m in self.reached]
        floor = fixed[-1] if fixed else 0
        return fixed + [max(int(round(f * self.total_iters)), floor) for f in self.steps[len(fixed):]]

    def lr(self, it: int) -> float:
        """Learning rate at iteration ``it``."""
        base = self.base_lr
        low = base * self.min_lr_ratio
        if it < self.warmup_iters:
            start = base * self.warmup_ratio
            return start + (base - start) * (it + 1) / self.warmup_iters
        if self.kind == "step":
            k = sum(1 for m in self.milestones() if it >= m)
            return base * self.gamma**k
        span = max(self.total_iters - self.warmup_iters, 1)
        t = min(max((it - self.warmup_iters) / span, 0.0), 1.0)
        if self.kind == "cos":
            return low + (base - low) * 0.5 * (1.0 + math.cos(math.pi * t))
        return base + (low - base) * t

    def step(self, optimizer: torch.optim.Optimizer, it: int) -> float:
        """Set every param group's lr for iteration ``it``; returns it."""
        lr = self.lr(it)
        for g in optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        return lr

    def replan(self, total_iters: int, it: int | None = None) -> None:
        """Fit the decay to a new run length (warm-up already done stays as it was). ``it``: the next
        iteration to run; steps reached before it keep their place."""
        if it is not None and self.kind == "step":
            self.reached = [m for m in self.milestones() if m <= it]
        self.total_iters = max(int(total_iters), self.warmup_iters + 1)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, list(v) if k in ("steps", "reached") else v)
