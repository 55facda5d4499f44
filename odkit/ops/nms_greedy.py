"""Exact greedy NMS kernels over boxes already sorted by priority (the engines behind odkit.ops.nms).

Every kernel returns the positions (ascending) that the classic loop keeps: "take the best remaining
box, drop every remaining box whose criterion (IoU or DIoU, float32) with it is > threshold", with a
box only suppressing boxes of its own label when labels are given. No Python loop runs over boxes.

* :func:`greedy_blocks` (``nms`` up to a few thousand boxes): the alive boxes are taken in blocks of
  ``_DENSE_BLOCK``; inside a block the greedy result is the unique fixed point of
  ``keep[j] = max_{i<j} keep[i] * iou[i, j] <= thr``, reached by iterating from ``keep = all``
  (Cluster-NMS) on the dense float matrix; the kept boxes of the block then remove every later box
  they overlap (dense ``[kept, rest]`` slabs, reduced by ``amax``).
* :func:`greedy_by_label` (``batched_nms``): the boxes are grouped by label; labels with few boxes
  are padded into ``[labels, m]`` tables (labels of similar counts together) and the same fixed
  point is reached for all of them at once on the ``[labels, m, m]`` matrix; a label with many
  boxes goes through the kernels above on its own.
* :func:`greedy_windows` (large inputs): blocks of alive boxes, and for each kept box only the alive
  boxes that can pass the threshold are examined (sorted windows, see its docstring).

The dense kernels need ``thr >= 0`` and finite boxes (masked entries are 0 and must never exceed the
threshold); :func:`greedy_sorted` routes other inputs to :func:`greedy_windows`, which handles all.
"""

from __future__ import annotations

import torch
from torch import Tensor

from odkit.ops.boxes import DEFAULT_EPS, _iou_core

__all__ = ["greedy_blocks", "greedy_by_label", "greedy_sorted", "greedy_windows"]

_BLOCK = 256  # greedy_windows: alive boxes per block
_MAX_PAIRS = 1 << 22  # largest [k, r] IoU slab computed at once (bounds memory for huge inputs)
# The dense kernels keep every tensor op at most _SERIAL elements: ATen runs such element-wise ops
# and reductions on the calling thread (below its parallel grain size), so NMS never waits for a
# second intra-op thread; on a busy machine such waits made small ops 10-40x slower.
_SERIAL = (1 << 15) - 1
_DENSE_BLOCK = 181  # greedy_blocks: alive boxes resolved at once (181^2 <= _SERIAL)
_SMALL_N = 10000  # nms / one label: greedy_blocks up to this many boxes, greedy_windows above


def greedy_sorted(boxes: Tensor, thr: float, labels: Tensor | None = None, mode: str = "iou") -> Tensor:
    """Exact greedy NMS over ``[N, 4]`` boxes sorted by priority: kept positions, ascending.

    With ``labels`` (``[N]``), a box only suppresses boxes of the same label. ``thr`` is compared
    with ``>`` to the float criterion (``mode`` ``"iou"`` or ``"diou"``).
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    if thr < 0 or not bool(torch.isfinite(boxes).all()):
        return greedy_windows(boxes, thr, labels, mode)
    if labels is not None:
        return greedy_by_label(_columns(boxes), labels, thr, mode)
    if n <= _SMALL_N:
        return greedy_blocks(_columns(boxes), thr, mode)
    return greedy_windows(boxes, thr, labels, mode)


def _columns(boxes: Tensor) -> Tensor:
    """``[5, N]``: x1, y1, x2, y2 and the area (widths and heights clamped at 0, as ``box_iou``)."""
    r = boxes.t()
    area = (r[2] - r[0]).clamp_(min=0).mul_((r[3] - r[1]).clamp_(min=0))
    return torch.cat((r, area[None]))


def _pair_values(a: Tensor, b: Tensor, mode: str) -> Tensor:
    """Criterion of every pair: ``a`` and ``b`` are broadcastable ``[5, ...]`` columns (see ``_columns``).

    For ``mode="iou"`` the arithmetic is that of ``box_iou`` (so the two agree bit for bit).
    """
    if mode != "iou":
        return _iou_core(a[:4].movedim(0, -1), b[:4].movedim(0, -1), mode, DEFAULT_EPS)
    iw = torch.minimum(a[2], b[2]).sub_(torch.maximum(a[0], b[0])).clamp_(min=0)
    ih = torch.minimum(a[3], b[3]).sub_(torch.maximum(a[1], b[1])).clamp_(min=0)
    inter = iw.mul_(ih)
    return inter.div_((a[4] + b[4]).sub_(inter).clamp_(min=DEFAULT_EPS))


def _triu_mask(m: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[m, m]`` float mask of the pairs ``i < j`` (cached)."""
    key = (m, dtype, device)
    mask = _TRIU.get(key)
    if mask is None:
        mask = torch.ones(m, m, dtype=dtype, device=device).triu_(1)
        if len(_TRIU) > 64:
            _TRIU.clear()
        _TRIU[key] = mask
    return mask


