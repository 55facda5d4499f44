"""YOLOv3 grid assigner: hand-worked cases and a darknet-style loop reference."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odkit.assign import GTBatch
from odkit.assign.result import IGNORE, NEGATIVE
from odkit.assign.yolov3 import YOLOv3Assigner, shape_iou
from odkit.errors import ConfigError
from odkit.models.heads.yolov3_head import YOLOv3Head
from odkit.ops.priors import YOLOV3_ANCHORS

# 64 x 64 input, strides 8 / 16 / 32: levels of 8x8, 4x4 and 2x2 cells, 3 anchors each
# (level 0: 10x13, 16x30, 33x23; level 1: 30x61, 62x45, 59x119; level 2: 116x90, 156x198, 373x326).
# Prior index on a level: start + (gy * W + gx) * 3 + anchor; starts 0, 192, 240 (252 priors).
INPUT = (64, 64)


def _priors():
    head = YOLOv3Head(2, (8, 8, 8), (8, 8, 8), (8, 16, 32), YOLOV3_ANCHORS)
    return head.get_priors([(8, 8), (4, 4), (2, 2)], INPUT, torch.device("cpu"))


def _gt(boxes, labels=None, crowd=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    t = {"boxes": boxes, "labels": torch.tensor(labels if labels is not None else [0] * len(boxes))}
    if crowd is not None:
        t["iscrowd"] = torch.tensor(crowd)
    return GTBatch.from_targets([t], num_classes=3)


def _positives(res):
    idx = (res.gt_inds[0] >= 0).nonzero().squeeze(1)
    return {int(i): int(res.gt_inds[0, i]) for i in idx}


def test_shape_iou_by_hand():
    # 16x32 against 16x30: 480 / (512 + 480 - 480); against 33x23: 16*23 / (512 + 759 - 368)
    got = shape_iou(torch.tensor([[16.0, 32.0]]), torch.tensor([[16.0, 30.0], [33.0, 23.0]]))
    assert got[0, 0].item() == pytest.approx(480 / 512)
    assert got[0, 1].item() == pytest.approx(368 / 903)


def test_each_gt_goes_to_its_best_anchor_at_its_cell():
    # gt A (20,12,36,44): centre (28,28), 16x32 -> best anchor 16x30 (IoU 0.9375), level 0 anchor 1,
    #   cell (3,3): index (3*8+3)*3+1 = 82.
    # gt B (0,0,64,64): centre (32,32), 64x64 -> best 62x45 (2790/4096 = 0.68; 59x119 gives 0.51),
    #   level 1 anchor 1, cell (2,2): 192 + (2*4+2)*3+1 = 223.
    # gt C (60,60,68,68): centre (64,64) on the border, 8x8 -> 10x13 (64/130), level 0 anchor 0,
    #   cell floor(64/8) = 8 clamped to 7: (7*8+7)*3 = 189.
    res = YOLOv3Assigner().assign(_priors(), _gt([[20, 12, 36, 44], [0, 0, 64, 64], [60, 60, 68, 68]], [2, 1, 0]))
    assert _positives(res) == {82: 0, 223: 1, 189: 2}
    assert res.labels[0, 82] == 2 and res.labels[0, 223] == 1 and res.labels[0, 189] == 0
    assert int((res.labels[0] >= 0).sum()) == 3
    others = torch.ones(252, dtype=torch.bool)
    others[[82, 223, 189]] = False
    assert bool((res.gt_inds[0, others] == NEGATIVE).all())  # no predictions given: nothing ignored


def test_two_gts_on_one_prior_the_later_keeps_it():
    # both centred in cell (3,3) of level 0 with the 16x30 anchor as best shape
    res = YOLOv3Assigner().assign(_priors(), _gt([[20, 12, 36, 44], [21, 13, 37, 45]], [0, 1]))
    assert _positives(res) == {82: 1}
    assert res.labels[0, 82] == 1


def test_predictions_above_the_ignore_threshold_are_ignored():
    gt = _gt([[20, 12, 36, 44]])
    pred = torch.zeros(1, 252, 4)
    pred[0, 82] = torch.tensor([20.0, 12, 36, 44])  # the positive, predicted exactly: stays positive
    pred[0, 10] = torch.tensor([20.0, 12, 36, 40])  # IoU 28/32 = 0.875 > 0.7 -> ignored
    pred[0, 11] = torch.tensor([20.0, 12, 36, 31.2])  # IoU 0.6 -> negative
    res = YOLOv3Assigner(0.7).assign(_priors(), gt, pred)
    assert res.gt_inds[0, 82] == 0
    assert res.gt_inds[0, 10] == IGNORE
    assert res.gt_inds[0, 11] == NEGATIVE
    assert int((res.gt_inds[0] == IGNORE).sum()) == 1
    res = YOLOv3Assigner(0.5).assign(_priors(), gt, pred)
    assert res.gt_inds[0, 11] == IGNORE


def test_crowd_padding_and_empty_images():
    # a crowd box matches nothing; a negative prior whose anchor lies inside it is ignored
    res = YOLOv3Assigner().assign(_priors(), _gt([[0, 0, 64, 64]], crowd=[1]))
    assert int((res.gt_inds >= 0).sum()) == 0
    assert res.gt_inds[0, 0] == IGNORE  # 10x13 anchor at (4, 4), inside the crowd box
    empty = GTBatch.from_targets([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}], 3)
    res = YOLOv3Assigner().assign(_priors(), empty, torch.zeros(1, 252, 4))
    assert bool((res.gt_inds == NEGATIVE).all())


def test_bad_arguments():
    with pytest.raises(ConfigError, match="ignore_thr"):
        YOLOv3Assigner(1.5)
    pri = _priors()
    pri.anchors = None
    with pytest.raises(ConfigError, match="anchor priors"):
        YOLOv3Assigner().assign(pri, _gt([[0, 0, 8, 8]]))


def _loop_reference(boxes, pred, ignore_thr):
    """darknet's yolo_layer.c loops for one image: ignore by prediction IoU, then one anchor per truth
    (strictly better shape IoU wins, truths in order, later ones overwrite)."""
    anchors = [a for a in YOLOV3_ANCHORS]
    sizes, strides, starts = [8, 4, 2], [8, 16, 32], [0, 192, 240]
    out = [NEGATIVE] * 252
    for a in range(252):
        best = 0.0
        for x1, y1, x2, y2 in boxes:
            px1, py1, px2, py2 = pred[a]
            iw = max(0.0, min(px2, x2) - max(px1, x1))
            ih = max(0.0, min(py2, y2) - max(py1, y1))
            inter = iw * ih
            union = (px2 - px1) * (py2 - py1) + (x2 - x1) * (y2 - y1) - inter
            best = max(best, inter / union if union > 0 else 0.0)
        if best > ignore_thr:
            out[a] = IGNORE
    for t, (x1, y1, x2, y2) in enumerate(boxes):
        w, h = x2 - x1, y2 - y1
        best_iou, best_n = 0.0, 0
        for n, (aw, ah) in enumerate(anchors):
            inter = min(w, aw) * min(h, ah)
            iou = inter / (w * h + aw * ah - inter)
            if iou > best_iou:
                best_iou, best_n = iou, n
        lvl, k = divmod(best_n, 3)
        s, size = strides[lvl], sizes[lvl]
        gx = min(int(math.floor((x1 + x2) / 2 / s)), size - 1)
        gy = min(int(math.floor((y1 + y2) / 2 / s)), size - 1)
        out[starts[lvl] + (gy * size + gx) * 3 + k] = t
    return out


box = st.tuples(st.floats(0, 56), st.floats(0, 56), st.floats(2, 64), st.floats(2, 64)).map(
    lambda b: (b[0], b[1], min(b[0] + b[2], 64.0), min(b[1] + b[3], 64.0))
)


@settings(max_examples=30, deadline=None)
@given(st.lists(box, min_size=1, max_size=6), st.integers(0, 2**16))
def test_matches_the_darknet_loops(boxes, seed):
    gen = torch.Generator().manual_seed(seed)
    gt = _gt([list(b) for b in boxes])
    xy = torch.rand(252, 2, generator=gen) * 56
    pred = torch.cat((xy, xy + 4 + torch.rand(252, 2, generator=gen) * 40), 1)
    res = YOLOv3Assigner(0.5).assign(_priors(), gt, pred[None])
    want = _loop_reference([tuple(float(v) for v in b) for b in gt.boxes[0]], pred.tolist(), 0.5)
    assert res.gt_inds[0].tolist() == want
