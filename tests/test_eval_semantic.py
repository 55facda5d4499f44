"""Mean IoU of semantic masks against a hand-worked confusion matrix and a per-pixel loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from odkit.eval import iou_from_confusion, mean_iou, semantic_confusion

# Ground truth and prediction, 3 classes; 255 is ignored.
GT = np.array([[0, 0, 1, 1],
               [0, 0, 1, 1],
               [2, 2, 2, 255]])
PRED = np.array([[0, 1, 1, 1],
                 [0, 0, 1, 2],
                 [2, 2, 0, 0]])


def test_hand_worked_confusion_and_iou():
    cm = semantic_confusion(GT, PRED, 3)
    # rows = ground truth, columns = prediction (the ignored pixel is left out)
    want = np.array([[3, 1, 0],
                     [0, 3, 1],
                     [1, 0, 2]])
    np.testing.assert_array_equal(cm, want)
    # class 0: TP 3, FP 1 (gt 2 -> 0), FN 1 (-> 1): 3/5; class 1: TP 3, FP 1, FN 1: 3/5;
    # class 2: TP 2, FP 1 (gt 1 -> 2), FN 1 (-> 0): 2/4
    np.testing.assert_allclose(iou_from_confusion(cm), [0.6, 0.6, 0.5])
    r = mean_iou([(GT, PRED)], 3)
    assert r.miou == pytest.approx((0.6 + 0.6 + 0.5) / 3)
    assert r.pixel_accuracy == pytest.approx(8 / 11)


def test_absent_classes_are_left_out_of_the_mean():
    gt = np.zeros((2, 2), int)
    pred = np.array([[0, 0], [0, 3]])
    r = mean_iou([(gt, pred)], 5)
    # class 0: 3/4; class 3 predicted but absent: 0; classes 1, 2, 4 absent everywhere: NaN
    assert r.iou[0] == pytest.approx(0.75) and r.iou[3] == 0.0
    assert all(math.isnan(r.iou[k]) for k in (1, 2, 4))
    assert r.miou == pytest.approx(0.375)
    assert math.isnan(mean_iou([(np.full((2, 2), 255), pred)], 5).miou)


def test_matches_a_pixel_loop_over_many_maps():
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 4, (7, 9)), torch.from_numpy(rng.integers(0, 4, (7, 9)))) for _ in range(5)]
    r = mean_iou(pairs, 4, ignore_index=None)
    ious = []
    for c in range(4):
        tp = fp = fn = 0
        for g, p in pairs:
            for a, b in zip(np.asarray(g).ravel(), np.asarray(p).ravel()):
                tp += a == c and b == c
                fp += a != c and b == c
                fn += a == c and b != c
        ious.append(tp / (tp + fp + fn))
    np.testing.assert_allclose(r.iou, ious)
    assert r.miou == pytest.approx(np.mean(ious))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="differ in size"):
        semantic_confusion(np.zeros((2, 2)), np.zeros((2, 3)), 2)
    with pytest.raises(ValueError, match="outside 0..1"):
        semantic_confusion(np.zeros((2, 2), int), np.full((2, 2), 2), 2)
