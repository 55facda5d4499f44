"""RoIAlign as one weighted gather: the bilinear taps of every bin, summed by ``F.embedding_bag``.

Each output bin ``(k, c, p, q)`` of RoIAlign is a weighted sum of feature cells: every sample of
the bin reads its 2 x 2 neighbouring cells with the bilinear weights, divided by the bin's sample
count (a sample outside ``[-1, size]`` on either axis has weight 0). The taps of one axis are
computed once per RoI and bin row (column); the taps of a bin are the outer product of its row and
column taps. ``F.embedding_bag(mode="sum")`` gathers the ``[n_taps]`` cells from the channels-last features ``[B * H * W, C]`` with their weights,
one bag per bin. That is a single kernel for the whole forward pass (and its gradient, a
scatter-add of the same taps, is computed by autograd), so a call runs a handful of ATen ops
whatever the number of RoIs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_TAP_BUDGET = 1 << 23  # max taps (before dropping zero weights) built at once (bounds memory)


def axis_taps(start: Tensor, bin_size: Tensor, count: Tensor, n_out: int, size: int, g: int) -> tuple[Tensor, Tensor]:
    """Bilinear taps of RoIAlign samples along one axis.

    Args:
        start: ``[K]`` RoI start on this axis, in feature cells (after the aligned offset).
        bin_size: ``[K]`` bin size in feature cells.
        count: ``[K]`` int64 samples per bin (0 means no sample), at most ``g``.
        n_out: output bins on this axis.
        size: feature map size on this axis.
        g: samples per bin to lay out (padding samples get weight 0).

    Returns:
        ``(cell [K, n_out, 2g] int64, weight [K, n_out, 2g])``: sample ``i`` of bin ``p`` reads cells
        ``cell[k, p, 2i]`` and ``cell[k, p, 2i + 1]`` with those weights (1 / count included).
        Coordinates are clamped to the map as in the reference kernel.
    """
    dev, dt = start.device, start.dtype
    i = torch.arange(g, device=dev, dtype=dt)
    p = torch.arange(n_out, device=dev, dtype=dt)
    cnt = count.clamp(min=1).to(dt)[:, None, None]
    bins = bin_size[:, None, None]
    coord = start[:, None, None] + p[None, :, None] * bins + (i + 0.5)[None, None, :] * bins / cnt  # [K, n_out, g]
    valid = (torch.arange(g, device=dev)[None, None, :] < count[:, None, None]) & (coord >= -1.0) & (coord <= size)
    c = coord.clamp(0, size - 1)
    lo = c.floor().long()
    hi = (lo + 1).clamp(max=size - 1)
    frac = c - lo.to(dt)
    scale = valid.to(dt) / cnt
    cell = torch.stack((lo, hi), -1).flatten(2)
    weight = torch.stack(((1.0 - frac) * scale, frac * scale), -1).flatten(2)
    return cell, weight


def bin_taps(
    bidx: Tensor,
    y: tuple[Tensor, Tensor, Tensor],
    x: tuple[Tensor, Tensor, Tensor],
    out_hw: tuple[int, int],
    map_hw: tuple[int, int],
) -> tuple[Tensor, Tensor, Tensor]:
    """Non-zero taps of every bin of a set of RoIs.

    ``y`` and ``x`` are ``(start, bin_size, count)`` per axis (see :func:`axis_taps`). Returns
    ``(cells [T], weights [T], counts [K * oh * ow])``: flat cell indices into ``[B * H * W]``, their
    weights, and the number of taps of each bin (bins in ``(k, p, q)`` order). Zero-weight taps are
    dropped when some RoIs have fewer samples per bin than others (padding samples).
    """
    (oh, ow), (h, w) = out_hw, map_hw
    g = max(int(torch.maximum(y[2], x[2]).max()), 1)
    yc, yw = axis_taps(*y, oh, h, g)
    xc, xw = axis_taps(*x, ow, w, g)
    cells = (bidx * (h * w))[:, None, None, None, None] + (yc * w)[:, :, None, :, None] + xc[:, None, :, None, :]
    weights = yw[:, :, None, :, None] * xw[:, None, :, None, :]  # [K, oh, ow, 2g, 2g]
    if bool((y[2] == g).all()) and bool((x[2] == g).all()):  # no padding samples: keep every tap
        counts = torch.full((cells.shape[0] * oh * ow,), 4 * g * g, dtype=torch.long, device=cells.device)
        return cells.view(-1), weights.view(-1), counts
    nz = weights != 0
    sel = nz.view(-1).nonzero().squeeze(1)
    counts = nz.flatten(3).sum(-1).view(-1)
    return cells.view(-1).index_select(0, sel), weights.view(-1).index_select(0, sel), counts


def roi_align_taps(
    feats: Tensor,
    bidx: Tensor,
    y: tuple[Tensor, Tensor, Tensor],
    x: tuple[Tensor, Tensor, Tensor],
    out_hw: tuple[int, int],
) -> Tensor:
    """RoIAlign ``[K, C, oh, ow]`` of ``feats`` ``[B, C, H, W]`` (float32/64), differentiable.

    The taps are built at once when they fit in ``_TAP_BUDGET`` (RoIs with fewer samples per bin
    padded with zero-weight samples), else in chunks of RoIs sorted by samples per bin.
    """
    b_sz, c, h, w = feats.shape
    oh, ow = out_hw
    k = bidx.shape[0]
    fcl = feats.permute(0, 2, 3, 1).reshape(b_sz * h * w, c)
    g_roi = torch.maximum(y[2], x[2]).clamp(min=1)
    per_roi = 4 * oh * ow
    g_hi = int(g_roi.max())
    if k * per_roi * g_hi**2 <= _TAP_BUDGET:
        chunks, order = [torch.arange(k, device=bidx.device)], None
    else:  # sorted by samples per bin; a chunk holds one sample count, within the tap budget
        order = torch.argsort(g_roi)
        gs = g_roi.index_select(0, order).tolist()
        chunks, s = [], 0
        while s < k:
            e = s + 1
            while e < k and (e + 1 - s) * per_roi * gs[e] ** 2 <= _TAP_BUDGET:
                e += 1
            chunks.append(order[s:e])
            s = e
    parts = [
        bin_taps(bidx.index_select(0, ch), tuple(t.index_select(0, ch) for t in y),
                 tuple(t.index_select(0, ch) for t in x), out_hw, (h, w))
        for ch in chunks
    ]
    cells, weights, counts = (torch.cat(t) if len(parts) > 1 else t[0] for t in zip(*parts))
    offsets = torch.cumsum(counts, 0) - counts
    out = F.embedding_bag(cells, fcl, offsets, mode="sum", per_sample_weights=weights.to(fcl.dtype))
    out = out.view(k, oh, ow, c)
    if order is not None:
        out = out.index_select(0, torch.argsort(order))
    return out.permute(0, 3, 1, 2).contiguous()
