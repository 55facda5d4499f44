"""Dataset statistics: class counts, boxes per image, box sizes (COCO small/medium/large), aspect ratios.

All sizes are in pixels of the annotated image; a box's area is ``w * h`` of its ``xyxy`` box
(not the COCO ``area`` field, which may be a segmentation area). Size buckets follow the COCO
thresholds: small ``area < 32**2``, medium ``32**2 <= area <= 96**2``, large ``area > 96**2``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from odkit.data.structures import AnnotationSet
from odkit.errors import DataError

log = logging.getLogger(__name__)

SMALL_AREA = 32.0**2
LARGE_AREA = 96.0**2


@dataclass
class DatasetStats:
    """Statistics of one :class:`AnnotationSet` (counts over every annotation, crowd included).

    ``boxes_per_class`` / ``images_per_class``: [C] int64 (index = label); annotations whose
    class is unknown (label -1) are counted in ``unknown_boxes`` only. ``boxes_per_image``:
    [num_images] int64. ``box_areas`` (``w * h`` pixels), ``box_widths``, ``box_heights``,
    ``aspect_ratios`` (``w / h``, NaN for a box with zero height): [num_boxes] float64 in
    annotation order. ``size_counts``: COCO small / medium / large box counts.
    ``degenerate_boxes``: boxes with ``w <= 0`` or ``h <= 0``.
    """

    class_names: list[str]
    num_images: int
    num_boxes: int
    boxes_per_class: np.ndarray
    images_per_class: np.ndarray
    unknown_boxes: int
    crowd_boxes: int
    boxes_per_image: np.ndarray
    box_areas: np.ndarray
    box_widths: np.ndarray
    box_heights: np.ndarray
    aspect_ratios: np.ndarray
    size_counts: dict[str, int]
    degenerate_boxes: int
    image_widths: np.ndarray
    image_heights: np.ndarray
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def negatives(self) -> int:
        """Number of images without any annotation."""
        return int((self.boxes_per_image == 0).sum())

    def boxes_per_image_histogram(self) -> np.ndarray:
        """``h[k]`` = number of images with exactly ``k`` boxes, for ``k = 0..max``."""
        if self.num_images == 0:
            return np.zeros(1, dtype=np.int64)
        return np.bincount(self.boxes_per_image, minlength=1).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (no per-box arrays)."""
        bpi = self.boxes_per_image
        valid_ar = self.aspect_ratios[np.isfinite(self.aspect_ratios) & (self.aspect_ratios > 0)]
        return {
            "name": self.name,
            "num_images": self.num_images,
            "num_boxes": self.num_boxes,
            "negatives": self.negatives,
            "classes": {
                n: {"boxes": int(b), "images": int(i)}
                for n, b, i in zip(self.class_names, self.boxes_per_class, self.images_per_class)
            },
            "unknown_boxes": self.unknown_boxes,
            "crowd_boxes": self.crowd_boxes,
            "degenerate_boxes": self.degenerate_boxes,
            "boxes_per_image": {
                "min": int(bpi.min()) if len(bpi) else 0,
                "mean": float(bpi.mean()) if len(bpi) else 0.0,
                "max": int(bpi.max()) if len(bpi) else 0,
                "histogram": self.boxes_per_image_histogram().tolist(),
            },
            "sizes": dict(self.size_counts),
            "aspect_ratio_percentiles": (
                dict(zip(["p5", "p50", "p95"], np.percentile(valid_ar, [5, 50, 95]).tolist()))
                if len(valid_ar)
                else {}
            ),
        }


