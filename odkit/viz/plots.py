"""Training plots written to ``runs/<name>/plots/``: loss / mAP curves and label statistics
(PR curves and the confusion matrix come from :mod:`odkit.eval.curves`). Matplotlib, Agg backend."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def read_metrics_csv(path: str | Path) -> dict[str, list[float]]:
    """Columns of ``metrics.csv`` as float lists (empty cells become NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            try:
                val = float(v) if v not in ("", None) else float("nan")
            except ValueError:
                val = float("nan")
            cols.setdefault(k, []).append(val)
    return cols


def plot_training_curves(metrics_csv: str | Path, out_dir: str | Path) -> list[Path]:
    """``loss.png`` (every ``train/*`` column and lr against epoch) and ``map.png``
    (mAP50-95 and mAP50 against epoch) from ``metrics.csv``. Returns the written paths."""
    plt = _plt()
    cols = read_metrics_csv(metrics_csv)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not cols.get("epoch"):
        return []
    ep = np.asarray(cols["epoch"])
    written = []
    losses = [k for k in cols if k.startswith("train/loss")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for k in losses:
        axes[0].plot(ep, cols[k], label=k.split("/", 1)[1], marker=".")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    axes[0].set_title("training losses")
    if losses:
        axes[0].legend(fontsize=8)
    if "lr" in cols:
        axes[1].plot(ep, cols["lr"], marker=".")
    axes[1].set_xlabel("epoch")
    axes[1].set_title("learning rate (end of epoch)")
    fig.tight_layout()
    p = out_dir / "loss.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    written.append(p)

    fig, ax = plt.subplots(figsize=(6, 4))
    for k in ("mAP50-95", "mAP50"):
        if k in cols:
            y = np.asarray(cols[k])
            ok = ~np.isnan(y)
            ax.plot(ep[ok], y[ok], label=k, marker="o")
    ax.set_xlabel("epoch")
    ax.set_ylim(0, 1)
    ax.set_title("validation mAP (EMA weights)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    p = out_dir / "map.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    written.append(p)
    return written


def plot_label_stats(aset: Any, out_png: str | Path) -> Path:
    """Label statistics of an ``AnnotationSet``: boxes per class, boxes per image, box centres
    (relative to the image size) and box width/height (pixels, log scale)."""
    plt = _plt()
    labels = np.asarray(aset.labels)
    boxes = np.asarray(aset.boxes, dtype=np.float64).reshape(-1, 4)
    img = aset.image_index()
    w_img = np.maximum(np.asarray(aset.widths, dtype=np.float64)[img], 1)
    h_img = np.maximum(np.asarray(aset.heights, dtype=np.float64)[img], 1)
    names = list(aset.class_names)
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    counts = np.bincount(labels[labels >= 0], minlength=len(names))
    axes[0, 0].bar(range(len(names)), counts)
    axes[0, 0].set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axes[0, 0].set_title(f"boxes per class ({len(labels)} boxes)")
    per_img = np.diff(np.asarray(aset.offsets))
    axes[0, 1].hist(per_img, bins=np.arange(per_img.max(initial=0) + 2) - 0.5)
    axes[0, 1].set_title(f"boxes per image ({len(per_img)} images)")
    if len(boxes):
        cx = (boxes[:, 0] + boxes[:, 2]) / 2 / w_img
        cy = (boxes[:, 1] + boxes[:, 3]) / 2 / h_img
        axes[1, 0].scatter(cx, cy, s=3, alpha=0.4, c=labels, cmap="tab10")
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        ok = (bw > 0) & (bh > 0)
        axes[1, 1].scatter(bw[ok], bh[ok], s=3, alpha=0.4, c=labels[ok], cmap="tab10")
        axes[1, 1].set_xscale("log")
        axes[1, 1].set_yscale("log")
    axes[1, 0].set_xlim(0, 1)
    axes[1, 0].set_ylim(1, 0)
    axes[1, 0].set_title("box centres (fraction of image)")
    axes[1, 1].set_title("box width x height (pixels)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return Path(out_png)


def plot_tide_errors(main: dict[str, float], special: dict[str, float], out_png: str | Path,
                     title: str = "TIDE errors") -> Path:
    """Horizontal bars of the TIDE dAPs (AP points): ``main`` (the six error types) beside
    ``special`` (false positives, false negatives)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), gridspec_kw={"width_ratios": [3, 2]})
    for ax, vals, color, name in ((axes[0], main, "#c0392b", "main errors"),
                                  (axes[1], special, "#2c3e50", "special errors")):
        keys = list(vals)[::-1]
        ax.barh(keys, [vals[k] for k in keys], color=color)
        for y, k in enumerate(keys):
            ax.text(vals[k], y, f" {vals[k]:.2f}", va="center", fontsize=8)
        ax.set_xlabel("dAP (AP points gained by fixing)")
        ax.set_title(name)
        ax.set_xlim(0, max([1.0, *vals.values()]) * 1.2)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
