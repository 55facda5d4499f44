"""Previews of a data set as PNG grids with boxes, class names and instance masks (when the set has
them): its images as annotated (:func:`dataset_grid`) and its training samples as the augmentation
pipeline makes them (:func:`augmented_grid`). Drawing is :mod:`odkit.viz.draw`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from odkit.data.masks import rasterize, transform_segms
from odkit.data.structures import AnnotationSet
from odkit.errors import ConfigError, DataError
from odkit.viz.draw import draw_boxes, draw_masks, image_grid

__all__ = ["augmented_grid", "dataset_grid"]

log = logging.getLogger(__name__)


def _fit(
    image: np.ndarray, side: int, background: tuple[int, int, int] = (114, 114, 114)
) -> tuple[np.ndarray, float, int, int]:
    """Letterbox ``image`` into ``side x side``: (canvas, scale, dx, dy)."""
    import cv2

    h, w = image.shape[:2]
    r = side / max(h, w)
    nw, nh = max(1, int(round(w * r))), max(1, int(round(h * r)))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    canvas = np.empty((side, side, 3), np.uint8)
    canvas[:] = np.asarray(background, np.uint8)
    dx, dy = (side - nw) // 2, (side - nh) // 2
    canvas[dy : dy + nh, dx : dx + nw] = resized
    return canvas, r, dx, dy


def dataset_grid(
    aset: AnnotationSet,
    out_png: str | Path,
    n: int = 16,
    seed: int = 0,
    cols: int = 4,
    max_side: int = 320,
) -> Path:
    """Write a PNG grid of ``n`` randomly chosen images (seeded) with their boxes and class names.

    Each image is letterboxed into a ``max_side`` square cell; the grid has ``min(cols, k)``
    columns for the ``k = min(n, len(aset))`` images shown, 4 px padding (see
    :func:`image_grid`). Returns the path written.
    """
    import cv2

    if len(aset) == 0:
        raise DataError(f"dataset_grid: the data set at {aset.root} has no images")
    if n < 1:
        raise ConfigError(f"dataset_grid: n must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(aset), size=min(n, len(aset)), replace=False)
    cells = []
    for i in idx:
        rec = aset[int(i)]
        bgr = cv2.imread(str(rec.path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"dataset_grid: cannot read image {rec.path}")
        canvas, r, dx, dy = _fit(bgr[:, :, ::-1], max_side)
        boxes = rec.boxes.astype(np.float64) * r + np.array([dx, dy, dx, dy])
        if rec.masks is not None:
            canvas = _draw_record_masks(canvas, rec.masks, rec.labels, r, dx, dy, (bgr.shape[0], bgr.shape[1]))
        cells.append(draw_boxes(canvas, boxes, rec.labels, aset.class_names))
    grid = image_grid(cells, cols)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), np.ascontiguousarray(grid[:, :, ::-1])):
        raise DataError(f"dataset_grid: cannot write {out}")
    log.debug("dataset_grid: %d images -> %s", len(cells), out)
    return out


def _draw_record_masks(canvas: np.ndarray, segs: list, labels: np.ndarray, r: float, dx: int, dy: int,
                       hw: tuple[int, int]) -> np.ndarray:
    """The masks of one image (those of its size; None skipped) drawn on its letterboxed canvas."""
    keep = [k for k, g in enumerate(segs) if g is not None and (isinstance(g, list) or tuple(g.size) == hw)]
    if not keep:
        return canvas
    m = np.array([[r, 0.0, dx], [0.0, r, dy]])
    drawn = rasterize(transform_segms([segs[k] for k in keep], m, canvas.shape[:2]), *canvas.shape[:2])
    return draw_masks(canvas, drawn, np.asarray(labels)[keep])


def augmented_grid(
    aset: AnnotationSet,
    out_png: str | Path,
    n: int = 16,
    *,
    img_size: int,
    seed: int = 0,
    cfg=None,
) -> Path:
    """Write a PNG grid of ``n`` training samples of ``aset`` as the training pipeline makes them.

    Samples are drawn (seeded by ``seed``) through :class:`~odkit.data.transforms.TrainAugment`
    (``cfg``: an :class:`~odkit.data.transforms.AugmentConfig`, YOLOX defaults when None; or a ready
    dataset-level pipeline such as ``odkit.engine.data.train_transform(cfg)``) at
    ``img_size`` and drawn with their boxes and class names (and masks, when the set has them and
    the pipeline carries them: not SSD's), ``ceil(sqrt(n))`` per row. Returns the path written.
    """
    from odkit.data.dataset import DetectionDataset
    from odkit.data.imageio import write_image
    from odkit.data.transforms import TrainAugment

    if n < 1:
        raise ConfigError(f"augmented_grid: n must be at least 1, got {n}")
    if len(aset) == 0:
        raise ConfigError(f"augmented_grid: dataset {aset.root} has no images")
    pipeline = cfg if getattr(cfg, "needs_dataset", False) else TrainAugment(cfg)  # a ready pipeline, or a config
    masks = aset.has_masks and bool(getattr(pipeline, "carries_masks", False))
    ds = DetectionDataset(aset, img_size=img_size, transforms=pipeline, seed=seed, masks=masks)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(aset), size=n, replace=n > len(aset))
    tiles = []
    for i in idx:
        img, boxes, labels, meta = ds[(int(i), img_size, 0, True)]
        if masks:
            img = draw_masks(img, rasterize(meta["masks"], *img.shape[:2]), labels)
        tiles.append(draw_boxes(img, boxes, labels, aset.class_names))
    cols = int(np.ceil(np.sqrt(n)))
    grid = image_grid(tiles, cols)
    out = write_image(out_png, grid)
    log.info("wrote %d augmented samples to %s", n, out)
    return out
