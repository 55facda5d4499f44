"""VOC evaluation: hand-worked cases (both interpolations, +1 convention) and a devkit-style loop."""

from __future__ import annotations

import numpy as np
import pytest

from odkit.data import AnnotationSet
from odkit.eval import evaluate, evaluate_voc, voc_ap


def _aset(boxes, labels, names=("A", "B", "C"), difficult=None) -> AnnotationSet:
    n = len(boxes)
    return AnnotationSet.from_lists(
        "/",
        [f"{i}.jpg" for i in range(n)],
        [200] * n,
        [200] * n,
        [np.asarray(b, np.float32).reshape(-1, 4) for b in boxes],
        [np.asarray(x, np.int64) for x in labels],
        list(names),
        difficult=[np.asarray(d, bool) for d in difficult] if difficult is not None else None,
    )


def _pred(boxes, scores, labels) -> dict:
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "scores": np.asarray(scores, np.float32),
        "labels": np.asarray(labels, np.int64),
    }


def _case():
    """Class A: 3 non-difficult gts + 1 difficult; class B: detections only; class C: gt only."""
    gt = _aset(
        [
            [[0, 0, 10, 10], [20, 20, 30, 30]],
            [[0, 0, 10, 10], [50, 50, 60, 60], [100, 0, 120, 20]],
        ],
        [[0, 0], [0, 0, 2]],
        difficult=[[False, False], [True, False, False]],
    )
    preds = [
        _pred([[0, 0, 10, 10], [0, 0, 10, 9]], [0.9, 0.8], [0, 0]),  # TP (gt0), FP (gt0 taken)
        _pred(
            [[0, 0, 10, 10], [50, 50, 60, 60], [150, 150, 160, 160], [0, 0, 5, 5]],
            [0.7, 0.6, 0.5, 0.4],
            [0, 0, 0, 1],
        ),  # ignored (difficult), TP, FP; class B detection
    ]
    return gt, preds


def test_hand_worked_all_point_and_11_point() -> None:
    gt, preds = _case()
    # Class A, score order without the ignored one: TP, FP, TP, FP; npos = 3.
    rec = np.array([1, 1, 2, 2]) / 3
    prec = np.array([1 / 1, 1 / 2, 2 / 3, 2 / 4])
    # All-point: envelope [1, 2/3, 2/3, 1/2]; recall steps 1/3 at p=1 and 1/3 at p=2/3.
    ap_all = 1 / 3 * 1 + 1 / 3 * (2 / 3)
    # 11-point: r = 0, .1, .2, .3 -> 1; r = .4, .5, .6 -> 2/3; r >= .7 -> 0.
    ap_11 = (4 * 1 + 3 * (2 / 3)) / 11
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(ap_all, abs=1e-12)
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(ap_11, abs=1e-12)

    r12 = evaluate_voc(gt, preds, use_07_metric=False)
    r07 = evaluate_voc(gt, preds, use_07_metric=True)
    assert r12.ap[0] == pytest.approx(ap_all, abs=1e-12)
    assert r07.ap[0] == pytest.approx(ap_11, abs=1e-12)
    np.testing.assert_allclose(r12.recalls[0], rec, atol=1e-12)
    np.testing.assert_allclose(r12.precisions[0], prec, atol=1e-12)
    # Class B has no gt: NaN and out of the mean; class C has gt and no detection: AP 0, counted.
    assert np.isnan(r12.ap[1]) and r12.ap[2] == 0.0
    assert r12.map == pytest.approx((ap_all + 0.0) / 2, abs=1e-12)
    assert r07.map == pytest.approx((ap_11 + 0.0) / 2, abs=1e-12)
    assert list(r12.num_gts) == [3, 0, 1]
    d = r12.to_dict()
    assert d["per_class"]["B"]["AP"] is None and d["mAP"] == r12.map


def test_taken_gt_is_false_positive_even_if_another_gt_is_free() -> None:
    gt = _aset([[[0, 0, 10, 10], [0, 0, 10, 8]]], [[0, 0]])
    # d1 takes gt0 (IoU 1); d2's best is gt0 too (0.95 vs 0.84 with the free gt1) -> FP.
    preds = [_pred([[0, 0, 10, 10], [0, 0, 10, 9.5]], [0.9, 0.8], [0, 0])]
    r = evaluate_voc(gt, preds)
    np.testing.assert_allclose(r.recalls[0], [0.5, 0.5])
    np.testing.assert_allclose(r.precisions[0], [1.0, 0.5])
    assert r.ap[0] == pytest.approx(0.5 * 1.0, abs=1e-12)