def compute_stats(aset: AnnotationSet, name: str = "") -> DatasetStats:
    """Compute :class:`DatasetStats` of ``aset`` from its annotations (no image is read)."""
    c = aset.num_classes
    labels = aset.labels
    img = aset.image_index()
    known = (labels >= 0) & (labels < c)
    boxes_per_class = np.bincount(labels[known], minlength=c).astype(np.int64)
    images_per_class = np.zeros(c, dtype=np.int64)
    if known.any():
        pairs = np.unique(img[known] * max(c, 1) + labels[known])
        images_per_class = np.bincount(pairs % max(c, 1), minlength=c).astype(np.int64)
    b = aset.boxes.astype(np.float64)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    area = w * h
    degenerate = (w <= 0) | (h <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ar = np.where(h > 0, w / np.where(h > 0, h, 1.0), np.nan)
    valid_area = np.where(degenerate, 0.0, area)
    sizes = {
        "small": int((valid_area < SMALL_AREA).sum()),
        "medium": int(((valid_area >= SMALL_AREA) & (valid_area <= LARGE_AREA)).sum()),
        "large": int((valid_area > LARGE_AREA).sum()),
    }
    return DatasetStats(
        class_names=list(aset.class_names),
        num_images=len(aset),
        num_boxes=aset.num_annotations,
        boxes_per_class=boxes_per_class,
        images_per_class=images_per_class,
        unknown_boxes=int((~known).sum()),
        crowd_boxes=int(aset.iscrowd.sum()),
        boxes_per_image=np.diff(aset.offsets).astype(np.int64),
        box_areas=area,
        box_widths=w,
        box_heights=h,
        aspect_ratios=ar,
        size_counts=sizes,
        degenerate_boxes=int(degenerate.sum()),
        image_widths=aset.widths.astype(np.int64).copy(),
        image_heights=aset.heights.astype(np.int64).copy(),
        name=name,
    )


def letterbox_wh(aset: AnnotationSet, img: int) -> np.ndarray:
    """``(w, h)`` ``[N, 2]`` float64 pixels of every non-crowd box of ``aset`` scaled as the letterbox
    resize to ``img`` scales it (``img / max(image w, h)``); what ``odkit anchors`` and
    ``odkit train --anchors auto`` cluster. An image whose size the annotations lack is read for it
    (``DataError`` naming the file when it cannot be)."""
    import cv2

    widths = aset.widths.astype(np.float64).copy()
    heights = aset.heights.astype(np.float64).copy()
    counts = np.diff(aset.offsets)
    for i in np.nonzero(((widths <= 0) | (heights <= 0)) & (counts > 0))[0]:
        path = aset.path(int(i))
        im = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if im is None:
            raise DataError(f"{path}: image size unknown in the annotations and the image cannot be read")
        heights[i], widths[i] = im.shape[:2]
    ratio = img / np.maximum(widths, heights).clip(min=1)
    per_box = np.repeat(ratio, counts)
    b = aset.boxes.astype(np.float64)
    wh = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1) * per_box[:, None]
    keep = ~aset.iscrowd.astype(bool)
    if (~keep).any():
        log.info("anchors: %d crowd boxes not used", int((~keep).sum()))
    return wh[keep]


def format_stats(stats: DatasetStats) -> str:
    """A plain-text table of ``stats`` for the terminal."""
    d = stats.to_dict()
    lines = []
    title = f"{stats.name}: " if stats.name else ""
    lines.append(
        f"{title}{stats.num_images} images, {stats.num_boxes} boxes, {len(stats.class_names)} classes"
    )
    wn = max([len("class")] + [len(n) for n in stats.class_names] + [len("(unknown)")])
    lines.append(f"  {'class':<{wn}}  {'boxes':>8}  {'images':>8}")
    for n, bc, ic in zip(stats.class_names, stats.boxes_per_class, stats.images_per_class):
        lines.append(f"  {n:<{wn}}  {int(bc):>8d}  {int(ic):>8d}")
    if stats.unknown_boxes:
        lines.append(f"  {'(unknown)':<{wn}}  {stats.unknown_boxes:>8d}  {'':>8}")
    bpi = d["boxes_per_image"]
    lines.append(f"boxes per image: min {bpi['min']}, mean {bpi['mean']:.2f}, max {bpi['max']}")
    hist = bpi["histogram"]
    lines.append("  histogram (boxes: images): " + ", ".join(f"{k}: {v}" for k, v in enumerate(hist) if v))
    s = stats.size_counts
    tot = max(stats.num_boxes, 1)
    lines.append(
        "box sizes (COCO area, px): "
        f"small (<32^2) {s['small']} ({100 * s['small'] / tot:.1f}%), "
        f"medium {s['medium']} ({100 * s['medium'] / tot:.1f}%), "
        f"large (>96^2) {s['large']} ({100 * s['large'] / tot:.1f}%)"
    )
    if stats.num_boxes:
        w, h = stats.box_widths, stats.box_heights
        lines.append(
            f"box width px: min {w.min():.1f}, median {np.median(w):.1f}, max {w.max():.1f}; "
            f"height px: min {h.min():.1f}, median {np.median(h):.1f}, max {h.max():.1f}"
        )
    ar = d["aspect_ratio_percentiles"]
    if ar:
        lines.append(f"aspect ratio w/h: p5 {ar['p5']:.2f}, median {ar['p50']:.2f}, p95 {ar['p95']:.2f}")
    if stats.num_images:
        iw, ih = stats.image_widths, stats.image_heights
        lines.append(f"image size px: width {iw.min()}..{iw.max()}, height {ih.min()}..{ih.max()}")
    lines.append(f"negatives (images without boxes): {stats.negatives}")
    if stats.crowd_boxes:
        lines.append(f"crowd boxes: {stats.crowd_boxes}")
    if stats.degenerate_boxes:
        lines.append(f"degenerate boxes (w or h <= 0): {stats.degenerate_boxes}")
    return "\n".join(lines)


