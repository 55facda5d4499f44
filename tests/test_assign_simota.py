"""SimOTA on hand-made scenes (expected assignments worked out below) and against a per-gt loop reference."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from odkit.assign import IGNORE, AssignResult, GTBatch, Priors, SimOTAAssigner
from odkit.errors import ConfigError
from odkit.ops import grid_points

STRIDE = 8.0
GRID = 8  # 8 x 8 priors of stride 8 on a 64 x 64 image; centres at 4, 12, ..., 60


def _make_priors(levels: list[tuple[int, float]]) -> Priors:
    """YOLOX priors: ``(grid + 0.5) * stride`` centres of square levels ``[(size, stride), ...]``."""
    pts, strides, lvl, grid, nums = [], [], [], [], []
    for li, (n, s) in enumerate(levels):
        pts.append(grid_points((n, n), s, offset=0.5))
        grid.append(grid_points((n, n), 1.0, offset=0.0))
        strides.append(torch.full((n * n,), float(s)))
        lvl.append(torch.full((n * n,), li, dtype=torch.long))
        nums.append(n * n)
    return Priors(torch.cat(pts), torch.cat(strides), torch.cat(lvl), nums, torch.cat(grid))


def _gt(boxes, labels, valid=None, crowd=None) -> GTBatch:
    """A ``GTBatch`` from ``[B, G, 4]`` boxes and ``[B, G]`` labels (valid: all, crowd: none by default)."""
    labels = labels.long()
    if crowd is None:
        crowd = torch.zeros(labels.shape, dtype=torch.bool)
    if valid is None:
        valid = ~crowd
    return GTBatch(boxes.float(), labels, valid, crowd)


def _idx(cx: float, cy: float) -> int:
    """Index of the prior centred at (cx, cy)."""
    return int((cy - 4) // 8) * GRID + int((cx - 4) // 8)


def _far_boxes(n: int) -> torch.Tensor:
    """Tiny boxes in a corner: IoU 0 with every gt used below."""
    return torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(n, 1)


def _uniform_scores(n: int, c: int = 2) -> torch.Tensor:
    return torch.full((n, c), 0.5)


def _assign(preds, scores, gts, labels):
    """One image: ``[A, 4]`` preds, ``[A, C]`` scores, ``[G, 4]`` gts -> the image's ``[A]`` result."""
    res = SimOTAAssigner().assign(
        _make_priors([(GRID, STRIDE)]), _gt(gts[None], labels[None]), preds[None], scores[None]
    )
    return res[0]


def _fg(res: AssignResult) -> dict[int, int]:
    return {int(i): int(res.gt_inds[i]) for i in (res.gt_inds >= 0).nonzero().flatten()}


def test_single_gt_dynamic_k_and_outside_penalty():
    # gt 24 x 24 centred at (28, 28). Priors strictly inside the box: centres 20, 28, 36 in x and y (9);
    # centre region |c - 28| < 20: centres 12..44 (25). A = exact box at the centre prior (IoU 1),
    # B at (20, 28) IoU 480/576, C at (36, 28) IoU 432/576, D at (28, 20) IoU 336/576, E at (12, 28)
    # (inside the centre region, outside the box) also predicts the exact box (IoU 1).
    # dynamic k = int(1 + 1 + .833 + .75 + .583) = 4 -> A, B, C, D; E pays the 1e5 outside-box cost.
    n = GRID * GRID
    preds = _far_boxes(n)
    gt = torch.tensor([[16.0, 16.0, 40.0, 40.0]])
    a, b, c, d, e = _idx(28, 28), _idx(20, 28), _idx(36, 28), _idx(28, 20), _idx(12, 28)
    preds[a] = gt[0]
    preds[b] = torch.tensor([16.0, 16.0, 40.0, 36.0])
    preds[c] = torch.tensor([16.0, 16.0, 40.0, 34.0])
    preds[d] = torch.tensor([16.0, 16.0, 40.0, 30.0])
    preds[e] = gt[0]
    res = _assign(preds, _uniform_scores(n), gt, torch.tensor([1]))
    assert _fg(res) == {a: 0, b: 0, c: 0, d: 0}
    assert (res.labels[[a, b, c, d]] == 1).all()
    assert (res.labels[res.gt_inds < 0] == -1).all()
    expected_q = torch.tensor([1.0, 480 / 576, 432 / 576, 336 / 576])
    assert torch.allclose(res.quality[[a, b, c, d]], expected_q, atol=1e-5)
    assert float(res.quality[res.gt_inds < 0].abs().sum()) == 0.0
    assert int(res.num_gts) == 1
    assert set(res.gt_inds.tolist()) == {-1, 0}


