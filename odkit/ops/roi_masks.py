"""Instance masks in the frame of their boxes (Mask R-CNN), as torchvision computes them.

- :func:`project_masks_on_boxes`: the ``M x M`` training target of each RoI, RoIAlign of its matched
  gt mask (``roi_align(mask, box, M, spatial_scale 1, adaptive sampling, aligned=False)``,
  torchvision's ``project_masks_on_boxes``).
- :func:`paste_masks_in_image`: ``M x M`` mask probabilities back into an image (torchvision's
  ``paste_masks_in_image``): the mask is padded by one pixel on each side (28 -> 30) and its box
  enlarged by the same factor ``(M + 2) / M`` about its centre, the box truncated to integer pixels
  ``(x0, y0, x1, y1)``, the padded mask resized bilinearly (``align_corners=False``) to
  ``(y1 - y0 + 1) x (x1 - x0 + 1)`` pixels (at least 1) and placed with its top-left pixel at
  ``(x0, y0)``, cut to the image; zero elsewhere. Computed for all masks at once: the resize is
  separable (along x, then y, PyTorch's source-index and weight rule in float32), each image pixel
  reading two rows and two columns of its padded mask; the values equal the per-mask
  ``F.interpolate`` loop to float rounding (within 1e-6).

Coordinates: boxes xyxy pixels of the image the masks are pasted into.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from odkit.errors import ConfigError
from odkit.ops.rle import RLE, encode
from odkit.ops.roi import roi_align

__all__ = ["MASK_THRESHOLD", "masks_to_rles", "paste_masks_in_image", "project_masks_on_boxes"]

MASK_THRESHOLD = 0.5  # a pixel of a predicted mask is the object's when its probability is above this


def project_masks_on_boxes(gt_masks: Tensor, boxes: Tensor, gt_index: Tensor, size: int) -> Tensor:
    """``[K, size, size]`` float targets: RoIAlign of ``gt_masks[gt_index[k]]`` (``[N, H, W]``, any
    dtype, 0 / 1) on ``boxes[k]`` (xyxy px of the mask's image), torchvision's settings."""
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, size, size))
    rois = torch.cat((gt_index.to(boxes.dtype)[:, None], boxes), 1)
    return roi_align(gt_masks[:, None].to(boxes.dtype), rois, (size, size), 1.0, 0, aligned=False)[:, 0]


def _axis_taps(start: Tensor, end: Tensor, src: int, limit: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per mask and image pixel ``p`` in ``[0, limit)`` along one axis: the two source indices, their
    weights (PyTorch's ``align_corners=False`` bilinear rule in float32, resizing ``src`` pixels to
    ``max(end - start + 1, 1)``) and whether ``p`` is inside the pasted span ``[start, end]``."""
    pos = torch.arange(limit, device=start.device)
    rel = pos[None, :] - start[:, None]  # [N, limit]: pixel index inside the resized mask
    inside = (rel >= 0) & (pos[None, :] <= end[:, None])
    length = (end - start + 1).clamp(min=1)
    scale = (torch.full_like(length, src, dtype=torch.float32) / length.to(torch.float32))[:, None]
    real = (scale * (rel.to(torch.float32) + 0.5) - 0.5).clamp(min=0.0)
    i0 = real.floor().to(torch.int64).clamp(max=src - 1)
    lam1 = (real - i0.to(torch.float32)).clamp(0.0, 1.0)
    same = (length == src)[:, None]  # PyTorch copies through when the size does not change
    i0 = torch.where(same, rel.clamp(0, src - 1), i0.clamp(min=0))
    lam1 = torch.where(same, torch.zeros_like(lam1), lam1)
    i1 = torch.where(i0 < src - 1, i0 + 1, i0)
    return i0, i1, 1.0 - lam1, lam1, inside


def paste_masks_in_image(masks: Tensor, boxes: Tensor, image_hw: tuple[int, int], padding: int = 1) -> Tensor:
    """Paste mask probabilities ``[N, 1, M, M]`` (or ``[N, M, M]``) of ``boxes`` ``[N, 4]`` (xyxy px)
    into an ``image_hw = (h, w)`` image -> ``[N, 1, h, w]`` (see the module docstring)."""
    if masks.dim() == 3:
        masks = masks[:, None]
    if masks.dim() != 4 or masks.shape[1] != 1 or masks.shape[-1] != masks.shape[-2]:
        raise ConfigError(f"paste_masks_in_image: masks must be [N, 1, M, M], got {tuple(masks.shape)}")
    if boxes.shape != (masks.shape[0], 4):
        raise ConfigError(f"paste_masks_in_image: {masks.shape[0]} masks but boxes of shape {tuple(boxes.shape)}")
    h, w = int(image_hw[0]), int(image_hw[1])
    n = masks.shape[0]
    if n == 0:
        return masks.new_zeros((0, 1, h, w))
    m = int(masks.shape[-1])
    padded = F.pad(masks[:, 0], (padding,) * 4)  # [N, S, S]
    src = m + 2 * padding
    scale = float(src) / m
    b = boxes.to(torch.float32)
    half_w, half_h = (b[:, 2] - b[:, 0]) * 0.5 * scale, (b[:, 3] - b[:, 1]) * 0.5 * scale
    cx, cy = (b[:, 2] + b[:, 0]) * 0.5, (b[:, 3] + b[:, 1]) * 0.5
    ib = torch.stack((cx - half_w, cy - half_h, cx + half_w, cy + half_h), 1).to(torch.int64)  # truncation
    x0, x1, wx0, wx1, in_x = _axis_taps(ib[:, 0], ib[:, 2], src, w)
    y0, y1, wy0, wy1, in_y = _axis_taps(ib[:, 1], ib[:, 3], src, h)
    p = padded.to(torch.float32)
    # along x: [N, S, w], then along y: [N, h, w]
    gx = lambda idx: torch.gather(p, 2, idx[:, None, :].expand(n, src, w))  # noqa: E731
    rows = gx(x0) * wx0[:, None, :] + gx(x1) * wx1[:, None, :]
    gy = lambda idx: torch.gather(rows, 1, idx[:, :, None].expand(n, h, w))  # noqa: E731
    out = gy(y0) * wy0[:, :, None] + gy(y1) * wy1[:, :, None]
    out = out * (in_y[:, :, None] & in_x[:, None, :]).to(out.dtype)
    return out[:, None].to(masks.dtype)


def masks_to_rles(masks: Tensor, threshold: float = MASK_THRESHOLD) -> list[RLE]:
    """COCO RLEs of mask probabilities ``[K, 1, H, W]`` (or ``[K, H, W]``) thresholded at
    ``probability > threshold`` (what ``odkit predict`` writes and ``odkit val`` evaluates)."""
    m = masks.detach()
    if m.dim() == 4:
        m = m[:, 0]
    if m.dim() != 3:
        raise ConfigError(f"masks_to_rles: masks must be [K, 1, H, W] or [K, H, W], got {tuple(masks.shape)}")
    if len(m) == 0:
        return []
    return list(encode((m > threshold).cpu().numpy()))
