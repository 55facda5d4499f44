"""Precision-recall curves and the detection confusion matrix (arrays and PNG plots).

Confusion matrix rule (Ultralytics style, class-agnostic greedy by IoU): detections with
score >= ``score_threshold`` are paired with the non-crowd ground truths of their image whose IoU
(xyxy, no +1) is >= ``iou_threshold``; pairs are sorted by IoU (highest first, stable), each
detection keeps its best pair, then each ground truth keeps its best remaining pair. A kept pair
counts at ``[true class, predicted class]`` (off-diagonal when the classes differ), an unmatched
ground truth at ``[true class, background]`` and an unmatched detection at
``[background, predicted class]``. Rows are true classes then background, columns predicted
classes then background; ``[background, background]`` is always 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from odkit.eval.inputs import Detections, GroundTruth, load_detections, load_ground_truth

__all__ = ["confusion_matrix", "plot_confusion_matrix", "pr_curves", "plot_pr_curves"]


def _iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / np.maximum(union, np.finfo(np.float64).eps)


def confusion_matrix(
    gt: GroundTruth | Any,
    predictions: Detections | Any,
    iou_threshold: float = 0.45,
    score_threshold: float = 0.25,
) -> np.ndarray:
    """Counts ``[C+1, C+1]`` int64: rows true class + background, columns predicted + background."""
    g = load_ground_truth(gt)
    d = load_detections(predictions, g)
    C = g.num_classes
    mat = np.zeros((C + 1, C + 1), dtype=np.int64)
    keep_g = ~g.iscrowd
    g_img, g_lab, g_box = g.img[keep_g], g.labels[keep_g], g.xyxy[keep_g]
    keep_d = d.scores >= score_threshold
    d_img, d_lab, d_box = d.img[keep_d], d.labels[keep_d], d.xyxy[keep_d]
    # All (gt, det) pairs in the same image.
    g_order = np.argsort(g_img, kind="stable")
    gi_s = g_img[g_order]
    lo = np.searchsorted(gi_s, d_img, side="left")
    cnt = np.searchsorted(gi_s, d_img, side="right") - lo
    d_rep = np.repeat(np.arange(len(d_img)), cnt)
    within = np.arange(len(d_rep)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    g_rep = g_order[np.repeat(lo, cnt) + within]
    iou = _iou_xyxy(d_box[d_rep], g_box[g_rep]) if len(d_rep) else np.zeros(0)
    ok = iou >= iou_threshold
    d_rep, g_rep, iou = d_rep[ok], g_rep[ok], iou[ok]
    o = np.argsort(-iou, kind="stable")
    d_rep, g_rep = d_rep[o], g_rep[o]
    _, first_d = np.unique(d_rep, return_index=True)
    first_d = np.sort(first_d)
    d_rep, g_rep = d_rep[first_d], g_rep[first_d]
    _, first_g = np.unique(g_rep, return_index=True)
    d_m, g_m = d_rep[first_g], g_rep[first_g]
    np.add.at(mat, (g_lab[g_m], d_lab[d_m]), 1)
    g_free = np.ones(len(g_lab), dtype=bool)
    g_free[g_m] = False
    d_free = np.ones(len(d_lab), dtype=bool)
    d_free[d_m] = False
    mat[:C, C] += np.bincount(g_lab[g_free], minlength=C)[:C]
    mat[C, :C] += np.bincount(d_lab[d_free], minlength=C)[:C]
    return mat


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: list[str], path: str | Path, normalize: bool = True
) -> Path:
    """Save the confusion matrix as a PNG (columns normalised to sum 1 when ``normalize``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(class_names) + ["background"]
    m = matrix.astype(np.float64)
    if normalize:
        m = m / np.maximum(m.sum(0, keepdims=True), 1)
    n = len(names)
    size = max(6.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(m, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if n <= 30:
        ax.set_xticks(range(n), names, rotation=90)
        ax.set_yticks(range(n), names)
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    txt = f"{m[i, j]:.2f}" if normalize else str(int(matrix[i, j]))
                    ax.text(
                        j,
                        i,
                        txt,
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if m[i, j] > 0.5 * m.max() else "black",
                    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix" + (" (column-normalised)" if normalize else ""))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def pr_curves(result: Any, iou: float = 0.5) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Per-class (recall, precision) curves of a CocoResult (at ``iou``, area all, 100 dets) or VocResult.

    COCO curves are the interpolated precision at the 101 recall points (classes without ground
    truth are left out); VOC curves are the raw curves over the score-sorted detections.
    """
    names, recs, precs = [], [], []
    if hasattr(result, "precision") and hasattr(result, "recall_thresholds"):
        t = np.flatnonzero(np.isclose(result.iou_thresholds, iou))
        if len(t) == 0:
            raise ValueError(f"IoU {iou} is not one of the COCO thresholds")
        for k, name in enumerate(result.class_names):
            p = result.precision[t[0], :, k, 0, -1]
            if (p > -1).all():
                names.append(name)
                recs.append(result.recall_thresholds)
                precs.append(p)
    else:
        for name, r, p, g in zip(result.class_names, result.recalls, result.precisions, result.num_gts):
            if g > 0:
                names.append(name)
                recs.append(np.concatenate([[0.0], r]))
                precs.append(np.concatenate([[1.0 if len(p) == 0 else p[0]], p]))
    return names, recs, precs


def plot_pr_curves(result: Any, path: str | Path, iou: float = 0.5) -> Path:
    """Save per-class precision-recall curves (one line per class, legend when <= 20) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, recs, precs = pr_curves(result, iou)
    fig, ax = plt.subplots(figsize=(8, 6))
    for name, r, p in zip(names, recs, precs):
        ax.plot(r, p, linewidth=1, label=name if len(names) <= 20 else None)
    if names and hasattr(result, "recall_thresholds"):
        mean = np.mean(np.stack(precs), axis=0)
        ax.plot(recs[0], mean, color="black", linewidth=2.5, label=f"all classes (AP {mean.mean():.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"precision-recall @ IoU {iou:g}")
    if names:
        ax.legend(loc="lower left", fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
