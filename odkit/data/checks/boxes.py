"""Box checks: non-finite coordinates, unknown classes, negative / zero size, out of bounds, and
images without boxes (valid negatives, counted).

Safe repairs, each reported: a zero-area box is dropped; a box at most
``max(tol_px, tol_frac * side)`` pixels outside the image is clipped. Bounds are measured against
the annotation's image size (the image header's when the annotation gives none), in the displayed
frame (EXIF orientation applied).
"""

from __future__ import annotations

import numpy as np

from odkit.data.checks import Context

NEGATIVE = "negative_image"


def _b(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):.6g}" for v in box) + "]"


def _validity(ctx: Context) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Report non-finite boxes, unknown classes, negative and zero sizes (zero-size boxes are
    dropped). Returns the masks ``finite``, ``negative``, ``zero``."""
    aset, boxes, img_of = ctx.aset, ctx.boxes, ctx.img_of
    finite = np.isfinite(boxes).all(axis=1)
    for r in np.flatnonzero(~finite):
        ctx.add(
            "non_finite_box",
            ctx.afiles[int(img_of[r])],
            f"box ({ctx.cname(r)}) has non-finite coordinates {_b(boxes[r])}",
            ctx.ref(r),
        )
    for r in np.flatnonzero(aset.labels < 0):
        ctx.add(
            "unknown_class",
            ctx.afiles[int(img_of[r])],
            f"class {aset.raw_names.get(int(r), '?')!r} is not in the class list {aset.class_names}",
            ctx.ref(r),
        )
    bw = np.where(finite, boxes[:, 2] - boxes[:, 0], 0.0)
    bh = np.where(finite, boxes[:, 3] - boxes[:, 1], 0.0)
    negative = finite & ((bw < 0) | (bh < 0))
    zero = finite & ~negative & ((bw == 0) | (bh == 0))
    for r in np.flatnonzero(negative):
        ctx.add(
            "negative_size_box",
            ctx.afiles[int(img_of[r])],
            f"box ({ctx.cname(r)}) {_b(boxes[r])} has negative size {bw[r]:g}x{bh[r]:g} (x2 < x1 or y2 < y1)",
            ctx.ref(r),
        )
    for r in np.flatnonzero(zero):
        ctx.add(
            "zero_size_box",
            ctx.afiles[int(img_of[r])],
            f"box ({ctx.cname(r)}) {_b(boxes[r])} has zero size {bw[r]:g}x{bh[r]:g}",
            ctx.ref(r),
            severity="warning",
            repaired="dropped",
        )
    ctx.keep &= ~zero
    if zero.any():
        ctx.repairs["zero-area boxes dropped"] = int(zero.sum())
    return finite, negative, zero


def _bounds(ctx: Context, ok: np.ndarray, tol_px: float, tol_frac: float) -> None:
    """Report boxes outside the image; clip those slightly outside."""
    boxes, img_of = ctx.boxes, ctx.img_of
    W = ctx.widths[img_of].astype(np.float64)
    H = ctx.heights[img_of].astype(np.float64)
    ok = ok & (W > 0) & (H > 0)
    over = np.zeros((len(boxes), 4))
    over[:, 0] = -boxes[:, 0]
    over[:, 1] = -boxes[:, 1]
    over[:, 2] = boxes[:, 2] - W
    over[:, 3] = boxes[:, 3] - H
    over = np.where(ok[:, None], np.maximum(over, 0.0), 0.0)
    over[over <= 1e-3] = 0.0  # numerical noise, not a problem
    out = over.max(axis=1) > 0
    tol_x = np.maximum(tol_px, tol_frac * W)
    tol_y = np.maximum(tol_px, tol_frac * H)
    clipped = np.stack(
        [np.clip(boxes[:, 0], 0, W), np.clip(boxes[:, 1], 0, H), np.clip(boxes[:, 2], 0, W), np.clip(boxes[:, 3], 0, H)],
        axis=1,
    )
    positive = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    slight = out & (over[:, [0, 2]].max(1) <= tol_x) & (over[:, [1, 3]].max(1) <= tol_y) & positive
    sides = ("left", "top", "right", "bottom")
    for r in np.flatnonzero(out):
        i = int(img_of[r])
        by = ", ".join(f"{over[r, k]:.4g} px {sides[k]}" for k in range(4) if over[r, k] > 0)
        msg = f"box ({ctx.cname(r)}) {_b(boxes[r])} extends beyond the {int(W[r])}x{int(H[r])} image by {by}"
        if slight[r]:
            ctx.new_boxes[r] = clipped[r]
            ctx.add("box_out_of_bounds", ctx.afiles[i], msg, ctx.ref(r), severity="warning",
                    repaired="clipped to the image")
        else:
            if not positive[r]:
                msg += " (entirely outside the image)"
            ctx.add("box_out_of_bounds", ctx.afiles[i], msg, ctx.ref(r))
    if slight.any():
        ctx.repairs["boxes clipped to the image"] = int(slight.sum())


def check_boxes(ctx: Context, oob_tol_px: float = 4.0, oob_tol_frac: float = 0.05) -> np.ndarray:
    """Box family: validity, bounds, negatives. Returns the mask of boxes that are finite, of
    known class, of positive size and not crowd (the candidates for near-duplicate checks)."""
    finite, negative, zero = _validity(ctx)
    _bounds(ctx, finite & ~negative & ~zero, oob_tol_px, oob_tol_frac)
    for i in np.flatnonzero(np.diff(ctx.aset.offsets) == 0):
        ctx.add(NEGATIVE, ctx.fnames[i], "no boxes (a valid negative image)", severity="info")
    return finite & ~negative & ~zero & (ctx.aset.labels >= 0) & ~ctx.aset.iscrowd
