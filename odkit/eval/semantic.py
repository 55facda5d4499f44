"""Mean IoU of semantic masks, from a pixel confusion matrix.

Label maps are integer ``[H, W]`` arrays (numpy or torch) of class indices ``0..C-1``; pixels whose
ground truth is ``ignore_index`` (or outside ``0..C-1``) are left out. The confusion matrix ``cm``
``[C, C]`` counts pixels by (ground truth row, prediction column). Per class ``c``:
``TP = cm[c, c]``, ``FP = cm[:, c].sum() - TP``, ``FN = cm[c, :].sum() - TP`` and
``IoU = TP / (TP + FP + FN)``; the mean IoU averages the classes present (``TP + FP + FN > 0``:
in the ground truth or in the prediction), the others are NaN.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SemanticResult", "semantic_confusion", "iou_from_confusion", "mean_iou"]


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def semantic_confusion(gt: Any, pred: Any, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """Pixel confusion matrix ``[C, C]`` int64 (rows ground truth, columns prediction) of one pair of
    label maps of the same shape. A prediction outside ``0..C-1`` is a ValueError."""
    g, p = _np(gt).reshape(-1), _np(pred).reshape(-1)
    if g.shape != p.shape:
        raise ValueError(f"ground truth and prediction differ in size: {_np(gt).shape} vs {_np(pred).shape}")
    if int(num_classes) <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    c = int(num_classes)
    keep = (g >= 0) & (g < c)
    if ignore_index is not None:
        keep &= g != ignore_index
    g, p = g[keep].astype(np.int64), p[keep].astype(np.int64)
    if len(p) and (p.min() < 0 or p.max() >= c):
        raise ValueError(f"prediction holds class {int(p.min() if p.min() < 0 else p.max())}, outside 0..{c - 1}")
    return np.bincount(g * c + p, minlength=c * c).reshape(c, c)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU ``TP / (TP + FP + FN)`` ``[C]`` float64 of a confusion matrix (NaN for a class
    in neither the ground truth nor the prediction)."""
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square [C, C], got shape {list(cm.shape)}")
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1), np.nan)


@dataclass
class SemanticResult:
    """``miou`` (mean over the classes present; NaN when none is), ``iou`` per class (NaN where
    absent), ``confusion`` ``[C, C]`` (ground truth rows) and ``pixel_accuracy`` (counted pixels
    labelled right)."""

    miou: float
    iou: np.ndarray
    confusion: np.ndarray
    pixel_accuracy: float

    def per_class(self, names: list[str] | None = None) -> dict[str, float]:
        """IoU by class name (index as name when ``names`` is not given)."""
        names = names or [str(k) for k in range(len(self.iou))]
        return {n: float(v) for n, v in zip(names, self.iou)}


def mean_iou(
    pairs: Iterable[tuple[Any, Any]], num_classes: int, ignore_index: int | None = 255
) -> SemanticResult:
    """Mean IoU over ``(ground truth, prediction)`` label-map pairs: one confusion matrix summed
    over every pixel of every pair, then :func:`iou_from_confusion`."""
    c = int(num_classes)
    cm = np.zeros((c, c), dtype=np.int64)
    for g, p in pairs:
        cm += semantic_confusion(g, p, c, ignore_index)
    iou = iou_from_confusion(cm)
    present = ~np.isnan(iou)
    miou = float(iou[present].mean()) if present.any() else float("nan")
    total = cm.sum()
    acc = float(np.trace(cm) / total) if total else float("nan")
    return SemanticResult(miou=miou, iou=iou, confusion=cm, pixel_accuracy=acc)
