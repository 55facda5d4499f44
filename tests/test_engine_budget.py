"""The --time budget planner: hand-worked plans and simulated runs on a quiet and a busy machine."""

from __future__ import annotations

import math

import pytest

from odkit.engine.budget import FINISH_S, VAL_MARGIN, BudgetPlanner


def test_hand_worked_plan() -> None:
    p = BudgetPlanner(budget_s=300.0, max_epochs=100, no_aug_epochs=15, val_interval=1)
    assert p.plan(0, 0.0) == (100, 15)  # nothing measured yet: the configured plan
    p.record(12.0, 3.0)  # first epoch (start-up costs): alone, it is the estimate
    assert p.epoch_estimate() == 12.0
    p.record(10.0, 2.0)
    p.record(11.0, 2.0)
    # estimate: median of the epochs after the first = 10 or 11 -> sorted [10, 11][1] = 11
    assert p.epoch_estimate() == 11.0
    assert p.final_reserve() == pytest.approx(VAL_MARGIN * 2.0 + FINISH_S)
    spent = 45.0
    left = 300.0 - (VAL_MARGIN * 2.0 + FINISH_S) - spent
    epochs, no_aug = p.plan(3, spent)
    assert epochs == 3 + math.ceil(left / (11.0 + 2.0))
    assert no_aug == min(15, epochs // 3)


def test_plan_never_goes_below_done_nor_above_max() -> None:
    p = BudgetPlanner(budget_s=60.0, max_epochs=5)
    p.record(30.0, 5.0)
    assert p.plan(1, 70.0)[0] == 1  # over budget: stop here
    q = BudgetPlanner(budget_s=6000.0, max_epochs=5)
    q.record(1.0, 0.1)
    assert q.plan(1, 1.0)[0] == 5


def test_tail_start_stays_fixed() -> None:
    p = BudgetPlanner(budget_s=1000.0, max_epochs=100, no_aug_epochs=15)
    p.record(10.0, 1.0)
    p.enter_tail(20)
    epochs, no_aug = p.plan(22, 230.0)
    assert epochs - no_aug == 20 and no_aug > 0


def test_state_round_trip() -> None:
    p = BudgetPlanner(budget_s=100.0, max_epochs=10)
    p.record(3.0, 1.0)
    p.record(4.0)
    p.enter_tail(7)
    q = BudgetPlanner(budget_s=100.0, max_epochs=10)
    q.load_state_dict(p.state_dict())
    assert (q.train_times, q.val_times, q.tail_start) == ([3.0, 4.0], [1.0], 7)


def simulate(budget_s: float, epoch_s, val_s, ipe: int = 12, val_interval: int = 1, setup_s: float = 8.0,
             finish_s: float = 4.0, max_epochs: int = 300) -> float:
    """Wall time of a run driven like the trainer: stop inside an epoch at the deadline, validate
    every ``val_interval`` epochs and at the end, re-plan after each epoch. ``epoch_s(t)`` /
    ``val_s(t)``: the duration of an epoch / validation started at time ``t``."""
    p = BudgetPlanner(budget_s, max_epochs, 15, val_interval)
    t, epoch, plan = setup_s, 0, max_epochs
    while epoch < plan:
        t0, per_iter, cut = t, epoch_s(t) / ipe, False
        for k in range(ipe):
            if k and t > p.deadline():
                cut = True
                break
            t += per_iter
        t_train = t - t0
        last = epoch + 1 >= plan or cut or t > p.deadline()
        val = None
        if (epoch + 1) % val_interval == 0 or last:
            val = val_s(t)
            t += val
        if not cut:
            p.record(t_train, val)
        epoch += 1
        if last:
            break
        plan = p.plan(epoch, t)[0]
    return t + finish_s


@pytest.mark.parametrize("val_interval", [1, 3])
def test_simulated_runs_end_within_three_percent(val_interval: int) -> None:
    budget = 300.0
    quiet = simulate(budget, lambda t: 11.0, lambda t: 2.5, val_interval=val_interval)
    # another process loads the machine for the first half: everything twice as slow
    busy = simulate(budget, lambda t: 22.0 if t < budget / 2 else 11.0, lambda t: 5.0 if t < budget / 2 else 2.5,
                    val_interval=val_interval)
    # busy at the end instead (the final validation slower than the last one measured)
    late = simulate(budget, lambda t: 11.0 if t < budget / 2 else 15.0, lambda t: 2.5 if t < budget / 2 else 3.4,
                    val_interval=val_interval)
    for wall in (quiet, busy, late):
        assert abs(wall - budget) <= 0.03 * budget, (quiet, busy, late)
