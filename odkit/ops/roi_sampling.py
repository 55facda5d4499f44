"""Separable RoIAlign kernel: per-axis bilinear weights, gathered windows, batched matmuls.

RoIAlign is separable. With ``Ay[k, p, i]`` the weight of feature row ``rows_k[i]`` in output row
``p`` of RoI ``k`` (the bilinear weights of the bin's samples on the two rows around each sample,
divided by the sample count, 0 for a sample outside ``[-1, H]``) and ``Ax`` the same for columns,

    out[k, c, p, q] = sum_{i, j} Ay[k, p, i] * Ax[k, q, j] * F[b_k, c, rows_k[i], cols_k[j]].

A sample is dropped when either of its coordinates is out of range; its weight is then 0 on one of
the two axes, so the product is 0 as in the reference kernel. ``rows_k`` is the contiguous window of
rows that the RoI's samples touch, or, when that is longer, the list of the two rows of each
sample (large RoIs with few samples).

The forward pass gathers each RoI's ``[rows, cols, C]`` window from a channels-last copy of the
features and contracts it with ``Ay`` and then ``Ax`` (two ``bmm``); the backward pass applies the
transposes (two ``bmm``) and adds the windows' gradients into the feature gradient (``index_add_``).
RoIs are processed in groups of similar window size, padded to the group's largest window.
"""

from __future__ import annotations

import torch
from torch import Tensor

_CHUNK_ELEMS = 1 << 24  # max elements of one group's gathered windows (bounds memory)
_GROUP_CELLS = 512  # padding (in window cells) worth one more group's fixed cost