def test_two_overlapping_gts_compete():
    # gt A = [16,16,40,40] (class 0), gt B = [24,16,48,40] (class 1): B is A shifted 8 px right.
    # Row y = 28: P20 predicts A (IoU_A 1, IoU_B .5), P28 predicts the box between them
    # [20,16,44,40] (IoU 480/672 = 5/7 with both), P36 and P44 predict B (IoU_B 1, IoU_A .5).
    # P28's scores favour class 1 (0.1 / 0.9), everyone else 0.5 / 0.5.
    # k_A = int(1 + 5/7 + .5 + .5) = 2, k_B = int(1 + 1 + 5/7 + .5) = 3.
    # cls costs: BCE(.5,.5 | any) = 2 ln 2 = 1.386; P28 for A: -2 ln .1 = 4.605, for B: -2 ln .9 = 0.211.
    # iou costs 3 * -ln(iou): 0 (IoU 1), 1.009 (5/7), 2.079 (.5).
    # A (in box+centre: x in 20, 28, 36) -> P20 (1.386), P36 (3.466); P28 would cost 5.614.
    # B (in box+centre: x in 28, 36, 44) -> P36 (1.386), P44 (1.386), P28 (1.220).
    # P36 is claimed twice and goes to B (1.386 < 3.466). Final: A {P20}, B {P28, P36, P44}.
    n = GRID * GRID
    preds = _far_boxes(n)
    scores = _uniform_scores(n)
    gts = torch.tensor([[16.0, 16.0, 40.0, 40.0], [24.0, 16.0, 48.0, 40.0]])
    p20, p28, p36, p44 = (_idx(x, 28) for x in (20, 28, 36, 44))
    preds[p20] = gts[0]
    preds[p28] = torch.tensor([20.0, 16.0, 44.0, 40.0])
    preds[p36] = gts[1]
    preds[p44] = gts[1]
    scores[p28] = torch.tensor([0.1, 0.9])
    res = _assign(preds, scores, gts, torch.tensor([0, 1]))
    assert _fg(res) == {p20: 0, p28: 1, p36: 1, p44: 1}
    assert res.labels[[p20, p28, p36, p44]].tolist() == [0, 1, 1, 1]
    assert torch.allclose(res.quality[[p20, p28, p36, p44]], torch.tensor([1.0, 5 / 7, 1.0, 1.0]), atol=1e-5)


def test_two_gts_tie_broken_by_class_score():
    # Same scene, but P28 now favours class 0: for A it costs 0.211 + 1.009, for B 4.605 + 1.009.
    # A -> P20, P28 (cheapest two); B -> P36, P44, and its third choice P28 (5.614) vs P20 (3.466) -> P20.
    # Conflicts: P20 (A 1.386 vs B 3.466) -> A; P28 not claimed by B. Final: A {P20, P28}, B {P36, P44}.
    n = GRID * GRID
    preds = _far_boxes(n)
    scores = _uniform_scores(n)
    gts = torch.tensor([[16.0, 16.0, 40.0, 40.0], [24.0, 16.0, 48.0, 40.0]])
    p20, p28, p36, p44 = (_idx(x, 28) for x in (20, 28, 36, 44))
    preds[p20] = gts[0]
    preds[p28] = torch.tensor([20.0, 16.0, 44.0, 40.0])
    preds[p36] = gts[1]
    preds[p44] = gts[1]
    scores[p28] = torch.tensor([0.9, 0.1])
    res = _assign(preds, scores, gts, torch.tensor([0, 1]))
    assert _fg(res) == {p20: 0, p28: 0, p36: 1, p44: 1}


def test_gt_smaller_than_stride_still_gets_a_positive():
    # gt [21,21,25,25] (4 x 4) contains no prior centre (centres are at 20 and 28), so no prior is in
    # "box and centre" and every candidate pays 1e5. Candidates: centre region |c - 23| < 20 -> 12..36.
    # P(20,20) predicts the gt exactly (IoU 1), P(28,28) predicts [22,22,26,26] (IoU 9/23).
    # k = int(1 + 9/23) = 1 -> the cheapest candidate, P(20,20).
    n = GRID * GRID
    preds = _far_boxes(n)
    gt = torch.tensor([[21.0, 21.0, 25.0, 25.0]])
    preds[_idx(20, 20)] = gt[0]
    preds[_idx(28, 28)] = torch.tensor([22.0, 22.0, 26.0, 26.0])
    res = _assign(preds, _uniform_scores(n), gt, torch.tensor([0]))
    assert _fg(res) == {_idx(20, 20): 0}
    assert float(res.quality[_idx(20, 20)]) == pytest.approx(1.0, abs=1e-6)


