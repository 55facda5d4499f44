"""Instance masks in the data layer: polygons or RLE per annotation, their geometry and rasters.

A mask (``Segm``) is either **polygons**, a list of float64 flat ``[x0, y0, x1, y1, ...]`` arrays in
pixels of the annotation's image (continuous coordinates: pixel ``(i, j)`` covers
``[j, j + 1) x [i, i + 1)``, as COCO), or an :class:`~odkit.ops.rle.RLE` of the image's size
(COCO's compressed counts strings and uncompressed count lists both read into one). An
:class:`~odkit.data.structures.AnnotationSet` holds one ``Segm`` or ``None`` per annotation row.

Masks stay in this form through the augmentations (:func:`transform_segms`: polygons map their
points exactly; an RLE gathers the maps in a :class:`WarpedRLE` and is warped once, with
nearest-neighbour sampling) and become pixels only when a batch is built (:func:`rasterize`,
pycocotools' polygon pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from odkit.ops import rle as rle_ops
from odkit.ops.masks import merge, polygons_to_array
from odkit.ops.rle import RLE

__all__ = [
    "Segm",
    "WarpedRLE",
    "is_polygons",
    "parse_segmentation",
    "to_coco",
    "to_rle",
    "rasterize",
    "mask_boxes",
    "polygon_box",
    "pixel_matrix",
    "transform_segms",
    "polygons_from_mask",
]

Segm = list[np.ndarray] | RLE


@dataclass(eq=False)
class WarpedRLE:
    """An RLE mask seen through an affine map, applied when it is rasterised: ``rle`` on its source
    image, ``m`` the 3x3 matrix (continuous pixels) from that image to the target of ``size``
    ``(h, w)``. What the augmentations make of an RLE, so that it is decoded and warped once."""

    rle: RLE
    m: np.ndarray
    size: tuple[int, int]

    def pixels(self) -> np.ndarray:
        """The warped mask ``[h, w]`` uint8 (nearest-neighbour sampling)."""
        h, w = self.size
        return cv2.warpAffine(rle_ops.decode(self.rle), pixel_matrix(self.m), (int(w), int(h)),
                              flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def is_polygons(segm: Any) -> bool:
    """Whether ``segm`` is a polygon mask (a list of flat coordinate arrays)."""
    return isinstance(segm, list)


def parse_segmentation(obj: Any) -> Segm:
    """A ``Segm`` from a COCO ``segmentation`` value (polygons, or an RLE object with compressed or
    uncompressed counts). Raises ValueError saying what is wrong."""
    if isinstance(obj, dict):
        return rle_ops.from_coco(obj)
    if isinstance(obj, (list, tuple)):
        polys = []
        for k, p in enumerate(obj):
            if not isinstance(p, (list, tuple, np.ndarray)):
                raise ValueError(f"polygon {k} is {type(p).__name__}, not a list of x, y numbers")
            try:
                a = np.asarray(p, dtype=np.float64).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"polygon {k} holds values that are not numbers") from None
            if len(a) % 2:
                raise ValueError(f"polygon {k} has an odd number of coordinates ({len(a)})")
            polys.append(a)
        return polys
    raise ValueError(f"segmentation must be polygons (list of lists) or an RLE object, got {type(obj).__name__}")


def to_coco(segm: Segm, compressed: bool = True) -> Any:
    """COCO ``segmentation`` of a mask: polygons as lists (4 decimals), an RLE as an object with a
    counts string (``compressed``) or a counts list."""
    if is_polygons(segm):
        return [[round(float(v), 4) for v in p] for p in segm]
    return rle_ops.to_coco(segm, compressed=compressed)


def to_rle(segm: Segm, h: int, w: int) -> RLE:
    """The RLE of a mask on an ``h x w`` image (polygons rasterised and united as pycocotools does);
    an RLE comes back as it is (its own size)."""
    if isinstance(segm, WarpedRLE):
        return rle_ops.encode(segm.pixels())
    if not is_polygons(segm):
        return segm
    if not segm:
        return RLE((h, w), np.array([h * w], dtype=np.uint32))
    arr = polygons_to_array(segm, h, w)
    return merge([arr[i] for i in range(len(arr))])


def rasterize(segms: Sequence[Segm], h: int, w: int) -> np.ndarray:
    """Binary masks ``[N, h, w]`` uint8 (0 / 1) of ``segms`` on an ``h x w`` image.

    Polygons give pycocotools' pixels (every polygon of every mask rasterised in one call); an RLE
    of another size is an error.
    """
    out = np.zeros((len(segms), h, w), dtype=np.uint8)
    polys: list[np.ndarray] = []
    owner: list[int] = []
    for k, s in enumerate(segms):
        if is_polygons(s):
            polys += list(s)
            owner += [k] * len(s)
        else:
            if tuple(s.size) != (h, w):
                raise ValueError(f"mask {k}: RLE of size {s.size} on an image of {(h, w)}")
            out[k] = s.pixels() if isinstance(s, WarpedRLE) else rle_ops.decode(s)
    if polys:
        arr = polygons_to_array(polys, h, w)
        for j, k in enumerate(owner):
            out[k] |= rle_ops.decode(arr[j])
    return out


def polygon_box(polys: list[np.ndarray]) -> list[float]:
    """``[x1, y1, x2, y2]`` bounds of the points of polygons (NaN when there are none)."""
    pts = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in polys]) if polys else np.zeros(0)
    if len(pts) < 2:
        return [float("nan")] * 4
    xs, ys = pts[0::2], pts[1::2]
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def mask_boxes(segms: Sequence[Segm], h: int, w: int) -> np.ndarray:
    """Pixel boxes ``[N, 4]`` float64 xyxy of the masks (whole pixels; zeros for an empty mask)."""
    if not len(segms):
        return np.zeros((0, 4))
    rles = rle_ops.RLEArray.from_rles([to_rle(s, h, w) for s in segms])
    b = rles.boxes.copy()
    b[:, 2:] += b[:, :2]
    return b


# ------------------------------------------------------------------------------------ geometry
def pixel_matrix(m: np.ndarray) -> np.ndarray:
    """The 2x3 OpenCV matrix (pixel centres at integer indices) of a 2x3 or 3x3 matrix that maps
    continuous pixel coordinates: the translation gains ``A @ [0.5, 0.5] - 0.5``."""
    m = np.asarray(m, dtype=np.float64)[:2].copy()
    m[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return m


def _as3(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape == (3, 3):
        return m
    out = np.eye(3)
    out[:2] = m[:2]
    return out


def transform_segms(
    segms: Sequence[Any], m: np.ndarray, out_hw: tuple[int, int], lazy: bool = True
) -> list[Any]:
    """Masks mapped by the affine matrix ``m`` (2x3 or 3x3, continuous pixels) onto an image of
    ``out_hw = (h, w)``.

    Polygon points go through ``m`` exactly (parts outside the image are cut when rasterised). An
    RLE (or :class:`WarpedRLE`) becomes a :class:`WarpedRLE` whose map is composed with ``m``
    (``lazy``), else it is warped with nearest-neighbour sampling and encoded at the new size.
    """
    m3 = _as3(m)
    oh, ow = int(out_hw[0]), int(out_hw[1])
    out: list[Segm] = []
    for s in segms:
        if is_polygons(s):
            new = []
            for p in s:
                xy = p.reshape(-1, 2)
                q = xy @ m3[:2, :2].T + m3[:2, 2]
                new.append(q.reshape(-1))
            out.append(new)
        else:
            src, m0 = (s.rle, s.m) if isinstance(s, WarpedRLE) else (s, np.eye(3))
            warped = WarpedRLE(src, m3 @ m0, (oh, ow))
            out.append(warped if lazy else rle_ops.encode(warped.pixels()))
    return out


def polygons_from_mask(mask: np.ndarray) -> list[np.ndarray]:
    """Outer outlines of a binary mask ``[H, W]`` as polygons (continuous coordinates), for layouts
    that store only polygons. Each outline runs a quarter pixel inside the pixel edges, so it
    rasterises back to the same pixels (pycocotools' rule), with holes filled."""
    m = (np.asarray(mask) != 0).astype(np.uint8)
    # Contours of a 2x upsampled mask: point (u, v) -> (u + 0.5) / 2, a quarter pixel inside the edge.
    big = cv2.resize(m, (2 * m.shape[1], 2 * m.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        xy = c.reshape(-1, 2).astype(np.float64)
        if len(xy) < 3:
            continue
        out.append(((xy + 0.5) / 2.0).reshape(-1))
    return out
