"""Multi-image augmentations: Mosaic (4 images around a random centre) and MixUp (blend of two samples).

Both work on samples ``(image uint8 [H,W,3] RGB, boxes float32 [N,4] xyxy pixels, labels int64 [N])``
and take a ``numpy.random.Generator``; neither touches global random state. Instance masks (see
:mod:`odkit.data.masks`) go through a mosaic with :func:`mosaic4_masks` / :meth:`Mosaic.masks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from odkit.data.masks import WarpedRLE, is_polygons, rasterize, to_rle, transform_segms
from odkit.ops import rle as rle_ops

__all__ = ["Mosaic", "MixUp", "mosaic4", "mosaic4_masks"]


def _placement(k: int, h: int, w: int, xc: int, yc: int, s2: int) -> tuple[int, int, int, int, int, int]:
    """Where tile ``k`` (an ``h x w`` image) lands on the canvas: ``(x1a, y1a, x2a, y2a)`` and the
    top-left ``(x1b, y1b)`` of the part of the image shown."""
    if k == 0:
        x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
        x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
    elif k == 1:
        x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, s2), yc
        x1b, y1b = 0, h - (y2a - y1a)
    elif k == 2:
        x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(s2, yc + h)
        x1b, y1b = w - (x2a - x1a), 0
    else:
        x1a, y1a, x2a, y2a = xc, yc, min(xc + w, s2), min(s2, yc + h)
        x1b, y1b = 0, 0
    return x1a, y1a, x2a, y2a, x1b, y1b


def _tile_boxes(b: np.ndarray, place: tuple[int, int, int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of one tile shifted into canvas pixels and clipped to the tile, and which keep an area."""
    x1a, y1a, x2a, y2a, x1b, y1b = place
    nb = np.asarray(b, dtype=np.float32) + np.array([x1a - x1b, y1a - y1b, x1a - x1b, y1a - y1b], dtype=np.float32)
    nb[:, [0, 2]] = nb[:, [0, 2]].clip(x1a, x2a)
    nb[:, [1, 3]] = nb[:, [1, 3]].clip(y1a, y2a)
    keep = (nb[:, 2] > nb[:, 0]) & (nb[:, 3] > nb[:, 1])
    return nb, keep


