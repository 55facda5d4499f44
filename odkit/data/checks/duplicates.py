"""Duplicate checks: an image listed twice, near-duplicate boxes (same class, high IoU) and
byte-identical image files (same labels or not)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from odkit.data.checks import Context, pmap
from odkit.data.checks.boxes import _b
from odkit.data.checks.splits import file_hash


def _entries(ctx: Context) -> None:
    first: dict[str, int] = {}
    for i, f in enumerate(ctx.fnames):
        if f in first:
            ctx.add("duplicate_entry", f, f"image listed twice (entries {first[f]} and {i})", severity="warning")
        else:
            first[f] = i


def _near_boxes(ctx: Context, cand_mask: np.ndarray, iou_thr: float) -> None:
    """Same-class box pairs of one image with IoU above ``iou_thr``. All within-image pairs of
    candidate boxes are formed at once (in chunks of whole images) and compared vectorised."""
    aset, boxes, img_of = ctx.aset, ctx.boxes, ctx.img_of
    cand = np.flatnonzero(cand_mask)
    cimg = img_of[cand]
    grp_end = np.searchsorted(cimg, cimg, side="right")  # end of each candidate's image group
    partners = grp_end - np.arange(len(cand)) - 1
    start = 0
    while start < len(cand):
        cum = np.cumsum(partners[start:])  # grow the chunk to at most ~4M pairs
        stop = start + max(1, int(np.searchsorted(cum, 4_000_000, side="right")))
        stop = int(grp_end[stop - 1]) if stop < len(cand) else len(cand)
        left = np.repeat(np.arange(start, stop), partners[start:stop])
        first = np.repeat(np.cumsum(partners[start:stop]) - partners[start:stop], partners[start:stop])
        right = left + 1 + (np.arange(len(left)) - first)
        start = stop
        if not len(left):
            continue
        ra, rb = cand[left], cand[right]
        same = aset.labels[ra] == aset.labels[rb]
        ra, rb = ra[same], rb[same]
        ba, bb = boxes[ra], boxes[rb]
        iw = np.clip(np.minimum(ba[:, 2], bb[:, 2]) - np.maximum(ba[:, 0], bb[:, 0]), 0, None)
        ih = np.clip(np.minimum(ba[:, 3], bb[:, 3]) - np.maximum(ba[:, 1], bb[:, 1]), 0, None)
        inter = iw * ih
        union = (ba[:, 2] - ba[:, 0]) * (ba[:, 3] - ba[:, 1]) + (bb[:, 2] - bb[:, 0]) * (bb[:, 3] - bb[:, 1]) - inter
        iou = inter / union
        for k in np.flatnonzero(iou > iou_thr):
            rp, rq = int(ra[k]), int(rb[k])
            ctx.add(
                "near_duplicate_box",
                ctx.afiles[int(img_of[rp])],
                f"boxes {ctx.ref(rp)} and {ctx.ref(rq)} ({ctx.cname(rp)}) overlap with IoU {iou[k]:.3f} "
                f"{_b(boxes[rp])} / {_b(boxes[rq])}",
                [ctx.ref(rp), ctx.ref(rq)],
                severity="warning",
            )


def _identical_images(ctx: Context) -> None:
    """Byte-identical files (hashing only files that share a byte size)."""
    aset, off = ctx.aset, ctx.aset.offsets
    by_size: dict[int, list[int]] = defaultdict(list)
    first_of: dict[str, int] = {}
    for i, info in enumerate(ctx.infos):
        if info is not None and info.exists and info.nbytes and ctx.fnames[i] not in first_of:
            first_of[ctx.fnames[i]] = i
            by_size[info.nbytes].append(i)
    todo = [i for g in by_size.values() if len(g) > 1 for i in g]
    if not todo:
        return
    ctx.hashes.update(zip((ctx.fnames[i] for i in todo),
                          pmap(lambda i: file_hash(ctx.paths[i]), todo, min(ctx.workers, 8), "hashing images")))
    hashes = {i: ctx.hashes[ctx.fnames[i]] for i in todo}
    groups: dict[str, list[int]] = defaultdict(list)
    for i in todo:
        groups[hashes[i]].append(i)

    def labelset(i: int) -> list[tuple]:
        s, e = int(off[i]), int(off[i + 1])
        return sorted(
            (int(aset.labels[r]), *np.round(ctx.boxes[r], 1).tolist()) for r in range(s, e) if ctx.keep[r]
        )

    for g in groups.values():
        if len(g) < 2:
            continue
        base = labelset(g[0])
        for j in g[1:]:
            same = labelset(j) == base
            ctx.add(
                "duplicate_image" if same else "duplicate_image_conflict",
                ctx.fnames[j],
                f"byte-identical to {ctx.fnames[g[0]]}" + (" (same labels)" if same else " but labelled differently"),
                severity="warning",
            )


def check_duplicates(ctx: Context, cand_mask: np.ndarray, near_dup_iou: float = 0.9, images: bool = True) -> None:
    """Duplicates family: repeated entries and identical files (when ``images``), near-duplicate
    boxes among ``cand_mask``."""
    if images:
        _entries(ctx)
    _near_boxes(ctx, cand_mask, near_dup_iou)
    if images:
        _identical_images(ctx)
