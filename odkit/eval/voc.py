"""Pascal VOC evaluation: per-class AP at one IoU threshold, 11-point (VOC2007) or all-point.

Rules (those of the VOC devkit and MMDetection's ``eval_map``):

* Per class, detections of all images are sorted by score, highest first (stable: ties keep the
  input order). Each detection is compared with every ground truth of its class in its image
  (difficult ones included) and takes the one with the highest IoU (the first on ties).
* If that IoU >= ``iou_threshold``: a difficult (or crowd) ground truth makes the detection
  ignored (neither TP nor FP); otherwise the detection is a TP if the ground truth is still free
  and a FP if an earlier detection already took it (no fall back to the next best ground truth).
  Below the threshold it is a FP.
* recall = TP / (non-difficult ground truths), precision = TP / max(TP + FP, eps).
* ``use_07_metric``: mean over recall 0, 0.1, ..., 1 of the best precision at recall >= r;
  otherwise the area under the monotone precision envelope (all points, VOC2010+).
* Classes without non-difficult ground truth get AP = NaN and are left out of the mAP
  (MMDetection's behaviour; the devkit would divide by zero).
* Boxes use continuous coordinates (w = x2 - x1). ``legacy_plus_one=True`` reproduces the original
  devkit convention where a box spans x2 - x1 + 1 pixels (areas and intersections get +1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from odkit.eval.inputs import Detections, GroundTruth, load_detections, load_ground_truth

log = logging.getLogger(__name__)

__all__ = ["VocResult", "evaluate_voc", "voc_ap", "match_voc"]


@dataclass
class VocResult:
    """Result of :func:`evaluate_voc`.

    ``map``: mean AP over classes with ground truth; ``ap`` [C] per contiguous class (NaN without
    ground truth); ``num_gts`` / ``num_dets`` [C]; ``recalls`` / ``precisions``: per class the
    curves over its score-sorted detections (ignored detections removed).
    """

    map: float
    ap: np.ndarray
    class_names: list[str]
    class_ids: list[int]
    num_gts: np.ndarray
    num_dets: np.ndarray
    recalls: list[np.ndarray]
    precisions: list[np.ndarray]
    iou_threshold: float
    use_07_metric: bool
    legacy_plus_one: bool

    @property
    def per_class(self) -> dict[str, dict[str, Any]]:
        return {
            n: {
                "AP": None if np.isnan(a) else float(a),
                "category_id": int(c),
                "num_gt": int(g),
                "num_det": int(d),
            }
            for n, c, a, g, d in zip(self.class_names, self.class_ids, self.ap, self.num_gts, self.num_dets)
        }

    @property
    def metric_name(self) -> str:
        return "voc07" if self.use_07_metric else "voc12"

    def to_dict(self) -> dict[str, Any]:
        """Every figure at full precision (json-serialisable; AP null for classes without gt)."""
        return {
            "metric": self.metric_name,
            "iou_threshold": self.iou_threshold,
            "legacy_plus_one": self.legacy_plus_one,
            "mAP": self.map,
            "per_class": self.per_class,
        }

    @property
    def summary(self) -> str:
        kind = "11-point (VOC2007)" if self.use_07_metric else "all-point (VOC2010+)"
        extra = ", +1 pixel boxes" if self.legacy_plus_one else ""
        return f"mAP@{self.iou_threshold:g} {kind}{extra} = {self.map:.4f}"

    def table(self) -> str:
        width = max([len("class")] + [len(n) for n in self.class_names])
        lines = [f"{'class':<{width}} {'gts':>7} {'dets':>8} {'AP':>7}"]
        for n, a, g, d in zip(self.class_names, self.ap, self.num_gts, self.num_dets):
            ap = f"{100 * a:7.2f}" if not np.isnan(a) else f"{'-':>7}"
            lines.append(f"{n:<{width}} {int(g):>7} {int(d):>8} {ap}")
        return "\n".join(lines)


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = False) -> float:
    """AP from a recall / precision curve (score order), 11-point or all-point interpolation."""
    rec = np.asarray(recall, dtype=np.float64)
    prec = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = prec[rec >= t]
            ap += (float(p.max()) if p.size else 0.0) / 11.0
        return ap
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _pair_iou(a: np.ndarray, b: np.ndarray, plus_one: bool) -> np.ndarray:
    """Aligned IoU of xyxy boxes ``a`` and ``b`` [P,4] (float64); +1 pixel convention optional."""
    e = 1.0 if plus_one else 0.0
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + e, 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + e, 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + e) * (a[:, 3] - a[:, 1] + e)
    area_b = (b[:, 2] - b[:, 0] + e) * (b[:, 3] - b[:, 1] + e)
    union = area_a + area_b - inter
    return inter / np.maximum(union, np.finfo(np.float64).eps)


def match_voc(
    gt: GroundTruth, dt: Detections, iou_threshold: float = 0.5, legacy_plus_one: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """VOC matching of every detection: ``(order, flag)``.

    ``order`` [N] sorts detections by (class, -score, input order); ``flag`` [N] (in that order) is
    1 for a true positive, 0 for a false positive, -1 for an ignored detection (best ground truth is
    difficult or crowd).
    """
    n = len(dt)
    order = np.lexsort((np.arange(n), -dt.scores, dt.labels))
    lab, img = dt.labels[order], dt.img[order]
    flag = np.zeros(n, dtype=np.int64)
    if n == 0 or len(gt.labels) == 0:
        return order, flag
    C = max(gt.num_classes, 1)
    # Ground truth grouped by (image, class); pairs with every detection of the same group.
    gkey = gt.img * C + gt.labels
    g_order = np.argsort(gkey, kind="stable")
    gkey_s = gkey[g_order]
    dkey = img * C + lab
    g_lo = np.searchsorted(gkey_s, dkey, side="left")
    g_hi = np.searchsorted(gkey_s, dkey, side="right")
    cnt = g_hi - g_lo
    d_rep = np.repeat(np.arange(n), cnt)
    if len(d_rep) == 0:
        return order, flag
    within = np.arange(len(d_rep)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    g_rep = g_order[np.repeat(g_lo, cnt) + within]
    iou = _pair_iou(dt.xyxy[order][d_rep], gt.xyxy[g_rep], legacy_plus_one)
    # Best gt per detection: highest IoU, first (in input order) on ties.
    best = np.lexsort((g_rep, -iou, d_rep))
    first = np.ones(len(best), dtype=bool)
    first[1:] = d_rep[best][1:] != d_rep[best][:-1]
    b = best[first]
    det_b, gt_b, iou_b = d_rep[b], g_rep[b], iou[b]
    hit = iou_b >= iou_threshold
    ignored = gt.difficult[gt_b] | gt.iscrowd[gt_b]
    flag[det_b[hit & ignored]] = -1
    cand = hit & ~ignored
    # Of the detections hitting the same free gt, the first in score order wins.
    cd, cg = det_b[cand], gt_b[cand]
    o = np.lexsort((cd, cg))
    win = np.ones(len(o), dtype=bool)
    win[1:] = cg[o][1:] != cg[o][:-1]
    flag[cd[o][win]] = 1
    return order, flag


def evaluate_voc(
    gt: Any,
    predictions: Any,
    *,
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
    legacy_plus_one: bool = False,
    format: str | None = None,
    split: str | None = None,
) -> VocResult:
    """Pascal VOC AP per class and mAP (see the module docstring for the exact rules).

    ``gt`` / ``predictions`` as in :func:`odkit.eval.coco.evaluate_coco`.
    """
    g = load_ground_truth(gt, format=format, split=split)
    d = load_detections(predictions, g)
    order, flag = match_voc(g, d, iou_threshold, legacy_plus_one)
    C = g.num_classes
    lab = d.labels[order]
    npos = np.bincount(g.labels[~(g.difficult | g.iscrowd)], minlength=C)[:C]
    ndet = np.bincount(d.labels, minlength=C)[:C]
    bounds = np.searchsorted(lab, np.arange(C + 1))
    ap = np.full(C, np.nan)
    recalls, precisions = [], []
    for c in range(C):
        f = flag[bounds[c] : bounds[c + 1]]
        f = f[f >= 0]
        tp = np.cumsum(f == 1).astype(np.float64)
        fp = np.cumsum(f == 0).astype(np.float64)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        rec = tp / npos[c] if npos[c] > 0 else np.zeros_like(tp)
        recalls.append(rec)
        precisions.append(prec)
        if npos[c] > 0:
            ap[c] = voc_ap(rec, prec, use_07_metric)
    valid = ~np.isnan(ap)
    m = float(ap[valid].mean()) if valid.any() else 0.0
    return VocResult(
        map=m,
        ap=ap,
        class_names=list(g.class_names),
        class_ids=list(g.class_ids),
        num_gts=npos,
        num_dets=ndet,
        recalls=recalls,
        precisions=precisions,
        iou_threshold=float(iou_threshold),
        use_07_metric=use_07_metric,
        legacy_plus_one=legacy_plus_one,
    )
