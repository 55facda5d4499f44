"""RoI pooling (Fast R-CNN RoIPool), RoIAlign, FPN level mapping and the one multi-level RoIAlign,
vectorised in pure PyTorch.

RoIs are ``[K, 5]`` float tensors ``(batch_index, x1, y1, x2, y2)`` in input-image pixels; a
feature map of stride ``s`` is addressed with ``spatial_scale = 1 / s``. Outputs are
``[K, C, out_h, out_w]``. Semantics follow torchvision / Detectron2 exactly (see each function).
:func:`multiscale_roi_align` also takes per-image padded boxes ``[B, P, 4]`` and then runs the
fixed-shape, exportable kernel of :mod:`odkit.ops.roi_grid`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from odkit.errors import ConfigError
from odkit.ops.boxes import rescale_boxes
from odkit.ops.roi_grid import batched_roi_align
from odkit.ops.roi_sampling import roi_align_taps

__all__ = ["fpn_levels", "map_roi_levels", "multiscale_roi_align", "roi_align", "roi_pool"]

_CHUNK_ELEMS = 1 << 24  # max elements of the per-chunk sample tensor (bounds memory)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _check(features: Tensor, rois: Tensor, fn: str) -> None:
    if features.dim() != 4:
        raise ConfigError(f"{fn}: features must be [B, C, H, W], got {tuple(features.shape)}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ConfigError(f"{fn}: rois must be [K, 5] (batch_index, x1, y1, x2, y2), got {tuple(rois.shape)}")
    if rois.numel() and (rois[:, 0].min() < 0 or rois[:, 0].max() >= features.shape[0]):
        raise ConfigError(f"{fn}: rois batch index out of range [0, {features.shape[0] - 1}]")


def _round_half_away(x: Tensor) -> Tensor:
    """std::round (half away from zero), as used by the reference RoIPool."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def roi_pool(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """Fast R-CNN RoI max pooling (torchvision ``roi_pool`` semantics).

    The RoI corners are quantised with ``round(coord * spatial_scale)`` and the RoI spans
    ``end - start + 1`` feature cells (the legacy inclusive convention of the reference op). Bin
    ``p`` covers cells ``[floor(p * bin), ceil((p + 1) * bin))`` from the start, clipped to the
    feature map; each output is the max over its bin, 0 for an empty bin.

    Returns ``[K, C, out_h, out_w]``; gradients flow to ``features`` (to the arg-max cell).
    """
    _check(features, rois, "roi_pool")
    oh, ow = _pair(output_size)
    b_sz, c, h, w = features.shape
    k = rois.shape[0]
    if k == 0:
        return features.new_zeros(0, c, oh, ow)
    r = rois.to(torch.float32 if features.dtype != torch.float64 else torch.float64)
    bidx = r[:, 0].long()
    x1, y1, x2, y2 = (_round_half_away(r[:, i] * spatial_scale) for i in range(1, 5))
    roi_w = (x2 - x1 + 1).clamp(min=1)
    roi_h = (y2 - y1 + 1).clamp(min=1)
    ph = torch.arange(oh, device=r.device, dtype=r.dtype)
    pw = torch.arange(ow, device=r.device, dtype=r.dtype)
    bh = (roi_h / oh)[:, None]
    bw = (roi_w / ow)[:, None]
    hs = (torch.floor(ph * bh) + y1[:, None]).clamp(0, h).long()  # [K, oh]
    he = (torch.ceil((ph + 1) * bh) + y1[:, None]).clamp(0, h).long()
    ws = (torch.floor(pw * bw) + x1[:, None]).clamp(0, w).long()  # [K, ow]
    we = (torch.ceil((pw + 1) * bw) + x1[:, None]).clamp(0, w).long()
    mh = max(int((he - hs).max()), 1)
    mw = max(int((we - ws).max()), 1)
    flat = features.permute(0, 2, 3, 1).reshape(b_sz * h * w, c)
    out = features.new_zeros(k, oh, ow, c)
    per_roi = oh * ow * mh * mw * c
    step = max(1, _CHUNK_ELEMS // max(per_roi, 1))
    iy = torch.arange(mh, device=r.device)
    ix = torch.arange(mw, device=r.device)
    for s in range(0, k, step):
        sl = slice(s, s + step)
        yy = hs[sl][:, :, None] + iy  # [k, oh, mh]
        xx = ws[sl][:, :, None] + ix  # [k, ow, mw]
        vy = yy < he[sl][:, :, None]
        vx = xx < we[sl][:, :, None]
        yy = yy.clamp(max=h - 1)
        xx = xx.clamp(max=w - 1)
        index = (
            bidx[sl][:, None, None, None, None] * (h * w)
            + yy[:, :, :, None, None] * w
            + xx[:, None, None, :, :]
        )  # [k, oh, mh, ow, mw]
        valid = vy[:, :, :, None, None] & vx[:, None, None, :, :]
        vals = flat.index_select(0, index.reshape(-1)).reshape(*index.shape, c)
        vals = vals.masked_fill(~valid[..., None], float("-inf"))
        m = vals.amax(dim=(2, 4))  # [k, oh, ow, c]
        empty = ~valid.any(dim=(2, 4))
        out[sl] = m.masked_fill(empty[..., None], 0.0)
    return out.permute(0, 3, 1, 2).contiguous()


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
) -> Tensor:
    """RoIAlign (Mask R-CNN; torchvision / Detectron2 ``ROIAlignV2`` when ``aligned=True``).

    The RoI ``(x1, y1, x2, y2) * spatial_scale`` (shifted by -0.5 when ``aligned``, so that pixel
    centres sit at integer + 0.5; without ``aligned`` the RoI size is at least 1) is divided into
    ``out_h x out_w`` bins. Each bin averages a regular grid of ``sampling_ratio^2`` bilinear samples
    (``ceil(roi_size / output_size)`` per axis when ``sampling_ratio <= 0``). A sample outside
    ``[-1, H] x [-1, W]`` contributes 0; inside, its coordinates are clamped to the map.

    Returns ``[K, C, out_h, out_w]``, differentiable w.r.t. ``features``. Computed as one weighted
    gather of the bins' bilinear taps (see :mod:`odkit.ops.roi_sampling`), in memory-bounded chunks.
    """
    _check(features, rois, "roi_align")
    oh, ow = _pair(output_size)
    b_sz, c, h, w = features.shape
    k = rois.shape[0]
    if k == 0:
        return features.new_zeros(0, c, oh, ow)
    cdt = torch.float64 if features.dtype == torch.float64 else torch.float32
    feats = features if features.dtype in (torch.float32, torch.float64) else features.float()
    r = rois.to(cdt)
    off = 0.5 if aligned else 0.0
    x1 = r[:, 1] * spatial_scale - off
    y1 = r[:, 2] * spatial_scale - off
    rw = r[:, 3] * spatial_scale - off - x1
    rh = r[:, 4] * spatial_scale - off - y1
    if not aligned:
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    bin_w, bin_h = rw / ow, rh / oh
    if sampling_ratio > 0:
        gh = torch.full((k,), sampling_ratio, dtype=torch.long, device=r.device)
        gw = gh
    else:
        gh = torch.ceil(rh / oh).long().clamp(min=0)
        gw = torch.ceil(rw / ow).long().clamp(min=0)
    out = roi_align_taps(feats, r[:, 0].long(), (y1, bin_h, gh), (x1, bin_w, gw), (oh, ow))
    return out if features.dtype == out.dtype else out.to(features.dtype)


def map_roi_levels(
    rois: Tensor,
    k_min: int,
    k_max: int,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """FPN level of each RoI (Lin et al. 2017, eq. 1), as an index into the feature list.

    ``k = floor(canonical_level + log2(sqrt(w * h) / canonical_scale) + eps)`` clamped to
    ``[k_min, k_max]``; returns ``k - k_min`` (int64 ``[K]``). ``rois`` is ``[K, 5]`` or ``[K, 4]``
    (xyxy pixels, the last four columns are used).
    """
    if rois.dim() != 2 or rois.shape[1] not in (4, 5):
        raise ConfigError(f"map_roi_levels: rois must be [K, 5] or [K, 4], got {tuple(rois.shape)}")
    b = rois[:, -4:].float()
    scale = torch.sqrt((b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0))
    lvl = torch.floor(canonical_level + torch.log2(scale / canonical_scale + 1e-12) + eps)
    return (lvl.clamp(min=k_min, max=k_max) - k_min).long()


def fpn_levels(strides: Sequence[int], owner: str = "multiscale_roi_align") -> tuple[int, int]:
    """``(k_min, k_max)``, the FPN levels ``log2(stride)`` of the first and last map; ``ConfigError``
    (naming ``owner``) unless ``strides`` are increasing consecutive powers of two."""
    levels = [math.log2(s) if s > 0 else -1.0 for s in strides]
    k = [round(lv) for lv in levels]
    if not k or any(abs(lv - r) > 1e-6 for lv, r in zip(levels, k)) or k != list(range(k[0], k[0] + len(k))):
        raise ConfigError(f"{owner}: strides must be increasing consecutive powers of two, got {list(strides)}")
    return k[0], k[-1]


def multiscale_roi_align(
    features: Sequence[Tensor],
    rois: Tensor,
    strides: Sequence[int],
    output_size: int | tuple[int, int],
    sampling_ratio: int = 0,
    aligned: bool = True,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
    scale_factor: float = 1.0,
) -> Tensor:
    """RoIAlign from an FPN: each RoI is pooled from the level chosen by :func:`map_roi_levels`.

    ``features[i]`` has stride ``strides[i]`` (increasing consecutive powers of two); levels are
    ``log2(stride)``. ``scale_factor`` enlarges the pooled boxes about their centres after the level
    is chosen (Double-Head's regression RoIs). Two forms, equal for ``sampling_ratio > 0``:

    - ``rois`` ``[K, 5]`` (batch index, xyxy px) -> ``[K, C, out_h, out_w]``: each level pools only
      its own RoIs with :func:`roi_align` (eager; any ``sampling_ratio``).
    - ``rois`` ``[B, P, 4]`` (xyxy px per image) -> ``[B, P, C, out_h, out_w]``: every level pools
      every box with :func:`odkit.ops.roi_grid.batched_roi_align` and the box's own level is
      selected, a fixed-shape graph (ONNX export with a dynamic batch; ``sampling_ratio > 0``).
    """
    if len(features) != len(strides) or not features:
        raise ConfigError(f"multiscale_roi_align: {len(features)} feature maps but {len(strides)} strides")
    k_min, k_max = fpn_levels(strides)
    if rois.dim() == 3:
        return _multiscale_fixed(features, rois, strides, (k_min, k_max), output_size, sampling_ratio, aligned,
                                 (canonical_scale, canonical_level), scale_factor)
    oh, ow = _pair(output_size)
    c = features[0].shape[1]
    lvl = map_roi_levels(rois, k_min, k_max, canonical_scale, canonical_level)
    boxes = rois if scale_factor == 1.0 else torch.cat((rois[:, :1], rescale_boxes(rois[:, 1:], scale_factor)), 1)
    out = features[0].new_zeros(rois.shape[0], c, oh, ow)
    for i, (feat, stride) in enumerate(zip(features, strides)):
        sel = (lvl == i).nonzero().squeeze(1)
        if sel.numel():
            out[sel] = roi_align(feat, boxes[sel], (oh, ow), 1.0 / stride, sampling_ratio, aligned)
    return out


def _multiscale_fixed(features: Sequence[Tensor], boxes: Tensor, strides: Sequence[int], k_range: tuple[int, int],
                      output_size: int | tuple[int, int], sampling_ratio: int, aligned: bool,
                      canonical: tuple[float, int], scale_factor: float) -> Tensor:
    """The ``[B, P, 4]`` form of :func:`multiscale_roi_align` -> ``[B, P, C, oh, ow]``."""
    if boxes.shape[-1] != 4:
        raise ConfigError(f"multiscale_roi_align: boxes must be [B, P, 4] or rois [K, 5], got {tuple(boxes.shape)}")
    b, p = boxes.shape[:2]
    lvl = map_roi_levels(boxes.reshape(-1, 4), *k_range, *canonical).view(b, p)
    boxes = rescale_boxes(boxes, scale_factor)
    out = None
    for i, (feat, s) in enumerate(zip(features, strides)):
        pooled = batched_roi_align(feat, boxes, output_size, 1.0 / s, sampling_ratio, aligned)
        pooled = pooled * (lvl == i).to(pooled.dtype)[:, :, None, None, None]
        out = pooled if out is None else out + pooled
    return out
