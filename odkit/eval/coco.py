"""COCO evaluation, identical to pycocotools' ``COCOeval`` for ``iouType="bbox"`` and ``"segm"``.

Segm evaluation differs only in the IoU (mask IoU of ``odkit.ops.rle``, computed for every
detection / ground-truth pair of an (image, category) group before matching) and the detection
area used by the area ranges; matching and accumulation are shared.

Everything pycocotools does is reproduced, vectorised with numpy:

* IoU on ``xywh`` boxes in float64 with no "+1"; against a crowd ground truth the IoU is
  intersection over the detection's area. Detection area is ``w*h``; ground-truth area is the
  COCO ``area`` field when present, the box area otherwise.
* Per (image, category), detections are sorted by score (stable: ties keep input order) and only
  the first ``max(max_dets)`` are kept. Ground truths are visited non-ignored first (stable).
* A ground truth is ignored when it is crowd or its area lies outside the area range (bounds
  inclusive). Each detection, in score order, takes the available ground truth with the highest
  IoU >= t (ties: the last one); it falls back to ignored ground truths only when no non-ignored one
  qualifies. Crowd ground truths stay available (one absorbs many detections); matches to ignored
  ground truths are ignored, and so are unmatched detections whose area lies outside the range.
* All 10 IoU thresholds (``np.linspace(.5, .95, 10)``) and 4 area ranges are matched at once; the
  greedy loop runs over detection rank (at most 100 steps) for all (image, category) groups
  together, groups bucketed by their number of ground truths.
* Accumulation per category: precision with the monotone envelope sampled at 101 recall points
  (``searchsorted`` left; 0 past the last reached recall), recall at the last detection,
  ``-1`` for categories without non-ignored ground truth (left out of the means).

The category axis ``K`` of the arrays is ordered by ascending original category id, as in
pycocotools (``CocoResult.cat_ids``). Categories are processed in chunks so memory stays bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from odkit.eval.inputs import Detections, GroundTruth, load_detections, load_ground_truth
from odkit.ops.rle import RLEArray
from odkit.ops.rle import pair_iou as mask_pair_iou

log = logging.getLogger(__name__)

__all__ = [
    "CocoResult",
    "evaluate_coco",
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "AREA_RANGES",
    "AREA_LABELS",
    "MAX_DETS",
    "STAT_NAMES",
]

# Built exactly as pycocotools builds them (np.arange would drift).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = np.array([[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]], dtype=np.float64)
AREA_LABELS = ["all", "small", "medium", "large"]
MAX_DETS = (1, 10, 100)
STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]

_EPS = np.spacing(1)
# Detections processed per chunk of categories (bounds the [N, A, T] match arrays).
_CHUNK_DETS = 1_000_000


@dataclass
class CocoResult:
    """Result of :func:`evaluate_coco`.

    ``stats`` [12] in the order of :data:`STAT_NAMES` (pycocotools' ``COCOeval.stats``);
    ``precision`` [T,R,K,A,M], ``recall`` [T,K,A,M] and ``scores`` [T,R,K,A,M] as pycocotools'
    ``COCOeval.eval`` (-1 where a category has no ground truth); ``cat_ids`` / ``class_names``
    name the K axis (ascending category id); ``per_class`` maps class name to its AP, AP50 and
    AP75 (area all, 100 detections; -1 without ground truth); ``summary`` the text of
    pycocotools' ``summarize()``.
    """

    stats: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    scores: np.ndarray
    cat_ids: list[int]
    class_names: list[str]
    per_class: dict[str, dict[str, float]]
    summary: str
    iou_thresholds: np.ndarray = field(default_factory=lambda: IOU_THRESHOLDS.copy())
    recall_thresholds: np.ndarray = field(default_factory=lambda: RECALL_THRESHOLDS.copy())
    area_labels: list[str] = field(default_factory=lambda: list(AREA_LABELS))
    max_dets: tuple[int, ...] = MAX_DETS
    iou_type: str = "bbox"

    @property
    def metrics(self) -> dict[str, float]:
        """The 12 summary figures by name (AP, AP50, ..., ARl)."""
        return {k: float(v) for k, v in zip(STAT_NAMES, self.stats)}

    @property
    def map(self) -> float:
        """AP@[.50:.95] (``stats[0]``)."""
        return float(self.stats[0])

    def to_dict(self) -> dict[str, Any]:
        """Every figure at full precision (json-serialisable)."""
        d: dict[str, Any] = {"metric": "coco", "iou_type": self.iou_type, **self.metrics}
        d["per_class"] = {
            name: {"category_id": cid, **self.per_class[name]}
            for name, cid in zip(self.class_names, self.cat_ids)
        }
        return d

    def table(self) -> str:
        """Per-class table (AP, AP50, AP75 in percent; '-' for classes without ground truth)."""
        width = max([len("class")] + [len(n) for n in self.class_names])
        lines = [f"{'class':<{width}} {'id':>6} {'AP':>7} {'AP50':>7} {'AP75':>7}"]
        for name, cid in zip(self.class_names, self.cat_ids):
            r = self.per_class[name]
            vals = [f"{100 * r[k]:7.2f}" if r[k] > -1 else f"{'-':>7}" for k in ("AP", "AP50", "AP75")]
            lines.append(f"{name:<{width}} {cid:>6} " + " ".join(vals))
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------- IoU
def _bbox_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of detections ``d`` [...,4] and ground truths ``g`` [...,4] (broadcast), xywh float64.

    The same float operations as pycocotools' ``bbIou``: intersection over union, or over the
    detection area when the ground truth is crowd; 0 where the boxes do not overlap.
    """
    dx, dy, dw, dh = d[..., 0], d[..., 1], d[..., 2], d[..., 3]
    gx, gy, gw, gh = g[..., 0], g[..., 1], g[..., 2], g[..., 3]
    da = dw * dh
    ga = gw * gh
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = w * h
    union = np.where(crowd, da, da + ga - inter)
    ok = (w > 0) & (h > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)


def _box_pair_iou(
    d_xywh: np.ndarray, g_xywh: np.ndarray, g_crowd: np.ndarray
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The ``pair_iou`` of :func:`_match_groups` for boxes."""

    def iou(d: np.ndarray, gidx: np.ndarray) -> np.ndarray:
        return _bbox_iou(d_xywh[d][:, None, :], g_xywh[gidx], g_crowd[gidx])

    return iou


# ----------------------------------------------------------------------------------- matching
def _match_groups(
    pair_iou: Callable[[np.ndarray, np.ndarray], np.ndarray],
    g_crowd: np.ndarray,
    g_ignore: np.ndarray,
    d_start: np.ndarray,
    d_count: np.ndarray,
    g_start: np.ndarray,
    g_count: np.ndarray,
    thr: np.ndarray,
    matched: np.ndarray,
    matched_ig: np.ndarray,
    *,
    first_tie: bool = False,
    matched_gt: np.ndarray | None = None,
) -> None:
    """Greedy COCO matching for groups that hold both detections and ground truths.

    Detections of a group are rows ``d_start:d_start+d_count`` (score order), its ground truths
    rows ``g_start:g_start+g_count`` (input order). ``g_ignore`` [G, A] per area range.
    ``pair_iou(d [n], gidx [n, gb])`` gives the IoU of detection rows with ground-truth rows
    (``gidx`` is 0 in padding columns, whose values are not used). Writes ``matched`` /
    ``matched_ig`` [N, A, T] (detection matched; matched to an ignored gt) and, when given,
    ``matched_gt`` [N, A, T] (the ground-truth row taken). Among ground truths of equal IoU the last
    one is taken (pycocotools), or the first with ``first_tie`` (an ``argmax``, as TIDE).
    """
    A = g_ignore.shape[1]
    T = len(thr)
    # Bucket groups by padded gt count (powers of two) so padding stays small.
    gb_all = np.maximum(1, 1 << np.ceil(np.log2(np.maximum(g_count, 1))).astype(np.int64))
    for gb in np.unique(gb_all):
        sel = np.flatnonzero(gb_all == gb)
        # Longest detection lists first: at rank r the active groups are a prefix.
        sel = sel[np.argsort(-d_count[sel], kind="stable")]
        n = len(sel)
        ds, dc = d_start[sel], d_count[sel]
        gs, gc = g_start[sel], g_count[sel]
        cols = np.arange(gb)
        valid = cols[None, :] < gc[:, None]  # [n, gb]
        gidx = np.where(valid, gs[:, None] + cols[None, :], 0)
        gcrowd = g_crowd[gidx] & valid
        gig = np.moveaxis(g_ignore[gidx], -1, 0)  # [A, n, gb]
        gig_n = ~gig & valid[None]
        gig_i = gig & valid[None]
        avail = np.ones((A, T, n, gb), dtype=bool)
        active = np.searchsorted(-dc, -np.arange(int(dc[0])), side="left")  # groups with dc > r
        rev = slice(None, None, -1)
        for r in range(int(dc[0])):
            nr = int(active[r])
            d = ds[:nr] + r
            iou = pair_iou(d, gidx[:nr])  # [nr, gb]
            ok = iou[None] >= thr[:, None, None]  # [T, nr, gb]
            cand = ok[None] & avail[:, :, :nr]  # [A, T, nr, gb]
            cn = cand & gig_n[:, None, :nr]
            ci = cand & gig_i[:, None, :nr]
            has_n = cn.any(-1)
            has_i = ci.any(-1)
            if not (has_n.any() or has_i.any()):
                continue
            if first_tie:
                m_n = np.where(cn, iou, -1.0).argmax(-1)
                m_i = np.where(ci, iou, -1.0).argmax(-1)
            else:  # the last gt with the highest IoU (pycocotools replaces on >=)
                m_n = gb - 1 - np.where(cn, iou, -1.0)[..., rev].argmax(-1)
                m_i = gb - 1 - np.where(ci, iou, -1.0)[..., rev].argmax(-1)
            m = np.where(has_n, m_n, m_i)  # [A, T, nr]
            hit = has_n | has_i
            matched[d] = np.moveaxis(hit, -1, 0)
            matched_ig[d] = np.moveaxis(~has_n & has_i, -1, 0)
            a_i, t_i, n_i = np.nonzero(hit)
            g_i = m[a_i, t_i, n_i]
            if matched_gt is not None:
                matched_gt[d[n_i], a_i, t_i] = gidx[n_i, g_i]
            keep = ~gcrowd[n_i, g_i]  # crowd gts stay available
            avail[a_i[keep], t_i[keep], n_i[keep], g_i[keep]] = False


# ------------------------------------------------------------------------------- accumulation
def _recall_counts(npig: int) -> np.ndarray:
    """For each recall threshold, the smallest TP count c with fl(c / npig) >= threshold."""
    vals = np.arange(npig + 1, dtype=np.float64) / npig
    return np.searchsorted(vals, RECALL_THRESHOLDS, side="left")


def _accumulate_category(
    tps: np.ndarray,
    fps: np.ndarray,
    scores: np.ndarray,
    npig: np.ndarray,
    precision: np.ndarray,
    recall: np.ndarray,
    score_out: np.ndarray,
) -> None:
    """Precision / recall / scores of one category and one max-dets setting.

    ``tps`` / ``fps`` [L, A, T] bool in global score order, ``scores`` [L], ``npig`` [A].
    Outputs: ``precision`` / ``score_out`` [T, R, A], ``recall`` [T, A] (filled where npig > 0).
    """
    L, A, T = tps.shape
    R = len(RECALL_THRESHOLDS)
    for a in range(A):
        n = int(npig[a])
        if n == 0:
            continue
        if L == 0:
            recall[:, a] = 0.0
            precision[:, :, a] = 0.0
            score_out[:, :, a] = 0.0
            continue
        tp = np.cumsum(tps[:, a, :], axis=0).astype(np.float64)  # [L, T]
        fp = np.cumsum(fps[:, a, :], axis=0).astype(np.float64)
        pr = tp / (fp + tp + _EPS)
        pr = np.maximum.accumulate(pr[::-1], axis=0)[::-1]
        recall[:, a] = tp[-1] / n
        # First index where recall >= threshold == position of the c-th true positive.
        need = _recall_counts(n)  # [R]
        total = tp[-1].astype(np.int64)  # [T]
        t_idx, l_idx = np.nonzero(tps[:, a, :].T)  # sorted by t then l
        start = np.zeros(T + 1, dtype=np.int64)
        np.cumsum(np.bincount(t_idx, minlength=T), out=start[1:])
        reach = need[None, :] <= total[:, None]  # [T, R]
        pos = start[:-1, None] + np.maximum(need[None, :] - 1, 0)
        pos = np.where(reach & (need[None, :] > 0), pos, 0)
        idx = np.where(need[None, :] == 0, 0, l_idx[pos] if len(l_idx) else 0)
        idx = np.where(reach, idx, L)
        inside = idx < L
        idx_c = np.minimum(idx, L - 1)
        q = np.where(inside, pr[idx_c, np.arange(T)[:, None]], 0.0)
        s = np.where(inside, scores[idx_c], 0.0)
        precision[:, :, a] = q.reshape(T, R)
        score_out[:, :, a] = s.reshape(T, R)


# ------------------------------------------------------------------------------------ summary
def _summarize(precision: np.ndarray, recall: np.ndarray) -> tuple[np.ndarray, str]:
    i_str = " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}"
    lines: list[str] = []

    def one(ap: int, iou_thr: float | None = None, area: str = "all", max_dets: int = 100) -> float:
        title = "Average Precision" if ap == 1 else "Average Recall"
        typ = "(AP)" if ap == 1 else "(AR)"
        iou_s = (
            f"{IOU_THRESHOLDS[0]:0.2f}:{IOU_THRESHOLDS[-1]:0.2f}" if iou_thr is None else f"{iou_thr:0.2f}"
        )
        aind = [i for i, lbl in enumerate(AREA_LABELS) if lbl == area]
        mind = [i for i, m in enumerate(MAX_DETS) if m == max_dets]
        s = precision if ap == 1 else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRESHOLDS)[0]]
        s = s[:, :, :, aind, mind] if ap == 1 else s[:, :, aind, mind]
        mean = -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))
        lines.append(i_str.format(title, typ, iou_s, area, max_dets, mean))
        return mean

    m = MAX_DETS
    stats = np.array(
        [
            one(1),
            one(1, iou_thr=0.5, max_dets=m[2]),
            one(1, iou_thr=0.75, max_dets=m[2]),
            one(1, area="small", max_dets=m[2]),
            one(1, area="medium", max_dets=m[2]),
            one(1, area="large", max_dets=m[2]),
            one(0, max_dets=m[0]),
            one(0, max_dets=m[1]),
            one(0, max_dets=m[2]),
            one(0, area="small", max_dets=m[2]),
            one(0, area="medium", max_dets=m[2]),
            one(0, area="large", max_dets=m[2]),
        ]
    )
    return stats, "\n".join(lines)


def _mean_valid(x: np.ndarray) -> float:
    v = x[x > -1]
    return float(np.mean(v)) if v.size else -1.0


# ----------------------------------------------------------------------------------- evaluate
def _group_bounds(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique keys, start and count of each run in a sorted key array."""
    if len(keys) == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    change = np.flatnonzero(np.diff(keys)) + 1
    start = np.concatenate([[0], change]).astype(np.int64)
    count = np.diff(np.concatenate([start, [len(keys)]])).astype(np.int64)
    return keys[start], start, count


def _mask_iou_table(
    dm: RLEArray,
    gm: RLEArray,
    g_crowd: np.ndarray,
    n: int,
    dst: np.ndarray,
    dcnt: np.ndarray,
    gst: np.ndarray,
    gcnt: np.ndarray,
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Mask IoU of every (detection, ground truth) pair of the groups, as a ``pair_iou`` lookup.

    ``dm`` / ``gm`` hold the masks of the chunk's detection / ground-truth rows. The IoUs of
    detection row ``d`` are ``table[row_start[d] : row_start[d] + gcnt]`` (the group's gts in order).
    """
    rep = np.repeat(np.arange(len(dst)), dcnt)
    det = np.repeat(dst, dcnt) + (np.arange(len(rep)) - np.repeat(np.cumsum(dcnt) - dcnt, dcnt))
    per = gcnt[rep]
    row_start = np.zeros(n, dtype=np.int64)
    row_start[det] = np.cumsum(per) - per
    g_first = np.zeros(n, dtype=np.int64)
    g_first[det] = gst[rep]
    total = int(per.sum())
    table = np.empty(total, dtype=np.float64)
    step = 2_000_000
    for r0 in range(0, len(det), max(1, step // max(int(gcnt.max(initial=1)), 1))):
        r1 = min(len(det), r0 + max(1, step // max(int(gcnt.max(initial=1)), 1)))
        pr = per[r0:r1]
        pd = np.repeat(det[r0:r1], pr)
        pg = np.repeat(g_first[det[r0:r1]], pr) + (np.arange(len(pd)) - np.repeat(np.cumsum(pr) - pr, pr))
        lo = int(row_start[det[r0]])
        table[lo : lo + len(pd)] = mask_pair_iou(dm, gm, g_crowd, pd, pg)

    def lookup(d: np.ndarray, gidx: np.ndarray) -> np.ndarray:
        col = np.maximum(gidx - g_first[d][:, None], 0)
        return table[np.minimum(row_start[d][:, None] + col, max(total - 1, 0))]

    return lookup


def _evaluate(gt: GroundTruth, dt: Detections, show_progress: bool = False, iou_type: str = "bbox") -> CocoResult:
    T, R, A, M = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(AREA_RANGES), len(MAX_DETS)
    max_det = MAX_DETS[-1]
    n_img = gt.num_images
    cat_ids = np.asarray(gt.class_ids, dtype=np.int64)
    k_order = np.argsort(cat_ids, kind="stable")  # K axis -> label
    K = len(cat_ids)
    k_of_label = np.empty(K, dtype=np.int64)
    k_of_label[k_order] = np.arange(K)
    img_rank = np.empty(n_img, dtype=np.int64)  # image position -> rank among sorted image ids
    img_rank[np.argsort(gt.image_ids, kind="stable")] = np.arange(n_img)

    # Ground truth sorted by (category, image rank, input order).
    gk_all = k_of_label[gt.labels]
    gi_all = img_rank[gt.img]
    g_order = np.lexsort((np.arange(len(gk_all)), gi_all, gk_all))
    gk, gi = gk_all[g_order], gi_all[g_order]
    g_xywh = gt.xywh[g_order]
    g_crowd = gt.iscrowd[g_order]
    g_area = gt.area[g_order]
    lo, hi = AREA_RANGES[:, 0], AREA_RANGES[:, 1]
    g_ignore = g_crowd[:, None] | (g_area[:, None] < lo) | (g_area[:, None] > hi)  # [G, A]
    npig_all = np.zeros((K, A), dtype=np.int64)
    for a in range(A):
        npig_all[:, a] = np.bincount(gk[~g_ignore[:, a]], minlength=K)

    # Detections sorted by (category, image rank, -score, input order); keep the top max_det.
    dk_all = k_of_label[dt.labels]
    di_all = img_rank[dt.img]
    d_order = np.lexsort((np.arange(len(dt)), -dt.scores, di_all, dk_all))
    dkey_sorted = dk_all[d_order] * n_img + di_all[d_order]
    _, s0, c0 = _group_bounds(dkey_sorted)
    rank = np.arange(len(d_order)) - np.repeat(s0, c0)
    d_order = d_order[rank < max_det]
    rank = rank[rank < max_det]
    dk, di = dk_all[d_order], di_all[d_order]
    d_xywh = dt.xywh[d_order]
    d_score = dt.scores[d_order]
    segm = iou_type == "segm"
    if segm:
        assert gt.masks is not None and dt.masks is not None and dt.area is not None
        g_masks = gt.masks.take(g_order)
        d_masks = dt.masks.take(d_order)
        d_area = dt.area[d_order]
    else:
        d_area = d_xywh[:, 2] * d_xywh[:, 3]
    d_out = (d_area[:, None] < lo) | (d_area[:, None] > hi)  # [N, A]

    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    scores = -np.ones((T, R, K, A, M))
    thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)

    # Chunks of categories holding at most _CHUNK_DETS detections (at least one category each).
    d_cat_start = np.searchsorted(dk, np.arange(K + 1))
    g_cat_start = np.searchsorted(gk, np.arange(K + 1))
    chunks: list[tuple[int, int]] = []
    k0 = 0
    while k0 < K:
        k1 = k0 + 1
        while k1 < K and d_cat_start[k1 + 1] - d_cat_start[k0] <= _CHUNK_DETS:
            k1 += 1
        chunks.append((k0, k1))
        k0 = k1
    iterator: Any = chunks
    if show_progress and len(chunks) > 1:
        from tqdm import tqdm

        iterator = tqdm(chunks, desc="coco eval", unit="chunk")

    for k0, k1 in iterator:
        ds_, de_ = int(d_cat_start[k0]), int(d_cat_start[k1])
        gs_, ge_ = int(g_cat_start[k0]), int(g_cat_start[k1])
        n = de_ - ds_
        matched = np.zeros((n, A, T), dtype=bool)
        matched_ig = np.zeros((n, A, T), dtype=bool)
        dkeys = dk[ds_:de_] * n_img + di[ds_:de_]
        gkeys = gk[gs_:ge_] * n_img + gi[gs_:ge_]
        du, dst, dcnt = _group_bounds(dkeys)
        gu, gst, gcnt = _group_bounds(gkeys)
        both, d_sel, g_sel = np.intersect1d(du, gu, assume_unique=True, return_indices=True)
        if len(both):
            if segm:
                pair_iou = _mask_iou_table(
                    d_masks.take(np.arange(ds_, de_)),
                    g_masks.take(np.arange(gs_, ge_)),
                    g_crowd[gs_:ge_],
                    n,
                    dst[d_sel],
                    dcnt[d_sel],
                    gst[g_sel],
                    gcnt[g_sel],
                )
            else:
                pair_iou = _box_pair_iou(d_xywh[ds_:de_], g_xywh[gs_:ge_], g_crowd[gs_:ge_])
            _match_groups(
                pair_iou,
                g_crowd[gs_:ge_],
                g_ignore[gs_:ge_],
                dst[d_sel],
                dcnt[d_sel],
                gst[g_sel],
                gcnt[g_sel],
                thr,
                matched,
                matched_ig,
            )
        ignore = matched_ig | (~matched & d_out[ds_:de_, :, None])
        tps_all = matched & ~ignore
        fps_all = ~matched & ~ignore
        # Global order inside each category: -score, image rank, rank within the image.
        c_rank = rank[ds_:de_]
        c_img = di[ds_:de_]
        c_score = d_score[ds_:de_]
        c_cat = dk[ds_:de_]
        order = np.lexsort((c_rank, c_img, -c_score, c_cat))
        c_cat_sorted = c_cat[order]
        bounds = np.searchsorted(c_cat_sorted, np.arange(k0, k1 + 1))
        for k in range(k0, k1):
            idx = order[bounds[k - k0] : bounds[k - k0 + 1]]
            for mi, md in enumerate(MAX_DETS):
                sel = idx[c_rank[idx] < md]
                p_out = np.full((T, R, A), -1.0)
                r_out = np.full((T, A), -1.0)
                s_out = np.full((T, R, A), -1.0)
                _accumulate_category(
                    tps_all[sel], fps_all[sel], c_score[sel], npig_all[k], p_out, r_out, s_out
                )
                precision[:, :, k, :, mi] = p_out
                recall[:, k, :, mi] = r_out
                scores[:, :, k, :, mi] = s_out

    stats, summary = _summarize(precision, recall)
    names = [
        gt.class_names[int(lbl)] if int(lbl) < len(gt.class_names) else str(cat_ids[lbl]) for lbl in k_order
    ]
    i50 = int(np.flatnonzero(IOU_THRESHOLDS == 0.5)[0])
    i75 = int(np.flatnonzero(IOU_THRESHOLDS == 0.75)[0])
    per_class = {}
    for k, name in enumerate(names):
        p = precision[:, :, k, 0, -1]
        per_class[name] = {"AP": _mean_valid(p), "AP50": _mean_valid(p[i50]), "AP75": _mean_valid(p[i75])}
    return CocoResult(
        stats=stats,
        precision=precision,
        recall=recall,
        scores=scores,
        cat_ids=[int(c) for c in cat_ids[k_order]],
        class_names=names,
        per_class=per_class,
        summary=summary,
        iou_type=iou_type,
    )


IOU_TYPES = ("bbox", "segm")


def evaluate_coco(
    gt: Any,
    predictions: Any,
    *,
    format: str | None = None,
    split: str | None = None,
    show_progress: bool = False,
    iou_type: str = "bbox",
) -> CocoResult:
    """COCO bbox or segm evaluation of ``predictions`` against ``gt``, identical to pycocotools.

    ``gt``: an :class:`~odkit.data.AnnotationSet` or a dataset path (``format`` / ``split`` go to
    ``load_dataset``). ``predictions``: list of prediction dicts (xyxy pixels in original image
    coordinates, contiguous labels; one per gt image in order, or each with ``"image_id"``), a COCO
    results list or a COCO results json path (xywh, original ids). Every image of ``gt`` is
    evaluated, including images without ground truth. Raises ``DataError`` on malformed input.

    ``iou_type="segm"``: mask IoU (``iouType="segm"``); the ground truth needs segmentations (a
    COCO json, or a set with masks), the predictions masks (results ``segmentation``, prediction
    dicts ``"masks"``; see :func:`~odkit.eval.inputs.load_detections`). Ground-truth areas are the
    ``area`` field (the mask area where absent); a result's area is its box's ``w * h`` when the
    results carry boxes, else its mask area, as pycocotools' ``loadRes``.
    """
    if iou_type not in IOU_TYPES:
        from odkit.errors import ConfigError

        raise ConfigError(f"iou_type must be one of {', '.join(IOU_TYPES)}, got {iou_type!r}")
    segm = iou_type == "segm"
    g = load_ground_truth(gt, format=format, split=split, masks=segm)
    d = load_detections(predictions, g, masks=segm)
    return _evaluate(g, d, show_progress=show_progress, iou_type=iou_type)
