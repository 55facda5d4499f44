"""Drawing boxes and instance masks on images, and image grids (OpenCV, RGB uint8). Knows nothing of data sets: the
data set previews that use it are in :mod:`odkit.data.preview`."""

from __future__ import annotations

import colorsys
import logging
from collections.abc import Sequence

import numpy as np

from odkit.errors import ConfigError

log = logging.getLogger(__name__)

# Distinct RGB colours for the first classes; later classes get golden-ratio hues.
_BASE_COLORS: list[tuple[int, int, int]] = [
    (255, 56, 56),
    (50, 205, 50),
    (40, 120, 255),
    (255, 178, 29),
    (200, 60, 255),
    (0, 212, 220),
    (255, 112, 160),
    (140, 90, 40),
    (130, 200, 20),
    (255, 230, 60),
    (0, 140, 120),
    (120, 120, 255),
    (255, 140, 80),
    (90, 60, 160),
    (180, 180, 180),
    (230, 0, 120),
]
_UNKNOWN_COLOR = (255, 255, 255)


def class_color(label: int) -> tuple[int, int, int]:
    """RGB colour of class ``label`` (white for -1 = unknown class)."""
    if label < 0:
        return _UNKNOWN_COLOR
    if label < len(_BASE_COLORS):
        return _BASE_COLORS[label]
    h = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _fill_masks(img: np.ndarray, masks: np.ndarray, labels: np.ndarray, num_names: int, alpha: float) -> None:
    """Blend each mask of ``masks`` ``[N, H, W]`` into ``img`` (in place) in its label's colour."""
    m = np.asarray(masks)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3 or m.shape[0] != len(labels) or m.shape[1:] != img.shape[:2]:
        raise ConfigError(f"draw_boxes: masks must be [{len(labels)}, {img.shape[0]}, {img.shape[1]}], "
                          f"got shape {m.shape}")
    m = m > 0.5 if np.issubdtype(m.dtype, np.floating) else m != 0
    out = img.astype(np.float32)
    for k in range(len(m)):
        color = np.asarray(class_color(int(labels[k]) if int(labels[k]) < num_names else -1), np.float32)
        out[m[k]] = out[m[k]] * (1.0 - alpha) + color * alpha
    img[...] = np.clip(np.round(out), 0, 255).astype(np.uint8)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray | Sequence[Sequence[float]],
    labels: np.ndarray | Sequence[int],
    class_names: Sequence[str],
    scores: np.ndarray | Sequence[float] | None = None,
    thickness: int | None = None,
    masks: np.ndarray | None = None,
    mask_alpha: float = 0.45,
) -> np.ndarray:
    """Return a copy of ``image`` (HxWx3 RGB uint8) with the boxes drawn on it.

    ``boxes`` [N,4] xyxy in pixels of ``image``; ``labels`` [N] class indices into
    ``class_names`` (-1 or out of range is drawn as ``unknown``); optional ``scores`` [N] are
    appended to the label text with two decimals. One colour per class. Optional ``masks``
    ``[N, H, W]`` (boolean, or probabilities taken above 0.5) are filled in the class colour with
    opacity ``mask_alpha`` under the boxes.
    """
    import cv2

    img = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).copy())
    if img.ndim != 3 or img.shape[2] != 3:
        raise ConfigError(f"draw_boxes: expected an HxWx3 image, got shape {img.shape}")
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(lab) != len(b):
        raise ConfigError(f"draw_boxes: {len(b)} boxes but {len(lab)} labels")
    sc = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    if sc is not None and len(sc) != len(b):
        raise ConfigError(f"draw_boxes: {len(b)} boxes but {len(sc)} scores")
    h, w = img.shape[:2]
    if masks is not None:
        _fill_masks(img, masks, lab, len(class_names), mask_alpha)
    th = thickness if thickness is not None else max(1, int(round(min(h, w) / 300)))
    font_scale = max(0.35, min(h, w) / 900)
    font_th = max(1, th - 1)
    for k in range(len(b)):
        x1, y1, x2, y2 = (int(round(v)) for v in b[k])
        label = int(lab[k])
        color = class_color(label if label < len(class_names) else -1)
        cv2.rectangle(img, (x1, y1), (x2, y2), color, th, lineType=cv2.LINE_AA)
        name = class_names[label] if 0 <= label < len(class_names) else "unknown"
        text = name if sc is None else f"{name} {sc[k]:.2f}"
        (tw, tht), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_th)
        ty = y1 - 2 if y1 - tht - base - 2 >= 0 else y1 + tht + base + 2  # above the box if it fits
        tx = min(max(x1, 0), max(w - tw - 2, 0))
        cv2.rectangle(img, (tx, ty - tht - base), (tx + tw + 2, ty + 1), color, -1)
        lum = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        text_color = (0, 0, 0) if lum > 140 else (255, 255, 255)
        cv2.putText(
            img,
            text,
            (tx + 1, ty - base + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            text_color,
            font_th,
            cv2.LINE_AA,
        )
    return img


def draw_masks(
    image: np.ndarray, masks: np.ndarray, labels: np.ndarray | Sequence[int], alpha: float = 0.45
) -> np.ndarray:
    """Return a copy of ``image`` (HxWx3 RGB uint8) with binary ``masks`` [N,H,W] blended in their
    class colours (``alpha`` of the colour) and outlined."""
    import cv2

    img = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).copy())
    m = np.asarray(masks).reshape(-1, *img.shape[:2]) if len(masks) else np.zeros((0, *img.shape[:2]), np.uint8)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(lab) != len(m):
        raise ConfigError(f"draw_masks: {len(m)} masks but {len(lab)} labels")
    for k in range(len(m)):
        on = m[k] != 0
        if not on.any():
            continue
        color = np.asarray(class_color(int(lab[k])), dtype=np.float32)
        img[on] = (img[on].astype(np.float32) * (1 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(on.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(img, contours, -1, tuple(int(c) for c in color), 1, lineType=cv2.LINE_AA)
    return img


def image_grid(
    images: Sequence[np.ndarray], cols: int, pad: int = 4, background: tuple[int, int, int] = (32, 32, 32)
) -> np.ndarray:
    """Tile HxWx3 uint8 images row by row into one image.

    Every cell has the size of the largest image (images are placed top-left in their cell),
    with ``pad`` pixels between cells and around the border; ``cols`` is capped at the number
    of images. Output size: ``rows * cell_h + (rows + 1) * pad`` by ``cols * cell_w + (cols + 1) * pad``.
    """
    if not images:
        raise ConfigError("image_grid: no images to tile")
    if cols < 1:
        raise ConfigError(f"image_grid: cols must be at least 1, got {cols}")
    cols = min(cols, len(images))
    rows = (len(images) + cols - 1) // cols
    ch = max(im.shape[0] for im in images)
    cw = max(im.shape[1] for im in images)
    grid = np.empty((rows * ch + (rows + 1) * pad, cols * cw + (cols + 1) * pad, 3), np.uint8)
    grid[:] = np.asarray(background, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad + r * (ch + pad), pad + c * (cw + pad)
        grid[y : y + im.shape[0], x : x + im.shape[1]] = im
    return grid
