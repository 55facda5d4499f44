"""Non-maximum suppression family: nms, batched_nms, diou_nms, soft_nms, matrix_nms, multiclass_nms.

All boxes are xyxy ``[N, 4]`` (continuous coordinates). Scores are ``[N]``. Results are int64
indices into the input, ordered by decreasing score, ties broken by the lower index first.

``nms``, ``diou_nms`` and ``batched_nms`` are exact greedy NMS (the result of the classic loop "take
the best remaining box, drop every remaining box whose IoU with it is > threshold", per label for
``batched_nms``), computed without a Python loop over boxes by the kernels of
:mod:`odkit.ops.nms_greedy`. No op here changes the process-wide thread settings.
"""

from __future__ import annotations

import torch
from torch import Tensor

from odkit.errors import ConfigError
from odkit.ops.boxes import DEFAULT_EPS, _iou_core
from odkit.ops.nms_greedy import greedy_sorted

__all__ = ["batched_nms", "diou_nms", "matrix_nms", "multiclass_nms", "nms", "soft_nms"]


def _check_inputs(boxes: Tensor, scores: Tensor, fn: str) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ConfigError(f"{fn}: boxes must have shape [N, 4], got {tuple(boxes.shape)}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ConfigError(
            f"{fn}: scores must have shape [N] with N = {boxes.shape[0]}, got {tuple(scores.shape)}"
        )


def _float(t: Tensor) -> Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


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
    b = _float(boxes).index_select(0, order)
    return order.index_select(0, greedy_sorted(b, _thr_for(iou_threshold, b.dtype)))


def diou_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy DIoU-NMS: suppress when ``IoU - d^2 / c^2 > iou_threshold`` (DIoU of the pair).

    Same ordering and tie rules as :func:`nms`.
    """
    _check_inputs(boxes, scores, "diou_nms")
    order = _sort_desc(scores)
    b = _float(boxes).index_select(0, order)
    return order.index_select(0, greedy_sorted(b, _thr_for(iou_threshold, b.dtype), mode="diou"))


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware exact greedy NMS: equal to :func:`nms` per label, merged by decreasing score.

    Ties in score are broken by the lower index first. Boxes are compared only within a label,
    without the coordinate-offset trick (so there is no floating-point loss): with many labels all
    labels are resolved at once on one padded per-label matrix.
    """
    _check_inputs(boxes, scores, "batched_nms")
    if labels.shape != scores.shape:
        raise ConfigError(f"batched_nms: labels must have shape {tuple(scores.shape)}, got {tuple(labels.shape)}")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = _sort_desc(scores)
    b = _float(boxes).index_select(0, order)
    keep = greedy_sorted(b, _thr_for(iou_threshold, b.dtype), labels=labels.index_select(0, order))
    return order.index_select(0, keep)


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
    cs = flat.index_select(0, cand)
    if pre_topk > 0 and cand.numel() > pre_topk:
        top = _sort_desc(cs)[:pre_topk]
        top = torch.sort(top)[0]  # keep index order so ties still resolve to the lower index
        cand, cs = cand.index_select(0, top), cs.index_select(0, top)
    rows = torch.div(cand, c, rounding_mode="floor")
    labels = cand - rows * c
    cb = boxes.index_select(0, rows) if boxes.dim() == 2 else boxes.reshape(-1, 4).index_select(0, cand)
    cb = cb.float() if cb.dtype != torch.float32 else cb
    if class_agnostic:
        keep = nms(cb, cs, iou_thr)
    else:
        keep = batched_nms(cb, cs, labels, iou_thr)
    if max_per_img > 0:
        keep = keep[:max_per_img]
    out = (cb.index_select(0, keep), cs.index_select(0, keep), labels.index_select(0, keep))
    if return_inds:
        return (*out, rows.index_select(0, keep))
    return out
