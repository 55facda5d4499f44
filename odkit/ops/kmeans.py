"""K-means anchors with the ``1 - IoU`` distance (YOLOv2), anchor-fit metrics and evolution.

Boxes and anchors here are ``(w, h)`` pairs in pixels; the IoU of two ``(w, h)`` is that of boxes
sharing a centre: ``min(w1, w2) min(h1, h2) / (w1 h1 + w2 h2 - inter)``. Deterministic for a seed
(numpy ``Generator``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from odkit.errors import ConfigError

__all__ = ["AnchorFit", "anchor_metrics", "evolve_anchors", "kmeans_anchors", "wh_iou"]

log = logging.getLogger(__name__)


def wh_iou(wh1: np.ndarray, wh2: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` of centre-aligned boxes given as ``(w, h)`` ``[N, 2]`` and ``[M, 2]``."""
    wh1 = np.asarray(wh1, dtype=np.float64)
    wh2 = np.asarray(wh2, dtype=np.float64)
    inter = np.minimum(wh1[:, None, 0], wh2[None, :, 0]) * np.minimum(wh1[:, None, 1], wh2[None, :, 1])
    union = (wh1[:, 0] * wh1[:, 1])[:, None] + (wh2[:, 0] * wh2[:, 1])[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def _ratio_metric(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``[N, K]``: the worse of ``min(w/aw, aw/w)`` and ``min(h/ah, ah/h)`` (1 = same shape)."""
    r = wh[:, None, :] / anchors[None, :, :]
    return np.minimum(r, 1.0 / r).min(axis=2)


@dataclass
class AnchorFit:
    """How well anchors cover a set of boxes.

    ``bpr``: best possible recall - the fraction of boxes for which some anchor passes the
    threshold (``metric="ratio"``: both ``w`` and ``h`` within a factor ``thr`` of the anchor's,
    the YOLOv5 rule, default ``thr=4``; ``metric="iou"``: centre-aligned IoU ``>= thr``).
    ``mean_best_iou``: mean over boxes of the best centre-aligned IoU with an anchor (the k-means
    objective and the evolution fitness). ``anchors_above``: mean number of anchors per box that
    pass the threshold.
    """

    bpr: float
    mean_best_iou: float
    anchors_above: float
    metric: str
    thr: float


def anchor_metrics(wh: np.ndarray, anchors: np.ndarray, metric: str = "ratio", thr: float | None = None) -> AnchorFit:
    """Coverage metrics of ``anchors`` ``[K, 2]`` for boxes ``wh`` ``[N, 2]`` (see :class:`AnchorFit`)."""
    if metric not in ("ratio", "iou"):
        raise ConfigError(f"anchor metric must be 'ratio' or 'iou', got {metric!r}")
    thr = (4.0 if metric == "ratio" else 0.5) if thr is None else float(thr)
    wh = np.asarray(wh, dtype=np.float64)
    anchors = np.asarray(anchors, dtype=np.float64)
    if len(wh) == 0:
        return AnchorFit(0.0, 0.0, 0.0, metric, thr)
    iou = wh_iou(wh, anchors)
    passed = _ratio_metric(wh, anchors) > 1.0 / thr if metric == "ratio" else iou >= thr
    return AnchorFit(
        bpr=float(passed.any(1).mean()),
        mean_best_iou=float(iou.max(1).mean()),
        anchors_above=float(passed.sum(1).mean()),
        metric=metric,
        thr=thr,
    )


def _fitness(wh: np.ndarray, anchors: np.ndarray) -> float:
    return float(wh_iou(wh, anchors).max(1).mean())


def kmeans_anchors(
    wh: np.ndarray,
    k: int,
    iters: int = 300,
    seed: int = 0,
    center: str = "mean",
) -> np.ndarray:
    """K-means on ``(w, h)`` with distance ``1 - IoU`` -> ``[k, 2]`` anchors sorted by area.

    Initialised with k-means++ (under the same distance); each iteration assigns every box to the
    anchor of highest IoU and moves each anchor to the ``center`` (``"mean"`` or ``"median"``) of
    its boxes, until assignments stop changing or ``iters``. An empty cluster is re-seeded with the
    box worst covered by the current anchors.
    """
    wh = np.asarray(wh, dtype=np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise ConfigError(f"kmeans_anchors: wh must be [N, 2], got {wh.shape}")
    if k < 1:
        raise ConfigError(f"kmeans_anchors: k must be >= 1, got {k}")
    if len(wh) < k:
        raise ConfigError(f"kmeans_anchors: {len(wh)} boxes are fewer than k={k} anchors")
    if (wh <= 0).any():
        raise ConfigError("kmeans_anchors: every box needs a positive width and height")
    if center not in ("mean", "median"):
        raise ConfigError(f"kmeans_anchors: center must be 'mean' or 'median', got {center!r}")
    rng = np.random.default_rng(seed)
    # k-means++ seeding with the 1 - IoU distance
    centers = [wh[rng.integers(len(wh))]]
    d = 1.0 - wh_iou(wh, np.array(centers))[:, 0]
    for _ in range(1, k):
        p = d**2
        s = p.sum()
        i = rng.integers(len(wh)) if s <= 0 else rng.choice(len(wh), p=p / s)
        centers.append(wh[i])
        d = np.minimum(d, 1.0 - wh_iou(wh, wh[i : i + 1])[:, 0])
    anchors = np.array(centers, dtype=np.float64)
    assign = None
    reduce = np.mean if center == "mean" else np.median
    for _ in range(iters):
        iou = wh_iou(wh, anchors)
        new = iou.argmax(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = wh[assign == j]
            if len(members):
                anchors[j] = reduce(members, axis=0)
            else:
                anchors[j] = wh[iou.max(1).argmin()]
    return anchors[np.argsort(anchors.prod(1), kind="stable")]


def evolve_anchors(
    wh: np.ndarray,
    anchors: np.ndarray,
    generations: int = 1000,
    seed: int = 0,
    mutation_prob: float = 0.9,
    sigma: float = 0.1,
) -> tuple[np.ndarray, float]:
    """Genetic refinement: multiplicative mutations of the anchors, kept only when the fitness
    (mean best centre-aligned IoU) improves. Returns ``(anchors sorted by area, fitness)``."""
    rng = np.random.default_rng(seed)
    wh = np.asarray(wh, dtype=np.float64)
    best = np.asarray(anchors, dtype=np.float64).copy()
    best_f = _fitness(wh, best)
    for _ in range(generations):
        v = np.ones_like(best)
        while (v == 1).all():  # make sure something changes
            mask = rng.random(best.shape) < mutation_prob
            v = np.where(mask, rng.standard_normal(best.shape) * sigma * rng.random() + 1.0, 1.0).clip(0.3, 3.0)
        cand = (best * v).clip(min=2.0)
        f = _fitness(wh, cand)
        if f > best_f:
            best, best_f = cand, f
    order = np.argsort(best.prod(1), kind="stable")
    return best[order], best_f