def test_image_without_gt_and_padding():
    priors = _make_priors([(GRID, STRIDE)])
    n = GRID * GRID
    assigner = SimOTAAssigner()
    # a batch with no gt at all
    res = assigner.assign(
        priors,
        _gt(torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long)),
        _far_boxes(n)[None].repeat(2, 1, 1),
        _uniform_scores(n)[None].repeat(2, 1, 1),
    )
    assert res.gt_inds.shape == (2, n) and (res.gt_inds == -1).all() and (res.labels == -1).all()
    assert res.num_gts.tolist() == [0, 0] and res.num_pos == 0
    # a batch where image 1 has no gt (one padded row): image 0 must equal its single-image result
    preds = _far_boxes(n)
    gt = torch.tensor([[16.0, 16.0, 40.0, 40.0]])
    preds[_idx(28, 28)] = gt[0]
    single = _assign(preds, _uniform_scores(n), gt, torch.tensor([0]))
    batched = assigner.assign(
        priors,
        _gt(torch.stack((gt, torch.zeros(1, 4))), torch.tensor([[0], [0]]), torch.tensor([[True], [False]])),
        torch.stack((preds, preds)),
        _uniform_scores(n)[None].repeat(2, 1, 1),
    )
    assert torch.equal(batched.gt_inds[0], single.gt_inds)
    assert torch.allclose(batched.quality[0], single.quality)
    assert (batched.gt_inds[1] == -1).all() and batched.num_gts.tolist() == [1, 0]


# ----------------------------------------------------------------------------- loop reference


