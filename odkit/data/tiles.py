"""Sliced training data: each image of a data set cut into overlapping tiles (the grid of sliced
inference, :func:`tile_grid`), boxes clipped to each tile, written in any layout by the data set
writers. Nothing is lost silently: every (box, tile) pair a box touches is counted as kept whole, kept
clipped or dropped (with the reason), and every source box that ends up in no tile is named.

Coordinates: tiles ``(x0, y0, x1, y1)`` integer pixels (end exclusive); boxes xyxy pixels.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from odkit.data.masks import to_rle, transform_segms
from odkit.data.structures import AnnotationSet
from odkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DROP_VISIBLE = "less than the minimum visible fraction inside the tile"
DROP_THIN = "narrower or lower than min_side pixels once clipped"
DROP_DEGENERATE = "zero-area or inverted box in the source"


def tile_grid(height: int, width: int, size: int | tuple[int, int], overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """Tiles ``(x0, y0, x1, y1)`` covering an image of ``height`` x ``width`` pixels, row by row.

    ``size``: tile side (or ``(height, width)``); ``overlap``: fraction of the side shared by
    neighbours (the step is ``side - int(overlap * side)``). The last tile of a row or column is moved
    back inside the image (so it overlaps more); an image smaller than a tile gives one tile of the
    image's size. SAHI's grid (``get_slice_bboxes``); sliced inference uses the same one.
    """
    sh, sw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if sh < 1 or sw < 1:
        raise ConfigError(f"slice / tile size must be >= 1 pixel, got {size}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    if height < 1 or width < 1:
        raise ConfigError(f"cannot slice an empty image ({height} x {width})")
    oy, ox = int(overlap * sh), int(overlap * sw)
    out = []
    y0 = y1 = 0
    while y1 < height:
        y1 = y0 + sh
        x0 = x1 = 0
        while x1 < width:
            x1 = x0 + sw
            if y1 > height or x1 > width:
                x1, y1 = min(width, x1), min(height, y1)
                x0, y0 = max(0, x1 - sw), max(0, y1 - sh)
            out.append((x0, y0, x1, y1))
            x0 = x1 - ox
        y0 = y1 - oy
    return out


@dataclass
class TileReport:
    """What slicing did. Box counts are per (box, tile) pair; ``lost`` lists the source boxes
    (image file, box, class, why) that are in no written tile."""

    images: int = 0
    tiles: int = 0
    tiles_with_boxes: int = 0
    empty_kept: int = 0
    empty_skipped: int = 0
    source_boxes: int = 0
    kept_whole: int = 0
    kept_clipped: int = 0
    dropped: Counter = field(default_factory=Counter)
    lost: list[tuple[str, list[float], str, str]] = field(default_factory=list)

    def text(self, limit: int = 20) -> str:
        lines = [
            f"{self.images} image(s) -> {self.tiles} tile(s) written: {self.tiles_with_boxes} with boxes, "
            f"{self.empty_kept} empty kept, {self.empty_skipped} empty skipped",
            f"{self.source_boxes} source box(es); in tiles: {self.kept_whole} kept whole, {self.kept_clipped} kept "
            f"clipped, {sum(self.dropped.values())} dropped (box, tile) pairs",
        ]
        lines += [f"  dropped: {n} {why}" for why, n in self.dropped.most_common()]
        if self.lost:
            lines.append(f"{len(self.lost)} source box(es) are in no written tile:")
            lines += [f"  {f}: {c} {[round(v, 1) for v in b]}: {why}" for f, b, c, why in self.lost[:limit]]
            if len(self.lost) > limit:
                lines.append(f"  ... and {len(self.lost) - limit} more")
        else:
            lines.append("every source box is in at least one written tile")
        return "\n".join(lines)


def clip_to_tile(boxes: np.ndarray, tile: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(clipped boxes in tile pixels [N, 4], visible fraction [N])`` of xyxy ``boxes`` in a tile;
    the fraction is 0 for boxes outside it and for zero-area boxes."""
    x0, y0, x1, y1 = tile
    c = np.stack([np.clip(boxes[:, 0], x0, x1), np.clip(boxes[:, 1], y0, y1),
                  np.clip(boxes[:, 2], x0, x1), np.clip(boxes[:, 3], y0, y1)], 1)
    inter = np.clip(c[:, 2] - c[:, 0], 0, None) * np.clip(c[:, 3] - c[:, 1], 0, None)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    frac = np.divide(inter, area, out=np.zeros(len(boxes)), where=area > 0)
    return (c - np.array([x0, y0, x0, y0], np.float32)).astype(np.float32), frac


def _tile_masks(segs: list, whole: np.ndarray, tile: tuple[int, int, int, int]) -> list:
    """Masks moved into a tile: polygons of whole boxes stay polygons, the others become the RLE of
    their part inside the tile (None stays None)."""
    x0, y0, x1, y1 = tile
    m = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]])
    out = []
    for g, w in zip(segs, whole):
        if g is None:
            out.append(None)
            continue
        (moved,) = transform_segms([g], m, (y1 - y0, x1 - x0), lazy=False)
        out.append(moved if w or not isinstance(moved, list) else to_rle(moved, y1 - y0, x1 - x0))
    return out


