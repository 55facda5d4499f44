"""Polygons and COCO segmentations as RLE masks, pixel for pixel as pycocotools makes them.

Polygons are flat ``[x0, y0, x1, y1, ...]`` lists in pixels (continuous coordinates: pixel ``(i, j)``
covers ``[j, j + 1) x [i, i + 1)``, as COCO). :func:`polygons_to_rles` is pycocotools' ``frPoly``
(``rleFrPoly``): the outline is traced on a 5x finer grid with integer steps and a pixel is inside
when its centre lies below a crossing of its column, so the masks are the same pixels as
``pycocotools.mask.decode(frPyObjects(...))``. :func:`segmentation_to_rle` turns any COCO
``segmentation`` (polygons, uncompressed or compressed RLE) into one RLE as pycocotools'
``annToRLE`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from odkit.ops.rle import RLE, from_coco, merge

__all__ = ["polygons_to_rles", "polygon_to_rle", "boxes_to_rles", "segmentation_to_rle", "polygon_area"]

_SCALE = 5.0


def _trunc_int(x: np.ndarray) -> np.ndarray:
    """C's ``(int)`` of a double: toward zero."""
    return np.trunc(x).astype(np.int64)


def polygons_to_rles(polygons: Sequence[Sequence[float] | np.ndarray], h: int, w: int) -> list[RLE]:
    """One RLE per polygon (flat ``[x0, y0, ...]`` pixels) on an ``h x w`` image (``rleFrPoly``).

    A polygon with fewer than 3 points gives the pixels pycocotools gives it (a line covers
    nothing, one point nothing); an odd trailing coordinate is ignored.
    """
    h, w = int(h), int(w)
    polys = [np.asarray(p, dtype=np.float64).reshape(-1) for p in polygons]
    n = len(polys)
    if n == 0:
        return []
    k = np.array([len(p) // 2 for p in polys], dtype=np.int64)
    xy = np.concatenate([p[: 2 * kk] for p, kk in zip(polys, k)]).reshape(-1, 2)
    if not np.isfinite(xy).all():
        raise ValueError("polygon coordinates must be finite")
    # Vertices on the 5x grid, each polygon closed (segment j goes from vertex j to j + 1).
    vx = _trunc_int(_SCALE * xy[:, 0] + 0.5)
    vy = _trunc_int(_SCALE * xy[:, 1] + 0.5)
    poly_of_v = np.repeat(np.arange(n), k)
    vstart = np.concatenate([[0], np.cumsum(k)])[:-1]
    nxt = np.arange(len(vx)) + 1
    last = np.cumsum(k) - 1
    nxt[last[k > 0]] = vstart[k > 0]
    xs, ys, xe, ye = vx, vy, vx[nxt], vy[nxt]
    dx, dy = np.abs(xe - xs), np.abs(ys - ye)
    xmaj = dx >= dy
    flip = (xmaj & (xs > xe)) | (~xmaj & (ys > ye))
    xs, xe = np.where(flip, xe, xs), np.where(flip, xs, xe)
    ys, ye = np.where(flip, ye, ys), np.where(flip, ys, ye)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(xmaj, (ye - ys) / np.where(dx > 0, dx, 1), (xe - xs) / np.where(dy > 0, dy, 1))
    # Points along each segment (max(dx, dy) + 1 of them).
    npts = np.maximum(dx, dy) + 1
    seg = np.repeat(np.arange(len(vx)), npts)
    d = np.arange(len(seg)) - np.repeat(np.cumsum(npts) - npts, npts)
    steps = np.where(xmaj, dx, dy)[seg]
    t = np.where(flip[seg], steps - d, d)
    lin = _trunc_int(np.where(xmaj, ys, xs)[seg] + s[seg] * t + 0.5)
    u = np.where(xmaj[seg], t + xs[seg], lin)
    v = np.where(xmaj[seg], lin, t + ys[seg])
    poly_of_pt = poly_of_v[seg]
    # Crossings of pixel columns, down-sampled to the pixel grid.
    same_poly = poly_of_pt[1:] == poly_of_pt[:-1]
    j = np.flatnonzero(same_poly & (u[1:] != u[:-1])) + 1
    xd = np.where(u[j] < u[j - 1], u[j], u[j] - 1).astype(np.float64)
    xd = (xd + 0.5) / _SCALE - 0.5
    ok = (np.floor(xd) == xd) & (xd >= 0) & (xd <= w - 1)
    j, xd = j[ok], xd[ok]
    yd = np.minimum(v[j], v[j - 1]).astype(np.float64)
    yd = (yd + 0.5) / _SCALE - 0.5
    yd = np.ceil(np.clip(yd, 0, h))
    pos = xd.astype(np.int64) * h + yd.astype(np.int64)
    pp = poly_of_pt[j]
    return _toggles_many(pos, pp, n, h, w)


def _toggles_to_rle(pos: np.ndarray, h: int, w: int) -> RLE:
    """RLE whose value flips at each position (coincident flips cancel in pairs), ending at ``h * w``."""
    uniq, cnt = np.unique(pos, return_counts=True)
    flips = uniq[(cnt % 2 == 1) & (uniq < h * w)]
    return RLE((h, w), np.diff(np.concatenate([[0], flips, [h * w]])))


def _toggles_many(pos: np.ndarray, owner: np.ndarray, n: int, h: int, w: int) -> list[RLE]:
    order = np.lexsort((pos, owner))
    pos, owner = pos[order], owner[order]
    bounds = np.searchsorted(owner, np.arange(n + 1))
    return [_toggles_to_rle(pos[bounds[i] : bounds[i + 1]], h, w) for i in range(n)]


def polygon_to_rle(polygon: Sequence[float] | np.ndarray, h: int, w: int) -> RLE:
    """RLE of one polygon (see :func:`polygons_to_rles`)."""
    return polygons_to_rles([polygon], h, w)[0]


def boxes_to_rles(boxes_xywh: np.ndarray, h: int, w: int) -> list[RLE]:
    """RLEs of ``[x, y, w, h]`` boxes, pycocotools' ``frBbox`` (the box as a 4-point polygon)."""
    b = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    return polygons_to_rles(list(np.stack([x0, y0, x0, y1, x1, y1, x1, y0], 1)), h, w)


def segmentation_to_rle(segm: Any, h: int, w: int) -> RLE:
    """One RLE of a COCO ``segmentation`` on an ``h x w`` image, as pycocotools' ``annToRLE``.

    Polygons (a list of flat lists) are rasterised and united (a list whose first polygon has 4
    numbers, which pycocotools refuses, is read as polygons too). An RLE object keeps its own
    ``size`` (compressed or uncompressed counts). Raises ValueError on anything else.
    """
    if isinstance(segm, dict):
        return from_coco(segm)
    if isinstance(segm, (list, tuple)) and segm:
        first = segm[0]
        if isinstance(first, dict):
            return merge([from_coco(o) for o in segm])
        if not isinstance(first, (list, tuple, np.ndarray)):
            raise ValueError("polygon segmentation must be a list of [x0, y0, x1, y1, ...] lists")
        return merge(polygons_to_rles(segm, h, w))
    raise ValueError(f"segmentation must be polygons (list of lists) or an RLE object, got {type(segm).__name__}")


def polygon_area(polygon: Sequence[float] | np.ndarray) -> float:
    """Shoelace area of a flat ``[x0, y0, ...]`` polygon in pixels^2 (non-negative)."""
    p = np.asarray(polygon, dtype=np.float64).reshape(-1)
    xy = p[: len(p) // 2 * 2].reshape(-1, 2)
    if len(xy) < 3:
        return 0.0
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)
