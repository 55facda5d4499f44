"""Preview of the training pipeline: a PNG grid of augmented samples with their boxes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from odkit.data.structures import AnnotationSet
from odkit.errors import ConfigError

__all__ = ["augmented_grid"]

log = logging.getLogger(__name__)


def _draw_fallback(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, names: list[str]) -> np.ndarray:
    import cv2

    img = image.copy()
    for b, lab in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(labels).reshape(-1)):
        x1, y1, x2, y2 = (int(round(float(v))) for v in b)
        color = tuple(int(c) for c in np.random.default_rng(int(lab) + 1).integers(64, 256, 3))
        cv2.rectangle(img, (x1, y1), (x2, y2), color, 1)
        name = names[lab] if 0 <= lab < len(names) else str(int(lab))
        cv2.putText(img, name, (x1, max(y1 - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, color, 1, cv2.LINE_AA)
    return img


def _grid_fallback(images: list[np.ndarray], cols: int, pad: int = 4) -> np.ndarray:
    rows = -(-len(images) // cols)
    h = max(i.shape[0] for i in images)
    w = max(i.shape[1] for i in images)
    grid = np.full((rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad, 3), 32, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y : y + im.shape[0], x : x + im.shape[1]] = im
    return grid


def augmented_grid(
    aset: AnnotationSet,
    out_png: str | Path,
    n: int = 16,
    img_size: int = 416,
    seed: int = 0,
    cfg=None,
) -> Path:
    """Write a PNG grid of ``n`` training samples of ``aset`` as the training pipeline makes them.

    Samples are drawn (seeded by ``seed``) through :class:`~odkit.data.transforms.TrainAugment`
    (``cfg``: an :class:`~odkit.data.transforms.AugmentConfig`, YOLOX defaults when None; or a ready
    dataset-level pipeline such as ``odkit.engine.data.train_transform(cfg)``) at
    ``img_size`` and drawn with their boxes and class names, ``ceil(sqrt(n))`` per row.
    Returns the path written.
    """
    from odkit.data.dataset import DetectionDataset
    from odkit.data.imageio import write_image
    from odkit.data.transforms import TrainAugment

    if n < 1:
        raise ConfigError(f"augmented_grid: n must be at least 1, got {n}")
    if len(aset) == 0:
        raise ConfigError(f"augmented_grid: dataset {aset.root} has no images")
    pipeline = cfg if getattr(cfg, "needs_dataset", False) else TrainAugment(cfg)  # a ready pipeline, or a config
    ds = DetectionDataset(aset, img_size=img_size, transforms=pipeline, seed=seed)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(aset), size=n, replace=n > len(aset))
    try:
        from odkit.viz.draw import draw_boxes, image_grid
    except ImportError:  # pragma: no cover - viz is optional for this preview
        draw_boxes, image_grid = None, None
    tiles = []
    for i in idx:
        img, boxes, labels, _ = ds[(int(i), img_size, 0, True)]
        if draw_boxes is not None:
            tiles.append(draw_boxes(img, boxes, labels, aset.class_names))
        else:
            tiles.append(_draw_fallback(img, boxes, labels, aset.class_names))
    cols = int(np.ceil(np.sqrt(n)))
    grid = image_grid(tiles, cols) if image_grid is not None else _grid_fallback(tiles, cols)
    out = write_image(out_png, grid)
    log.info("wrote %d augmented samples to %s", n, out)
    return out
