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

from odkit.ops.rle import RLE, RLEArray, from_coco, merge

__all__ = ["polygons_to_rles", "polygons_to_array", "segmentations_to_array", "polygon_to_rle", "boxes_to_rles", "segmentation_to_rle", "polygon_area"]

_SCALE = 5.0


def _trunc_int(x: np.ndarray) -> np.ndarray:
    """C's ``(int)`` of a double: toward zero."""
    return np.trunc(x).astype(np.int64)


def polygons_to_rles(polygons: Sequence[Sequence[float] | np.ndarray], h: int, w: int) -> list[RLE]:
    """One RLE per polygon (flat ``[x0, y0, ...]`` pixels) on an ``h x w`` image (``rleFrPoly``).

    A polygon with fewer than 3 points gives the pixels pycocotools gives it (a line covers
    nothing, one point nothing); an odd trailing coordinate is ignored.
    """
    arr = polygons_to_array(polygons, h, w)
    return [arr[i] for i in range(len(arr))]


def polygons_to_array(
    polygons: Sequence[Sequence[float] | np.ndarray], h: int | np.ndarray, w: int | np.ndarray
) -> RLEArray:
    """:func:`polygons_to_rles` for many polygons at once; ``h`` / ``w`` one size or one per polygon."""
    polys = [np.asarray(p, dtype=np.float64).reshape(-1) for p in polygons]
    n = len(polys)
    hs = np.broadcast_to(np.asarray(h, dtype=np.int64), (n,)).copy()
    ws = np.broadcast_to(np.asarray(w, dtype=np.int64), (n,)).copy()
    if n == 0:
        return RLEArray(np.zeros(0, dtype=np.uint32), np.zeros(1, dtype=np.int64), np.zeros((0, 2)))
    k = np.array([len(p) // 2 for p in polys], dtype=np.int64)
    xy = np.concatenate([p[: 2 * kk] for p, kk in zip(polys, k)]).reshape(-1, 2)
    if not np.isfinite(xy).all():
        raise ValueError("polygon coordinates must be finite")
    # Vertices on the 5x grid, each polygon closed (segment j goes from vertex j to j + 1).
    vx = _trunc_int(_SCALE * xy[:, 0] + 0.5)
    vy = _trunc_int(_SCALE * xy[:, 1] + 0.5)
    poly_of_v = np.repeat(np.arange(n), k)
    vstart = np.cumsum(k) - k
    nxt = np.arange(len(vx)) + 1
    nxt[(np.cumsum(k) - 1)[k > 0]] = vstart[k > 0]
    xs, ys, xe, ye = vx, vy, vx[nxt], vy[nxt]
    dx, dy = np.abs(xe - xs), np.abs(ys - ye)
    xmaj = dx >= dy
    flip = (xmaj & (xs > xe)) | (~xmaj & (ys > ye))
    xs, xe = np.where(flip, xe, xs), np.where(flip, xs, xe)
    ys, ye = np.where(flip, ye, ys), np.where(flip, ys, ye)
    s = np.where(xmaj, (ye - ys) / np.maximum(dx, 1), (xe - xs) / np.maximum(dy, 1))
    # Points along each segment (max(dx, dy) + 1 of them).
    npts = np.maximum(dx, dy) + 1
    seg = np.repeat(np.arange(len(vx)), npts)
    d = np.arange(len(seg)) - np.repeat(np.cumsum(npts) - npts, npts)
    steps = np.where(xmaj, dx, dy)[seg]
    t = np.where(flip[seg], steps - d, d)
    lin = _trunc_int(np.where(xmaj, ys, xs)[seg] + s[seg] * t + 0.5)
    u = np.where(xmaj[seg], t + xs[seg], lin)
    v = np.where(xmaj[seg], lin, t + ys[seg])
    pp = poly_of_v[seg]
    # Crossings of pixel columns, down-sampled to the pixel grid.
    j = np.flatnonzero((pp[1:] == pp[:-1]) & (u[1:] != u[:-1])) + 1
    pp = pp[j]
    xd = np.where(u[j] < u[j - 1], u[j], u[j] - 1).astype(np.float64)
    xd = (xd + 0.5) / _SCALE - 0.5
    ok = (np.floor(xd) == xd) & (xd >= 0) & (xd <= ws[pp] - 1)
    j, xd, pp = j[ok], xd[ok], pp[ok]
    yd = np.minimum(v[j], v[j - 1]).astype(np.float64)
    yd = (yd + 0.5) / _SCALE - 0.5
    yd = np.ceil(np.clip(yd, 0, hs[pp]))
    pos = xd.astype(np.int64) * hs[pp] + yd.astype(np.int64)
    return _toggles(pos, pp, hs, ws)


def _toggles(pos: np.ndarray, owner: np.ndarray, hs: np.ndarray, ws: np.ndarray) -> RLEArray:
    """RLEs whose value flips at each position (coincident flips cancel in pairs), ending at ``h * w``.

    The same runs as pycocotools' sorted boundary differences with empty runs folded in.
    """
    n = len(hs)
    hw = hs * ws
    order = np.lexsort((pos, owner))
    pos, owner = pos[order], owner[order]
    new = np.concatenate([[True], (pos[1:] != pos[:-1]) | (owner[1:] != owner[:-1])])[: len(pos)]
    first = np.flatnonzero(new)
    mult = np.diff(np.concatenate([first, [len(pos)]]))
    upos, uown = pos[first], owner[first]
    keep = (mult % 2 == 1) & (upos < hw[uown])
    upos, uown = upos[keep], uown[keep]
    # Per polygon the boundaries 0, flips..., h * w; counts are their differences.
    nflip = np.bincount(uown, minlength=n)
    allpos = np.concatenate([np.zeros(n, dtype=np.int64), upos, hw])
    allown = np.concatenate([np.arange(n), uown, np.arange(n)])
    kind = np.concatenate([np.zeros(n), np.ones(len(upos)), np.full(n, 2)])
    o = np.lexsort((kind, allpos, allown))
    bpos, bown = allpos[o], allown[o]
    counts = np.diff(bpos)[bown[1:] == bown[:-1]]
    offsets = np.concatenate([[0], np.cumsum(nflip + 1)])
    return RLEArray(counts, offsets, np.stack([hs, ws], 1))


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


def segmentations_to_array(segms: Sequence[Any], hs: np.ndarray, ws: np.ndarray) -> RLEArray:
    """:func:`segmentation_to_rle` of many segmentations (image sizes ``hs`` / ``ws`` per item).

    Single polygons of all items are rasterised in one call; only items with several polygons or
    RLE objects are handled one by one. Raises ValueError naming the item index on bad input.
    """
    n = len(segms)
    hs = np.broadcast_to(np.asarray(hs, dtype=np.int64), (n,))
    ws = np.broadcast_to(np.asarray(ws, dtype=np.int64), (n,))
    single = [
        i for i, sg in enumerate(segms)
        if isinstance(sg, (list, tuple)) and len(sg) == 1 and isinstance(sg[0], (list, tuple, np.ndarray))
    ]
    single_set = set(single)
    others = [i for i in range(n) if i not in single_set]
    parts: list[RLEArray] = []
    if single:
        parts.append(polygons_to_array([segms[i][0] for i in single], hs[single], ws[single]))
    rest = []
    for i in others:
        try:
            rest.append(segmentation_to_rle(segms[i], int(hs[i]), int(ws[i])))
        except ValueError as e:
            raise ValueError(f"segmentation {i}: {e}") from None
    parts.append(RLEArray.from_rles(rest))
    both = RLEArray.concat(parts)
    where = np.empty(n, dtype=np.int64)
    where[np.array(single + others, dtype=np.int64)] = np.arange(n)
    return both.take(where)
