"""RoIAlign of per-image padded boxes ``[B, P, 4]`` with a fixed sampling grid, by ``grid_sample``: no
data-dependent control flow, so the graph exports to ONNX with a dynamic batch
(:func:`odkit.ops.roi_align` groups RoIs by image and grid size in Python, which a traced graph would
freeze). The fixed-shape kernel of :func:`odkit.ops.multiscale_roi_align`.

Semantics equal :func:`odkit.ops.roi_align` / torchvision ``roi_align`` for ``sampling_ratio > 0``:
each of the ``out_h x out_w`` bins averages ``sampling_ratio^2`` bilinear samples; a sample outside
``[-1, H] x [-1, W]`` contributes 0, inside its coordinates are clamped to the map; with
``aligned=False`` the RoI is at least 1 x 1 feature cell. Boxes are xyxy input pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from odkit.errors import ConfigError

__all__ = ["batched_roi_align"]

_FAR = -8.0  # a sample coordinate whose bilinear read is 0 under padding_mode="zeros"


def _axis(start: Tensor, size: Tensor, bins: int, g: int, limit: int) -> Tensor:
    """Sample coordinates ``[B, P, bins * g]`` along one axis; samples outside ``[-1, limit]`` go far out."""
    dt = start.dtype
    step = (size / bins)[..., None]
    pos = (torch.arange(bins, dtype=dt, device=start.device)[:, None]
           + (torch.arange(g, dtype=dt, device=start.device)[None, :] + 0.5) / g).reshape(-1)
    c = start[..., None] + pos * step
    inside = (c >= -1.0) & (c <= float(limit))
    c = c.clamp(0.0, float(limit - 1))
    return torch.where(inside, c, torch.full_like(c, _FAR))


def batched_roi_align(features: Tensor, boxes: Tensor, output_size: int | tuple[int, int],
                      spatial_scale: float, sampling_ratio: int = 2, aligned: bool = True) -> Tensor:
    """RoIAlign of ``boxes`` ``[B, P, 4]`` on ``features`` ``[B, C, H, W]`` -> ``[B, P, C, oh, ow]``."""
    if sampling_ratio <= 0:
        raise ConfigError(f"batched_roi_align needs a fixed sampling_ratio > 0, got {sampling_ratio}")
    if features.dim() != 4 or boxes.dim() != 3 or boxes.shape[-1] != 4:
        raise ConfigError(f"batched_roi_align: features [B, C, H, W] and boxes [B, P, 4] expected, got "
                          f"{tuple(features.shape)} and {tuple(boxes.shape)}")
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    b, c, h, w = features.shape
    p = boxes.shape[1]
    g = int(sampling_ratio)
    off = 0.5 if aligned else 0.0
    bx = boxes.float() * spatial_scale - off
    rw = bx[..., 2] - bx[..., 0]
    rh = bx[..., 3] - bx[..., 1]
    if not aligned:
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    xs = _axis(bx[..., 0], rw, ow, g, w)  # [B, P, ow*g]
    ys = _axis(bx[..., 1], rh, oh, g, h)  # [B, P, oh*g]
    gx = (2.0 * xs + 1.0) / w - 1.0
    gy = (2.0 * ys + 1.0) / h - 1.0
    grid = torch.stack((gx[:, :, None, :].expand(b, p, oh * g, ow * g),
                        gy[:, :, :, None].expand(b, p, oh * g, ow * g)), dim=-1)
    grid = grid.reshape(b, p * oh * g, ow * g, 2).to(features.dtype)
    v = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if g > 1:
        v = F.avg_pool2d(v, g)  # [B, C, P*oh, ow]
    return v.reshape(b, c, p, oh, ow).permute(0, 2, 1, 3, 4)
