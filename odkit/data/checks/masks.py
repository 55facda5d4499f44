"""Instance mask checks: empty masks, degenerate polygons, polygons outside the image, RLEs whose
size is not the image's, and masks outside their box.

Nothing is repaired: a mask is what a box's object looks like, and guessing it is not safe. Sizes
are the annotation's (the image header's when the annotation gives none). Polygon pixels are
pycocotools' (:mod:`odkit.ops.masks`), all polygons of the set rasterised in one call.
"""

from __future__ import annotations

import numpy as np

from odkit.data.checks import Context
from odkit.data.masks import is_polygons
from odkit.ops.masks import polygon_area, polygons_to_array
from odkit.ops.rle import RLEArray

# A mask may stick out of its box by this many pixels (rounding of the box to whole pixels).
BOX_TOL_PX = 1.0


def _mask_stats(ctx: Context) -> tuple[np.ndarray, np.ndarray]:
    """Per annotation row: pixels (summed over its polygons; -1 without a usable mask) and the
    pixel box xyxy (NaN without pixels)."""
    a = ctx.aset
    n = a.num_annotations
    areas = np.full(n, -1, dtype=np.int64)
    boxes = np.full((n, 4), np.nan)
    polys, owner, rles, rle_rows = [], [], [], []
    for r, m in enumerate(a.masks or []):
        i = int(ctx.img_of[r])
        h, w = int(ctx.heights[i]), int(ctx.widths[i])
        if m is None or h <= 0 or w <= 0:
            continue
        if is_polygons(m):
            for p in m:
                if len(p) >= 6 and np.isfinite(p).all():
                    polys.append(p)
                    owner.append(r)
            areas[r] = 0
        elif tuple(m.size) == (h, w):
            rles.append(m)
            rle_rows.append(r)
            areas[r] = 0
    parts = []
    if polys:
        own = np.asarray(owner)
        arr = polygons_to_array(polys, ctx.heights[ctx.img_of[own]], ctx.widths[ctx.img_of[own]])
        parts.append((own, arr))
    if rles:
        parts.append((np.asarray(rle_rows), RLEArray.from_rles(rles)))
    for rows, arr in parts:
        ar = arr.areas.astype(np.int64)
        b = arr.boxes.copy()
        b[:, 2:] += b[:, :2]
        np.add.at(areas, rows, ar)
        live = ar > 0
        for r, bb in zip(rows[live], b[live]):
            old = boxes[r]
            boxes[r] = bb if np.isnan(old[0]) else [min(old[0], bb[0]), min(old[1], bb[1]),
                                                     max(old[2], bb[2]), max(old[3], bb[3])]
    return areas, boxes


def check_masks(ctx: Context) -> None:
    """Mask family (only for sets with masks): report every mask problem, each naming its file and
    annotation."""
    a = ctx.aset
    if a.masks is None:
        return
    for r, m in enumerate(a.masks):
        if m is None:
            continue
        i = int(ctx.img_of[r])
        h, w = int(ctx.heights[i]), int(ctx.widths[i])
        where, ref = ctx.afiles[i], ctx.ref(r)
        if not is_polygons(m):
            if h > 0 and w > 0 and tuple(m.size) != (h, w):
                ctx.add("rle_size_mismatch", where, f"mask ({ctx.cname(r)}) is an RLE of {m.w}x{m.h} pixels on the "
                        f"{w}x{h} image", ref)
            continue
        for k, p in enumerate(m):
            pts = np.asarray(p, dtype=np.float64).reshape(-1, 2)
            if not np.isfinite(pts).all():
                ctx.add("degenerate_polygon", where, f"mask ({ctx.cname(r)}): polygon {k} has non-finite points", ref)
                continue
            if len(pts) < 3 or polygon_area(p) <= 0:
                why = f"{len(pts)} points" if len(pts) < 3 else "no area (its points are on one line)"
                ctx.add("degenerate_polygon", where, f"mask ({ctx.cname(r)}): polygon {k} has {why}", ref,
                        severity="warning")
                continue
            if h > 0 and w > 0:
                over = max(-pts[:, 0].min(), -pts[:, 1].min(), pts[:, 0].max() - w, pts[:, 1].max() - h)
                if over > 1e-3:
                    ctx.add("polygon_out_of_bounds", where, f"mask ({ctx.cname(r)}): polygon {k} extends {over:.4g} px "
                            f"beyond the {w}x{h} image (the part outside is cut when rasterised)", ref,
                            severity="warning")
    areas, mboxes = _mask_stats(ctx)
    for r in np.flatnonzero(areas == 0):
        ctx.add("empty_mask", ctx.afiles[int(ctx.img_of[r])], f"mask ({ctx.cname(r)}) covers no pixel of the image",
                ctx.ref(r))
    live = np.flatnonzero(areas > 0)
    b = ctx.boxes[live]
    mb = mboxes[live]
    over = np.stack([b[:, 0] - mb[:, 0], b[:, 1] - mb[:, 1], mb[:, 2] - b[:, 2], mb[:, 3] - b[:, 3]], 1)
    ok = np.isfinite(b).all(1)
    out = ok & (over.max(1) > BOX_TOL_PX)
    disjoint = ok & ((mb[:, 0] >= b[:, 2]) | (mb[:, 2] <= b[:, 0]) | (mb[:, 1] >= b[:, 3]) | (mb[:, 3] <= b[:, 1]))
    for k in np.flatnonzero(out):
        r = int(live[k])
        box = "[" + ", ".join(f"{v:.6g}" for v in b[k]) + "]"
        mbox = "[" + ", ".join(f"{v:.6g}" for v in mb[k]) + "]"
        msg = f"mask ({ctx.cname(r)}) with pixels in {mbox} is outside its box {box}"
        if disjoint[k]:
            ctx.add("mask_outside_box", ctx.afiles[int(ctx.img_of[r])], msg + " (no pixel inside it)", ctx.ref(r))
        else:
            ctx.add("mask_outside_box", ctx.afiles[int(ctx.img_of[r])],
                    msg + f" by up to {over[k].max():.4g} px", ctx.ref(r), severity="warning")
