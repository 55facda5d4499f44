"""Confusion matrix (hand-worked) and PR-curve / matrix plots."""

from __future__ import annotations

import numpy as np

from odkit.data import AnnotationSet
from odkit.eval import confusion_matrix, evaluate, evaluate_coco, evaluate_voc, plot_pr_curves, pr_curves


def _gt() -> AnnotationSet:
    boxes = [
        np.array([[0, 0, 10, 10], [20, 0, 30, 10], [50, 50, 60, 60], [80, 80, 90, 90]], np.float32),
        np.array([[0, 0, 10, 10]], np.float32),
    ]
    labels = [np.array([0, 1, 2, 1]), np.array([1])]
    crowd = [np.array([False, False, False, True]), np.array([False])]
    return AnnotationSet.from_lists(
        "/", ["a", "b"], [100, 100], [100, 100], boxes, labels, ["A", "B", "C"], iscrowd=crowd
    )


def test_confusion_matrix_hand_worked() -> None:
    gt = _gt()
    preds = [
        {
            "boxes": np.array(
                [
                    [0, 0, 10, 10],
                    [0, 0, 10, 9],
                    [20, 0, 30, 10],
                    [50, 50, 60, 60],
                    [70, 0, 80, 10],
                    [80, 80, 90, 90],
                ],
                np.float32,
            ),
            "scores": np.array([0.9, 0.8, 0.7, 0.1, 0.6, 0.9]),
            "labels": np.array([0, 2, 0, 2, 1, 1]),
        },
        {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0), "labels": np.zeros(0, np.int64)},
    ]
    m = confusion_matrix(gt, preds, iou_threshold=0.5, score_threshold=0.25)
    expected = np.zeros((4, 4), np.int64)
    expected[0, 0] = 1  # A found as A (IoU 1 beats the 0.9 of the C detection)
    expected[3, 2] = 1  # the C detection lost its gt: background -> C
    expected[1, 0] = 1  # B box predicted as A
    expected[2, 3] = 1  # C gt: its detection is under the score threshold -> missed
    expected[3, 1] = 2  # B detections on nothing and on a crowd box (crowd gts are not gts here)
    expected[1, 3] = 1  # B gt of image b missed
    np.testing.assert_array_equal(m, expected)
    assert m[3, 3] == 0
    # Every non-crowd gt and every kept detection is counted exactly once.
    assert m[:3].sum() == 4 and m[:, :3].sum() == 5


def test_plots(tmp_path) -> None:
    gt = _gt()
    preds = [
        {"boxes": r.boxes, "scores": np.linspace(0.9, 0.5, len(r.boxes)), "labels": r.labels} for r in gt
    ]
    rc = evaluate_coco(gt, preds)
    names, recs, precs = pr_curves(rc)
    assert names == ["A", "B", "C"] and len(recs[0]) == 101
    rv = evaluate_voc(gt, preds)
    assert pr_curves(rv)[0] == ["A", "B", "C"]
    p = plot_pr_curves(rv, tmp_path / "voc_pr.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluate(gt, preds, metric="coco", plots=str(tmp_path / "plots"))
    for f in ("pr_curves.png", "confusion_matrix.png"):
        assert (tmp_path / "plots" / f).read_bytes()[:4] == b"\x89PNG"
    cm = np.load(tmp_path / "plots" / "confusion_matrix.npy")
    assert cm.shape == (4, 4) and np.trace(cm[:3, :3]) == 4