def slice_set(aset: AnnotationSet, tile_dir: str | Path, size: int = 640, overlap: float = 0.2,
              min_visible: float = 0.25, min_side: float = 1.0, empty_fraction: float = 1.0,
              seed: int = 0) -> tuple[AnnotationSet, TileReport]:
    """Cut every image of ``aset`` into tiles written to ``tile_dir`` (``<stem>_x<x0>_y<y0><suffix>``)
    and return the set of tiles (same classes; each tile in its image's splits) and the report.

    A box touching a tile is kept whole, kept clipped (visible fraction ``>= min_visible`` and both
    clipped sides ``>= min_side`` px) or dropped for that tile. Tiles without kept boxes are written
    with probability ``empty_fraction`` (seeded: the same tiles for the same arguments). Instance
    masks move with their boxes (the part inside the tile of a clipped one, as an RLE).
    """
    from odkit.data.imageio import read_image, write_image

    if not 0.0 <= min_visible <= 1.0:
        raise ConfigError(f"--min-visible must be in [0, 1], got {min_visible}")
    if not 0.0 <= empty_fraction <= 1.0:
        raise ConfigError(f"--empty-fraction must be in [0, 1], got {empty_fraction}")
    tile_dir = Path(tile_dir)
    tile_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rep = TileReport(images=len(aset), source_boxes=aset.num_annotations)
    files, widths, heights, boxes, labels, crowd, diff, origin = [], [], [], [], [], [], [], []
    masks: list[list] | None = [] if aset.masks is not None else None
    used = set()
    for i in range(len(aset)):
        path = aset.path(i)
        img = read_image(path)
        h, w = img.shape[:2]
        lo, hi = int(aset.offsets[i]), int(aset.offsets[i + 1])
        b = aset.boxes[lo:hi].astype(np.float64)
        best = np.zeros(hi - lo)  # best kept fraction per source box (0: in no tile)
        why = [DROP_DEGENERATE if (bb[2] <= bb[0] or bb[3] <= bb[1]) else "" for bb in b]
        stem = Path(aset.files[i]).stem
        for tile in tile_grid(h, w, size, overlap):
            cb, frac = clip_to_tile(b, tile)
            touch = frac > 0
            thin = (cb[:, 2] - cb[:, 0] < min_side) | (cb[:, 3] - cb[:, 1] < min_side)
            whole = touch & (frac >= 1.0 - 1e-6)
            keep = touch & (whole | ((frac >= min_visible) & ~thin))
            n_vis, n_thin = touch & ~keep & (frac < min_visible), touch & ~keep & (frac >= min_visible)
            for k in np.flatnonzero(n_vis | n_thin):
                why[k] = why[k] or (DROP_VISIBLE if n_vis[k] else DROP_THIN)
            if not keep.any():
                if rng.random() >= empty_fraction:
                    rep.empty_skipped += 1
                    rep.dropped[DROP_VISIBLE] += int(n_vis.sum())
                    rep.dropped[DROP_THIN] += int(n_thin.sum())
                    continue
                rep.empty_kept += 1
            else:
                rep.tiles_with_boxes += 1
            rep.kept_whole += int(whole.sum())
            rep.kept_clipped += int((keep & ~whole).sum())
            rep.dropped[DROP_VISIBLE] += int(n_vis.sum())
            rep.dropped[DROP_THIN] += int(n_thin.sum())
            best[keep] = np.maximum(best[keep], frac[keep])
            x0, y0, x1, y1 = tile
            name = f"{stem}_x{x0}_y{y0}{Path(aset.files[i]).suffix.lower() or '.png'}"
            if name in used:
                name = f"{stem}_{i}_x{x0}_y{y0}{Path(name).suffix}"
            used.add(name)
            write_image(tile_dir / name, np.ascontiguousarray(img[y0:y1, x0:x1]))
            files.append(name)
            widths.append(x1 - x0)
            heights.append(y1 - y0)
            boxes.append(cb[keep])
            labels.append(aset.labels[lo:hi][keep])
            crowd.append(aset.iscrowd[lo:hi][keep])
            diff.append(aset.difficult[lo:hi][keep])
            origin.append(i)
            if masks is not None:
                rows = lo + np.flatnonzero(keep)
                masks.append(_tile_masks([aset.masks[int(r)] for r in rows], whole[keep], tile))
        for k in np.flatnonzero(best == 0):
            c = int(aset.labels[lo + k])
            cname = aset.class_names[c] if 0 <= c < len(aset.class_names) else str(c)
            rep.lost.append((str(aset.files[i]), b[k].tolist(), cname, why[k] or "outside the image"))
    rep.dropped[DROP_DEGENERATE] += sum(1 for f in rep.lost if f[3] == DROP_DEGENERATE)
    rep.dropped = Counter({k: v for k, v in rep.dropped.items() if v})
    rep.tiles = len(files)
    out = AnnotationSet.from_lists(tile_dir, files, widths, heights, boxes, labels, aset.class_names,
                                   class_ids=aset.class_ids, iscrowd=crowd, difficult=diff, source="tiles",
                                   masks=masks)
    origin_arr = np.asarray(origin, np.int64)
    out.splits = {s: np.flatnonzero(np.isin(origin_arr, members)).astype(np.int64) for s, members in aset.splits.items()}
    return out, rep


def write_sliced(aset: AnnotationSet, dst: str | Path, format: str, **kw: object) -> tuple[TileReport, list]:
    """:func:`slice_set` of ``aset`` written to ``dst`` in layout ``format`` (every split; the tiles
    are staged in a temporary folder beside ``dst`` and copied by the writer). Returns the report
    and the writer's problems."""
    from odkit.data.formats import save_splits

    dst = Path(dst)
    parent = dst.parent if dst.suffix.lower() == ".json" else dst
    parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".tiles-", dir=parent))
    try:
        tiles, rep = slice_set(aset, stage, **kw)  # type: ignore[arg-type]
        if not len(tiles):
            raise DataError(f"slicing {len(aset)} image(s) wrote no tile (every tile empty and --empty-fraction 0?)")
        problems, _ = save_splits(tiles, dst, format, copy_images=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return rep, problems
