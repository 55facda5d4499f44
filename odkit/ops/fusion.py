"""Merging overlapping detections: greedy non-maximum merging (SAHI's), NMS with an IoU or
intersection-over-smaller match, and the box fusion methods of ensembles (weighted box fusion,
soft-NMS and non-maximum weighted, as the ensemble-boxes package computes them).

Boxes are xyxy in any consistent unit (pixels here; the results do not depend on the scale, so
normalised boxes work too). Inputs are tensors or arrays; outputs are tensors
``(boxes [K, 4] float32, scores [K] float32, labels [K] int64)`` ordered by decreasing score, or
int64 indices. The fusion methods take one group of detections per source (a model of an ensemble,
an augmentation of test-time augmentation); a single source is a list of one.

All methods are class-aware: only boxes of one label are compared.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from odkit.errors import ConfigError

__all__ = ["MATCH_METRICS", "greedy_nmm", "match_matrix", "match_nms", "non_maximum_weighted",
           "soft_nms_fusion", "weighted_boxes_fusion"]

MATCH_METRICS = ("iou", "ios")
Detections = tuple[Tensor, Tensor, Tensor]


def _np(x: Any, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _inputs(boxes: Any, scores: Any, labels: Any, fn: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = _np(boxes).reshape(-1, 4) if np.size(_np(boxes)) == 0 else _np(boxes)
    s, lab = _np(scores), _np(labels, np.int64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ConfigError(f"{fn}: boxes must have shape [N, 4], got {tuple(b.shape)}")
    if s.shape != (b.shape[0],) or lab.shape != (b.shape[0],):
        raise ConfigError(f"{fn}: scores and labels must have shape [{b.shape[0]}], got {s.shape} and {lab.shape}")
    return b, s, lab


def _out(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> Detections:
    order = np.argsort(-scores, kind="stable")
    return (torch.from_numpy(np.ascontiguousarray(boxes.reshape(-1, 4)[order], dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(scores[order], dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(labels[order], dtype=np.int64)))


def _check_metric(match: str, fn: str) -> str:
    m = str(match).lower()
    if m not in MATCH_METRICS:
        raise ConfigError(f"{fn}: match must be one of {', '.join(MATCH_METRICS)}, got {match!r}")
    return m


def _area(b: np.ndarray) -> np.ndarray:
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def _ratio(inter: np.ndarray, denom: np.ndarray) -> np.ndarray:
    return np.divide(inter, denom, out=np.zeros(np.broadcast(inter, denom).shape), where=denom > 0)


def _match_rows(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """IoU or intersection-over-smaller of every box of ``a`` [N, 4] with every box of ``b`` [M, 4]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    aa, ab = _area(a)[:, None], _area(b)[None, :]
    return _ratio(inter, aa + ab - inter) if metric == "iou" else _ratio(inter, np.minimum(aa, ab))


def match_matrix(boxes: Any, match: str = "iou") -> Tensor:
    """Pairwise IoU (``"iou"``) or intersection over the smaller box's area (``"ios"``) of boxes
    ``[N, 4]`` (float64 ``[N, N]``; 0 where the denominator is 0)."""
    b = _np(boxes).reshape(-1, 4)
    return torch.from_numpy(_match_rows(b, b, _check_metric(match, "match_matrix")))


def _score_order(b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Decreasing score, equal scores by increasing x1, y1, x2, y2 (SAHI's order)."""
    return np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], -s))


def _per_label(lab: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(lab == c) for c in np.unique(lab)]


def _greedy_groups(sub: np.ndarray, ss: np.ndarray, metric: str, threshold: float) -> Iterator[tuple[int, np.ndarray]]:
    """The greedy pass of SAHI's NMS and greedy NMM over the boxes of one label: by decreasing score
    (ties: increasing x1, y1, x2, y2), each box not yet taken yields ``(box, the untaken later boxes
    whose match with it is >= threshold, in that order)`` and takes them. The match is computed in
    float64 and rounded to float32 as SAHI's matrix is. With a positive threshold a match needs an
    intersection, so only boxes overlapping in x are looked at (boxes sorted by x1): time about
    linear in the number of boxes for small boxes, memory linear."""
    order = _score_order(sub, ss)
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    done = np.zeros(len(sub), bool)
    by_x = np.argsort(sub[:, 0], kind="stable")
    xs = sub[by_x, 0]
    max_w = max(float((sub[:, 2] - sub[:, 0]).max(initial=0.0)), 0.0)
    for i in order:
        if done[i]:
            continue
        done[i] = True
        if threshold > 0:
            c = by_x[np.searchsorted(xs, sub[i, 0] - max_w, "left"): np.searchsorted(xs, sub[i, 2], "right")]
        else:
            c = order
        c = c[~done[c]]
        c = c[np.argsort(rank[c], kind="stable")]
        m = c[_match_rows(sub[i][None], sub[c], metric)[0].astype(np.float32) >= threshold]
        done[m] = True
        yield int(i), m