def mosaic4(
    images: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    base: int,
    center: tuple[int, int],
    pad_value: int = 114,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Place 4 images on a ``2*base x 2*base`` canvas around ``center = (xc, yc)`` (pixels).

    Image 0 has its bottom-right corner at the centre, image 1 its bottom-left, image 2 its
    top-right, image 3 its top-left (YOLOX / Ultralytics layout); parts falling outside the
    canvas are cut. Boxes are shifted into canvas pixels, clipped to the visible part of their
    tile, and boxes left without area are removed. Returns ``(canvas, boxes [M,4], labels [M])``.
    """
    if len(images) != 4:
        raise ValueError(f"mosaic4 needs 4 images, got {len(images)}")
    s2 = 2 * int(base)
    xc, yc = int(center[0]), int(center[1])
    c = images[0].shape[2] if images[0].ndim == 3 else 1
    canvas = np.full((s2, s2, c), pad_value, dtype=np.uint8)
    out_b, out_l = [], []
    for k, (img, b, lab) in enumerate(zip(images, boxes, labels)):
        h, w = img.shape[:2]
        place = _placement(k, h, w, xc, yc, s2)
        x1a, y1a, x2a, y2a, x1b, y1b = place
        tw, th = x2a - x1a, y2a - y1a
        if tw <= 0 or th <= 0:
            continue
        canvas[y1a:y2a, x1a:x2a] = img[y1b : y1b + th, x1b : x1b + tw]
        if len(b):
            nb, keep = _tile_boxes(b, place)
            out_b.append(nb[keep])
            out_l.append(np.asarray(lab, dtype=np.int64)[keep])
    if out_b:
        return canvas, np.concatenate(out_b).astype(np.float32), np.concatenate(out_l).astype(np.int64)
    return canvas, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)


def mosaic4_masks(
    shapes: Sequence[tuple[int, int]],
    boxes: Sequence[np.ndarray],
    masks: Sequence[Sequence[Any]],
    base: int,
    center: tuple[int, int],
) -> list[Any]:
    """The masks of the boxes :func:`mosaic4` keeps (same order), on its canvas.

    ``shapes``: ``(h, w)`` of the 4 images; ``masks``: per image one mask per box, in its pixels.
    A box the tile shows whole moves its mask by the tile's shift (polygons stay polygons); the mask
    of a box the tile cuts becomes the RLE of its part inside the tile and within 2 px of its
    clipped box, placed on the canvas by a :class:`~odkit.data.masks.WarpedRLE`.
    """
    s2 = 2 * int(base)
    xc, yc = int(center[0]), int(center[1])
    out: list[Any] = []
    for k, ((h, w), b, segs) in enumerate(zip(shapes, boxes, masks)):
        place = _placement(k, h, w, xc, yc, s2)
        x1a, y1a, x2a, y2a, x1b, y1b = place
        if x2a <= x1a or y2a <= y1a or not len(b):
            continue
        nb, keep = _tile_boxes(b, place)
        dx, dy = x1a - x1b, y1a - y1b
        whole = np.isclose(nb, np.asarray(b, dtype=np.float32) + np.float32([dx, dy, dx, dy])).all(1)
        for j in np.flatnonzero(keep):
            g = segs[j]
            if whole[j]:
                out += transform_segms([g], np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]), (s2, s2))
                continue
            # window on the canvas: the clipped box and 2 px around it, inside the tile
            wx0, wy0 = max(int(np.floor(nb[j, 0])) - 2, x1a), max(int(np.floor(nb[j, 1])) - 2, y1a)
            wx1, wy1 = min(int(np.ceil(nb[j, 2])) + 2, x2a), min(int(np.ceil(nb[j, 3])) + 2, y2a)
            to_window = np.array([[1.0, 0.0, dx - wx0], [0.0, 1.0, dy - wy0]])
            if is_polygons(g):
                part = to_rle(transform_segms([g], to_window, (wy1 - wy0, wx1 - wx0))[0], wy1 - wy0, wx1 - wx0)
            else:
                src = rasterize([g], h, w)[0] if tuple(g.size) == (h, w) else np.zeros((h, w), np.uint8)
                part = rle_ops.encode(src[wy0 - dy : wy1 - dy, wx0 - dx : wx1 - dx])
            place_m = np.array([[1.0, 0.0, wx0], [0.0, 1.0, wy0], [0.0, 0.0, 1.0]])
            out.append(WarpedRLE(part, place_m, (s2, s2)))
    return out


class Mosaic:
    """Mosaic of 4 samples on a ``2*base`` square canvas around a random centre.

    The centre is drawn uniformly in ``[0.5*base, 1.5*base]`` on both axes (``center_range``
    scales that interval). Use a :class:`~odkit.data.transforms.RandomAffine` afterwards to map
    the canvas back to the ``s x s`` network input.
    """

    def __init__(self, base: int, center_range: tuple[float, float] = (0.5, 1.5), pad_value: int = 114):
        self.base = int(base)
        self.center_range = center_range
        self.pad_value = pad_value

    def __call__(
        self,
        samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        imgs, bxs, lbs = zip(*[(s[0], s[1], s[2]) for s in samples])
        return mosaic4(imgs, bxs, lbs, self.base, self._center(rng), self.pad_value)

    def _center(self, rng: np.random.Generator) -> tuple[int, int]:
        lo, hi = self.center_range
        xc = int(rng.uniform(lo * self.base, hi * self.base))
        yc = int(rng.uniform(lo * self.base, hi * self.base))
        return xc, yc

    def with_masks(
        self, samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any]]:
        """:meth:`__call__` (the same draws) for samples whose metas hold ``masks``; also returns the
        kept masks on the canvas (:func:`mosaic4_masks`)."""
        center = self._center(rng)
        imgs, bxs, lbs = zip(*[(s[0], s[1], s[2]) for s in samples])
        canvas, b, lab = mosaic4(imgs, bxs, lbs, self.base, center, self.pad_value)
        masks = mosaic4_masks([im.shape[:2] for im in imgs], bxs, [s[3]["masks"] for s in samples], self.base, center)
        return canvas, b, lab, masks


class MixUp:
    """Blend two samples of the same size: ``lam * a + (1 - lam) * b``; boxes are concatenated.

    ``lam`` is 0.5 (YOLOX) when ``beta`` is None, otherwise drawn from ``Beta(beta, beta)``.
    """

    def __init__(self, beta: float | None = None):
        self.beta = beta

    def __call__(
        self,
        a: tuple[np.ndarray, np.ndarray, np.ndarray],
        b: tuple[np.ndarray, np.ndarray, np.ndarray],
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ia, ib = a[0], b[0]
        if ia.shape != ib.shape:
            raise ValueError(f"MixUp needs images of the same shape, got {ia.shape} and {ib.shape}")
        lam = 0.5 if self.beta is None else float(rng.beta(self.beta, self.beta))
        img = cv2.addWeighted(ia, lam, ib, 1.0 - lam, 0.0)
        boxes = np.concatenate(
            [np.asarray(a[1], np.float32).reshape(-1, 4), np.asarray(b[1], np.float32).reshape(-1, 4)]
        )
        labels = np.concatenate(
            [np.asarray(a[2], np.int64).reshape(-1), np.asarray(b[2], np.int64).reshape(-1)]
        )
        return img, boxes, labels