def _reference_simota(preds, scores, centers, strides, gts, labels, num_classes):
    """Per-gt loop over the candidate subset, following the published YOLOX procedure step by step."""
    g, a = gts.shape[0], preds.shape[0]
    out = torch.full((a,), -1, dtype=torch.long)
    if g == 0:
        return out
    in_box = torch.zeros(g, a, dtype=torch.bool)
    in_ctr = torch.zeros(g, a, dtype=torch.bool)
    for j in range(g):
        x1, y1, x2, y2 = gts[j].tolist()
        gx, gy = (x1 + x2) / 2, (y1 + y2) / 2
        for i in range(a):
            cx, cy, s = float(centers[i, 0]), float(centers[i, 1]), float(strides[i])
            in_box[j, i] = x1 < cx < x2 and y1 < cy < y2
            in_ctr[j, i] = abs(cx - gx) < 2.5 * s and abs(cy - gy) < 2.5 * s
    cand = (in_box | in_ctr).any(0)
    idx = cand.nonzero().flatten()
    p = preds[idx]
    lt = torch.maximum(gts[:, None, :2], p[None, :, :2])
    rb = torch.minimum(gts[:, None, 2:], p[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_g = (gts[:, 2:] - gts[:, :2]).prod(-1)
    area_p = (p[:, 2:] - p[:, :2]).prod(-1)
    ious = inter / (area_g[:, None] + area_p[None] - inter)
    onehot = F.one_hot(labels, num_classes).float()[:, None, :].expand(g, len(idx), num_classes)
    cls_cost = F.binary_cross_entropy(scores[idx][None].expand(g, -1, -1), onehot, reduction="none").sum(-1)
    both = (in_box & in_ctr)[:, idx]
    cost = cls_cost + 3.0 * -torch.log(ious + 1e-8) + 1e5 * (~both).float()
    matching = torch.zeros(g, len(idx))
    k_cand = min(10, len(idx))
    for j in range(g):
        k = max(int(ious[j].topk(k_cand).values.sum()), 1)
        matching[j, cost[j].topk(k, largest=False).indices] = 1
    for i in range(len(idx)):
        if matching[:, i].sum() > 1:
            matching[:, i] = 0
            matching[cost[:, i].argmin(), i] = 1
        if matching[:, i].sum() == 1:
            out[idx[i]] = int(matching[:, i].argmax())
    return out


@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_reference_on_random_scenes(seed):
    gen = torch.Generator().manual_seed(seed)
    # a second level (stride 16) so priors of different strides coexist
    priors = _make_priors([(GRID, STRIDE), (4, 16.0)])
    centers, strides = priors.points, priors.strides
    a, c, b = centers.shape[0], 3, 3
    num_gt = [4, 0, 2]
    g = max(num_gt)
    gts = torch.zeros(b, g, 4)
    labels = torch.zeros(b, g, dtype=torch.long)
    valid = torch.zeros(b, g, dtype=torch.bool)
    for i, ng in enumerate(num_gt):
        xy = torch.rand(ng, 2, generator=gen) * 48
        wh = 2 + torch.rand(ng, 2, generator=gen) * 30
        gts[i, :ng] = torch.cat((xy, xy + wh), 1)
        labels[i, :ng] = torch.randint(0, c, (ng,), generator=gen)
        valid[i, :ng] = True
    # predictions: jittered copies of gts around them, random elsewhere
    pxy = centers[None] + (torch.rand(b, a, 2, generator=gen) - 0.5) * 8
    pwh = 4 + torch.rand(b, a, 2, generator=gen) * 28
    preds = torch.cat((pxy - pwh / 2, pxy + pwh / 2), -1)
    scores = torch.rand(b, a, c, generator=gen) * 0.98 + 0.01
    res = SimOTAAssigner().assign(priors, _gt(gts, labels, valid), preds, scores)
    for i, ng in enumerate(num_gt):
        ref = _reference_simota(preds[i], scores[i], centers, strides, gts[i, :ng], labels[i, :ng], c)
        assert torch.equal(res.gt_inds[i], ref), f"image {i}"
        fg = ref >= 0
        assert torch.equal(res.labels[i][fg], labels[i][ref[fg]])
    assert res.num_pos > 0


def test_chunking_gives_same_result():
    gen = torch.Generator().manual_seed(3)
    priors = _make_priors([(GRID, STRIDE)])
    centers = priors.points
    b, a = 5, centers.shape[0]
    gts = torch.tensor([[8.0, 8.0, 30.0, 40.0], [20.0, 24.0, 60.0, 50.0]])[None].repeat(b, 1, 1)
    gts = gts + torch.rand(b, 2, 4, generator=gen) * 3
    labels = torch.tensor([[0, 1]]).repeat(b, 1)
    pxy = centers[None] + (torch.rand(b, a, 2, generator=gen) - 0.5) * 8
    pwh = 8 + torch.rand(b, a, 2, generator=gen) * 30
    preds = torch.cat((pxy - pwh / 2, pxy + pwh / 2), -1)
    scores = torch.rand(b, a, 2, generator=gen)
    full = SimOTAAssigner().assign(priors, _gt(gts, labels), preds, scores)
    chunked = SimOTAAssigner(max_elements=2 * a).assign(priors, _gt(gts, labels), preds, scores)
    assert torch.equal(full.gt_inds, chunked.gt_inds)
    assert torch.equal(full.quality, chunked.quality)
    assert not math.isnan(float(full.quality.sum()))


def test_crowd_box_is_ignored_never_positive():
    # The single-gt scene of the first test (A, B, C, D, E) plus a crowd box [40,40,64,64] (class 0)
    # that every other prior predicts exactly (IoU 0 with the gt, which it only touches at a corner). Crowd boxes are not matched: the positives stay A, B, C, D of
    # gt 0; the negative priors whose centre lies strictly inside the crowd box (centres 44, 52, 60 in
    # x and y: 9 priors) become IGNORE; everything else is unchanged.
    n = GRID * GRID
    preds = _far_boxes(n)
    gt = torch.tensor([[16.0, 16.0, 40.0, 40.0]])
    a, b, c, d, e = _idx(28, 28), _idx(20, 28), _idx(36, 28), _idx(28, 20), _idx(12, 28)
    preds[a] = gt[0]
    preds[b] = torch.tensor([16.0, 16.0, 40.0, 36.0])
    preds[c] = torch.tensor([16.0, 16.0, 40.0, 34.0])
    preds[d] = torch.tensor([16.0, 16.0, 40.0, 30.0])
    preds[e] = gt[0]
    plain = _assign(preds, _uniform_scores(n), gt, torch.tensor([1]))
    crowd_box = torch.tensor([40.0, 40.0, 64.0, 64.0])
    preds2 = preds.clone()
    others = [i for i in range(n) if i not in (a, b, c, d, e)]
    preds2[others] = crowd_box
    boxes = torch.stack((gt[0], crowd_box))[None]
    res = SimOTAAssigner().assign(
        _make_priors([(GRID, STRIDE)]),
        _gt(boxes, torch.tensor([[1, 0]]), crowd=torch.tensor([[False, True]])),
        preds2[None],
        _uniform_scores(n)[None],
    )[0]
    assert _fg(res) == _fg(plain) == {a: 0, b: 0, c: 0, d: 0}
    ignored = {_idx(x, y) for x in (44, 52, 60) for y in (44, 52, 60)}
    assert set((res.gt_inds == IGNORE).nonzero().flatten().tolist()) == ignored
    assert int(res.num_gts) == 1
    assert (res.labels[res.gt_inds < 0] == -1).all()


def test_protocol_call_equals_tensor_form():
    # The protocol call gives the same result as the tensor-level implementation, batched and unbatched.
    gen = torch.Generator().manual_seed(5)
    priors = _make_priors([(GRID, STRIDE)])
    centers, strides = priors.points, priors.strides
    b, a = 2, centers.shape[0]
    gts = torch.tensor(
        [[[8.0, 8.0, 30.0, 40.0], [20.0, 24.0, 60.0, 50.0]], [[4.0, 30.0, 28.0, 60.0], [0, 0, 0, 0]]]
    )
    labels = torch.tensor([[0, 1], [1, 0]])
    valid = torch.tensor([[True, True], [True, False]])
    pxy = centers[None] + (torch.rand(b, a, 2, generator=gen) - 0.5) * 8
    pwh = 8 + torch.rand(b, a, 2, generator=gen) * 30
    preds = torch.cat((pxy - pwh / 2, pxy + pwh / 2), -1)
    scores = torch.rand(b, a, 2, generator=gen)
    new = SimOTAAssigner().assign(priors, _gt(gts, labels, valid), preds, scores)
    old = SimOTAAssigner()._assign_tensors(preds, scores, centers, strides, gts, labels, valid)
    for f in ("gt_inds", "labels", "quality", "num_gts"):
        assert torch.equal(getattr(new, f), getattr(old, f)), f
    one = SimOTAAssigner()._assign_tensors(preds[0], scores[0], centers, strides, gts[0], labels[0])
    assert one.gt_inds.shape == (a,) and torch.equal(one.gt_inds, new.gt_inds[0])
    assert new.num_pos > 0


def test_protocol_call_needs_predictions():
    priors = _make_priors([(GRID, STRIDE)])
    gt = _gt(torch.tensor([[[16.0, 16.0, 40.0, 40.0]]]), torch.tensor([[0]]))
    with pytest.raises(ConfigError):
        SimOTAAssigner().assign(priors, gt)


@pytest.mark.parametrize("seed", range(6))
def test_grid_geometry_equals_the_per_prior_tests(seed):
    """The separable (grid) region tests give the per-prior tests' masks exactly, boundary cases
    included (gt edges and centre squares falling exactly on prior centres)."""
    from odkit.assign.simota import grid_levels

    g = torch.Generator().manual_seed(seed)
    pri = _make_priors([(13, 8.0), (7, 16.0), (4, 32.0)])
    levels = grid_levels(pri.points, pri.strides)
    assert levels == [(0, 13, 13), (169, 7, 7), (218, 4, 4)]
    n = 40
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 60
    boxes = torch.cat([xy, xy + wh], 1)
    # a third of the coordinates on the half-pixel lattice of prior centres (4, 12, ... and 8, 24, ...)
    snap = torch.rand(n, 4, generator=g) < 0.33
    boxes = torch.where(snap, (boxes / 4).round() * 4, boxes)
    a = SimOTAAssigner()
    ref = a._regions(boxes, pri.points, pri.strides)
    got = a._regions_grid(boxes, pri.points, pri.strides, levels)
    for r, s in zip(ref, got):
        assert torch.equal(r, s)


def test_grid_levels_refuses_priors_that_are_not_grids():
    from odkit.assign.simota import grid_levels

    pri = _make_priors([(6, 8.0), (3, 16.0)])
    assert grid_levels(pri.points, pri.strides) == [(0, 6, 6), (36, 3, 3)]
    perm = torch.randperm(36, generator=torch.Generator().manual_seed(0))
    pts = torch.cat([pri.points[:36][perm], pri.points[36:]])
    assert grid_levels(pts, pri.strides) is None
    assert grid_levels(pri.points[:-1], pri.strides[:-1]) is None  # last level not a full grid
    assert grid_levels(torch.zeros(0, 2), torch.zeros(0)) is None
