"""MaxIoU, FCOS and ATSS assigners: hand-worked scenes and plain-loop references on random scenes.

Index conventions used in the comments: a level of ``H x W`` cells has prior ``gy * W + gx`` for cell
``(gx, gy)`` (row-major, one prior per cell unless said otherwise), levels concatenated finest first.
With ``offset=0.5`` the prior of cell ``(gx, gy)`` on stride ``s`` is centred at ``((gx + .5) s, (gy + .5) s)``.
"""

from __future__ import annotations

import math

import pytest
import torch

from odkit.assign import (
    IGNORE,
    NEGATIVE,
    Assigner,
    AssignResult,
    ATSSAssigner,
    FCOSAssigner,
    GTBatch,
    MaxIoUAssigner,
    Priors,
    SimOTAAssigner,
)
from odkit.errors import ConfigError
from odkit.ops import AnchorGenerator, box_iou, grid_points

# ----------------------------------------------------------------------------- helpers


def make_priors(
    feature_sizes: list[tuple[int, int]],
    strides: list[float],
    anchors: AnchorGenerator | None = None,
    offset: float = 0.5,
) -> Priors:
    """``Priors`` of levels ``[(H, W), ...]``; with ``anchors`` (same strides and offset) anchor boxes too."""
    anchor_boxes = anchors.grid_anchors(feature_sizes) if anchors is not None else None
    k_per_level = anchors.num_anchors_per_location() if anchors is not None else [1] * len(strides)
    pts, strd, lvl, grid, nums = [], [], [], [], []
    for li, ((h, w), s) in enumerate(zip(feature_sizes, strides)):
        k = k_per_level[li]
        pts.append(grid_points((h, w), s, offset).repeat_interleave(k, 0))
        grid.append(grid_points((h, w), 1.0, 0.0).repeat_interleave(k, 0))
        strd.append(torch.full((h * w * k,), float(s)))
        lvl.append(torch.full((h * w * k,), li, dtype=torch.long))
        nums.append(h * w * k)
    return Priors(
        points=torch.cat(pts),
        strides=torch.cat(strd),
        levels=torch.cat(lvl),
        num_per_level=nums,
        grid=torch.cat(grid),
        anchors=torch.cat(anchor_boxes) if anchor_boxes is not None else None,
    )


def tiles16() -> Priors:
    """One 4 x 4 level of stride 16 with one 16 x 16 anchor per cell: the anchors tile a 64 x 64 image."""
    return make_priors([(4, 4)], [16], AnchorGenerator([[16]], [1.0], [16], offset=0.5))


def make_gt(images: list[list[tuple[list[float], int, bool]]], pad_to: int | None = None) -> GTBatch:
    """Images of ``(box, label, is_crowd)`` rows, padded with (garbage) invalid rows to ``pad_to``."""
    g = max([len(rows) for rows in images] + [pad_to or 0])
    b = len(images)
    boxes = torch.tensor([[5.0, 7.0, 30.0, 41.0]]).repeat(b, g, 1)  # padding: a real-looking box
    labels = torch.zeros(b, g, dtype=torch.long)
    valid = torch.zeros(b, g, dtype=torch.bool)
    crowd = torch.zeros(b, g, dtype=torch.bool)
    for i, rows in enumerate(images):
        for j, (box, label, is_crowd) in enumerate(rows):
            boxes[i, j] = torch.tensor(box, dtype=torch.float32)
            labels[i, j] = label
            crowd[i, j] = is_crowd
            valid[i, j] = not is_crowd
    return GTBatch(boxes, labels, valid, crowd)


def one(boxes: list[list[float]], labels: list[int] | None = None) -> GTBatch:
    """A one-image batch of non-crowd gts."""
    labels = labels if labels is not None else [0] * len(boxes)
    return make_gt([[(bx, lab, False) for bx, lab in zip(boxes, labels)]])


def fg(res: AssignResult, i: int = 0) -> dict[int, int]:
    """``{prior: gt}`` of the foreground priors of image ``i``."""
    gi = res.gt_inds[i]
    return {int(p): int(gi[p]) for p in (gi >= 0).nonzero().flatten()}


def ignored(res: AssignResult, i: int = 0) -> set[int]:
    return set((res.gt_inds[i] == IGNORE).nonzero().flatten().tolist())


def check_consistent(res: AssignResult, gt: GTBatch) -> None:
    """Labels/quality agree with gt_inds; num_gts counts valid gts."""
    pos = res.gt_inds >= 0
    assert torch.equal(res.labels[pos], gt.labels.gather(1, res.gt_inds.clamp(min=0))[pos])
    assert (res.labels[~pos] == -1).all()
    assert (res.quality[~pos] == 0).all()
    assert torch.equal(res.num_gts, gt.valid.sum(1))
    # never matched to padding or crowd rows
    assert gt.valid.gather(1, res.gt_inds.clamp(min=0))[pos].all()


def check_batch_equals_single(assigner, priors: Priors, images, pad_to: int = 0) -> AssignResult:
    """Assign a batch (padded to ``pad_to`` rows) and check every image against its one-image batch."""
    batch = assigner.assign(priors, make_gt(images, pad_to=pad_to))
    for i, rows in enumerate(images):
        single = assigner.assign(priors, make_gt([rows]))
        assert torch.equal(batch.gt_inds[i], single.gt_inds[0]), f"image {i}"
        assert torch.equal(batch.labels[i], single.labels[0])
        assert torch.allclose(batch.quality[i], single.quality[0])
    return batch