def match_nms(boxes: Any, scores: Any, labels: Any, match: str = "iou", threshold: float = 0.5) -> Tensor:
    """Class-aware greedy NMS where a box is suppressed by a kept box of its label whose match
    (``"iou"`` or ``"ios"``) with it is ``>= threshold`` (SAHI's NMS). Returns kept indices by
    decreasing score (ties: increasing x1, y1, x2, y2)."""
    b, s, lab = _inputs(boxes, scores, labels, "match_nms")
    metric = _check_metric(match, "match_nms")
    keep = [int(idx[i]) for idx in _per_label(lab) for i, _ in _greedy_groups(b[idx], s[idx], metric, threshold)]
    keep.sort(key=lambda i: -s[i])
    return torch.tensor(keep, dtype=torch.int64)


def greedy_nmm(boxes: Any, scores: Any, labels: Any, match: str = "ios", threshold: float = 0.5) -> Detections:
    """Greedy non-maximum merging, class-aware (SAHI's ``GREEDYNMM`` postprocess).

    Boxes are taken by decreasing score (ties: increasing x1, y1, x2, y2); each box not yet taken
    keeps the later untaken boxes of its label whose match with it (``"iou"``, or ``"ios"``:
    intersection over the smaller area) is ``>= threshold``, then merges them in that order into
    itself while the grown box still matches each one: the merged box is the union (enclosing
    box) and the merged score the maximum. A box taken but no longer matching the grown box is
    dropped (as SAHI does). Suited to boxes cut by slice borders, whose parts overlap little in IoU.
    """
    b, s, lab = _inputs(boxes, scores, labels, "greedy_nmm")
    metric = _check_metric(match, "greedy_nmm")
    ob, os_, ol = [], [], []
    for idx in _per_label(lab):
        sub, ss = b[idx], s[idx]
        for i, merge in _greedy_groups(sub, ss, metric, threshold):
            box, score = sub[i].copy(), float(ss[i])
            for j in merge:
                if _match_rows(box[None], sub[j][None], metric)[0, 0] >= threshold:
                    box = np.concatenate([np.minimum(box[:2], sub[j, :2]), np.maximum(box[2:], sub[j, 2:])])
                    score = max(score, float(ss[j]))
            ob.append(box)
            os_.append(score)
            ol.append(lab[idx[0]])
    return _out(np.array(ob).reshape(-1, 4), np.array(os_), np.array(ol, np.int64))


# ---------------------------------------------------------------------------------------------
# Ensemble fusion (one group of detections per source)
# ---------------------------------------------------------------------------------------------


def _sources(boxes_list: Sequence[Any], scores_list: Sequence[Any], labels_list: Sequence[Any],
             weights: Sequence[float] | None, fn: str) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray]:
    if not (len(boxes_list) == len(scores_list) == len(labels_list)):
        raise ConfigError(f"{fn}: boxes_list, scores_list and labels_list must have one entry per source "
                          f"(got {len(boxes_list)}, {len(scores_list)}, {len(labels_list)})")
    w = np.ones(len(boxes_list)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(boxes_list),):
        raise ConfigError(f"{fn}: weights must have one value per source ({len(boxes_list)}), got {len(w)}")
    if (w <= 0).any():
        raise ConfigError(f"{fn}: weights must be > 0, got {w.tolist()}")
    groups = [_inputs(b, s, lab, fn) for b, s, lab in zip(boxes_list, scores_list, labels_list)]
    return groups, w


