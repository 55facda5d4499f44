"""CenterNet's training targets (Zhou et al. 2019, "Objects as Points"), as its code computes them.

An object is the peak of its class's heatmap at the output stride: its box, divided by the stride,
is clipped to ``[0, W - 1] x [0, H - 1]`` of the output map; boxes that end up without area are left
out. Its centre ``c = ((x1 + x2) / 2, (y1 + y2) / 2)`` falls in cell ``floor(c)``, which gets a
Gaussian of radius ``r = max(0, int(gaussian_radius((ceil(h), ceil(w)), 0.7)))`` (CornerNet's three
cases, as CenterNet writes them) and ``sigma = (2 r + 1) / 6``, merged into the heatmap by the
element-wise maximum and cut at the map's border. The regression targets of that cell are the size
``(w, h)`` in output cells and the sub-cell offset ``c - floor(c)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's ``gaussian_radius``: the smallest of CornerNet's three radii for a box of
    ``height x width`` cells such that corners moved that far keep IoU ``min_overlap`` (as written in
    CenterNet's code: each root is ``(b + sqrt(b^2 - 4 a c)) / 2``, not divided by ``a``)."""
    h, w, o = float(height), float(width), float(min_overlap)
    b1, c1 = h + w, w * h * (1 - o) / (1 + o)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - o) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * o, -2 * o * (h + w), (o - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def gaussian_2d(radius: int, device: torch.device | None = None) -> Tensor:
    """The ``(2 r + 1)^2`` Gaussian kernel of CenterNet (peak 1, ``sigma = (2 r + 1) / 6``, values under
    float64 eps times the peak set to 0), float32."""
    d = 2 * radius + 1
    sigma = d / 6.0
    r = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    g = torch.exp(-(r[None, :] ** 2 + r[:, None] ** 2) / (2 * sigma * sigma))
    g[g < torch.finfo(torch.float64).eps * g.max()] = 0
    return g.float()


def draw_gaussian(heatmap: Tensor, cx: int, cy: int, radius: int) -> None:
    """Merge a Gaussian of ``radius`` centred on cell ``(cx, cy)`` into ``heatmap`` ``[H, W]`` in place
    (element-wise maximum, cut at the border; CenterNet's ``draw_umich_gaussian``)."""
    g = gaussian_2d(radius, heatmap.device)
    h, w = heatmap.shape
    left, right = min(cx, radius), min(w - cx, radius + 1)
    top, bottom = min(cy, radius), min(h - cy, radius + 1)
    region = heatmap[cy - top:cy + bottom, cx - left:cx + right]
    patch = g[radius - top:radius + bottom, radius - left:radius + right]
    if region.numel() and patch.numel():
        torch.maximum(region, patch, out=region)


@dataclass
class CenterTargets:
    """Targets of a batch: ``heatmap [B, C, H, W]`` and, per object, its image ``b``, cell ``(y, x)``,
    size ``wh [N, 2]`` and offset ``offset [N, 2]`` (output cells)."""

    heatmap: Tensor
    b: Tensor
    y: Tensor
    x: Tensor
    wh: Tensor
    offset: Tensor


def center_targets(targets: Sequence[Mapping[str, Tensor]], num_classes: int, out_hw: tuple[int, int],
                   stride: float, min_overlap: float = 0.7, device: torch.device | None = None) -> CenterTargets:
    """CenterNet targets of ``targets`` (xyxy input pixels, labels ``0..C-1``) on an output map of
    ``out_hw`` cells at ``stride`` pixels per cell (see the module docstring)."""
    oh, ow = out_hw
    heat = torch.zeros((len(targets), num_classes, oh, ow), device=device)
    rows: list[list[float]] = []
    for b, t in enumerate(targets):
        boxes = t["boxes"].detach().to("cpu", torch.float64).reshape(-1, 4) / stride
        labels = t["labels"].detach().to("cpu").reshape(-1)
        for box, lab in zip(boxes.tolist(), labels.tolist()):
            x1, x2 = (min(max(v, 0.0), ow - 1.0) for v in (box[0], box[2]))
            y1, y2 = (min(max(v, 0.0), oh - 1.0) for v in (box[1], box[3]))
            h, w = y2 - y1, x2 - x1
            if h <= 0 or w <= 0:
                continue
            radius = max(0, int(gaussian_radius(math.ceil(h), math.ceil(w), min_overlap)))
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            ix, iy = int(cx), int(cy)
            draw_gaussian(heat[b, int(lab)], ix, iy, radius)
            rows.append([b, iy, ix, w, h, cx - ix, cy - iy])
    t = torch.tensor(rows, dtype=torch.float64, device=device).reshape(-1, 7)
    return CenterTargets(heat, t[:, 0].long(), t[:, 1].long(), t[:, 2].long(), t[:, 3:5].float(), t[:, 5:7].float())
