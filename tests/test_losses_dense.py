"""Dense-detector losses (focal, QFL, DFL, integral, smooth L1, centerness, num-pos) vs brute force."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from odkit.errors import ConfigError
from odkit.losses import (
    Integral,
    centerness_loss,
    centerness_targets,
    distribution_focal_loss,
    distribution_to_distance,
    l1_loss,
    quality_focal_loss,
    reduce_loss,
    reduce_num_pos,
    sigmoid_focal_loss,
    smooth_l1_loss,
)
from odkit.losses import normalize as normalize_mod

SEEDS = (0, 1, 2)


# ----------------------------------------------------------------------------- scalar references


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _bce(x: float, t: float) -> float:
    p = _sig(x)
    return -(t * math.log(p) + (1.0 - t) * math.log(1.0 - p))


def _ref_focal(x: float, t: float, alpha: float, gamma: float) -> float:
    p = _sig(x)
    pt = p if t == 1.0 else 1.0 - p
    w = (alpha if t == 1.0 else 1.0 - alpha) if alpha >= 0 else 1.0
    return -w * (1.0 - pt) ** gamma * math.log(pt)


def _ref_qfl(row: list[float], label: int, score: float, beta: float) -> list[float]:
    out = []
    for c, x in enumerate(row):
        y = score if c == label else 0.0
        out.append(_bce(x, y) * abs(y - _sig(x)) ** beta)
    return out


def _ref_ce(row: list[float], k: int) -> float:
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return lse - row[k]


def _ref_dfl(row: list[float], t: float) -> float:
    n = len(row)
    left = min(int(math.floor(t)), n - 2)
    right = left + 1
    return _ref_ce(row, left) * (right - t) + _ref_ce(row, right) * (t - left)


def _ref_smooth_l1(p: float, t: float, beta: float) -> float:
    d = abs(p - t)
    if beta == 0:
        return d
    return 0.5 * d * d / beta if d < beta else d - 0.5 * beta


# ----------------------------------------------------------------------------- focal


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.25, 1.5)])
def test_focal_matches_brute_force(seed: int, alpha: float, gamma: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64) * 3
    t = (torch.rand(5, 3, generator=g) < 0.3).double()
    got = sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma)
    for i in range(5):
        for j in range(3):
            ref = _ref_focal(float(x[i, j]), float(t[i, j]), alpha, gamma)
            assert float(got[i, j]) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert float(sigmoid_focal_loss(x, t, alpha, gamma, "sum")) == pytest.approx(float(got.sum()))
    assert float(sigmoid_focal_loss(x, t, alpha, gamma, "mean")) == pytest.approx(float(got.mean()))


def test_focal_gamma0_no_alpha_is_bce() -> None:
    x = torch.tensor([[-2.0, 0.0, 0.7], [5.0, -0.3, 1.1]])
    t = torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    ref = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert torch.allclose(sigmoid_focal_loss(x, t, alpha=-1, gamma=0), ref, atol=1e-7)
    # hand value: x=0, t=1 -> alpha * 0.5**2 * log 2
    one = sigmoid_focal_loss(torch.zeros(1), torch.ones(1))
    assert float(one) == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-6)


def test_focal_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 3, generator=g, dtype=torch.float64) * 2).requires_grad_()
    t = (torch.rand(4, 3, generator=g) < 0.5).double()
    assert torch.autograd.gradcheck(lambda z: sigmoid_focal_loss(z, t, 0.25, 2.0), (x,))
    assert torch.autograd.gradcheck(lambda z: sigmoid_focal_loss(z, t, -1.0, 1.5, "sum"), (x,))


def test_focal_extreme_logits_finite() -> None:
    x = torch.tensor([100.0, -100.0, 100.0, -100.0], requires_grad=True)
    t = torch.tensor([1.0, 0.0, 0.0, 1.0])
    loss = sigmoid_focal_loss(x, t)
    v = loss.detach()
    assert torch.isfinite(v).all()
    assert float(v[0]) == pytest.approx(0.0, abs=1e-30) and float(v[1]) == pytest.approx(0.0, abs=1e-30)
    assert float(v[2]) == pytest.approx(0.75 * 100.0, rel=1e-5)  # confidently wrong: ~alpha_t * |x|
    assert float(v[3]) == pytest.approx(0.25 * 100.0, rel=1e-5)
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- quality focal loss


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", [2.0, 1.0, 0.0])
def test_qfl_matches_brute_force(seed: int, beta: float) -> None:
    g = torch.Generator().manual_seed(seed)
    n, c = 6, 4
    x = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    labels = torch.tensor([0, -1, 3, c, 1, -1], dtype=torch.int64)
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    got = quality_focal_loss(x, labels, scores, beta=beta)
    assert got.shape == (n, c)
    for i in range(n):
        ref = _ref_qfl([float(v) for v in x[i]], int(labels[i]), float(scores[i]), beta)
        assert [float(v) for v in got[i]] == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert float(quality_focal_loss(x, labels, scores, beta, "sum")) == pytest.approx(float(got.sum()))


def test_qfl_beta0_is_bce_to_soft_target() -> None:
    x = torch.tensor([[0.3, -1.2, 2.0], [1.0, 0.5, -0.5]])
    labels = torch.tensor([2, -1])
    scores = torch.tensor([0.7, 0.9])  # the background's score is ignored
    soft = torch.tensor([[0.0, 0.0, 0.7], [0.0, 0.0, 0.0]])
    ref = F.binary_cross_entropy_with_logits(x, soft, reduction="none")
    assert torch.allclose(quality_focal_loss(x, labels, scores, beta=0.0), ref, atol=1e-7)


def test_qfl_background_nan_score_ignored_and_empty() -> None:
    x = torch.tensor([[0.3, -1.2]])
    out = quality_focal_loss(x, torch.tensor([-1]), torch.tensor([float("nan")]))
    assert torch.isfinite(out).all()
    empty = quality_focal_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    assert (
        empty.shape == (0, 3)
        and float(
            quality_focal_loss(
                torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64), torch.zeros(0), reduction="sum"
            )
        )
        == 0.0
    )
    with pytest.raises(ConfigError):
        quality_focal_loss(torch.zeros(3), torch.zeros(3, dtype=torch.int64), torch.zeros(3))


def test_qfl_gradcheck() -> None:
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(5, 3, generator=g, dtype=torch.float64) * 2).requires_grad_()
    labels = torch.tensor([0, -1, 2, 3, 1])
    scores = torch.rand(5, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: quality_focal_loss(z, labels, scores), (x,))
    assert torch.autograd.gradcheck(lambda z: quality_focal_loss(z, labels, scores, 1.5, "mean"), (x,))


def test_qfl_extreme_logits_finite() -> None:
    x = torch.tensor([[100.0, -100.0], [-100.0, 100.0]], requires_grad=True)
    out = quality_focal_loss(x, torch.tensor([0, -1]), torch.tensor([0.8, 0.0]))
    assert torch.isfinite(out).all()
    assert float(out.detach()[1, 1]) == pytest.approx(
        100.0, rel=1e-5
    )  # negative at sigmoid 1: BCE ~ 100, scale 1
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- distribution focal loss


@pytest.mark.parametrize("seed", SEEDS)
def test_dfl_matches_brute_force(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n, bins = 7, 5
    x = torch.randn(n, bins, generator=g, dtype=torch.float64) * 2
    t = torch.rand(n, generator=g, dtype=torch.float64) * (bins - 1)
    t[0], t[1], t[2] = 0.0, float(bins - 1), 2.0
    got = distribution_focal_loss(x, t)
    assert got.shape == (n,)
    for i in range(n):
        assert float(got[i]) == pytest.approx(_ref_dfl([float(v) for v in x[i]], float(t[i])), rel=1e-9)
    assert float(distribution_focal_loss(x, t, "mean")) == pytest.approx(float(got.mean()))


@given(k=st.integers(0, 16), seed=st.integers(0, 2**16))
@settings(max_examples=25, deadline=None)
def test_dfl_integer_target_is_cross_entropy(k: int, seed: int) -> None:
    x = torch.randn(1, 17, generator=torch.Generator().manual_seed(seed))
    ce = F.cross_entropy(x, torch.tensor([k]))
    assert float(distribution_focal_loss(x, torch.tensor([float(k)]))) == pytest.approx(float(ce), rel=1e-5)


def test_dfl_gradcheck_and_extremes() -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.tensor([0.3, 2.5, 4.99, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: distribution_focal_loss(z, t), (x,))
    big = torch.full((2, 6), -100.0)
    big[0, 0] = 100.0
    big[1, 5] = 100.0
    big.requires_grad_()
    out = distribution_focal_loss(big, torch.tensor([2.5, 0.0]))
    assert torch.isfinite(out).all() and float(out.detach()[0]) == pytest.approx(200.0, rel=1e-5)
    out.sum().backward()
    assert torch.isfinite(big.grad).all()
    with pytest.raises(ConfigError):
        distribution_focal_loss(torch.zeros(2, 1), torch.zeros(2))


# ----------------------------------------------------------------------------- integral decoding


def test_distribution_to_distance_brute_force() -> None:
    g = torch.Generator().manual_seed(6)
    reg_max = 16
    p = torch.randn(2, 3, 4 * (reg_max + 1), generator=g, dtype=torch.float64)
    got = distribution_to_distance(p, reg_max)
    assert got.shape == (2, 3, 4)
    for a in range(2):
        for b in range(3):
            for side in range(4):
                row = [float(v) for v in p[a, b, side * 17 : (side + 1) * 17]]
                m = max(row)
                w = [math.exp(v - m) for v in row]
                ref = sum(i * wi for i, wi in enumerate(w)) / sum(w)
                assert float(got[a, b, side]) == pytest.approx(ref, rel=1e-9)
    assert torch.allclose(Integral(reg_max)(p), got)


def test_distribution_to_distance_peaked_and_bad_shape() -> None:
    p = torch.full((1, 4 * 8), -100.0)
    for side, k in enumerate((0, 3, 7, 5)):
        p[0, side * 8 + k] = 100.0
    assert torch.allclose(distribution_to_distance(p, reg_max=7), torch.tensor([[0.0, 3.0, 7.0, 5.0]]))
    with pytest.raises(ConfigError):
        distribution_to_distance(torch.zeros(1, 17), reg_max=16)


# ----------------------------------------------------------------------------- regression


@pytest.mark.parametrize("beta", [1.0 / 9.0, 0.5, 1.0, 0.0])
def test_smooth_l1_matches_brute_force(beta: float) -> None:
    g = torch.Generator().manual_seed(7)
    p = torch.randn(20, generator=g, dtype=torch.float64) * 0.5
    t = torch.randn(20, generator=g, dtype=torch.float64) * 0.5
    got = smooth_l1_loss(p, t, beta=beta)
    for i in range(20):
        assert float(got[i]) == pytest.approx(_ref_smooth_l1(float(p[i]), float(t[i]), beta), rel=1e-12)
    assert float(smooth_l1_loss(p, t, beta, "sum")) == pytest.approx(float(got.sum()))
    if beta > 0:
        assert torch.allclose(got, F.smooth_l1_loss(p, t, beta=beta, reduction="none"))


def test_smooth_l1_beta0_is_l1_and_l1_values() -> None:
    p = torch.tensor([0.0, 1.0, -2.0])
    t = torch.tensor([0.5, 1.0, 1.0])
    assert torch.equal(smooth_l1_loss(p, t, beta=0.0), torch.tensor([0.5, 0.0, 3.0]))
    assert torch.equal(l1_loss(p, t), torch.tensor([0.5, 0.0, 3.0]))
    assert float(l1_loss(p, t, "mean")) == pytest.approx(3.5 / 3)


def test_smooth_l1_gradcheck() -> None:
    g = torch.Generator().manual_seed(8)
    p = torch.randn(10, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.randn(10, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: smooth_l1_loss(z, t, beta=0.5), (p,))
    assert torch.autograd.gradcheck(lambda z: smooth_l1_loss(z, t, beta=0.0, reduction="sum"), (p,))


@given(
    ltrb=st.lists(
        st.tuples(*[st.floats(0.01, 100.0, allow_nan=False) for _ in range(4)]), min_size=1, max_size=8
    )
)
@settings(max_examples=40, deadline=None)
def test_centerness_targets_brute_force(ltrb: list[tuple[float, float, float, float]]) -> None:
    got = centerness_targets(torch.tensor(ltrb, dtype=torch.float64))
    for i, (left, top, right, bottom) in enumerate(ltrb):
        ref = math.sqrt(min(left, right) / max(left, right) * min(top, bottom) / max(top, bottom))
        assert float(got[i]) == pytest.approx(ref, rel=1e-12)
        assert 0.0 <= float(got[i]) <= 1.0


def test_centerness_hand_values_and_edges() -> None:
    ltrb = torch.tensor(
        [[2.0, 3.0, 2.0, 3.0], [1.0, 1.0, 3.0, 4.0], [0.0, 1.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    )
    got = centerness_targets(ltrb)
    assert torch.allclose(got, torch.tensor([1.0, math.sqrt(1 / 3 * 1 / 4), 0.0, 0.0]))
    assert centerness_targets(torch.zeros(0, 4)).shape == (0,)


def test_centerness_gradcheck_and_loss() -> None:
    g = torch.Generator().manual_seed(9)
    d = (torch.rand(5, 4, generator=g, dtype=torch.float64) * 5 + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(centerness_targets, (d,))
    x = torch.randn(5, generator=g, dtype=torch.float64).requires_grad_()
    t = centerness_targets(d.detach())
    assert torch.autograd.gradcheck(lambda z: centerness_loss(z, t), (x,))
    got = centerness_loss(x.detach(), t)
    for i in range(5):
        assert float(got[i]) == pytest.approx(_bce(float(x.detach()[i]), float(t[i])), rel=1e-9)
    xe = torch.tensor([100.0, -100.0], requires_grad=True)
    out = centerness_loss(xe, torch.tensor([0.5, 0.5]), reduction="sum")
    assert torch.isfinite(out) and float(out.detach()) == pytest.approx(
        100.0 + 2 * math.log1p(math.exp(-100.0)), rel=1e-5
    )
    out.backward()
    assert torch.isfinite(xe.grad).all()


# ----------------------------------------------------------------------------- normalisation


def test_reduce_loss_modes() -> None:
    v = torch.tensor([1.0, 2.0, 6.0])
    assert torch.equal(reduce_loss(v), v)
    assert float(reduce_loss(v, "sum")) == 9.0 and float(reduce_loss(v, "mean")) == 3.0
    with pytest.raises(ConfigError):
        reduce_loss(v, "max")


def test_reduce_num_pos_single_process() -> None:
    assert float(reduce_num_pos(torch.tensor(0))) == 1.0
    assert float(reduce_num_pos(torch.tensor(0.3))) == 1.0
    n = torch.tensor(7, dtype=torch.int64)
    out = reduce_num_pos(n)
    assert out.is_floating_point() and float(out) == 7.0 and int(n) == 7


def test_reduce_num_pos_averages_over_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    # a fake 2-process group whose other rank counted 1 positive: mean (5 + 1) / 2 = 3
    def fake_all_reduce(t: torch.Tensor, op: object = None) -> None:
        t.add_(1.0)

    monkeypatch.setattr(normalize_mod.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(normalize_mod.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(normalize_mod.dist, "all_reduce", fake_all_reduce)
    src = torch.tensor(5.0)
    assert float(reduce_num_pos(src)) == 3.0 and float(src) == 5.0
    assert float(reduce_num_pos(torch.tensor(0.0))) == 1.0  # (0 + 1) / 2 = 0.5, clamped to 1


def test_reduce_num_pos_real_gloo_group(tmp_path) -> None:
    dist = torch.distributed
    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert float(reduce_num_pos(torch.tensor(4.0))) == 4.0
        assert float(reduce_num_pos(torch.tensor(0.0))) == 1.0
    finally:
        dist.destroy_process_group()
