"""Run-length encoded (RLE) binary masks, COCO's encoding, in numpy (nothing compiled).

An :class:`RLE` holds a mask of ``size = (h, w)`` pixels as alternating run lengths over the pixels
in column-major order (down the first column, then the next), starting with a run of zeros (which
may be empty). ``counts`` is uint32, as in pycocotools. The compressed form is COCO's counts string:
each count (from the fourth on, as the difference to the count two places before) in 5-bit groups,
low bits first, one ASCII character (48 + value, bit 0x20 = more follows) per group.

Every function gives the same result as pycocotools' ``mask`` module (``encode``, ``decode``,
``area``, ``toBbox``, ``merge``, ``iou``, the counts strings); for merges of canonical RLEs (no empty
runs besides the first, which is what ``encode``, polygons and merges produce) the counts are the
same too. Batch functions work on many masks at once with flat arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "RLE",
    "RLEArray",
    "encode",
    "decode",
    "area",
    "to_bbox",
    "merge",
    "iou",
    "counts_to_string",
    "string_to_counts",
    "strings_to_counts",
    "counts_to_strings",
    "from_coco",
    "to_coco",
    "bboxes",
    "intersections",
    "pair_iou",
]

_U32 = np.int64(0xFFFFFFFF)


@dataclass(eq=False)
class RLE:
    """A binary mask of ``size = (h, w)`` pixels as column-major run lengths (uint32, zeros first)."""

    size: tuple[int, int]
    counts: np.ndarray

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        self.counts = np.asarray(self.counts, dtype=np.uint32).reshape(-1)

    @property
    def h(self) -> int:
        return self.size[0]

    @property
    def w(self) -> int:
        return self.size[1]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RLE) and self.size == other.size and np.array_equal(self.counts, other.counts)

    def __repr__(self) -> str:
        return f"RLE(size={self.size}, counts={len(self.counts)} runs, area={area(self)})"


# ------------------------------------------------------------------------------ encode / decode
def encode(mask: np.ndarray) -> RLE | list[RLE]:
    """RLE of a binary mask ``[H, W]`` (one RLE) or of a stack ``[N, H, W]`` (a list); nonzero = 1."""
    m = np.asarray(mask)
    if m.ndim == 2:
        return encode(m[None])[0]  # type: ignore[index]
    if m.ndim != 3:
        raise ValueError(f"mask must be [H, W] or [N, H, W], got shape {list(m.shape)}")
    n, h, w = m.shape
    flat = (m != 0).transpose(0, 2, 1).reshape(n, h * w)  # column-major per mask
    if h * w == 0:
        return [RLE((h, w), np.zeros(1, dtype=np.uint32)) for _ in range(n)]
    # Run boundaries: where the value changes (a change at 0 when the first pixel is 1).
    prev = np.concatenate([np.zeros((n, 1), dtype=bool), flat[:, :-1]], axis=1)
    r, c = np.nonzero(flat != prev)
    out = []
    starts = np.searchsorted(r, np.arange(n + 1))
    for i in range(n):
        pos = c[starts[i] : starts[i + 1]].astype(np.int64)
        bounds = np.concatenate([[0], pos, [h * w]])
        out.append(RLE((h, w), np.diff(bounds)))
    return out


def decode(rle: RLE) -> np.ndarray:
    """The mask ``[H, W]`` uint8 (0 / 1) of an RLE; runs past ``h * w`` pixels are an error."""
    h, w = rle.size
    c = rle.counts.astype(np.int64)
    total = int(c.sum())
    if total > h * w:
        raise ValueError(f"RLE counts cover {total} pixels, more than its size {h} x {w}")
    vals = (np.arange(len(c)) % 2).astype(np.uint8)
    flat = np.zeros(h * w, dtype=np.uint8)
    flat[:total] = np.repeat(vals, c)
    return flat.reshape(w, h).T.copy()


def area(rle: RLE) -> int:
    """Number of mask pixels (sum of the odd runs)."""
    return int(rle.counts[1::2].astype(np.int64).sum())


# ----------------------------------------------------------------------------------- boxes
def bboxes(counts: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Boxes ``[N, 4]`` float64 ``xywh`` of N RLEs given flat ``counts`` and ``offsets`` [N+1], ``sizes`` [N, 2].

    pycocotools' ``rleToBbox``: whole pixels, and a run that crosses a column makes the box span the
    full image height; an RLE with fewer than two runs has the box ``[0, 0, 0, 0]``.
    """
    n = len(offsets) - 1
    out = np.zeros((n, 4), dtype=np.float64)
    if n == 0:
        return out
    offsets = np.asarray(offsets, dtype=np.int64)
    lens = np.diff(offsets)
    m = (lens // 2) * 2
    sizes = np.asarray(sizes, dtype=np.int64).reshape(n, 2)
    ok = (m > 0) & (sizes[:, 0] > 0)
    if not ok.any():
        return out
    idx = np.flatnonzero(ok)
    # Rows j < m of each RLE, with the RLE's cumulative sum (uint32 arithmetic, as in C).
    rep = np.repeat(idx, m[idx])
    first = np.repeat(np.cumsum(m[idx]) - m[idx], m[idx])
    j = np.arange(len(rep)) - first
    c = np.asarray(counts, dtype=np.int64)[offsets[rep] + j]
    cs = np.cumsum(c)
    seg0 = np.concatenate([[0], np.cumsum(m[idx])[:-1]])
    base = np.repeat(np.concatenate([[0], cs])[seg0], m[idx])
    cc = (cs - base) & _U32
    t = (cc - (j % 2)) & _U32
    h = sizes[rep, 0]
    y = t % h
    x = (t - y) // h
    # Odd rows end a run of ones: a run that ends in a later column than it starts spans the height.
    odd = (j % 2) == 1
    wraps = np.zeros(len(rep), dtype=bool)
    wraps[odd] = x[odd] > x[np.flatnonzero(odd) - 1]
    starts = np.cumsum(m[idx]) - m[idx]
    xs = np.minimum(np.minimum.reduceat(x, starts), sizes[idx, 1])
    xe = np.maximum(np.maximum.reduceat(x, starts), 0)
    ys = np.minimum(np.minimum.reduceat(y, starts), sizes[idx, 0])
    ye = np.maximum.reduceat(y, starts)
    full = np.logical_or.reduceat(wraps, starts)
    ys = np.where(full, 0, ys)
    ye = np.where(full, np.maximum(ye, sizes[idx, 0] - 1), ye)
    out[idx, 0] = xs
    out[idx, 1] = ys
    out[idx, 2] = (xe - xs + 1) & _U32
    out[idx, 3] = (ye - ys + 1) & _U32
    return out


def to_bbox(rle: RLE) -> np.ndarray:
    """Box ``[x, y, w, h]`` float64 of an RLE (pycocotools' ``toBbox``: whole pixels)."""
    return bboxes(rle.counts, np.array([0, len(rle.counts)]), np.array([rle.size]))[0]


# ----------------------------------------------------------------------------------- merge
def merge(rles: Sequence[RLE], intersect: bool = False) -> RLE:
    """Union (or intersection) of RLEs of one size; one RLE comes back unchanged, as in pycocotools."""
    rles = list(rles)
    if not rles:
        return RLE((0, 0), np.zeros(0, dtype=np.uint32))
    if len(rles) == 1:
        return RLE(rles[0].size, rles[0].counts.copy())
    size = rles[0].size
    for r in rles[1:]:
        if r.size != size:
            raise ValueError(f"cannot merge RLEs of sizes {size} and {r.size}")
    h, w = size
    # Coverage count from +1 / -1 events at the ends of every run of ones.
    pos, delta = [], []
    for r in rles:
        ends = np.cumsum(r.counts.astype(np.int64))
        s, e = ends[0:-1:2], ends[1::2]
        pos += [s[: len(e)], e]
        delta += [np.ones(len(e), dtype=np.int64), -np.ones(len(e), dtype=np.int64)]
    p = np.concatenate(pos)
    d = np.concatenate(delta)
    order = np.argsort(p, kind="stable")
    p, d = p[order], d[order]
    uniq, first = np.unique(p, return_index=True)
    cover = np.cumsum(np.add.reduceat(d, first)) if len(p) else np.zeros(0, dtype=np.int64)
    need = len(rles) if intersect else 1
    on = cover >= need
    prev_on = np.concatenate([[False], on[:-1]])
    change = uniq[on != prev_on]
    # A change at pixel 0 gives the empty first run of zeros.
    bounds = np.concatenate([[0], change[change < h * w], [h * w]])
    counts = np.diff(bounds)
    return RLE(size, counts)


# ----------------------------------------------------------------------------------- batches
@dataclass(eq=False)
class RLEArray:
    """Many RLEs in flat arrays: ``counts`` (uint32, all masks one after the other), ``offsets``
    [N+1] (mask ``i`` is ``counts[offsets[i]:offsets[i+1]]``) and ``sizes`` [N, 2] ``(h, w)``.

    Boxes, areas and the runs of ones are computed once, when first asked for.
    """

    counts: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray

    def __post_init__(self) -> None:
        self.counts = np.asarray(self.counts, dtype=np.uint32).reshape(-1)
        self.offsets = np.asarray(self.offsets, dtype=np.int64).reshape(-1)
        self.sizes = np.asarray(self.sizes, dtype=np.int64).reshape(-1, 2)
        if len(self.sizes) != len(self.offsets) - 1 or self.offsets[-1] != len(self.counts):
            raise ValueError("RLEArray: offsets, sizes and counts do not agree")
        self._cache: dict[str, Any] = {}

    @classmethod
    def from_rles(cls, rles: Sequence[RLE]) -> RLEArray:
        rles = list(rles)
        counts = [r.counts for r in rles]
        off = np.concatenate([[0], np.cumsum([len(c) for c in counts], dtype=np.int64)])
        flat = np.concatenate(counts) if counts else np.zeros(0, dtype=np.uint32)
        return cls(flat, off, np.array([r.size for r in rles], dtype=np.int64).reshape(-1, 2))

    @classmethod
    def concat(cls, parts: Sequence[RLEArray]) -> RLEArray:
        parts = list(parts)
        if not parts:
            return cls.from_rles([])
        counts = np.concatenate([p.counts for p in parts])
        shift = np.cumsum([0] + [len(p.counts) for p in parts[:-1]])
        off = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, shift)])
        return cls(counts, off, np.concatenate([p.sizes for p in parts]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> RLE:
        return RLE(tuple(self.sizes[i]), self.counts[self.offsets[i] : self.offsets[i + 1]].copy())

    def take(self, idx: np.ndarray) -> RLEArray:
        """The masks at ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        lens = np.diff(self.offsets)[idx]
        first = np.repeat(np.cumsum(lens) - lens, lens)
        rows = np.repeat(self.offsets[idx], lens) + (np.arange(int(lens.sum())) - first)
        return RLEArray(self.counts[rows], np.concatenate([[0], np.cumsum(lens)]), self.sizes[idx])

    @property
    def boxes(self) -> np.ndarray:
        """``[N, 4]`` float64 xywh boxes (:func:`to_bbox`)."""
        if "boxes" not in self._cache:
            self._cache["boxes"] = bboxes(self.counts, self.offsets, self.sizes)
        return self._cache["boxes"]

    @property
    def areas(self) -> np.ndarray:
        """``[N]`` int64 mask areas."""
        if "areas" not in self._cache:
            self._cache["areas"] = _areas(self.counts, self.offsets)
        return self._cache["areas"]

    def ones_runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start and end pixel of every run of ones, and their offsets per mask."""
        if "runs" not in self._cache:
            self._cache["runs"] = _ones_runs(self.counts, self.offsets)
        return self._cache["runs"]


def intersections(
    a: RLEArray, b: RLEArray, pa: np.ndarray, pb: np.ndarray, chunk: int = 4_000_000
) -> np.ndarray:
    """Pixel counts of ``a[pa[k]] & b[pb[k]]`` for pairs k (int64 [K]).

    Each run of ones of the ``a`` mask looks up how many pixels of the ``b`` mask lie before its two
    ends (all runs of ones of ``b`` placed one after the other on one axis, one slot per mask); at
    most ``chunk`` lookups at a time.
    """
    pa = np.asarray(pa, dtype=np.int64)
    pb = np.asarray(pb, dtype=np.int64)
    out = np.zeros(len(pa), dtype=np.int64)
    if len(pa) == 0:
        return out
    a_s, a_e, a_off = a.ones_runs()
    b_s, b_e, b_off = b.ones_runs()
    span = int(max(a_e.max(initial=0), b_e.max(initial=0))) + 1
    shift = np.repeat(np.arange(len(b), dtype=np.int64) * span, np.diff(b_off))
    gs = b_s + shift  # sorted: runs increase inside a mask, masks one after the other
    glen = b_e - b_s
    before = np.concatenate([[0], np.cumsum(glen)])[:-1]

    def prefix(x: np.ndarray) -> np.ndarray:
        k = np.searchsorted(gs, x, side="right") - 1
        kk = np.maximum(k, 0)
        return np.where(k >= 0, before[kk] + np.minimum(x - gs[kk], glen[kk]), 0)

    na = np.diff(a_off)[pa]
    ends = np.cumsum(na)
    k0 = 0
    while k0 < len(pa):
        k1 = int(np.searchsorted(ends, (ends[k0 - 1] if k0 else 0) + chunk, side="right"))
        k1 = max(k1, k0 + 1)
        cnt = na[k0:k1]
        pair = np.repeat(np.arange(k0, k1), cnt)
        first = np.repeat(np.cumsum(cnt) - cnt, cnt)
        run = a_off[pa[pair]] + (np.arange(len(pair)) - first)
        off = pb[pair] * span
        v = prefix(a_e[run] + off) - prefix(a_s[run] + off)
        cs = np.concatenate([[0], np.cumsum(v)])
        bnd = np.concatenate([[0], np.cumsum(cnt)])
        out[k0:k1] = cs[bnd[1:]] - cs[bnd[:-1]]
        k0 = k1
    return out


def _ones_runs(counts: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    offsets = np.asarray(offsets, dtype=np.int64)
    c = np.asarray(counts, dtype=np.int64)
    n = len(offsets) - 1
    lens = np.diff(offsets)
    cs = np.cumsum(c)
    base = np.concatenate([[0], cs])[offsets[:-1]]
    ends = cs - np.repeat(base, lens)
    j = np.arange(len(c)) - np.repeat(offsets[:-1], lens)
    odd = (j % 2) == 1
    e = ends[odd]
    s = ends[np.flatnonzero(odd) - 1]
    per = np.bincount(np.repeat(np.arange(n), lens)[odd], minlength=n)
    return s, e, np.concatenate([[0], np.cumsum(per)]).astype(np.int64)


def iou(dt: Sequence[RLE], gt: Sequence[RLE], iscrowd: Sequence[bool] | np.ndarray) -> np.ndarray:
    """IoU ``[D, G]`` float64 of detection and ground-truth masks, pycocotools' ``maskUtils.iou``.

    Against a crowd ground truth it is the intersection over the detection's area. 0 where the
    ``to_bbox`` boxes do not overlap or nothing intersects; -1 where the boxes overlap but the sizes
    differ (never a match).
    """
    d, g = RLEArray.from_rles(dt), RLEArray.from_rles(gt)
    crowd = np.asarray(iscrowd, dtype=bool).reshape(-1)
    if len(crowd) != len(g):
        raise ValueError(f"iscrowd has {len(crowd)} entries for {len(g)} ground truths")
    pd = np.repeat(np.arange(len(d)), len(g))
    pg = np.tile(np.arange(len(g)), len(d))
    return pair_iou(d, g, crowd, pd, pg).reshape(len(d), len(g))


def pair_iou(dt: RLEArray, gt: RLEArray, g_crowd: np.ndarray, pd: np.ndarray, pg: np.ndarray) -> np.ndarray:
    """IoU of masks ``dt[pd[k]]`` and ``gt[pg[k]]`` ([K] float64), the rule of :func:`iou`."""
    pd = np.asarray(pd, dtype=np.int64)
    pg = np.asarray(pg, dtype=np.int64)
    out = np.zeros(len(pd), dtype=np.float64)
    if len(pd) == 0:
        return out
    db, gb = dt.boxes[pd], gt.boxes[pg]
    bw = np.minimum(db[:, 2] + db[:, 0], gb[:, 2] + gb[:, 0]) - np.maximum(db[:, 0], gb[:, 0])
    bh = np.minimum(db[:, 3] + db[:, 1], gb[:, 3] + gb[:, 1]) - np.maximum(db[:, 1], gb[:, 1])
    live = (bw > 0) & (bh > 0)
    same = (dt.sizes[pd] == gt.sizes[pg]).all(1)
    out[live & ~same] = -1.0
    k = np.flatnonzero(live & same)
    if len(k) == 0:
        return out
    inter = intersections(dt, gt, pd[k], pg[k])
    d_area = dt.areas[pd[k]]
    g_area = gt.areas[pg[k]]
    union = np.where(np.asarray(g_crowd, dtype=bool)[pg[k]], d_area, d_area + g_area - inter)
    union = np.where(inter == 0, 1, union)
    out[k] = inter.astype(np.float64) / union.astype(np.float64)
    return out


def _areas(counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    offsets = np.asarray(offsets, dtype=np.int64)
    c = np.asarray(counts, dtype=np.int64)
    lens = np.diff(offsets)
    j = np.arange(len(c)) - np.repeat(offsets[:-1], lens)
    odd_c = np.where(j % 2 == 1, c, 0)
    cs = np.concatenate([[0], np.cumsum(odd_c)])
    return (cs[offsets[1:]] - cs[offsets[:-1]]) & _U32


# ------------------------------------------------------------------------- counts strings
def counts_to_strings(counts: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    """COCO counts strings of flat RLE counts (one bytes object per RLE)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    c = np.asarray(counts, dtype=np.int64)
    lens = np.diff(offsets)
    j = np.arange(len(c)) - np.repeat(offsets[:-1], lens)
    x = c.copy()
    d = j > 2
    x[d] -= c[np.flatnonzero(d) - 2]
    # Up to 7 groups of 5 bits per value (a uint32 difference needs at most 7).
    chars = np.zeros((len(c), 7), dtype=np.uint8)
    used = np.zeros((len(c), 7), dtype=bool)
    more = np.ones(len(c), dtype=bool)
    for g in range(7):
        ch = x & 0x1F
        x = x >> 5
        nxt = np.where((ch & 0x10) != 0, x != -1, x != 0) & more
        chars[:, g] = (ch | np.where(nxt, 0x20, 0)) + 48
        used[:, g] = more
        more = nxt
    buf = chars[used].tobytes()  # value by value, groups in order
    cs = np.concatenate([[0], np.cumsum(used.sum(1))])
    starts, ends = cs[offsets[:-1]], cs[offsets[1:]]
    return [buf[int(s) : int(e)] for s, e in zip(starts, ends)]


def counts_to_string(counts: np.ndarray) -> bytes:
    """COCO counts string of one RLE's counts."""
    return counts_to_strings(np.asarray(counts), np.array([0, len(counts)]))[0]


def strings_to_counts(strings: Sequence[bytes | str]) -> tuple[np.ndarray, np.ndarray]:
    """Flat uint32 counts and offsets [N+1] of COCO counts strings (pycocotools' ``rleFrString``)."""
    bs = [s.encode("ascii") if isinstance(s, str) else bytes(s) for s in strings]
    n = len(bs)
    raw = np.frombuffer(b"".join(bs), dtype=np.uint8).astype(np.int64)
    slen = np.array([len(b) for b in bs], dtype=np.int64)
    if len(raw) == 0:
        return np.zeros(0, dtype=np.uint32), np.zeros(n + 1, dtype=np.int64)
    ch = raw - 48
    if (ch < 0).any() or (ch > 63).any():
        raise ValueError("RLE counts string holds characters outside '0'..'o'")
    # A value ends at a character without the continuation bit (and at the end of each string).
    str_end = np.cumsum(slen) - 1
    end = (ch & 0x20) == 0
    end[str_end[slen > 0]] = True
    vid = np.concatenate([[0], np.cumsum(end)[:-1]])
    first_char = np.concatenate([[0], np.flatnonzero(end)[:-1] + 1])
    k = np.arange(len(ch)) - first_char[vid]
    if (k > 6).any():
        raise ValueError("RLE counts string holds a value longer than 7 characters")
    x = np.bincount(vid, weights=((ch & 0x1F) << (5 * k)).astype(np.float64)).astype(np.int64)
    last = np.flatnonzero(end)
    nk = k[last] + 1
    neg = (ch[last] & 0x10) != 0
    x = np.where(neg, x - (np.int64(1) << (5 * nk)), x)
    # Values per string, then counts[m] = x[m] + counts[m - 2] for m > 2.
    vals_per = np.bincount(np.searchsorted(np.cumsum(slen), last, side="right"), minlength=n)
    offsets = np.concatenate([[0], np.cumsum(vals_per)]).astype(np.int64)
    m = np.arange(len(x)) - np.repeat(offsets[:-1], vals_per)
    seg = np.repeat(np.arange(n), vals_per) * 3 + np.where(m == 0, 0, np.where(m % 2 == 0, 1, 2))
    order = np.lexsort((m, seg))
    xs = x[order]
    cs = np.cumsum(xs)
    segs = seg[order]
    seg_start = np.concatenate([[True], segs[1:] != segs[:-1]])
    base = np.maximum.accumulate(np.where(seg_start, np.arange(len(xs)), 0))
    before = np.concatenate([[0], cs])[base]
    counts = np.empty(len(x), dtype=np.int64)
    counts[order] = cs - before
    return (counts & _U32).astype(np.uint32), offsets


def string_to_counts(s: bytes | str) -> np.ndarray:
    """Counts (uint32) of one COCO counts string."""
    return strings_to_counts([s])[0]


# ------------------------------------------------------------------------------ COCO objects
def from_coco(obj: dict[str, Any]) -> RLE:
    """RLE of a COCO RLE object ``{"size": [h, w], "counts": str | bytes | list[int]}``."""
    try:
        h, w = (int(v) for v in obj["size"])
        counts = obj["counts"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not a COCO RLE object (size [h, w] and counts): {e}") from None
    if isinstance(counts, (str, bytes)):
        return RLE((h, w), string_to_counts(counts))
    c = np.asarray(counts)
    if c.ndim != 1 or (c.size and (c.dtype.kind not in "iu" or (c < 0).any())):
        raise ValueError("RLE counts must be a string or a list of non-negative integers")
    return RLE((h, w), c)


def to_coco(rle: RLE, compressed: bool = True) -> dict[str, Any]:
    """COCO RLE object: counts as a string (``compressed``, what result files hold) or a list."""
    counts: Any = counts_to_string(rle.counts).decode("ascii") if compressed else rle.counts.tolist()
    return {"size": [rle.h, rle.w], "counts": counts}