def plot_stats(stats: DatasetStats, out_png: str | Path) -> Path:
    """Write a 2x2 panel PNG: boxes per class, boxes per image, box size (sqrt area), aspect ratio."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(11, 8))
    FigureCanvasAgg(fig)  # Agg backend, no pyplot global state
    axes = fig.subplots(2, 2)
    ax = axes[0, 0]
    x = np.arange(len(stats.class_names))
    ax.bar(x - 0.2, stats.boxes_per_class, width=0.4, label="boxes")
    ax.bar(x + 0.2, stats.images_per_class, width=0.4, label="images")
    ax.set_xticks(
        x, stats.class_names, rotation=30 if len(x) > 6 else 0, ha="right" if len(x) > 6 else "center"
    )
    ax.set_title("boxes and images per class")
    ax.legend()

    ax = axes[0, 1]
    hist = stats.boxes_per_image_histogram()
    ax.bar(np.arange(len(hist)), hist, width=0.9)
    ax.set_xlabel("boxes in image")
    ax.set_ylabel("images")
    ax.set_title(f"boxes per image (mean {stats.boxes_per_image.mean() if stats.num_images else 0:.2f})")

    ax = axes[1, 0]
    ok = (stats.box_widths > 0) & (stats.box_heights > 0)
    side = np.sqrt(stats.box_areas[ok])
    if len(side):
        lo, hi = max(side.min(), 1.0), max(side.max(), 2.0)
        bins = np.geomspace(lo, hi * 1.001, 40) if hi > lo else 10
        ax.hist(side, bins=bins)
        ax.set_xscale("log")
        ticks = [
            t for t in (4, 8, 16, 32, 64, 96, 128, 256, 512, 1024, 2048, 4096) if lo / 1.5 <= t <= hi * 1.5
        ]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    for t in (32, 96):
        ax.axvline(t, color="k", linestyle="--", linewidth=1)
    s = stats.size_counts
    ax.set_title(f"box size: small {s['small']}, medium {s['medium']}, large {s['large']}")
    ax.set_xlabel("sqrt(box area) px")
    ax.set_ylabel("boxes")

    ax = axes[1, 1]
    ar = stats.aspect_ratios[np.isfinite(stats.aspect_ratios) & (stats.aspect_ratios > 0)]
    if len(ar):
        la = np.log2(ar)
        lo, hi = la.min(), la.max()
        ax.hist(la, bins=np.linspace(lo - 0.05, hi + 0.05, 40))
    ax.set_xlabel("log2(w / h)")
    ax.set_ylabel("boxes")
    ax.set_title("aspect ratio")
    fig.suptitle(
        f"{stats.name + ': ' if stats.name else ''}{stats.num_images} images, {stats.num_boxes} boxes, "
        f"{stats.negatives} negatives"
    )
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=100)
    except OSError as e:
        raise DataError(f"cannot write stats plot {out}: {e}") from e
    log.debug("stats plot -> %s", out)
    return out