_TRIU: dict = {}


def _dense_keep(cols: Tensor, thr: float, mode: str) -> Tensor:
    """Greedy result (bool ``[L, m]``) of ``L`` independent priority-sorted sets of ``m`` boxes.

    ``cols`` is ``[5, L, m]``. With ``w[i, j] = max(v[i, j] - thr, 0)`` for ``i < j`` (``> 0``
    exactly when ``v > thr``: a float difference is 0 only for equal floats),
    ``keep[j] = (max_i keep[i] * w[i, j] == 0)`` is iterated from ``keep = all``: the k-th iterate
    is exact for every box whose longest suppression chain is shorter than k, so it reaches the
    (unique) fixed point after at most (longest chain + 1) rounds. Padding boxes must have zero
    size (``v = 0`` with any box), so they never suppress anything.
    """
    m = cols.shape[2]
    w = _pair_values(cols[:, :, :, None], cols[:, :, None, :], mode).sub_(thr).clamp_(min=0)
    w.mul_(_triu_mask(m, w.dtype, w.device))  # [L, m, m]
    keep = w.amax(1) == 0
    if bool(keep.all()):
        return keep
    while True:
        new = torch.mul(w, keep.to(w.dtype)[:, :, None]).amax(1) == 0  # (bmm would run threaded)
        if torch.equal(new, keep):
            return keep
        keep = new


