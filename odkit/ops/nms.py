"""Non-maximum suppression family: nms, batched_nms, diou_nms, soft_nms, matrix_nms, multiclass_nms.

All boxes are xyxy ``[N, 4]`` (continuous coordinates). Scores are ``[N]``. Results are int64
indices into the input, ordered by decreasing score, ties broken by the lower index first.

``nms`` is exact greedy NMS (the result of the classic loop "take the best remaining box, drop
every remaining box whose IoU with it is > threshold"), computed without a Python loop over boxes:
the score-sorted boxes are processed in blocks of still-alive boxes. Inside a block, the greedy
result is the unique fixed point of ``keep[j] = not any(keep[i] and iou[i, j] > thr for i < j)``,
reached by iterating from ``keep = all`` (Cluster-NMS); the kept boxes of the block then remove the
later boxes they overlap, so IoU is only ever computed for surviving boxes and memory stays bounded
(one block x the remaining boxes, chunked).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from odkit.errors import ConfigError
from odkit.ops.boxes import DEFAULT_EPS, _iou_core

__all__ = ["batched_nms", "diou_nms", "matrix_nms", "multiclass_nms", "nms", "soft_nms"]

_BLOCK = 256  # alive boxes per block
_MAX_PAIRS = 1 << 22  # largest [k, r] IoU slab computed at once (bounds memory for huge inputs)


def _check_inputs(boxes: Tensor, scores: Tensor, fn: str) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ConfigError(f"{fn}: boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ConfigError(
            f"{fn}: scores must have shape [N] with N = {boxes.shape[0]}, got {tuple(scores.shape)}"
        )


def _float(t: Tensor) -> Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the body with one intra-op thread.

    NMS is a chain of many small tensor ops; on a busy CPU every parallel region can wait a whole
    scheduler slice for its second thread (measured: 100x slower on a loaded 2-core machine), and
    on an idle one the ops are too small to gain from threads.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _thr_for(thr: float, dtype: torch.dtype) -> float:
    """A threshold ``t`` in ``dtype`` with ``iou > t`` (in ``dtype``) iff ``iou > thr`` (in float64).

    IoU values are computed in float32 but compared with the float64 threshold, as the classic
    loop and torchvision do: for float32 this is ``thr`` rounded down to a float32.
    """
    if dtype != torch.float32:
        return float(thr)
    t = torch.tensor(thr, dtype=torch.float32)
    if float(t) > thr:
        t = torch.nextafter(t, torch.tensor(float("-inf")))
    return float(t)


def _sort_desc(scores: Tensor) -> Tensor:
    """Indices by decreasing score, equal scores by increasing index."""
    return torch.sort(scores, descending=True, stable=True)[1]


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


def _greedy_sorted(boxes: Tensor, thr: float, labels: Tensor | None = None, mode: str = "iou") -> Tensor:
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


@_one_thread()
def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Exact greedy NMS (torchvision-compatible).

    Args:
        boxes: ``[N, 4]`` xyxy.
        scores: ``[N]``.
        iou_threshold: a box is suppressed by a higher-scoring kept box when their IoU is ``>`` this.

    Returns:
        int64 ``[K]`` indices of kept boxes, by decreasing score (ties: lower index first).
    """
    _check_inputs(boxes, scores, "nms")
    order = _sort_desc(scores)
    b = _float(boxes)[order]
    return order[_greedy_sorted(b, _thr_for(iou_threshold, b.dtype))]


@_one_thread()
def diou_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy DIoU-NMS: suppress when ``IoU - d^2 / c^2 > iou_threshold`` (DIoU of the pair).

    Same ordering and tie rules as :func:`nms`.
    """
    _check_inputs(boxes, scores, "diou_nms")
    order = _sort_desc(scores)
    b = _float(boxes)[order]
    return order[_greedy_sorted(b, _thr_for(iou_threshold, b.dtype), mode="diou")]


@_one_thread()
def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware exact greedy NMS: equal to :func:`nms` per label, merged by decreasing score.

    Ties in score are broken by the lower index first. Boxes are compared only within a label,
    without the coordinate-offset trick (so there is no floating-point loss).
    """
    _check_inputs(boxes, scores, "batched_nms")
    if labels.shape != scores.shape:
        raise ConfigError(f"batched_nms: labels must have shape {tuple(scores.shape)}, got {tuple(labels.shape)}")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = _sort_desc(scores)
    b = _float(boxes)[order]
    return order[_greedy_sorted(b, _thr_for(iou_threshold, b.dtype), labels=labels[order])]