def _prefilter(groups: list[tuple[np.ndarray, ...]], w: np.ndarray, skip: float) -> dict[int, np.ndarray]:
    """Per label, rows ``[score * weight, weight, source, x1, y1, x2, y2]`` of the boxes with
    score ``>= skip`` and positive area (corners put in order), by decreasing score."""
    rows: dict[int, list[np.ndarray]] = {}
    for t, (b, s, lab) in enumerate(groups):
        b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], 1)
        ok = (s >= skip) & (_area(b) != 0)
        for c in np.unique(lab[ok]):
            m = ok & (lab == c)
            n = int(m.sum())
            rows.setdefault(int(c), []).append(np.column_stack(
                [s[m] * w[t], np.full(n, w[t]), np.full(n, t), b[m]]))
    return {c: (r := np.concatenate(v))[np.argsort(-r[:, 0], kind="stable")] for c, v in rows.items()}


def _iou_one(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    return _match_rows(boxes.reshape(-1, 4), box[None], "iou")[:, 0]


def _finish(fused: list[tuple[int, float, np.ndarray]]) -> Detections:
    if not fused:
        return _out(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    return _out(np.array([f[2] for f in fused]), np.array([f[1] for f in fused]),
                np.array([f[0] for f in fused], np.int64))


CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


def weighted_boxes_fusion(boxes_list: Sequence[Any], scores_list: Sequence[Any], labels_list: Sequence[Any],
                          weights: Sequence[float] | None = None, iou_thr: float = 0.55, skip_box_thr: float = 0.0,
                          conf_type: str = "avg", allows_overflow: bool = False) -> Detections:
    """Weighted box fusion (Solovyev et al.; ensemble-boxes' ``weighted_boxes_fusion``).

    Per label, boxes of all sources by decreasing ``score * weight`` join the cluster whose fused
    box they overlap most with IoU ``> iou_thr`` (else start one); a cluster's box is the
    score-weighted mean of its boxes. Its score is the mean ``score * weight``, rescaled by
    ``min(sources, boxes) / sum(weights)`` (``conf_type="avg"``; ``"max"``: the largest
    ``score * weight`` / the largest weight; ``"box_and_model_avg"``, ``"absent_model_aware_avg"``
    as ensemble-boxes defines them; ``allows_overflow``: ``boxes / sum(weights)``, may exceed 1).
    """
    if conf_type not in CONF_TYPES:
        raise ConfigError(f"weighted_boxes_fusion: conf_type must be one of {', '.join(CONF_TYPES)}, got {conf_type!r}")
    groups, w = _sources(boxes_list, scores_list, labels_list, weights, "weighted_boxes_fusion")
    fused = []
    for c, rows in _prefilter(groups, w, skip_box_thr).items():
        members: list[list[np.ndarray]] = []
        boxes = np.zeros((0, 4))
        for r in rows:
            iou = _iou_one(boxes, r[3:]) if len(boxes) else np.zeros(0)
            k = int(np.argmax(iou)) if len(iou) else -1
            if k >= 0 and iou[k] > iou_thr:
                members[k].append(r)
                m = np.array(members[k])
                boxes[k] = (m[:, :1] * m[:, 3:]).sum(0) / m[:, 0].sum()
            else:
                members.append([r])
                boxes = np.concatenate([boxes, r[None, 3:]])
        for k, mem in enumerate(members):
            m = np.array(mem)
            n = len(m)
            if conf_type == "max":
                score = m[:, 0].max() / w.max()
            elif conf_type == "box_and_model_avg":
                _, first = np.unique(m[:, 2], return_index=True)
                score = m[:, 0].sum() / m[:, 1].sum() * m[first, 1].sum() / w.sum()
            elif conf_type == "absent_model_aware_avg":
                absent = np.ones(len(w), bool)
                absent[m[:, 2].astype(int)] = False
                score = m[:, 0].sum() / (m[:, 1].sum() + w[absent].sum())
            else:
                score = m[:, 0].mean() * (n if allows_overflow else min(len(w), n)) / w.sum()
            fused.append((c, float(score), boxes[k]))
    return _finish(fused)


def non_maximum_weighted(boxes_list: Sequence[Any], scores_list: Sequence[Any], labels_list: Sequence[Any],
                         weights: Sequence[float] | None = None, iou_thr: float = 0.55,
                         skip_box_thr: float = 0.0) -> Detections:
    """Non-maximum weighted fusion (Zhou et al., CAD; ensemble-boxes' ``non_maximum_weighted``).

    Scores are scaled by ``weight / max(weights)`` (boxes of score ``< skip_box_thr`` before the
    scaling are left out). Per label, by decreasing score, a box joins
    the first-formed cluster whose best (first) box it overlaps most with IoU ``> iou_thr``. A cluster
    keeps its best box's score; its box is the mean of its boxes weighted by
    ``score * IoU(box, best box)``.
    """
    groups, w = _sources(boxes_list, scores_list, labels_list, weights, "non_maximum_weighted")
    fused = []
    for c, rows in _prefilter(groups, w / w.max(), skip_box_thr).items():
        members: list[list[np.ndarray]] = []
        best = np.zeros((0, 4))
        for r in rows:
            iou = _iou_one(best, r[3:]) if len(best) else np.zeros(0)
            k = int(np.argmax(iou)) if len(iou) else -1
            if k >= 0 and iou[k] > iou_thr:
                members[k].append(r)
            else:
                members.append([r])
                best = np.concatenate([best, r[None, 3:]])
        for k, mem in enumerate(members):
            m = np.array(mem)
            wt = m[:, 0] * _iou_one(m[:, 3:], best[k])
            fused.append((c, float(m[0, 0]), (wt[:, None] * m[:, 3:]).sum(0) / wt.sum()))
    return _finish(fused)


SOFT_METHODS = ("linear", "gaussian", "hard")


def soft_nms_fusion(boxes_list: Sequence[Any], scores_list: Sequence[Any], labels_list: Sequence[Any],
                    weights: Sequence[float] | None = None, method: str = "gaussian", iou_thr: float = 0.5,
                    sigma: float = 0.5, thresh: float = 0.001, decayed_scores: bool = False) -> Detections:
    """Soft-NMS over the detections of several sources (ensemble-boxes' ``soft_nms``).

    With ``weights``, scores are scaled by ``weight / sum(weights)``. Per label, all boxes are
    visited by decreasing current score; each visited box decays the later ones by
    ``exp(-iou^2 / sigma)`` (``"gaussian"``), ``1 - iou`` where ``iou > iou_thr`` (``"linear"``) or
    0 where ``iou > iou_thr`` (``"hard"``). Boxes whose decayed score ends ``> thresh`` are kept, with
    their input scores as ensemble-boxes returns them (``decayed_scores=True``: the decayed ones).
    Zero-area boxes are dropped.
    """
    if method not in SOFT_METHODS:
        raise ConfigError(f"soft_nms_fusion: method must be one of {', '.join(SOFT_METHODS)}, got {method!r}")
    groups, w = _sources(boxes_list, scores_list, labels_list, weights, "soft_nms_fusion")
    scale = w / w.sum() if weights is not None else np.ones(len(w))
    b = np.concatenate([g[0] for g in groups]) if groups else np.zeros((0, 4))
    s = np.concatenate([g[1] * scale[t] for t, g in enumerate(groups)]) if groups else np.zeros(0)
    lab = np.concatenate([g[2] for g in groups]) if groups else np.zeros(0, np.int64)
    b = np.concatenate([np.minimum(b[:, :2], b[:, 2:]), np.maximum(b[:, :2], b[:, 2:])], 1)
    ok = _area(b) > 0
    b, s, lab = b[ok], s[ok], lab[ok]
    fused = []
    for idx in _per_label(lab):
        cur = s[idx].copy()
        pos = np.arange(len(idx))  # visiting order, swapped as the reference loop swaps
        for i in range(len(idx)):
            j = i + int(np.argmax(cur[pos[i:]]))
            if cur[pos[i]] < cur[pos[j]]:
                pos[[i, j]] = pos[[j, i]]
            rest = pos[i + 1:]
            if len(rest) == 0:
                break
            ovr = _iou_one(b[idx[rest]], b[idx[pos[i]]])
            if method == "gaussian":
                cur[rest] *= np.exp(-(ovr * ovr) / sigma)
            elif method == "linear":
                cur[rest] *= np.where(ovr > iou_thr, 1 - ovr, 1.0)
            else:
                cur[rest] *= np.where(ovr > iou_thr, 0.0, 1.0)
        for p in pos[cur[pos] > thresh]:
            fused.append((int(lab[idx[p]]), float(cur[p] if decayed_scores else s[idx[p]]), b[idx[p]]))
    return _finish(fused)