def greedy_blocks(cols: Tensor, thr: float, mode: str = "iou") -> Tensor:
    """Exact greedy NMS of priority-sorted boxes (``[5, N]`` columns) by dense blocks; ``thr >= 0``."""
    pos = torch.arange(cols.shape[1], device=cols.device)
    kept = []
    while True:
        m = min(_DENSE_BLOCK, pos.shape[0])
        blk = cols[:, :m]
        kidx = _dense_keep(blk[:, None], thr, mode)[0].nonzero().squeeze(1)
        kept.append(pos[:m].index_select(0, kidx))
        if pos.shape[0] == m:
            break
        kc = blk.index_select(1, kidx)[:, :, None]
        rest, pos = cols[:, m:], pos[m:]
        step = max(1, _SERIAL // max(kidx.shape[0], 1))
        worst = [_pair_values(kc, rest[:, None, s : s + step], mode).amax(0) for s in range(0, rest.shape[1], step)]
        surv = ((worst[0] if len(worst) == 1 else torch.cat(worst)) <= thr).nonzero().squeeze(1)
        cols, pos = rest.index_select(1, surv), pos.index_select(0, surv)
        if pos.shape[0] == 0:
            break
    return torch.cat(kept)


def greedy_by_label(cols: Tensor, labels: Tensor, thr: float, mode: str = "iou") -> Tensor:
    """Exact per-label greedy NMS of priority-sorted boxes (``[5, N]`` columns); ``thr >= 0``.

    Labels with few boxes are resolved together: labels of similar box counts share one padded
    ``[labels, m, m]`` dense problem (zero-size padding boxes); a label with many boxes goes
    through :func:`greedy_blocks` or :func:`greedy_windows` on its own.
    """
    lab, perm = torch.sort(labels, stable=True)  # grouped by label, priority order kept inside
    sc = cols.index_select(1, perm)
    counts = torch.unique_consecutive(lab, return_counts=True)[1]
    cnt, start = counts.tolist(), (torch.cumsum(counts, 0) - counts).tolist()
    kept = []
    chunk: list[int] = []
    for i in sorted(range(len(cnt)), key=cnt.__getitem__) + [-1]:
        c = cnt[i] if i >= 0 else 0
        if chunk and (i < 0 or (len(chunk) + 1) * c * c > _SERIAL):
            kept.append(_labels_dense(sc, [start[j] for j in chunk], [cnt[j] for j in chunk], thr, mode))
            chunk = []
        if i < 0:
            break
        if c * c <= _SERIAL:
            chunk.append(i)
        elif c <= _SMALL_N:
            kept.append(start[i] + greedy_blocks(sc[:, start[i] : start[i] + c], thr, mode))
        else:
            box = sc[:4, start[i] : start[i] + c].t()
            kept.append(start[i] + greedy_windows(box, thr, None, mode))
    return torch.sort(perm.index_select(0, torch.cat(kept)))[0]


def _labels_dense(sc: Tensor, starts: list[int], counts: list[int], thr: float, mode: str) -> Tensor:
    """Greedy NMS of several labels at once; ``sc[:, s : s + c]`` are the boxes of one label."""
    dev = sc.device
    m = max(counts)
    slot = torch.arange(m, device=dev)
    real = slot < torch.tensor(counts, device=dev)[:, None]  # [L, m]
    idx = (torch.tensor(starts, device=dev)[:, None] + slot).clamp_(max=sc.shape[1] - 1)
    table = sc.index_select(1, idx.view(-1)).view(5, *idx.shape).mul_(real)  # padding: zero-size boxes
    keep = _dense_keep(table, thr, mode) & real
    return idx.view(-1).index_select(0, keep.view(-1).nonzero().squeeze(1))


def _pair_suppress(a: Tensor, aa: Tensor, b: Tensor, ba: Tensor, thr: float, mode: str) -> Tensor:
    """``[k, r]`` bool: criterion(a_i, b_j) > thr. ``a``/``b`` are ``[4, n]`` coordinate rows.

    For ``mode="iou"`` the arithmetic is the same as ``box_iou`` (so the two agree bit for bit).
    """
    if mode == "iou":
        ax1, ay1, ax2, ay2 = a[0, :, None], a[1, :, None], a[2, :, None], a[3, :, None]
        iw = torch.minimum(ax2, b[2]).sub_(torch.maximum(ax1, b[0])).clamp_(min=0)
        ih = torch.minimum(ay2, b[3]).sub_(torch.maximum(ay1, b[1])).clamp_(min=0)
        inter = iw.mul_(ih)
        union = (aa[:, None] + ba).sub_(inter).clamp_(min=DEFAULT_EPS)
        return inter.div_(union) > thr
    return _iou_core(a.t()[:, None, :], b.t()[None, :, :], mode, DEFAULT_EPS) > thr


def _block_keep(rows_b: Tensor, areas_b: Tensor, labels_b: Tensor | None, thr: float, mode: str) -> Tensor | None:
    """Greedy result inside one block of priority-sorted boxes (bool mask), or None when all are kept.

    The greedy result is the unique fixed point of ``keep[j] = not any_{i<j} keep[i] & sup[i, j]``;
    iterating from ``keep = all`` reaches it in at most (longest suppression chain + 1) rounds.
    """
    m = rows_b.shape[1]
    if m < 2:
        return None
    sup = _pair_suppress(rows_b, areas_b, rows_b, areas_b, thr, mode).triu_(1)
    if labels_b is not None:
        sup &= labels_b[:, None] == labels_b[None, :]
    if not bool(sup.any()):
        return None
    supf = sup.to(torch.float32)
    keep = torch.ones(m, dtype=torch.bool, device=rows_b.device)
    while True:
        new = (keep.to(torch.float32) @ supf) == 0
        if torch.equal(new, keep):
            return keep
        keep = new


def _greedy_dense(rows: Tensor, areas: Tensor, thr: float, labels: Tensor | None, mode: str) -> Tensor:
    """Blocked greedy NMS comparing each block's kept boxes with every later alive box (chunked)."""
    n = rows.shape[1]
    idx = torch.arange(n, device=rows.device)
    kept: list[Tensor] = []
    while idx.numel() > 0:
        blk, idx = idx[:_BLOCK], idx[_BLOCK:]
        keep = _block_keep(rows[:, blk], areas[blk], None if labels is None else labels[blk], thr, mode)
        if keep is not None:
            blk = blk[keep]
        kept.append(blk)
        if idx.numel() == 0 or blk.numel() == 0:
            continue
        rows_b, areas_b = rows[:, blk], areas[blk]
        step = max(1, _MAX_PAIRS // blk.numel())
        survivors = []
        for s in range(0, idx.numel(), step):
            part = idx[s : s + step]
            hit = _pair_suppress(rows_b, areas_b, rows[:, part], areas[part], thr, mode)
            if labels is not None:
                hit &= labels[blk][:, None] == labels[part][None, :]
            survivors.append(part[~hit.any(0)])
        idx = torch.cat(survivors)
    return torch.cat(kept)


def greedy_windows(boxes: Tensor, thr: float, labels: Tensor | None = None, mode: str = "iou") -> Tensor:
    """Exact greedy NMS over boxes already sorted by priority. Returns kept positions (ascending).

    With ``labels``, a box only suppresses boxes of the same label (= greedy NMS per label).

    Blocks of ``_BLOCK`` alive boxes are resolved exactly (:func:`_block_keep`); the kept boxes of a
    block then suppress later boxes. Only later boxes that can pass the threshold are examined.
    For boxes a, b with ``IoU > t >= 0``:

    * ``t < w_b / w_a < 1 / t`` (IoU <= min(w) / max(w)), and the same for heights;
    * ``|cx_a - cx_b| < (w_a + w_b) k`` and ``|cy_a - cy_b| < (h_a + h_b) k``, ``k = (1-t) / (2(1+t))``.

    So the alive boxes are kept in one list sorted by ``(label, width octave, cx)``; for each kept
    box, the candidates are a few contiguous windows of that list (one per width octave compatible
    with its width), filtered by the y bound, and the exact IoU is computed for those pairs only.
    ``DIoU <= IoU``, so the same candidates serve DIoU-NMS. Bounds carry a small margin for float32
    rounding, so the result is exactly that of the greedy loop on the same float32 IoU values.
    """
    n = boxes.shape[0]
    dev = boxes.device
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=dev)
    rows = boxes.t().contiguous()  # [4, n]
    areas = (rows[2] - rows[0]).clamp(min=0) * (rows[3] - rows[1]).clamp(min=0)
    if thr < 0 or n <= _BLOCK or not bool(torch.isfinite(rows).all()):
        return _greedy_dense(rows, areas, thr, labels, mode)

    r64 = rows.double()
    cx, cy = (r64[0] + r64[2]) * 0.5, (r64[1] + r64[3]) * 0.5
    w, h = (r64[2] - r64[0]).clamp(min=0), (r64[3] - r64[1]).clamp(min=0)
    t = max(thr - 1e-3, 0.0)  # margin for the float32 rounding of the IoU itself
    k = (1.0 - t) / (2.0 * (1.0 + t)) * (1.0 + 1e-6)
    hk = h * k + 1e-9
    # width octaves; boxes with zero width or height can never be suppressed and are not listed
    valid = (w > 0) & (h > 0)
    oct_ = torch.floor(torch.log2(torch.where(valid, w, torch.ones_like(w)))).long()
    o_min = int(oct_[valid].min()) if bool(valid.any()) else 0
    oct_ = oct_ - o_min
    n_oct = int(oct_[valid].max()) + 1 if bool(valid.any()) else 1
    half_max = float(((w + w.max()) * k).max()) + 1.0
    span = float(cx.max() - cx.min()) + 4.0 * half_max + 1.0
    if labels is not None:
        labels = torch.unique(labels, return_inverse=True)[1]  # contiguous 0..L-1
    group = oct_ if labels is None else labels * n_oct + oct_
    base = cx.min() - 2.0 * half_max
    key = (cx - base) + group.double() * span
    order = torch.argsort(key)
    xs = order.index_select(0, valid.index_select(0, order).nonzero().squeeze(1))
    key_s = key.index_select(0, xs)
    # per kept box: which octaves can hold a box of width in (t w_a, w_a / t)
    octs = torch.arange(n_oct, device=dev, dtype=torch.float64)
    o_lo = 2.0 ** (octs + o_min)  # octave width range [o_lo, 2 o_lo)

    alive = torch.ones(n, dtype=torch.bool, device=dev)
    kept: list[Tensor] = []
    p = 0
    while True:
        blk = alive[p:].nonzero().squeeze(1)[:_BLOCK] + p
        if blk.numel() == 0:
            break
        p = int(blk[-1]) + 1
        keep = _block_keep(
            rows.index_select(1, blk),
            areas.index_select(0, blk),
            None if labels is None else labels.index_select(0, blk),
            thr,
            mode,
        )
        alive[blk] = False
        if keep is not None:
            blk = blk.index_select(0, keep.nonzero().squeeze(1))
        kept.append(blk)
        if p >= n:
            break
        sel = alive.index_select(0, xs).nonzero().squeeze(1)
        xs, key_s = xs.index_select(0, sel), key_s.index_select(0, sel)
        blk = blk.index_select(0, valid.index_select(0, blk).nonzero().squeeze(1))
        if xs.numel() == 0:  # what is left has zero width or height: it cannot be suppressed
            kept.append(alive[p:].nonzero().squeeze(1) + p)
            break
        if blk.numel() == 0:
            continue
        # windows [k_boxes, n_oct]
        wa = w.index_select(0, blk)[:, None]
        if t > 0:  # octave [o_lo, 2 o_lo) must meet (t w_a, w_a / t)
            wb_max = torch.minimum(2.0 * o_lo[None, :], wa / t)
            ok = (o_lo[None, :] < wa / t) & (2.0 * o_lo[None, :] > wa * t)
        else:
            wb_max = (2.0 * o_lo[None, :]).expand(wa.shape[0], -1)
            ok = torch.ones_like(wb_max, dtype=torch.bool)
        half = (wa + wb_max) * k + 1e-9
        ga = (group.index_select(0, blk) - oct_.index_select(0, blk))[:, None] + torch.arange(n_oct, device=dev)
        centre = (cx.index_select(0, blk) - base)[:, None] + ga.double() * span
        lo = torch.searchsorted(key_s, (centre - half).reshape(-1))
        hi = torch.searchsorted(key_s, (centre + half).reshape(-1), right=True)
        counts = torch.where(ok.reshape(-1), hi - lo, torch.zeros_like(lo))
        total = int(counts.sum())
        if total == 0:
            continue
        a = torch.repeat_interleave(blk.repeat_interleave(n_oct), counts)
        start = torch.cumsum(counts, 0) - counts
        b = xs.index_select(0, torch.arange(total, device=dev) + torch.repeat_interleave(lo - start, counts))
        near = (cy.index_select(0, a) - cy.index_select(0, b)).abs_() < hk.index_select(0, a) + hk.index_select(0, b)
        sel = near.nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        a, b = a.index_select(0, sel), b.index_select(0, sel)
        ra, rb = rows.index_select(1, a), rows.index_select(1, b)
        if mode == "iou":
            iw = torch.minimum(ra[2], rb[2]).sub_(torch.maximum(ra[0], rb[0])).clamp_(min=0)
            ih = torch.minimum(ra[3], rb[3]).sub_(torch.maximum(ra[1], rb[1])).clamp_(min=0)
            inter = iw.mul_(ih)
            union = (areas.index_select(0, a) + areas.index_select(0, b)).sub_(inter).clamp_(min=DEFAULT_EPS)
            hit = inter.div_(union) > thr
        else:
            hit = _iou_core(ra.t(), rb.t(), mode, DEFAULT_EPS) > thr
        alive[b.index_select(0, hit.nonzero().squeeze(1))] = False
    return torch.cat(kept)