def axis_weights(
    start: Tensor, bin_size: Tensor, count: Tensor, n_out: int, size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Bilinear weights of RoIAlign samples along one axis.

    Args:
        start: ``[K]`` RoI start on this axis, in feature cells (after the aligned offset).
        bin_size: ``[K]`` bin size in feature cells.
        count: ``[K]`` int64 samples per bin (0 means no sample).
        n_out: output bins on this axis.
        size: feature map size on this axis.

    Returns:
        ``(weight [K, n_out, L], index [K, L] int64, length [K] int64)``: feature cell ``index[k, i]``
        enters output bin ``p`` with ``weight[k, p, i]`` (the 1 / count averaging included); only the
        first ``length[k]`` positions of RoI ``k`` are used, the rest have weight 0.
    """
    k = start.shape[0]
    dev, dt = start.device, start.dtype
    g_max = max(int(count.max()), 1) if k else 1
    i = torch.arange(g_max, device=dev, dtype=dt)
    p = torch.arange(n_out, device=dev, dtype=dt)
    cnt = count.clamp(min=1).to(dt)[:, None, None]
    bins = bin_size[:, None, None]
    coord = start[:, None, None] + p[None, :, None] * bins + (i + 0.5)[None, None, :] * bins / cnt  # [K, n_out, g]
    real = torch.arange(g_max, device=dev)[None, None, :] < count[:, None, None]
    valid = real & (coord >= -1.0) & (coord <= size)
    c = coord.clamp(0, size - 1)
    lo = c.floor().long()
    hi = (lo + 1).clamp(max=size - 1)
    frac = c - lo.to(dt)
    scale = valid.to(dt) / cnt
    w_lo, w_hi = (1.0 - frac) * scale, frac * scale

    big = torch.iinfo(torch.long).max
    first = torch.where(valid, lo, big).amin(dim=(1, 2)) if k else lo.new_zeros(0)
    last = torch.where(valid, hi, -1).amax(dim=(1, 2)) if k else lo.new_zeros(0)
    first = torch.where(last >= 0, first, torch.zeros_like(first))
    win_len = (last - first + 1).clamp(min=1)
    tap_len = 2 * n_out * count
    use_win = win_len <= tap_len
    length = torch.where(use_win, win_len, tap_len).clamp(min=1)
    l_max = int(length.max()) if k else 1

    # position of each sample's two taps in the per-RoI list; non-samples go to a dump column
    slot = 2 * (torch.arange(n_out, device=dev)[None, :, None] * count[:, None, None] + torch.arange(g_max, device=dev))
    win = use_win[:, None, None]
    pos_lo = torch.where(win, lo - first[:, None, None], slot)
    pos_hi = torch.where(win, hi - first[:, None, None], slot + 1)
    pos_lo = torch.where(real, pos_lo.clamp(0, l_max - 1), l_max)
    pos_hi = torch.where(real, pos_hi.clamp(0, l_max - 1), l_max)
    weight = coord.new_zeros(k, n_out, l_max + 1)
    weight.scatter_add_(2, pos_lo, w_lo).scatter_add_(2, pos_hi, w_hi)
    taps = lo.new_zeros(k, l_max + 1)
    for pos, cell in ((pos_lo, lo), (pos_hi, hi)):
        taps.scatter_(1, torch.where(use_win[:, None], l_max, pos.reshape(k, -1)), cell.reshape(k, -1))
    window = (first[:, None] + torch.arange(l_max, device=dev)).clamp(max=size - 1)
    index = torch.where(use_win[:, None], window, taps[:, :l_max])
    return weight[:, :, :l_max], index, length


def make_groups(lh: Tensor, lw: Tensor, channels: int) -> list[tuple[Tensor, int, int]]:
    """Split RoIs into groups of similar window size: ``[(roi_indices, rows, cols), ...]``.

    RoIs are bucketed by row count (ratio 1.5 between buckets), sorted by column count inside a
    bucket, and cut where padding to the group's largest window would cost more than a new group.
    """
    lh_l, lw_l = lh.tolist(), lw.tolist()
    buckets: dict[int, list[int]] = {}
    for r, h in enumerate(lh_l):
        b, top = 0, 1
        while top < h:
            top = max(top + 1, int(top * 1.5))
            b += 1
        buckets.setdefault(b, []).append(r)
    groups: list[tuple[Tensor, int, int]] = []
    for b in sorted(buckets):
        members = sorted(buckets[b], key=lambda r: lw_l[r])
        cur: list[int] = []
        h_max = actual = 0
        for r in members:
            nh, nw = max(h_max, lh_l[r]), lw_l[r]
            padded = (len(cur) + 1) * nh * nw
            fits = padded * channels <= _CHUNK_ELEMS
            if cur and (not fits or padded > 1.25 * (actual + lh_l[r] * nw) + _GROUP_CELLS):
                groups.append((torch.tensor(cur, device=lh.device), h_max, lw_l[cur[-1]]))
                cur, h_max, actual, nh = [], 0, 0, lh_l[r]
            cur.append(r)
            h_max, actual = nh, actual + lh_l[r] * nw
        if cur:
            groups.append((torch.tensor(cur, device=lh.device), h_max, lw_l[cur[-1]]))
    return groups


def _window_index(bidx: Tensor, rows: Tensor, cols: Tensor, h: int, w: int) -> Tensor:
    """Flat indices ``[k, rows, cols]`` into the channels-last ``[B * H * W, C]`` features."""
    return (bidx * (h * w))[:, None, None] + rows[:, :, None] * w + cols[:, None, :]


def _expand_ax(ax: Tensor, oh: int) -> Tensor:
    """``[k, ow, cols]`` -> ``[k * oh, cols, ow]`` (the column weights once per output row)."""
    k, ow, lw = ax.shape
    return ax.transpose(1, 2)[:, None].expand(k, oh, lw, ow).reshape(k * oh, lw, ow)


def separable_forward(
    feats: Tensor, bidx: Tensor, ay: Tensor, rows: Tensor, ax: Tensor, cols: Tensor, groups: list
) -> Tensor:
    """RoIAlign output ``[K, C, oh, ow]`` from the per-axis weights (see the module docstring)."""
    b_sz, c, h, w = feats.shape
    k_all, oh, ow = ay.shape[0], ay.shape[1], ax.shape[1]
    fcl = feats.permute(0, 2, 3, 1).reshape(b_sz * h * w, c)
    out = feats.new_empty(k_all, c, oh, ow)
    for sel, lh, lw in groups:
        k = sel.shape[0]
        index = _window_index(bidx[sel], rows[sel, :lh], cols[sel, :lw], h, w)
        win = fcl.index_select(0, index.reshape(-1)).view(k, lh, lw * c)
        t = torch.bmm(ay[sel, :, :lh], win)  # [k, oh, lw * c]
        o = torch.bmm(t.view(k * oh, lw, c).transpose(1, 2), _expand_ax(ax[sel, :, :lw], oh))  # [k*oh, c, ow]
        out.index_copy_(0, sel, o.view(k, oh, c, ow).permute(0, 2, 1, 3))
    return out


def separable_backward(
    grad: Tensor, shape: torch.Size, bidx: Tensor, ay: Tensor, rows: Tensor, ax: Tensor, cols: Tensor, groups: list
) -> Tensor:
    """Gradient ``[B, C, H, W]`` of :func:`separable_forward` w.r.t. the features."""
    b_sz, c, h, w = shape
    oh, ow = ay.shape[1], ax.shape[1]
    gfcl = grad.new_zeros(b_sz * h * w, c)
    for sel, lh, lw in groups:
        k = sel.shape[0]
        go = grad.index_select(0, sel).permute(0, 2, 3, 1).reshape(k * oh, ow, c)
        dt = torch.bmm(_expand_ax(ax[sel, :, :lw], oh), go)  # [k*oh, lw, c]
        dwin = torch.bmm(ay[sel, :, :lh].transpose(1, 2), dt.view(k, oh, lw * c))  # [k, lh, lw * c]
        index = _window_index(bidx[sel], rows[sel, :lh], cols[sel, :lw], h, w)
        gfcl.index_add_(0, index.reshape(-1), dwin.view(-1, c))
    return gfcl.view(b_sz, h, w, c).permute(0, 3, 1, 2).contiguous()


class SeparableRoIAlign(torch.autograd.Function):
    """Autograd wrapper: the backward pass is the hand-written transpose of the forward pass."""

    @staticmethod
    def forward(ctx, feats, bidx, ay, rows, ax, cols, groups):  # type: ignore[no-untyped-def]
        ctx.save_for_backward(bidx, ay, rows, ax, cols)
        ctx.groups, ctx.shape = groups, feats.shape
        return separable_forward(feats, bidx, ay, rows, ax, cols, groups)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        bidx, ay, rows, ax, cols = ctx.saved_tensors
        g = separable_backward(grad.contiguous(), ctx.shape, bidx, ay, rows, ax, cols, ctx.groups)
        return g, None, None, None, None, None, None
