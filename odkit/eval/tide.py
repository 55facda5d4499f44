"""TIDE error analysis (Bolya et al., 2020): what keeps AP at one IoU from 100, by error type.

Definitions are those of the ``tidecv`` package (box mode), reproduced exactly:

* Per image, detections are sorted by score (stable) and the first ``max_dets`` are kept (per
  image, all classes together). Crowd ground truths are not matched: they are ignore regions.
* Matching: each detection, in score order, takes the free same-class ground truth of highest IoU
  when that IoU is >= ``pos_thr`` (ties: the first ground truth). This is the greedy matching of
  the COCO evaluation (:func:`odkit.eval.coco._match_groups`) at one threshold, one area range and
  no ignored ground truth, with the first of equal IoUs taken. An unmatched detection whose crowd
  IoU (intersection over the detection's area) with a same-class crowd region is > ``pos_thr`` is
  ignored (no point of the AP curve); it is still given an error type.
* Each unmatched or ignored detection gets the first type that applies: background (the image has
  no ground truth), localisation (same-class IoU in [bg, fg]), classification (other-class IoU
  >= fg), duplicate (same-class IoU >= fg with a matched ground truth), background (every IoU
  <= bg), both (the rest). Each ground truth left unmatched that no classification or localisation
  error points at is missed.
* AP per class is COCO's 101-point interpolation on the detections of the class (0 for a class
  with detections and no ground truth), mAP the mean over classes with ground truth or
  detections, in percent.
* dAP of a type: the mAP with every error of that type fixed, minus the mAP (floored at 0).
  Fixing a classification or localisation error turns the highest-scoring detection pointing at
  each free ground truth into a true positive and drops the others; fixing duplicate, background
  and both errors drops the detection; fixing a miss removes the ground truth. Special errors:
  false positives (every false positive scored below every true positive) and false negatives
  (every unmatched ground truth removed).

Boxes are ``xywh`` float64 pixels as in :mod:`odkit.eval.inputs`; IoU as pycocotools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from odkit.errors import ConfigError
from odkit.eval.coco import _bbox_iou, _box_pair_iou, _group_bounds, _match_groups
from odkit.eval.inputs import Detections, GroundTruth, load_detections, load_ground_truth

__all__ = ["TideResult", "tide_errors", "ERROR_TYPES", "SPECIAL_TYPES", "ERROR_LABELS"]

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SPECIAL_TYPES = ("FalsePos", "FalseNeg")
ERROR_LABELS = {
    "Cls": "classification",
    "Loc": "localisation",
    "Both": "classification and localisation",
    "Dupe": "duplicate",
    "Bkg": "background",
    "Miss": "missed",
    "FalsePos": "false positives",
    "FalseNeg": "false negatives",
}
# Codes of TideResult.det_error
NOT_EVALUATED, TRUE_POSITIVE = -2, -1
CLS, LOC, BOTH, DUPE, BKG = 0, 1, 2, 3, 4
_RECALLS = np.array([x / 100 for x in range(101)])  # as tidecv builds them


@dataclass
class TideResult:
    """Result of :func:`tide_errors` (dAPs and AP in percent).

    ``det_error`` [N] per detection (input order): ``-2`` past ``max_dets`` (not evaluated), ``-1``
    true positive, else an index into ``ERROR_TYPES`` (0..4); ``det_ignored`` [N] inside a crowd
    region; ``det_gt`` [N] the ground-truth row matched (true positive) or pointed at
    (classification / localisation), else -1. ``gt_missed`` [G] missed errors, ``gt_unmatched`` [G]
    every unmatched non-crowd ground truth (the false negatives). Rows follow
    :class:`~odkit.eval.inputs.GroundTruth` / :class:`~odkit.eval.inputs.Detections`.
    """

    ap: float
    main: dict[str, float]
    special: dict[str, float]
    counts: dict[str, int]
    per_class_ap: dict[str, float]
    pos_thr: float
    bg_thr: float
    max_dets: int
    det_error: np.ndarray = field(repr=False)
    det_ignored: np.ndarray = field(repr=False)
    det_gt: np.ndarray = field(repr=False)
    gt_missed: np.ndarray = field(repr=False)
    gt_unmatched: np.ndarray = field(repr=False)

    def table(self) -> str:
        """The TIDE summary: AP, then dAP and count of each main and special error type."""
        head = f"TIDE errors (foreground IoU {self.pos_thr:g}, background {self.bg_thr:g}): AP{round(100 * self.pos_thr)} = {self.ap:.2f}"
        names = list(ERROR_TYPES) + list(SPECIAL_TYPES)
        dap = {**self.main, **self.special}
        rows = [
            f"{'type':<6}" + "".join(f"{n:>9}" for n in names),
            f"{'dAP':<6}" + "".join(f"{dap[n]:9.2f}" for n in names),
            f"{'count':<6}" + "".join(f"{self.counts[n]:9d}" for n in names),
        ]
        return "\n".join([head, *rows])

    def to_dict(self) -> dict[str, Any]:
        """Every figure (json-serialisable)."""
        return {
            "pos_thr": self.pos_thr, "bg_thr": self.bg_thr, "max_dets": self.max_dets, "ap": self.ap,
            "main": dict(self.main), "special": dict(self.special), "counts": dict(self.counts),
            "per_class_ap": dict(self.per_class_ap),
        }


# ------------------------------------------------------------------------------------ helpers
def _pairs(a_keys: np.ndarray, b_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with ``a_keys[i] == b_keys[j]``: i ascending, j ascending for one i."""
    bo = np.argsort(b_keys, kind="stable")
    bs = b_keys[bo]
    lo = np.searchsorted(bs, a_keys, side="left")
    cnt = np.searchsorted(bs, a_keys, side="right") - lo
    ai = np.repeat(np.arange(len(a_keys)), cnt)
    offs = np.arange(len(ai)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    return ai, bo[np.repeat(lo, cnt) + offs]


def _row_argmax(rows: np.ndarray, v: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row r < n of the pairs (``rows`` ascending): the max of ``v`` and the first pair index
    holding it (``np.argmax`` of the row); -inf / -1 for rows without pairs."""
    best = np.full(n, -np.inf)
    np.maximum.at(best, rows, v)
    at = np.flatnonzero(v == best[rows])
    first = np.full(n, -1)
    r, i = np.unique(rows[at], return_index=True)
    first[r] = at[i]
    return best, first


def _class_ap(scores: np.ndarray, tp: np.ndarray, key: np.ndarray, n_gt: int) -> float:
    """tidecv's AP (percent) of one class: points sorted by score, ties by ``key``; 0 without
    ground truth or without points."""
    if n_gt == 0 or len(tp) == 0:
        return 0.0
    t = tp[np.lexsort((key, -scores))]
    ntrue = np.cumsum(t)
    prec = np.maximum.accumulate((ntrue / np.arange(1, len(t) + 1))[::-1])[::-1]
    idx = np.searchsorted(ntrue / n_gt, _RECALLS, side="left")  # first point reaching each recall
    y = np.where(idx < len(t), prec[np.minimum(idx, len(t) - 1)], 0.0)
    return float(sum(y.tolist()) / len(y) * 100)


def _mean_ap(cls: np.ndarray, scores: np.ndarray, tp: np.ndarray, key: np.ndarray,
             n_gt: dict[int, int]) -> tuple[float, dict[int, float]]:
    """mAP over classes with points or ground truth (``n_gt`` holds every base class)."""
    aps: dict[int, float] = {}
    for c in sorted(set(n_gt) | set(np.unique(cls).tolist())):
        m = cls == c
        if m.any() or n_gt.get(c, 0) != 0:
            aps[c] = _class_ap(scores[m], tp[m], key[m], n_gt.get(c, 0))
    return (sum(aps.values()) / len(aps) if aps else 0.0), aps


# ----------------------------------------------------------------------------------- analysis
@dataclass
class _Analysis:
    sel: np.ndarray       # evaluated detections, push order (image, score)
    etype: np.ndarray     # [len(sel)] -1 matched, else error code
    ignored: np.ndarray   # [len(sel)]
    target: np.ndarray    # [len(sel)] gt row (matched / pointed at) or -1
    best: np.ndarray      # [len(sel)] fixing this Cls/Loc error makes a true positive
    gt_used: np.ndarray   # [G]
    gt_missed: np.ndarray  # [G]


def _analyse(g: GroundTruth, d: Detections, pos: float, bg: float, max_dets: int) -> _Analysis:
    n_img = max(g.num_images, 1)
    order = np.lexsort((np.arange(len(d)), -d.scores, d.img))
    _, s0, c0 = _group_bounds(d.img[order])
    rank = np.arange(len(order)) - np.repeat(s0, c0)
    sel = order[rank < max_dets]
    n = len(sel)
    G = len(g.labels)
    real = np.flatnonzero(~g.iscrowd)
    real = real[np.argsort(g.img[real], kind="stable")]

    # Greedy matching per (image, class), shared with the COCO evaluation.
    dkey = d.labels[sel] * n_img + d.img[sel]
    mo = np.argsort(dkey, kind="stable")  # keeps score order inside a group
    gkey = g.labels[real] * n_img + g.img[real]
    go = real[np.argsort(gkey, kind="stable")]
    du, dst, dcnt = _group_bounds(dkey[mo])
    gu, gst, gcnt = _group_bounds(g.labels[go] * n_img + g.img[go])
    both, d_i, g_i = np.intersect1d(du, gu, assume_unique=True, return_indices=True)
    matched = np.zeros((n, 1, 1), dtype=bool)
    mgt = np.full((n, 1, 1), -1, dtype=np.int64)
    if len(both):
        no_crowd = np.zeros(len(go), bool)
        _match_groups(_box_pair_iou(d.xywh[sel[mo]], g.xywh[go], no_crowd), no_crowd, np.zeros((len(go), 1), bool),
                      dst[d_i], dcnt[d_i], gst[g_i], gcnt[g_i], np.array([pos]), matched,
                      np.zeros_like(matched), first_tie=True, matched_gt=mgt)
    target = np.full(n, -1, dtype=np.int64)
    hit = mgt[:, 0, 0] >= 0
    target[mo[hit]] = go[mgt[hit, 0, 0]]
    is_tp = target >= 0
    gt_used = np.zeros(G, dtype=bool)
    gt_used[target[is_tp]] = True

    # Unmatched detections inside a same-class crowd region are ignored.
    ignored = np.zeros(n, dtype=bool)
    crowd = np.flatnonzero(g.iscrowd)
    free = np.flatnonzero(~is_tp)
    if len(crowd) and len(free):
        a, b = _pairs(dkey[free], g.labels[crowd] * n_img + g.img[crowd])
        ciou = _bbox_iou(d.xywh[sel[free[a]]], g.xywh[crowd[b]], np.ones(len(a), bool))
        ignored[free[a[ciou > pos]]] = True

    # Error type of every unmatched or ignored detection, against the image's non-crowd gt.
    etype = np.full(n, TRUE_POSITIVE, dtype=np.int64)
    etype[free] = BKG  # images without (non-crowd) ground truth
    a, b = _pairs(d.img[sel[free]], g.img[real])
    if len(a):
        gj = real[b]
        iou = _bbox_iou(d.xywh[sel[free[a]]], g.xywh[gj], np.zeros(len(a), bool))
        same = d.labels[sel[free[a]]] == g.labels[gj]
        nf = len(free)
        m_cls, f_cls = _row_argmax(a, iou * same, nf)
        m_non, f_non = _row_argmax(a, iou * ~same, nf)
        m_dup, _ = _row_argmax(a, iou * same * gt_used[gj], nf)
        m_all, _ = _row_argmax(a, iou, nf)
        has = f_cls >= 0
        t = np.full(nf, BOTH)
        t[m_all <= bg] = BKG
        t[m_dup >= pos] = DUPE
        is_cls = m_non >= pos
        t[is_cls] = CLS
        is_loc = (bg <= m_cls) & (m_cls <= pos)
        t[is_loc] = LOC
        tgt = np.where(is_loc, gj[np.maximum(f_cls, 0)], np.where(is_cls, gj[np.maximum(f_non, 0)], -1))
        etype[free[has]] = t[has]
        target[free[has]] = tgt[has]

    # Of the Cls / Loc errors pointing at a free gt, the highest score (first of ties) is fixable.
    best = np.zeros(n, dtype=bool)
    cand = np.flatnonzero(((etype == CLS) | (etype == LOC)) & (target >= 0))
    cand = cand[~gt_used[target[cand]]]
    if len(cand):
        co = cand[np.lexsort((cand, -d.scores[sel[cand]], target[cand]))]
        _, first = np.unique(target[co], return_index=True)
        best[co[first]] = True
    usable = np.zeros(G, dtype=bool)
    usable[target[cand]] = True
    gt_missed = ~g.iscrowd & ~gt_used & ~usable
    return _Analysis(sel, etype, ignored, target, best, gt_used, gt_missed)


def _fixed_map(g: GroundTruth, d: Detections, an: _Analysis, fix: str | None) -> float:
    """tidecv's mAP after fixing the errors of type ``fix`` (a main type, a special type, or None)."""
    n = len(an.sel)
    pos_in = np.arange(n)
    tp_mask = an.etype == TRUE_POSITIVE
    real = ~g.iscrowd
    n_gt = {int(c): int(v) for c, v in zip(*np.unique(g.labels[real], return_counts=True))}
    for c in np.unique(d.labels[an.sel[~an.ignored | tp_mask]]).tolist():
        n_gt.setdefault(int(c), 0)
    cls = d.labels[an.sel].copy()
    score = d.scores[an.sel].copy()
    tp = tp_mask.copy()
    keep = tp_mask | ~an.ignored  # the base points (ignored detections have none)
    # Score ties keep tidecv's order: push order for the base, else errors first, then true positives.
    key = pos_in if fix is None else np.where(tp_mask, n + pos_in, pos_in)
    code = ERROR_TYPES.index(fix) if fix in ERROR_TYPES else None
    if fix == "Miss":
        for c, v in zip(*np.unique(g.labels[an.gt_missed], return_counts=True)):
            n_gt[int(c)] -= int(v)
    elif fix == "FalseNeg":
        for c, v in zip(*np.unique(g.labels[real & ~an.gt_used], return_counts=True)):
            n_gt[int(c)] -= int(v)
    elif fix == "FalsePos":
        score = np.where(tp, 1.0, 0.0)
    elif code is not None:
        err = an.etype == code
        keep &= ~err
        if code in (CLS, LOC):
            ok = err & an.best
            keep |= ok
            tp |= ok
            if code == CLS:
                cls[ok] = g.labels[an.target[ok]]
    return _mean_ap(cls[keep], score[keep], tp[keep], key[keep], n_gt)[0]


def tide_errors(
    gt: Any,
    predictions: Any,
    *,
    pos_thr: float = 0.5,
    bg_thr: float = 0.1,
    max_dets: int = 100,
    format: str | None = None,
    split: str | None = None,
) -> TideResult:
    """TIDE error analysis of ``predictions`` against ``gt`` (inputs as :func:`~odkit.eval.evaluate_coco`).

    ``pos_thr``: foreground IoU (a match, and the upper bound of a localisation error);
    ``bg_thr``: background IoU; ``max_dets``: detections kept per image (all classes).
    """
    if not 0.0 < float(pos_thr) <= 1.0:
        raise ConfigError(f"pos_thr (foreground IoU) must be in (0, 1], got {pos_thr}")
    if not 0.0 < float(bg_thr) <= float(pos_thr):
        raise ConfigError(f"bg_thr (background IoU) must be in (0, pos_thr={pos_thr}], got {bg_thr}")
    if int(max_dets) < 1:
        raise ConfigError(f"max_dets must be >= 1, got {max_dets}")
    g = load_ground_truth(gt, format=format, split=split)
    d = load_detections(predictions, g)
    an = _analyse(g, d, float(pos_thr), float(bg_thr), int(max_dets))
    base = _fixed_map(g, d, an, None)
    main = {t: max(_fixed_map(g, d, an, t) - base, 0.0) for t in ERROR_TYPES}
    special = {t: _fixed_map(g, d, an, t) - base for t in SPECIAL_TYPES}
    counts = {t: int((an.etype == i).sum()) for i, t in enumerate(ERROR_TYPES[:-1])}
    counts["Miss"] = int(an.gt_missed.sum())
    counts["FalsePos"] = int(((an.etype >= 0) & ~an.ignored).sum())
    counts["FalseNeg"] = int((~g.iscrowd & ~an.gt_used).sum())
    # per-class AP of the base points
    tp = an.etype == TRUE_POSITIVE
    keep = tp | ~an.ignored
    n_gt = {int(c): int(v) for c, v in zip(*np.unique(g.labels[~g.iscrowd], return_counts=True))}
    _, aps = _mean_ap(d.labels[an.sel][keep], d.scores[an.sel][keep], tp[keep], np.arange(len(an.sel))[keep], n_gt)
    det_error = np.full(len(d), NOT_EVALUATED, dtype=np.int64)
    det_error[an.sel] = an.etype
    det_ignored = np.zeros(len(d), dtype=bool)
    det_ignored[an.sel] = an.ignored
    det_gt = np.full(len(d), -1, dtype=np.int64)
    det_gt[an.sel] = an.target
    return TideResult(
        ap=base, main=main, special=special, counts=counts,
        per_class_ap={g.class_names[c] if c < len(g.class_names) else str(c): v for c, v in aps.items()},
        pos_thr=float(pos_thr), bg_thr=float(bg_thr), max_dets=int(max_dets),
        det_error=det_error, det_ignored=det_ignored, det_gt=det_gt,
        gt_missed=an.gt_missed, gt_unmatched=~g.iscrowd & ~an.gt_used,
    )
