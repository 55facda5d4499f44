"""The ``--time`` budget planner: how many epochs fit, re-planned after every epoch, and when
training must stop so that the run (final validation and outputs included) ends at the budget.

- Epoch cost: the median of the last 3 measured training-epoch times (the first epoch, with its
  start-up costs, only while it is the only one), so the plan follows a machine that gets busier
  or quieter within a few epochs, plus the last measured validation time divided by
  ``val_interval``.
- Final reserve: the last measured validation time (x 1.1) plus ``finish_s`` for the final
  outputs; before any validation was measured, a quarter of an epoch.
- Deadline: training stops (inside an epoch if need be) at ``budget - final reserve``; the epoch
  plan is the ceiling of what still fits, so the last epoch is the one the deadline cuts short and
  the budget is used in full.
- No-augmentation tail: ``min(no_aug_epochs, epochs // 3)`` epochs at the end of the plan until the
  tail starts; from then on its start is fixed and a longer or shorter plan changes its length.

Times are wall-clock seconds since the start of the run (setup included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

RECENT = 3  # epochs the epoch-time estimate looks back on
VAL_MARGIN = 1.1  # the final validation may take a little longer than the last one
FINISH_S = 5.0  # final outputs: predictions.json, curves, weights


@dataclass
class BudgetPlanner:
    """Plan of a run with a ``budget_s`` seconds budget (see the module docstring).

    ``record`` after each epoch, then ``plan`` gives ``(epochs, no_aug_epochs)`` and
    ``deadline()`` the time (seconds since the start) at which training stops.
    """

    budget_s: float
    max_epochs: int
    no_aug_epochs: int = 0
    val_interval: int = 1
    finish_s: float = FINISH_S
    train_times: list[float] = field(default_factory=list)
    val_times: list[float] = field(default_factory=list)
    tail_start: int | None = None

    def record(self, train_s: float, val_s: float | None = None) -> None:
        """Add one epoch's training time and, when it validated, its validation time (seconds)."""
        self.train_times.append(float(train_s))
        if val_s is not None:
            self.val_times.append(float(val_s))

    def epoch_estimate(self) -> float | None:
        """Seconds of one training epoch now (``None`` before the first one)."""
        times = self.train_times[1:] or self.train_times
        if not times:
            return None
        recent = sorted(times[-RECENT:])
        return recent[len(recent) // 2]

    def val_estimate(self) -> float:
        """Seconds of one validation (the last measured; before any: a quarter of an epoch)."""
        if self.val_times:
            return self.val_times[-1]
        return 0.25 * (self.epoch_estimate() or 0.0)

    def final_reserve(self) -> float:
        """Seconds kept for the final validation and outputs."""
        return VAL_MARGIN * self.val_estimate() + self.finish_s

    def deadline(self) -> float:
        """When training must stop (seconds since the start)."""
        return self.budget_s - self.final_reserve()

    def enter_tail(self, epoch: int) -> None:
        """The no-augmentation tail started at (0-based) ``epoch``; its start stays fixed."""
        self.tail_start = int(epoch)

    def plan(self, epoch_done: int, spent: float) -> tuple[int, int]:
        """``(epochs, no_aug_epochs)`` after ``epoch_done`` epochs and ``spent`` seconds."""
        per = self.epoch_estimate()
        if per is None:
            return self.max_epochs, self.no_aug_epochs
        per_epoch = per + self.val_estimate() / max(self.val_interval, 1)
        left = self.deadline() - spent
        more = math.ceil(left / per_epoch - 1e-9) if left > 0 and per_epoch > 0 else 0
        epochs = max(min(self.max_epochs, epoch_done + more), epoch_done)
        if self.tail_start is not None:
            no_aug = max(epochs - self.tail_start, 0)
        else:
            no_aug = min(self.no_aug_epochs, epochs // 3) if self.no_aug_epochs else 0
        return epochs, no_aug

    def state_dict(self) -> dict[str, Any]:
        return {"train_times": list(self.train_times), "val_times": list(self.val_times),
                "tail_start": self.tail_start}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train_times = [float(t) for t in state.get("train_times") or []]
        self.val_times = [float(t) for t in state.get("val_times") or []]
        ts = state.get("tail_start")
        self.tail_start = None if ts is None else int(ts)