def test_legacy_plus_one() -> None:
    gt = _aset([[[0, 0, 9, 9]]], [[0]])
    preds = [_pred([[0, 0, 9, 4]], [0.9], [0])]
    # Continuous: inter 9*4 = 36, union 81 -> IoU 0.444 < 0.5: FP, AP 0.
    # +1 pixel: det 10x5 = 50 inside gt 10x10 = 100 -> IoU exactly 0.5 >= 0.5: TP, AP 1.
    assert evaluate_voc(gt, preds).ap[0] == 0.0
    assert evaluate_voc(gt, preds, legacy_plus_one=True).ap[0] == 1.0
    assert evaluate_voc(gt, preds, legacy_plus_one=True, use_07_metric=True).ap[0] == pytest.approx(1.0)
    r = evaluate(gt, preds, metric="voc07", plus_one=True)
    assert r.map == pytest.approx(1.0)
    # Threshold is inclusive: IoU exactly at the threshold counts.
    assert evaluate_voc(gt, preds, iou_threshold=0.44).ap[0] == 1.0


def _devkit_reference(
    gt: AnnotationSet, preds: list[dict], cls: int, thr: float, plus_one: bool, use07: bool
):
    """A direct transcription of the devkit loop (per detection, per gt), for comparison."""
    e = 1.0 if plus_one else 0.0
    recs = {}
    npos = 0
    for i, r in enumerate(gt):
        m = r.labels == cls
        recs[i] = {
            "bbox": r.boxes[m].astype(np.float64),
            "difficult": r.difficult[m],
            "det": [False] * int(m.sum()),
        }
        npos += int((~r.difficult[m]).sum())
    dets = []
    for i, p in enumerate(preds):
        for b, s, lab in zip(p["boxes"], p["scores"], p["labels"]):
            if lab == cls:
                dets.append((i, -float(s), len(dets), b.astype(np.float64)))
    dets.sort(key=lambda t: (t[1], t[2]))
    tp, fp = [], []
    for i, _, _, bb in dets:
        R = recs[i]
        ovmax, jmax = -np.inf, -1
        for j, g in enumerate(R["bbox"]):
            iw = max(min(bb[2], g[2]) - max(bb[0], g[0]) + e, 0.0)
            ih = max(min(bb[3], g[3]) - max(bb[1], g[1]) + e, 0.0)
            inter = iw * ih
            uni = (bb[2] - bb[0] + e) * (bb[3] - bb[1] + e) + (g[2] - g[0] + e) * (g[3] - g[1] + e) - inter
            ov = inter / uni
            if ov > ovmax:
                ovmax, jmax = ov, j
        if ovmax >= thr:
            if R["difficult"][jmax]:
                continue
            if not R["det"][jmax]:
                R["det"][jmax] = True
                tp.append(1)
                fp.append(0)
            else:
                tp.append(0)
                fp.append(1)
        else:
            tp.append(0)
            fp.append(1)
    if npos == 0:
        return float("nan")
    tp, fp = np.cumsum(tp, dtype=float), np.cumsum(fp, dtype=float)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use07:
        return sum((prec[rec >= t].max() if (rec >= t).any() else 0.0) / 11 for t in np.arange(0, 1.1, 0.1))
    mrec = np.concatenate([[0], rec, [1]])
    mpre = np.concatenate([[0], prec, [0]])
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


@pytest.mark.parametrize("seed", range(6))
def test_against_devkit_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    boxes, labels, diff, preds = [], [], [], []
    for _ in range(15):
        g = int(rng.integers(0, 6))
        xy = rng.integers(0, 100, (g, 2)).astype(float)
        b = np.concatenate([xy, xy + rng.integers(4, 60, (g, 2))], 1)
        lab = rng.integers(0, 3, g)
        boxes.append(b)
        labels.append(lab)
        diff.append(rng.random(g) < 0.2)
        d = int(rng.integers(0, 12))
        src = rng.integers(0, max(g, 1), d)
        db = (b[src] if g else rng.uniform(0, 100, (d, 4))) + rng.integers(-6, 7, (d, 4))
        db = np.concatenate([np.minimum(db[:, :2], db[:, 2:]), np.maximum(db[:, :2], db[:, 2:])], 1)
        dl = np.where(rng.random(d) < 0.8, lab[src] if g else 0, rng.integers(0, 3, d))
        preds.append(_pred(db, rng.integers(0, 6, d) / 5, dl))  # many score ties
    gt = _aset(boxes, labels, difficult=diff)
    for plus_one in (False, True):
        for use07 in (False, True):
            for thr in (0.5, 0.7):
                r = evaluate_voc(gt, preds, iou_threshold=thr, use_07_metric=use07, legacy_plus_one=plus_one)
                ref = [_devkit_reference(gt, preds, c, thr, plus_one, use07) for c in range(3)]
                np.testing.assert_allclose(r.ap, ref, atol=1e-12, equal_nan=True)