@_one_thread()
def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    method: str = "linear",
    score_threshold: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al. 2017).

    Repeatedly takes the remaining box with the highest (decayed) score and decays the others:
    ``"linear"``: ``s *= 1 - iou`` where ``iou > iou_threshold``; ``"gaussian"``:
    ``s *= exp(-iou^2 / sigma)``. Boxes whose score falls below ``score_threshold`` are dropped.
    The loop runs once per kept box.

    Returns:
        ``(keep [K] int64, scores [K])``: kept indices in selection order and their decayed scores
        (non-increasing; ties: lower index first).
    """
    _check_inputs(boxes, scores, "soft_nms")
    if method not in ("linear", "gaussian"):
        raise ConfigError(f"soft_nms: method must be 'linear' or 'gaussian', got {method!r}")
    b = _float(boxes)
    s = _float(scores).clone()
    idx = torch.arange(b.shape[0], device=b.device)
    alive = s >= score_threshold
    b, s, idx = b[alive], s[alive], idx[alive]
    rows = b.t().contiguous()
    thr = _thr_for(iou_threshold, b.dtype)
    keep, kept_scores = [], []
    while s.numel() > 0:
        i = int(torch.argmax(s))
        keep.append(idx[i])
        kept_scores.append(s[i])
        rest = torch.ones(s.numel(), dtype=torch.bool, device=s.device)
        rest[i] = False
        rows_r, s, idx = rows[:, rest], s[rest], idx[rest]
        if s.numel() == 0:
            break
        iou = _iou_core(rows[:, i], rows_r.t(), "iou", DEFAULT_EPS)
        if method == "linear":
            s = torch.where(iou > thr, s * (1 - iou), s)
        else:
            s = s * torch.exp(-(iou * iou) / sigma)
        alive = s >= score_threshold
        rows, s, idx = rows_r[:, alive], s[alive], idx[alive]
    if not keep:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores.new_zeros(0, dtype=s.dtype)
    return torch.stack(keep), torch.stack(kept_scores)


def matrix_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor | None = None,
    kernel: str = "gaussian",
    sigma: float = 2.0,
    score_threshold: float = 0.0,
    max_num: int = -1,
    block: int = 1024,
) -> tuple[Tensor, Tensor]:
    """Matrix NMS (SOLOv2) on boxes: all scores are decayed in parallel, nothing is removed greedily.

    Sorted by score, box ``j`` is decayed by ``min_i f(iou_ij) / f(c_i)`` over higher-scored ``i``
    (of the same label when ``labels`` is given), where ``c_i`` is the largest IoU of ``i`` with a
    box above it and ``f`` is ``exp(-sigma * x^2)`` (``"gaussian"``) or ``1 - x`` (``"linear"``).
    Memory is bounded by processing ``block`` columns at a time.

    Returns:
        ``(keep [K] int64, decayed_scores [K])``: boxes whose decayed score is ``> score_threshold``,
        by decreasing decayed score (ties: lower index first), at most ``max_num`` when > 0.
    """
    _check_inputs(boxes, scores, "matrix_nms")
    if kernel not in ("gaussian", "linear"):
        raise ConfigError(f"matrix_nms: kernel must be 'gaussian' or 'linear', got {kernel!r}")
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), _float(scores).new_zeros(0)
    order = _sort_desc(scores)
    b = _float(boxes)[order]
    s = _float(scores)[order]
    lab = labels[order] if labels is not None else None
    comp = torch.zeros(n, dtype=b.dtype, device=b.device)
    decay = torch.ones(n, dtype=b.dtype, device=b.device)
    for start in range(0, n, block):
        end = min(start + block, n)
        iou = _iou_core(b[:end, None, :], b[None, start:end, :], "iou", DEFAULT_EPS)  # [end, B]
        upper = torch.arange(end, device=b.device)[:, None] < torch.arange(start, end, device=b.device)[None]
        if lab is not None:
            upper &= lab[:end, None] == lab[None, start:end]
        iou = iou * upper
        comp[start:end] = iou.max(0)[0]
        c = comp[:end, None]
        if kernel == "gaussian":
            d = torch.exp(-sigma * (iou * iou - c * c))
        else:
            d = (1 - iou) / (1 - c).clamp(min=DEFAULT_EPS)
        d = torch.where(upper, d, torch.ones_like(d))
        decay[start:end] = d.min(0)[0]  # <= 1: the diagonal entry is always 1
    s = s * decay
    sel = s > score_threshold
    pos = sel.nonzero().squeeze(1)
    keep, ks = order[pos], s[pos]
    o = torch.sort(keep)[1]
    keep, ks = keep[o], ks[o]
    o = _sort_desc(ks)
    keep, ks = keep[o], ks[o]
    if max_num > 0:
        keep, ks = keep[:max_num], ks[:max_num]
    return keep, ks


@_one_thread()
def multiclass_nms(
    boxes: Tensor,
    scores: Tensor,
    score_thr: float,
    iou_thr: float,
    pre_topk: int = 1000,
    max_per_img: int = 100,
    class_agnostic: bool = False,
    return_inds: bool = False,
) -> tuple[Tensor, Tensor, Tensor] | tuple[Tensor, Tensor, Tensor, Tensor]:
    """Detector post-processing: score threshold, top-k, (class-aware) NMS, max detections.

    Args:
        boxes: ``[N, 4]`` (shared by all classes) or ``[N, C, 4]`` (one box per class), xyxy.
        scores: ``[N, C]`` per-class scores (no background column).
        score_thr: keep (box, class) candidates with score ``> score_thr``.
        iou_thr: NMS IoU threshold (suppress when IoU ``>``).
        pre_topk: keep only the ``pre_topk`` best candidates before NMS (``<= 0``: all).
        max_per_img: keep at most this many detections (``<= 0``: all).
        class_agnostic: one NMS over all classes instead of one per class.
        return_inds: also return the index ``n`` of the input row of each detection.

    Returns:
        ``(boxes [K, 4] float32, scores [K], labels [K] int64)`` by decreasing score
        (plus ``inds [K]`` when ``return_inds``).
    """
    if scores.dim() != 2:
        raise ConfigError(f"multiclass_nms: scores must have shape [N, C], got {tuple(scores.shape)}")
    n, c = scores.shape
    if not (boxes.shape == (n, 4) or boxes.shape == (n, c, 4)):
        raise ConfigError(
            f"multiclass_nms: boxes must have shape [{n}, 4] or [{n}, {c}, 4], got {tuple(boxes.shape)}"
        )
    flat = scores.reshape(-1)
    cand = (flat > score_thr).nonzero().squeeze(1)
    cs = flat[cand]
    if pre_topk > 0 and cand.numel() > pre_topk:
        top = _sort_desc(cs)[:pre_topk]
        top = torch.sort(top)[0]  # keep index order so ties still resolve to the lower index
        cand, cs = cand[top], cs[top]
    rows = torch.div(cand, c, rounding_mode="floor")
    labels = cand - rows * c
    cb = boxes[rows] if boxes.dim() == 2 else boxes.reshape(-1, 4)[cand]
    cb = cb.float() if cb.dtype != torch.float32 else cb
    if class_agnostic:
        keep = nms(cb, cs, iou_thr)
    else:
        keep = batched_nms(cb, cs, labels, iou_thr)
    if max_per_img > 0:
        keep = keep[:max_per_img]
    out = (cb[keep], cs[keep], labels[keep])
    if return_inds:
        return (*out, rows[keep])
    return out