def _f32(x: float) -> float:
    """``x`` rounded to float32 (torch compares a float32 tensor with a Python number in float32)."""
    return float(torch.tensor(x, dtype=torch.float32))


def _lattice_scene(gen: torch.Generator, b: int, max_g: int, size: int, step: int, max_wh: int):
    """Random images of gts on a ``step``-pixel lattice (many exact ties); image 1 has no valid gt.

    Returns per-image row lists for :func:`make_gt`; some images carry a crowd box.
    """

    def rnd(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    def box() -> list[float]:
        w, h = rnd(1, max_wh // step) * step, rnd(1, max_wh // step) * step
        x1, y1 = rnd(0, (size - w) // step) * step, rnd(0, (size - h) // step) * step
        return [float(x1), float(y1), float(x1 + w), float(y1 + h)]

    images = []
    for i in range(b):
        rows = [] if i == 1 else [(box(), rnd(0, 2), False) for _ in range(rnd(1, max_g))]
        if rnd(0, 2) == 0:  # an ignore region at a random row
            rows.insert(rnd(0, len(rows)), (box(), rnd(0, 2), True))
        images.append(rows)
    return images


def _ref_crowd(out: list[int], priors: Priors, rows) -> list[int]:
    """``ignore_crowd`` by loops: negatives inside a crowd box (anchors: IoF >= .5; points: strictly)."""
    crowd = [box for box, _, is_crowd in rows if is_crowd]
    if not crowd:
        return out
    if priors.anchors is not None:
        iof = box_iou(priors.anchors, torch.tensor(crowd), mode="iof").tolist()
    pts = priors.points.tolist()
    for a in range(len(out)):
        if out[a] != NEGATIVE:
            continue
        for c, (x1, y1, x2, y2) in enumerate(crowd):
            if priors.anchors is not None:
                hit = iof[a][c] >= 0.5
            else:
                hit = x1 < pts[a][0] < x2 and y1 < pts[a][1] < y2
            if hit:
                out[a] = IGNORE
    return out


def _check_against_reference(assigner, priors: Priors, images, reference) -> AssignResult:
    gt = make_gt(images, pad_to=max(len(r) for r in images) + 1)
    res = assigner.assign(priors, gt)
    check_consistent(res, gt)
    for i, rows in enumerate(images):
        ref = reference(priors, rows)
        assert res.gt_inds[i].tolist() == ref, f"image {i}"
    return res


# ----------------------------------------------------------------------------- MaxIoUAssigner

# Scene S1 on tiles16 (anchor k = [16 gx, 16 gy, 16 gx + 16, 16 gy + 16], k = 4 gy + gx):
#   gt0 [0,0,16,16]   = anchor 0                                   IoU 1
#   gt1 [16,16,40,32] (area 384): anchor 5 [16,16,32,32] 256/384 = .667; anchor 6 [32,16,48,32] 128/512 = .25
#   gt2 [32,40,56,64] (area 576): anchor 14 [32,48,48,64] 256/576 = .444 (its best);
#       anchors 10 [32,32,48,48] and 15 [48,48,64,64] 128/704 = .182; anchor 11 [48,32,64,48] 64/768 = .083
#   every other anchor has IoU 0 with every gt.
S1 = [[0.0, 0.0, 16.0, 16.0], [16.0, 16.0, 40.0, 32.0], [32.0, 40.0, 56.0, 64.0]]
S1_LABELS = [3, 1, 2]


def test_max_iou_thresholds_and_low_quality():
    priors = tiles16()
    res = MaxIoUAssigner().assign(priors, one(S1, S1_LABELS))
    # 0 -> gt0 (1 >= .5), 5 -> gt1 (.667 >= .5), 14 -> gt2 only as gt2's best (low quality); rest < .4
    assert fg(res) == {0: 0, 5: 1, 14: 2}
    assert ignored(res) == set()
    assert res.labels[0, [0, 5, 14]].tolist() == [3, 1, 2]
    assert torch.allclose(res.quality[0, [0, 5, 14]], torch.tensor([1.0, 2 / 3, 4 / 9]))
    check_consistent(res, one(S1, S1_LABELS))
    # without low-quality matches anchor 14 (.444 in [.4, .5)) is ignored
    res = MaxIoUAssigner(allow_low_quality_matches=False).assign(priors, one(S1))
    assert fg(res) == {0: 0, 5: 1} and ignored(res) == {14}
    # MMDetection-style negative band [.1, .4): IoU .25 / .182 -> negative; .083 and 0 -> ignored
    res = MaxIoUAssigner(neg_iou_thr=(0.1, 0.4), allow_low_quality_matches=False).assign(priors, one(S1))
    assert fg(res) == {0: 0, 5: 1}
    assert set((res.gt_inds[0] == NEGATIVE).nonzero().flatten().tolist()) == {6, 10, 15}
    assert ignored(res) == set(range(16)) - {0, 5, 6, 10, 15}
    # RPN 0.7 / 0.3: anchor 5 (.667) is between, but it is gt1's best -> positive; 14 likewise
    res = MaxIoUAssigner(0.7, 0.3).assign(priors, one(S1))
    assert fg(res) == {0: 0, 5: 1, 14: 2} and ignored(res) == set()
    res = MaxIoUAssigner(0.7, 0.3, allow_low_quality_matches=False).assign(priors, one(S1))
    assert fg(res) == {0: 0} and ignored(res) == {5, 14}
    # RoI head 0.5 / 0.5: nothing is ignored
    res = MaxIoUAssigner(0.5, 0.5, allow_low_quality_matches=False).assign(priors, one(S1))
    assert fg(res) == {0: 0, 5: 1} and ignored(res) == set()
    # a duplicated gt ties on every IoU: the lower gt index wins
    res = MaxIoUAssigner().assign(priors, one([S1[1], S1[1]]))
    assert fg(res) == {5: 0}


def test_max_iou_two_gts_compete_low_quality_keeps_argmax():
    # P [16,16,32,36] (area 320): anchor 5 [16,16,32,32] IoU 256/320 = .8; anchor 9 64/512 = .125.
    # Q [20,20,28,28] (8 x 8, smaller than the stride): inside anchor 5 only, IoU 64/256 = .25 (its best).
    # T [40,0,56,16]: anchors 2 [32,0,48,16] and 3 [48,0,64,16] both 128/384 = 1/3 (a tie).
    # Low-quality for Q gives anchor 5, but anchor 5's own best gt is P (.8 > .25): it stays with P
    # (torchvision rule; MMDetection would hand it to Q). T's best IoU ties: anchors 2 and 3 both -> T.
    priors = tiles16()
    gts = [[16.0, 16.0, 32.0, 36.0], [20.0, 20.0, 28.0, 28.0], [40.0, 0.0, 56.0, 16.0]]
    res = MaxIoUAssigner().assign(priors, one(gts, [0, 1, 2]))
    assert fg(res) == {5: 0, 2: 2, 3: 2}
    assert torch.allclose(res.quality[0, [5, 2, 3]], torch.tensor([0.8, 1 / 3, 1 / 3]))
    assert res.labels[0, [5, 2, 3]].tolist() == [0, 2, 2]
    # min_pos_iou equal to T's best IoU (1/3) still allows it (>=)
    assert fg(MaxIoUAssigner(min_pos_iou=1 / 3).assign(priors, one(gts, [0, 1, 2]))) == {5: 0, 2: 2, 3: 2}
    # min_pos_iou .4: T's best (1/3) is too low for a low-quality match; 1/3 < .4 -> negative
    res = MaxIoUAssigner(min_pos_iou=0.4).assign(priors, one(gts, [0, 1, 2]))
    assert fg(res) == {5: 0} and ignored(res) == set()


def test_max_iou_gt_smaller_than_stride():
    # [4,4,10,10] (6 x 6) lies inside anchor 0: IoU 36/256 = .140625, its best -> low-quality positive
    priors = tiles16()
    res = MaxIoUAssigner().assign(priors, one([[4.0, 4.0, 10.0, 10.0]]))
    assert fg(res) == {0: 0}
    assert float(res.quality[0, 0]) == pytest.approx(36 / 256)
    res = MaxIoUAssigner(allow_low_quality_matches=False).assign(priors, one([[4.0, 4.0, 10.0, 10.0]]))
    assert fg(res) == {} and (res.gt_inds == NEGATIVE).all()
    # a zero-size gt overlaps nothing: no low-quality match at all (documented deviation)
    res = MaxIoUAssigner().assign(priors, one([[4.0, 4.0, 4.0, 4.0]]))
    assert (res.gt_inds == NEGATIVE).all()


def test_max_iou_crowd_boxes_are_ignored_never_positive():
    # S1 plus crowd boxes [48,0,64,16] (= anchor 3, IoU 1), [0,32,32,64] (anchors 8, 9, 12, 13 fully
    # inside) and [0,0,24,16] (anchor 0 fully inside but positive for gt0: stays; anchor 1 [16,0,32,16]
    # half inside: IoF 128/256 = .5 >= .5 -> ignored).
    priors = tiles16()
    rows = [(bx, lab, False) for bx, lab in zip(S1, S1_LABELS)]
    rows += [
        ([48.0, 0.0, 64.0, 16.0], 0, True),
        ([0.0, 32.0, 32.0, 64.0], 1, True),
        ([0.0, 0.0, 24.0, 16.0], 2, True),
    ]
    gt = make_gt([rows])
    res = MaxIoUAssigner().assign(priors, gt)
    assert fg(res) == {0: 0, 5: 1, 14: 2}
    assert ignored(res) == {1, 3, 8, 9, 12, 13}
    assert res.num_gts.tolist() == [3]
    check_consistent(res, gt)
    # crowd rows placed first: indices shift, crowd still never matched
    res2 = MaxIoUAssigner().assign(priors, make_gt([rows[3:] + rows[:3]]))
    assert fg(res2) == {0: 3, 5: 4, 14: 5} and ignored(res2) == {1, 3, 8, 9, 12, 13}


def test_max_iou_no_gt_batch_mixing_and_padding():
    priors = tiles16()
    assigner = MaxIoUAssigner()
    # no gt at all (G = 0) and only padding rows
    for gt in (make_gt([[], []]), make_gt([[], []], pad_to=3)):
        res = assigner.assign(priors, gt)
        assert res.gt_inds.shape == (2, 16) and (res.gt_inds == NEGATIVE).all() and res.num_pos == 0
        assert res.num_gts.tolist() == [0, 0]
    # even with a negative band whose low end is above 0 an image without gts is all negative
    res = MaxIoUAssigner(neg_iou_thr=(0.1, 0.4)).assign(priors, make_gt([[]], pad_to=2))
    assert (res.gt_inds == NEGATIVE).all()
    s2 = [([16.0, 16.0, 32.0, 36.0], 0, False), ([40.0, 0.0, 56.0, 16.0], 2, False)]
    s1 = [(bx, lab, False) for bx, lab in zip(S1, S1_LABELS)]
    for pad in (0, 6):
        res = check_batch_equals_single(assigner, priors, [s1, [], s2], pad_to=pad)
        assert fg(res, 0) == {0: 0, 5: 1, 14: 2} and fg(res, 2) == {5: 0, 2: 1, 3: 1}
        assert (res.gt_inds[1] == NEGATIVE).all() and res.num_gts.tolist() == [3, 0, 2]
    # chunking over images gives the same result
    gt = make_gt([s1, [], s2], pad_to=4)
    full = assigner.assign(priors, gt)
    chunked = MaxIoUAssigner(max_elements=1).assign(priors, gt)
    assert torch.equal(full.gt_inds, chunked.gt_inds) and torch.equal(full.quality, chunked.quality)


def test_max_iou_match_on_pred_boxes_and_errors():
    priors = tiles16()
    rows = [(bx, lab, False) for bx, lab in zip(S1, S1_LABELS)] + [([48.0, 0.0, 64.0, 16.0], 0, True)]
    gt = make_gt([rows, []])
    by_anchor = MaxIoUAssigner().assign(priors, gt)
    boxes = priors.anchors[None].repeat(2, 1, 1)
    by_pred = MaxIoUAssigner(match_on="pred_boxes").assign(priors, gt, pred_boxes=boxes)
    assert torch.equal(by_anchor.gt_inds, by_pred.gt_inds) and torch.equal(by_anchor.quality, by_pred.quality)
    # per-image boxes: in image 0 box 15 becomes gt1 itself (IoU 1); box 5 (.667) stays positive, gt2's
    # best is still box 14 (low quality); image 1 (no gt) is all negative
    shifted = boxes.clone()
    shifted[0, 15] = torch.tensor([16.0, 16.0, 40.0, 32.0])
    res = MaxIoUAssigner(match_on="pred_boxes").assign(priors, gt, pred_boxes=shifted)
    assert fg(res, 0) == {0: 0, 5: 1, 14: 2, 15: 1} and ignored(res, 0) == {3}
    assert float(res.quality[0, 15]) == 1.0 and (res.gt_inds[1] == NEGATIVE).all()
    assert not MaxIoUAssigner().needs_predictions and MaxIoUAssigner(match_on="pred_boxes").needs_predictions
    with pytest.raises(ConfigError):
        MaxIoUAssigner().assign(make_priors([(4, 4)], [16]), gt)  # anchor-free priors
    with pytest.raises(ConfigError):
        MaxIoUAssigner(match_on="pred_boxes").assign(priors, gt)
    with pytest.raises(ConfigError):
        MaxIoUAssigner(pos_iou_thr=0.3, neg_iou_thr=0.4)
    with pytest.raises(ConfigError):
        MaxIoUAssigner(match_on="points")


def _ref_max_iou(pos_thr: float, neg: tuple[float, float], min_pos: float, low_quality: bool):
    def reference(priors: Priors, rows) -> list[int]:
        a_n = priors.num_priors
        out = [NEGATIVE] * a_n
        gts = [box for box, _, _ in rows]
        valid = [not is_crowd for _, _, is_crowd in rows]
        if any(valid):
            # the IoU values themselves come from box_iou (bit-identical to the assigner's); the rest is loops
            iou = box_iou(torch.tensor(gts), priors.anchors).tolist()
            argmax = [-1] * a_n
            for a in range(a_n):
                best = -1.0
                for g in range(len(gts)):
                    if valid[g] and iou[g][a] > best:  # strict: the first (lowest) gt keeps a tie
                        best, argmax[a] = iou[g][a], g
                if best >= _f32(pos_thr):
                    out[a] = argmax[a]
                elif _f32(neg[0]) <= best < _f32(neg[1]):
                    out[a] = NEGATIVE
                else:
                    out[a] = IGNORE
            if low_quality:
                for g in range(len(gts)):
                    if not valid[g]:
                        continue
                    top = max(iou[g])
                    if top >= _f32(min_pos) and top > 0:
                        for a in range(a_n):
                            if iou[g][a] == top:
                                out[a] = argmax[a]
        return _ref_crowd(out, priors, rows)

    return reference


@pytest.mark.parametrize(
    "seed,cfg",
    [
        (0, (0.5, 0.4, 0.0, True)),
        (1, (0.5, 0.4, 0.0, True)),
        (2, (0.7, 0.3, 0.0, True)),
        (3, (0.7, 0.3, 0.3, True)),
        (4, (0.5, 0.5, 0.0, False)),
        (5, (0.5, (0.1, 0.4), 0.2, True)),
        (6, (0.4, 0.4, 0.0, True)),
        (7, (0.6, (0.0, 0.3), 0.0, False)),
    ],
)
def test_max_iou_matches_loop_reference(seed, cfg):
    gen = torch.Generator().manual_seed(seed)
    pos, neg, min_pos, lq = cfg
    neg_pair = tuple(neg) if isinstance(neg, tuple) else (float("-inf"), neg)
    # two levels, 3 ratios: 8x8 @ 8 and 4x4 @ 16 on a 64 x 64 image (288 anchors)
    gen_a = AnchorGenerator([[16], [32]], [0.5, 1.0, 2.0], [8, 16], offset=0.5)
    priors = make_priors([(8, 8), (4, 4)], [8, 16], gen_a)
    images = _lattice_scene(gen, b=4, max_g=5, size=64, step=4, max_wh=40)
    assigner = MaxIoUAssigner(pos, neg, min_pos, lq)
    res = _check_against_reference(assigner, priors, images, _ref_max_iou(pos, neg_pair, min_pos, lq))
    assert (res.gt_inds[1] < 0).all()


# ----------------------------------------------------------------------------- FCOSAssigner


def two_levels() -> Priors:
    """Points of 8x8 @ stride 8 (indices 0..63) and 4x4 @ stride 16 (64..79) on a 64 x 64 image."""
    return make_priors([(8, 8), (4, 4)], [8, 16])


RANGES = ((-1, 16), (16, 64))

# Scene F: level-0 point (x, y) = (8 gx + 4, 8 gy + 4) is prior 8 gy + gx; level-1 point
# (16 gx + 8, 16 gy + 8) is prior 64 + 4 gy + gx. Ranges: level 0 max(l,t,r,b) in [-1, 16], level 1 [16, 64].
#   A [16,16,48,48] (area 1024): level 1 points 24, 40 in x and y (69, 70, 73, 74), max dist 24; level-0
#     points inside have max dist >= 20 (no 16-px point at the centre) -> none. Centre region on level 1
#     (radius 24 around (32,32)) covers the whole box.
#   D [16,16,44,40] (area 672 < 1024): level-1 points (24,24) (max 20) and (40,24) (max 24) -> 69, 70,
#     taken from A by the smaller area. Level 0: only (28,28) has max dist 16 (l=12,t=12,r=16,b=12), in
#     range since both ends are inclusive -> 27. Centre region radius 12 around (30,28): x in (18, 42),
#     y in (16, 40), contains (28,28).
#   B [10,42,16,48] (6 x 6, smaller than a stride): level-0 point (12,44) = 41 (max dist 4).
SCENE_F = [[16.0, 16.0, 48.0, 48.0], [16.0, 16.0, 44.0, 40.0], [10.0, 42.0, 16.0, 48.0]]


def test_fcos_hand_scene_smallest_area_and_centerness():
    priors = two_levels()
    for cs in (True, False):
        res = FCOSAssigner(RANGES, center_sampling=cs).assign(priors, one(SCENE_F, [0, 1, 2]))
        assert fg(res) == {27: 1, 41: 2, 69: 1, 70: 1, 73: 0, 74: 0}
        assert ignored(res) == set()
    # centerness sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)):
    #   27 D (12,12,16,12) -> sqrt(.75); 41 B (2,2,4,4) -> .5; 69 D (8,8,20,16) -> sqrt(.4 * .5);
    #   70 D (24,8,4,16) -> sqrt(4/24 * .5); 73 A (8,24,24,8) and 74 A (24,24,8,8) -> 1/3
    expected = torch.tensor([math.sqrt(0.75), 0.5, math.sqrt(0.2), math.sqrt(1 / 12), 1 / 3, 1 / 3])
    assert torch.allclose(res.quality[0, [27, 41, 69, 70, 73, 74]], expected, atol=1e-6)
    check_consistent(res, one(SCENE_F, [0, 1, 2]))
    # torchvision's ranges exclude both ends: D's level-0 point 27 (max dist exactly 16, the bound
    # between the levels) is then on neither level and stays negative; the rest is unchanged
    for cs in (True, False):
        res = FCOSAssigner(RANGES, center_sampling=cs, inclusive_ranges=False).assign(priors, one(SCENE_F, [0, 1, 2]))
        assert fg(res) == {41: 2, 69: 1, 70: 1, 73: 0, 74: 0}
        assert res.gt_inds[0, 27] == NEGATIVE and res.quality[0, 27] == 0


def test_fcos_center_sampling_region_and_equal_areas():
    # E [0,0,64,40] on level 1 (level 0 impossible: l + r = 64): inside points x 8..56, y 8, 24 (8 points,
    # max dist <= 56). Centre sampling, radius 1.5 * 16 = 24 around (32, 20): x in (8, 56), y in (0, 40)
    # -> x 24, 40; y 8, 24 -> priors 65, 66, 69, 70. Radius 2.5 (40 px) covers the whole box again.
    priors = two_levels()
    e = one([[0.0, 0.0, 64.0, 40.0]])
    assert set(fg(FCOSAssigner(RANGES, center_sampling=False).assign(priors, e))) == set(range(64, 72))
    assert set(fg(FCOSAssigner(RANGES).assign(priors, e))) == {65, 66, 69, 70}
    assert set(fg(FCOSAssigner(RANGES, center_radius=2.5).assign(priors, e))) == set(range(64, 72))
    # two identical gts: equal areas -> the lower index
    res = FCOSAssigner(RANGES).assign(priors, one([SCENE_F[0], SCENE_F[0]]))
    assert fg(res) == {69: 0, 70: 0, 73: 0, 74: 0}


def test_fcos_crowd_boxes_are_ignored_never_positive():
    # Scene F plus crowd [48,48,64,64] (a box level 0 would take: points (52|60, 52|60) = 54, 55, 62, 63,
    # and level-1 point (56,56) = 79) and a crowd copy of A (level-0 points 20..44 in x and y, except the
    # positive 27; its level-1 points are all positive).
    priors = two_levels()
    rows = [(bx, lab, False) for bx, lab in zip(SCENE_F, [0, 1, 2])]
    rows += [([48.0, 48.0, 64.0, 64.0], 0, True), (SCENE_F[0], 1, True)]
    res = FCOSAssigner(RANGES).assign(priors, make_gt([rows]))
    assert fg(res) == {27: 1, 41: 2, 69: 1, 70: 1, 73: 0, 74: 0}
    inside_a = {8 * gy + gx for gx in range(2, 6) for gy in range(2, 6)} - {27}
    assert ignored(res) == inside_a | {54, 55, 62, 63, 79}
    check_consistent(res, make_gt([rows]))


def test_fcos_no_gt_batch_mixing_padding_and_errors():
    priors = two_levels()
    assigner = FCOSAssigner(RANGES)
    res = assigner.assign(priors, make_gt([[], []], pad_to=2))
    assert (res.gt_inds == NEGATIVE).all() and (res.quality == 0).all() and res.num_gts.tolist() == [0, 0]
    f = [(bx, lab, False) for bx, lab in zip(SCENE_F, [0, 1, 2])]
    e = [([0.0, 0.0, 64.0, 40.0], 4, False)]
    for pad in (0, 5):
        res = check_batch_equals_single(assigner, priors, [f, [], e], pad_to=pad)
        assert (res.gt_inds[1] == NEGATIVE).all() and res.num_gts.tolist() == [3, 0, 1]
    gt = make_gt([f, [], e], pad_to=4)
    assert torch.equal(
        assigner.assign(priors, gt).gt_inds, FCOSAssigner(RANGES, max_elements=1).assign(priors, gt).gt_inds
    )
    with pytest.raises(ConfigError, match="levels"):
        FCOSAssigner(((-1, 64),)).assign(priors, gt)
    # the default five ranges accept up to five levels
    FCOSAssigner().assign(priors, gt)


def _ref_fcos(ranges, center_sampling: bool, radius: float):
    def reference(priors: Priors, rows) -> list[int]:
        pts, strides, levels = priors.points.tolist(), priors.strides.tolist(), priors.levels.tolist()
        out = []
        for a in range(priors.num_priors):
            x, y = pts[a]
            lo, hi = ranges[levels[a]]
            best, best_g = math.inf, NEGATIVE
            for g, ((x1, y1, x2, y2), _, is_crowd) in enumerate(rows):
                if is_crowd:
                    continue
                lft, top, rgt, bot = x - x1, y - y1, x2 - x, y2 - y
                if center_sampling:
                    cx, cy, rad = (x1 + x2) / 2, (y1 + y2) / 2, radius * strides[a]
                    inside = max(cx - rad, x1) < x < min(cx + rad, x2) and max(cy - rad, y1) < y < min(
                        cy + rad, y2
                    )
                else:
                    inside = min(lft, top, rgt, bot) > 0
                if inside and lo <= max(lft, top, rgt, bot) <= hi:
                    area = (x2 - x1) * (y2 - y1)
                    if area < best:  # strict: the lowest index keeps an equal area
                        best, best_g = area, g
            out.append(best_g)
        return _ref_crowd(out, priors, rows)

    return reference


@pytest.mark.parametrize(
    "seed,cs,radius", [(0, True, 1.5), (1, True, 1.5), (2, False, 1.5), (3, True, 2.5), (4, False, 1.5)]
)
def test_fcos_matches_loop_reference(seed, cs, radius):
    gen = torch.Generator().manual_seed(seed)
    priors = make_priors([(16, 16), (8, 8), (4, 4)], [8, 16, 32])  # 128 x 128 image, 336 points
    ranges = ((-1, 16), (16, 32), (32, math.inf))
    images = _lattice_scene(gen, b=4, max_g=6, size=128, step=4, max_wh=96)
    res = _check_against_reference(
        FCOSAssigner(ranges, cs, radius), priors, images, _ref_fcos(ranges, cs, radius)
    )
    assert res.num_pos > 0
    # quality = centerness of the matched gt
    for i, rows in enumerate(images):
        for a, g in fg(res, i).items():
            x, y = priors.points[a].tolist()
            x1, y1, x2, y2 = rows[g][0]
            lft, top, rgt, bot = x - x1, y - y1, x2 - x, y2 - y
            c = math.sqrt(min(lft, rgt) / max(lft, rgt) * min(top, bot) / max(top, bot))
            assert float(res.quality[i, a]) == pytest.approx(c, abs=1e-6)


# ----------------------------------------------------------------------------- ATSSAssigner

# Scene H1 on tiles16 with topk=4 (anchor k = 4 gy + gx, centre (16 gx + 8, 16 gy + 8)):
#   G0 [16,16,40,40] centre (28,28): d^2 = 32 (5), 160 (6, 9), 288 (10) -> candidates 5, 6, 9, 10,
#      IoU 256/576 = .444, 128/704 = .182 (twice), 64/768 = .083: mean .2229, unbiased std .1549,
#      threshold .3777 -> 5.
#   G1 [16,16,36,36] centre (26,26): d^2 = 8 (5), 200 (6, 9), 328 (1 and 4: the lower index 1 is kept)
#      IoU .64, 64/592 = .108 (twice), 0: mean .2141, std .2885, threshold .5026 -> 5.
#      Anchor 5 is positive for both: the higher IoU (G1 .64 > G0 .444) wins; G0 is left without one.
#   S  [50,2,60,12] (10 x 10 < stride) centre (55,7): candidates 3, 2, 7, 6 with IoU 100/256, 0, 0, 0:
#      for IoUs (x, 0, 0, 0) the mean is x/4, the unbiased std x/2 -> threshold .75 x -> 3.
H1 = [[16.0, 16.0, 40.0, 40.0], [16.0, 16.0, 36.0, 36.0], [50.0, 2.0, 60.0, 12.0]]


def test_atss_hand_scene_competition_and_small_gt():
    priors = tiles16()
    res = ATSSAssigner(topk=4).assign(priors, one(H1, [0, 1, 2]))
    assert fg(res) == {5: 1, 3: 2}
    assert torch.allclose(res.quality[0, [5, 3]], torch.tensor([0.64, 100 / 256]))
    assert ignored(res) == set()
    check_consistent(res, one(H1, [0, 1, 2]))
    # G0 alone keeps anchor 5; a duplicate of G0 ties on IoU: the lower gt index wins
    assert fg(ATSSAssigner(topk=4).assign(priors, one(H1[:1]))) == {5: 0}
    assert fg(ATSSAssigner(topk=4).assign(priors, one([H1[0], H1[0]]))) == {5: 0}


def test_atss_unbiased_std():
    # [22,0,62,16] (area 640) centre (42,8), topk 4: d^2 = 4 (2), 196 (3), 260 (6), 324 (1).
    # IoU: 2 [32,0,48,16] 256/640 = .4; 3 [48,0,64,16] 224/672 = .3333; 6 [32,16,48,32] 0;
    # 1 [16,0,32,16] 160/736 = .2174. mean .2377; sum of squared deviations .0924:
    # unbiased std sqrt(.0924/3) = .1755 -> threshold .4132 > .4: no positive.
    # (A biased std sqrt(.0924/4) = .1520 would give .3897 and make anchor 2 positive.)
    res = ATSSAssigner(topk=4).assign(tiles16(), one([[22.0, 0.0, 62.0, 16.0]]))
    assert fg(res) == {} and (res.gt_inds == NEGATIVE).all()
    # all candidate IoUs equal: std 0, threshold = that IoU, all pass. [24,0,64,32] (area 1280),
    # centre (44,16): candidates 2, 6 (d^2 80) and 3, 7 (208), all 16 x 16 anchors inside -> IoU .2 each.
    res = ATSSAssigner(topk=4).assign(tiles16(), one([[24.0, 0.0, 64.0, 32.0]]))
    assert fg(res) == {2: 0, 3: 0, 6: 0, 7: 0}


def test_atss_centre_margin():
    # 2 x 2 level of stride 32 with offset 0: 32 x 32 anchors centred at (0,0), (32,0), (0,32), (32,32)
    # (priors 0..3); topk 9 takes all 4. gt [16,16,48,32]: IoU only with anchor 3 [16,16,48,48]:
    # 512/1024 = .5 -> threshold .75 * .5 = .375, passed; but anchor 3's centre (32,32) lies on the gt's
    # bottom edge (margin 0 <= .01) -> no positive. Moving the edge down by .02 (margin .02 > .01) makes
    # it positive; by .005 (margin .005) does not.
    priors = make_priors([(2, 2)], [32], AnchorGenerator([[32]], [1.0], [32], offset=0.0), offset=0.0)
    assert fg(ATSSAssigner().assign(priors, one([[16.0, 16.0, 48.0, 32.0]]))) == {}
    assert fg(ATSSAssigner().assign(priors, one([[16.0, 16.0, 48.0, 32.02]]))) == {3: 0}
    assert fg(ATSSAssigner().assign(priors, one([[16.0, 16.0, 48.0, 32.005]]))) == {}


def test_atss_anchor_free_boxes():
    # anchor-free priors use a square of side anchor_scale * stride centred on the point
    priors = make_priors([(2, 2)], [16])
    boxes, centres = ATSSAssigner().prior_boxes(priors)
    assert torch.equal(boxes[0], torch.tensor([8.0 - 64, 8.0 - 64, 8.0 + 64, 8.0 + 64]))
    assert torch.equal(centres, priors.points)
    boxes, _ = ATSSAssigner(anchor_scale=2).prior_boxes(priors)
    assert torch.equal(boxes[3], torch.tensor([24.0 - 16, 24.0 - 16, 24.0 + 16, 24.0 + 16]))


def test_atss_crowd_no_gt_batch_mixing_padding():
    priors = tiles16()
    assigner = ATSSAssigner(topk=4)
    rows = [(bx, lab, False) for bx, lab in zip(H1, [0, 1, 2])]
    # crowd [48,0,64,16] = anchor 3 (which S would take): S's positive is kept (crowd boxes do not take
    # priors), anchor 3 is not negative; [0,32,32,64] covers anchors 8, 9, 12, 13 -> ignored.
    crowd_rows = rows + [([48.0, 0.0, 64.0, 16.0], 0, True), ([0.0, 32.0, 32.0, 64.0], 1, True)]
    res = assigner.assign(priors, make_gt([crowd_rows]))
    assert fg(res) == {5: 1, 3: 2} and ignored(res) == {8, 9, 12, 13}
    # a crowd box alone (no valid gt) is never positive; anchors at least half inside it are ignored:
    # [16,16,40,40] holds anchor 5 whole and half of anchors 6 and 9 (IoF 128/256); anchor 10: .25
    res = assigner.assign(priors, make_gt([[([16.0, 16.0, 40.0, 40.0], 0, True)]]))
    assert fg(res) == {} and ignored(res) == {5, 6, 9} and res.num_gts.tolist() == [0]
    # no gt, batch mixing, padding
    res = assigner.assign(priors, make_gt([[], []], pad_to=3))
    assert (res.gt_inds == NEGATIVE).all() and res.num_gts.tolist() == [0, 0]
    for pad in (0, 6):
        res = check_batch_equals_single(assigner, priors, [rows, [], rows[2:]], pad_to=pad)
        assert fg(res, 0) == {5: 1, 3: 2} and fg(res, 2) == {3: 0} and (res.gt_inds[1] == NEGATIVE).all()
    gt = make_gt([rows, [], rows[2:]], pad_to=4)
    assert torch.equal(
        assigner.assign(priors, gt).gt_inds, ATSSAssigner(topk=4, max_elements=1).assign(priors, gt).gt_inds
    )


def _ref_atss(topk: int, anchor_scale: float = 8.0):
    def reference(priors: Priors, rows) -> list[int]:
        if priors.anchors is not None:
            boxes = priors.anchors
            centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes.tolist()]
        else:
            half = 0.5 * anchor_scale * priors.strides[:, None]
            boxes = torch.cat((priors.points - half, priors.points + half), 1)
            centres = [tuple(p) for p in priors.points.tolist()]
        a_n = priors.num_priors
        gts = [box for box, _, _ in rows]
        if not gts:
            return [NEGATIVE] * a_n
        iou = box_iou(torch.tensor(gts), boxes).tolist()  # bit-identical IoU values; the rest is loops
        best = [-1.0] * a_n
        out = [NEGATIVE] * a_n
        for g, ((x1, y1, x2, y2), _, is_crowd) in enumerate(rows):
            if is_crowd:
                continue
            gx, gy = (x1 + x2) / 2, (y1 + y2) / 2
            cand = []
            start = 0
            for n in priors.num_per_level:
                level = range(start, start + n)
                dist = {a: (centres[a][0] - gx) ** 2 + (centres[a][1] - gy) ** 2 for a in level}
                cand += sorted(level, key=lambda a: (dist[a], a))[: min(topk, n)]
                start += n
            vals = [iou[g][a] for a in cand]
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            for a in cand:
                cx, cy = centres[a]
                if iou[g][a] >= mean + std and min(cx - x1, cy - y1, x2 - cx, y2 - cy) > 0.01:
                    if iou[g][a] > best[a]:  # strict: the lower gt index keeps an equal IoU
                        best[a], out[a] = iou[g][a], g
        return _ref_crowd(out, priors, rows)

    return reference


@pytest.mark.parametrize(
    "seed,anchor_free,topk",
    [(0, False, 9), (1, False, 9), (2, True, 9), (3, True, 5), (4, False, 3), (5, True, 9)],
)
def test_atss_matches_loop_reference(seed, anchor_free, topk):
    gen = torch.Generator().manual_seed(seed)
    sizes, strides = [(16, 16), (8, 8), (4, 4)], [8, 16, 32]  # 128 x 128 image
    if anchor_free:
        priors = make_priors(sizes, strides)
    else:  # RetinaNet-ATSS style: one square anchor of 8 strides per location
        priors = make_priors(
            sizes, strides, AnchorGenerator([[64], [128], [256]], [1.0], strides, offset=0.5)
        )
    images = _lattice_scene(gen, b=4, max_g=6, size=128, step=4, max_wh=96)
    res = _check_against_reference(ATSSAssigner(topk=topk), priors, images, _ref_atss(topk))
    assert res.num_pos > 0
    # quality = IoU of the prior box with its gt
    boxes, _ = ATSSAssigner().prior_boxes(priors)
    for i, rows in enumerate(images):
        for a, g in fg(res, i).items():
            iou = box_iou(boxes[a : a + 1], torch.tensor([rows[g][0]]))[0, 0]
            assert float(res.quality[i, a]) == pytest.approx(float(iou), abs=1e-6)


def test_all_assigners_follow_the_protocol():
    for assigner in (MaxIoUAssigner(), FCOSAssigner(), ATSSAssigner(), SimOTAAssigner()):
        assert isinstance(assigner, Assigner)
    assert SimOTAAssigner().needs_predictions
    assert not FCOSAssigner().needs_predictions and not ATSSAssigner().needs_predictions


def test_fcos_center_region_edge_rounds_as_torchvision():
    # gt [83.2, 104, 332.8, 353.6] (0.2 / 0.25 / 0.8 / 0.85 of 416 px) in float32: its centre x is
    # 208.00002 rather than 208, so the stride-32 point x = 256 (radius 1.5 * 32 = 48) lies
    # |256 - 208.00002| = 47.99998 < 48 inside the centre region, as torchvision computes it; the
    # clipped-region form min(cx + 48, x2) - 256 rounds to 0 in float32 and would drop it.
    box = torch.tensor([0.2, 0.25, 0.8, 0.85]) * 416
    cx = float((box[0] + box[2]) * 0.5)
    assert 0 < 256 - cx < 48 and float((box[0] + box[2]) * 0.5 + 48) - 256 == 0.0
    priors = make_priors([(13, 13)], [32], offset=0.0)  # points (32 gx, 32 gy), prior 13 gy + gx
    res = FCOSAssigner(((-1, float("inf")),)).assign(priors, one([box.tolist()]))
    # x in (160.00002, 256.00002): 192, 224, 256 (x = 160 is 48.00002 away); y in (180.8, 276.8): 192, 224, 256
    assert set(fg(res)) == {13 * gy + gx for gy in (6, 7, 8) for gx in (6, 7, 8)}
