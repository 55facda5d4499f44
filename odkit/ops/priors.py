"""Priors: anchor boxes (Faster R-CNN / RetinaNet / FPN), YOLO anchors, SSD default boxes (torchvision's
``DefaultBoxGenerator`` rule and the SSD300 paper configuration), anchor-free points.

Anchors are xyxy float32 in input-image pixels, ordered location-major: for a level of size
``H x W`` with ``A`` anchors per location, row ``(y * W + x) * A + a``, matching a head output
``[B, A*4, H, W]`` permuted to ``[B, H, W, A, 4]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from odkit.errors import ConfigError

__all__ = [
    "YOLOV3_ANCHORS",
    "YOLOV3_TINY_ANCHORS",
    "AnchorGenerator",
    "DefaultBoxes",
    "YOLOAnchorGenerator",
    "grid_points",
    "parse_anchors",
    "ssd300_priors",
    "ssd_priors",
]


class AnchorGenerator:
    """Anchors of ``sizes x scales x ratios`` per location, one set per feature level.

    Args:
        sizes: per level, the base sizes in pixels (``[[32], [64], ...]``); a flat list gives one
            size per level (``[32, 64, 128, 256, 512]``).
        ratios: aspect ratios ``h / w`` (shared by all levels, or one list per level).
        strides: stride in pixels of each level.
        scales: multipliers of every size (RetinaNet: ``(2**0, 2**(1/3), 2**(2/3))``).
        offset: anchor centres at ``(x + offset) * stride``; 0 (torchvision / MMDetection default)
            or 0.5 (cell centres).
        round_base: round the base anchors' corners to whole pixels (torchvision does).

    An anchor of size ``s``, scale ``c`` and ratio ``r`` has ``w = s c / sqrt(r)``,
    ``h = s c sqrt(r)`` (area ``(s c)^2``). Per location the order is ratio-major, then size, then
    scale. Faster R-CNN (single level): ``AnchorGenerator([[128, 256, 512]], [0.5, 1, 2], [16])``
    gives 9 anchors per location.
    """

    def __init__(
        self,
        sizes: Sequence[float] | Sequence[Sequence[float]],
        ratios: Sequence[float] | Sequence[Sequence[float]] = (0.5, 1.0, 2.0),
        strides: Sequence[int] = (16,),
        scales: Sequence[float] = (1.0,),
        offset: float = 0.0,
        round_base: bool = False,
    ) -> None:
        strides = list(strides)
        sizes_l = [list(s) if isinstance(s, Sequence) else [float(s)] for s in sizes]
        if len(sizes_l) != len(strides):
            raise ConfigError(f"AnchorGenerator: {len(sizes_l)} size groups but {len(strides)} strides")
        if ratios and isinstance(list(ratios)[0], Sequence):
            ratios_l = [list(r) for r in ratios]  # type: ignore[arg-type]
            if len(ratios_l) != len(strides):
                raise ConfigError(f"AnchorGenerator: {len(ratios_l)} ratio groups but {len(strides)} strides")
        else:
            ratios_l = [list(ratios)] * len(strides)  # type: ignore[list-item]
        for r in ratios_l:
            if not r or any(x <= 0 for x in r):
                raise ConfigError(f"AnchorGenerator: ratios must be positive, got {r}")
        if any(s <= 0 for s in strides):
            raise ConfigError(f"AnchorGenerator: strides must be positive, got {strides}")
        self.sizes = sizes_l
        self.ratios = ratios_l
        self.strides = strides
        self.scales = list(scales)
        self.offset = float(offset)
        self.round_base = bool(round_base)
        self.base_anchors = [self._base(s, r) for s, r in zip(self.sizes, self.ratios)]

    def _base(self, sizes: list[float], ratios: list[float]) -> Tensor:
        r = torch.tensor(ratios, dtype=torch.float64)
        s = (torch.tensor(sizes, dtype=torch.float64)[:, None] * torch.tensor(self.scales, dtype=torch.float64)).reshape(-1)
        hr = torch.sqrt(r)
        ws = (s[None, :] / hr[:, None]).reshape(-1)
        hs = (s[None, :] * hr[:, None]).reshape(-1)
        base = torch.stack([-ws / 2, -hs / 2, ws / 2, hs / 2], dim=1)
        return (base.round() if self.round_base else base).float()

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    def num_anchors_per_location(self) -> list[int]:
        """Anchors per location for each level."""
        return [b.shape[0] for b in self.base_anchors]

    def grid_anchors(
        self,
        feature_sizes: Sequence[tuple[int, int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        strides: Sequence[float | tuple[float, float]] | None = None,
    ) -> list[Tensor]:
        """Anchors for feature maps of sizes ``[(H, W), ...]`` -> list of ``[H*W*A, 4]`` xyxy pixels.

        ``strides`` overrides the generator's strides (one value or ``(stride_y, stride_x)`` per
        level), e.g. torchvision's ``input_size // feature_size``."""
        if len(feature_sizes) != self.num_levels:
            raise ConfigError(f"grid_anchors: {len(feature_sizes)} feature sizes for {self.num_levels} levels")
        out = []
        for i, ((h, w), base) in enumerate(zip(feature_sizes, self.base_anchors)):
            stride = self.strides[i] if strides is None else strides[i]
            pts = grid_points((h, w), stride, self.offset, device=device, dtype=torch.float32)
            shifts = torch.cat([pts, pts], dim=1)  # [H*W, 4]
            anchors = shifts[:, None, :] + base.to(pts.device)[None, :, :]
            out.append(anchors.reshape(-1, 4).to(dtype))
        return out

    __call__ = grid_anchors


def grid_points(
    feature_size: tuple[int, int],
    stride: float | tuple[float, float],
    offset: float = 0.5,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Anchor-free prior points ``[H*W, 2]`` as ``(x, y)`` pixels: ``((j + offset) s, (i + offset) s)``.

    Row-major (``i`` = row outer), so row ``i * W + j``. ``offset`` 0.5 = cell centres (FCOS, GFL),
    0 = cell corners (YOLOX grids, scaled by the stride). ``stride`` may be ``(stride_y, stride_x)``.
    """
    h, w = int(feature_size[0]), int(feature_size[1])
    sy, sx = (float(stride[0]), float(stride[1])) if isinstance(stride, Sequence) else (stride, stride)
    ys = (torch.arange(h, device=device, dtype=torch.float32) + offset) * sy
    xs = (torch.arange(w, device=device, dtype=torch.float32) + offset) * sx
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1).to(dtype)


# darknet's yolov3.cfg / yolov3-tiny.cfg anchors (w, h) in pixels at 416, sorted by area.
YOLOV3_ANCHORS = ((10, 13), (16, 30), (33, 23), (30, 61), (62, 45), (59, 119), (116, 90), (156, 198), (373, 326))
YOLOV3_TINY_ANCHORS = ((10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319))


def anchor_numbers(anchors: str | Sequence[float] | Sequence[Sequence[float]], unit: str = "") -> list[float]:
    """The numbers of ``anchors`` (pairs, a flat list or ``"w,h, w,h, ..."``); ``ConfigError`` otherwise."""
    try:
        if isinstance(anchors, str):
            return [float(v) for v in anchors.replace(";", ",").replace(" ", ",").split(",") if v.strip()]
        return [float(v) for item in anchors for v in (item if isinstance(item, Sequence) else [item])]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"anchors: expected numbers 'w,h, w,h, ...'{unit}, got {anchors!r} ({e})") from None


def parse_anchors(anchors: str | Sequence[float] | Sequence[Sequence[float]], num_levels: int) -> list[list[float]]:
    """Anchors as ``[[w, h], ...]`` pixels sorted by area, from pairs, a flat list or the text printed by
    ``odkit anchors`` (``"10,13, 16,30, ..."``). The count must be a positive multiple of ``num_levels``
    (the smallest third / half go to the finest level). Raises ``ConfigError`` naming ``anchors``."""
    flat = anchor_numbers(anchors)
    if len(flat) % 2 or not flat:
        raise ConfigError(f"anchors: expected (w, h) pairs, got {len(flat)} numbers: {anchors!r}")
    pairs = [[flat[i], flat[i + 1]] for i in range(0, len(flat), 2)]
    if any(w <= 0 or h <= 0 or not math.isfinite(w * h) for w, h in pairs):
        raise ConfigError(f"anchors: widths and heights must be positive, got {pairs}")
    if len(pairs) % num_levels:
        raise ConfigError(f"anchors: {len(pairs)} anchors do not split evenly over {num_levels} levels")
    return sorted(pairs, key=lambda p: p[0] * p[1])


class YOLOAnchorGenerator(AnchorGenerator):
    """Anchors given as explicit ``(w, h)`` per level (``anchors[level] = [[w, h], ...]``), centred on
    the cells (offset 0.5), as darknet and MMDetection's ``YOLOAnchorGenerator`` place them."""

    def __init__(self, anchors: Sequence[Sequence[Sequence[float]]], strides: Sequence[int]) -> None:
        if len(anchors) != len(strides):
            raise ConfigError(f"YOLOAnchorGenerator: {len(anchors)} anchor groups but {len(strides)} strides")
        self.strides = [int(s) for s in strides]
        self.offset = 0.5
        self.round_base = False
        self.sizes, self.ratios, self.scales = [], [], [1.0]
        self.wh = [[[float(w), float(h)] for w, h in level] for level in anchors]
        self.base_anchors = [torch.tensor([[-w / 2, -h / 2, w / 2, h / 2] for w, h in level], dtype=torch.float32)
                             for level in self.wh]


# SSD300 (Liu et al. 2016, the reference ssd.pytorch / MMDetection VOC configuration)
SSD300_CONFIG = {
    "image_size": 300,
    "feature_maps": (38, 19, 10, 5, 3, 1),
    "steps": (8, 16, 32, 64, 100, 300),
    "min_sizes": (30, 60, 111, 162, 213, 264),
    "max_sizes": (60, 111, 162, 213, 264, 315),
    "aspect_ratios": ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
}


def ssd_priors(
    image_size: int,
    feature_maps: Sequence[int],
    steps: Sequence[float],
    min_sizes: Sequence[float],
    max_sizes: Sequence[float],
    aspect_ratios: Sequence[Sequence[float]],
    clip: bool = True,
    fmt: str = "cxcywh",
) -> Tensor:
    """SSD default boxes.

    Per location of level ``k`` (size ``f``, step ``s``), centred at ``((j + 0.5) s, (i + 0.5) s)``:
    a square of side ``min_k``, a square of side ``sqrt(min_k max_k)``, and for each ratio ``a`` the
    pair ``(min_k sqrt(a), min_k / sqrt(a))`` and its transpose. Order: level, row, column, box.

    ``fmt="cxcywh"`` (default): ``(cx, cy, w, h)`` normalised by ``image_size`` (the SSD
    convention; ``clip`` clamps to [0, 1]). ``fmt="xyxy"``: xyxy in pixels of the
    ``image_size``-square input (clipped to the image when ``clip``).
    """
    if fmt not in ("cxcywh", "xyxy"):
        raise ConfigError(f"ssd_priors: fmt must be 'cxcywh' or 'xyxy', got {fmt!r}")
    n = len(feature_maps)
    if not (len(steps) == len(min_sizes) == len(max_sizes) == len(aspect_ratios) == n):
        raise ConfigError("ssd_priors: feature_maps, steps, min_sizes, max_sizes, aspect_ratios must have equal lengths")
    out = []
    for f, step, mn, mx, ars in zip(feature_maps, steps, min_sizes, max_sizes, aspect_ratios):
        wh = [(mn, mn), (math.sqrt(mn * mx),) * 2]
        for a in ars:
            wh += [(mn * math.sqrt(a), mn / math.sqrt(a)), (mn / math.sqrt(a), mn * math.sqrt(a))]
        wh_t = torch.tensor(wh, dtype=torch.float64) / image_size  # [A, 2]
        c = (torch.arange(f, dtype=torch.float64) + 0.5) * step / image_size
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        ctr = torch.stack([cx.reshape(-1), cy.reshape(-1)], 1)  # [f*f, 2]
        boxes = torch.cat(
            [ctr[:, None, :].expand(-1, wh_t.shape[0], -1), wh_t[None].expand(ctr.shape[0], -1, -1)], dim=2
        )
        out.append(boxes.reshape(-1, 4))
    pri = torch.cat(out)
    if clip:
        pri = pri.clamp(0.0, 1.0)
    if fmt == "xyxy":
        xy = torch.cat([pri[:, :2] - pri[:, 2:] / 2, pri[:, :2] + pri[:, 2:] / 2], 1) * image_size
        pri = xy.clamp(0, image_size) if clip else xy
    return pri.float()


def ssd300_priors(clip: bool = True, fmt: str = "cxcywh") -> Tensor:
    """The 8732 SSD300 default boxes (see :func:`ssd_priors`; default normalised ``cxcywh``)."""
    return ssd_priors(clip=clip, fmt=fmt, **SSD300_CONFIG)  # type: ignore[arg-type]


class DefaultBoxes:
    """SSD default boxes, torchvision's ``DefaultBoxGenerator`` rule.

    Level ``k`` of an ``H x W`` input has scale ``s_k`` (``scales``, or ``min_ratio`` .. ``max_ratio``
    evenly over the levels followed by 1.0): per location a square ``s_k``, a square
    ``sqrt(s_k s_{k+1})`` and, per aspect ratio ``a``, ``(s_k sqrt(a), s_k / sqrt(a))`` and its
    transpose (widths/heights relative to the input, clipped to 1 when ``clip``). Centres are at
    ``(j + 0.5) * step_k`` pixels (``steps``), or ``(j + 0.5) / f_k`` of the input without steps.
    Boxes are xyxy input pixels (not clipped to the image), location-major within a level.
    """

    def __init__(
        self,
        aspect_ratios: Sequence[Sequence[float]],
        scales: Sequence[float] | None = None,
        min_ratio: float = 0.15,
        max_ratio: float = 0.9,
        steps: Sequence[float] | None = None,
        clip: bool = True,
    ) -> None:
        n = len(aspect_ratios)
        if scales is None:
            scales = [min_ratio + (max_ratio - min_ratio) * k / (n - 1.0) for k in range(n)] + [1.0] if n > 1 \
                else [min_ratio, max_ratio]
        if len(scales) != n + 1:
            raise ConfigError(f"DefaultBoxes: need {n + 1} scales for {n} levels, got {len(scales)}")
        if steps is not None and len(steps) != n:
            raise ConfigError(f"DefaultBoxes: need {n} steps, got {len(steps)}")
        self.aspect_ratios = [list(a) for a in aspect_ratios]
        self.scales = [float(s) for s in scales]
        self.steps = None if steps is None else [float(s) for s in steps]
        self.clip = bool(clip)
        self.wh = []
        for k in range(n):
            s, s_next = self.scales[k], self.scales[k + 1]
            pairs = [(s, s), (math.sqrt(s * s_next),) * 2]
            for a in self.aspect_ratios[k]:
                r = math.sqrt(a)
                pairs += [(s * r, s / r), (s / r, s * r)]
            wh = np.array(pairs, dtype=np.float64)
            self.wh.append(wh.clip(0, 1) if self.clip else wh)

    @property
    def num_levels(self) -> int:
        return len(self.aspect_ratios)

    def num_anchors_per_location(self) -> list[int]:
        return [2 + 2 * len(a) for a in self.aspect_ratios]

    def __call__(self, level_sizes: Sequence[tuple[int, int]], input_hw: tuple[int, int],
                 device: torch.device | str | None = None) -> Tensor:
        """Default boxes ``[A, 4]`` xyxy input pixels (float32) for feature maps of ``level_sizes``."""
        if len(level_sizes) != self.num_levels:
            raise ConfigError(f"DefaultBoxes: {len(level_sizes)} feature maps for {self.num_levels} levels")
        h_in, w_in = float(input_hw[0]), float(input_hw[1])
        f32 = np.float32  # torchvision's float32 operations, in its order: the same bits (ties break alike)
        size = np.array([w_in, h_in], dtype=f32)
        out = []
        for k, (fh, fw) in enumerate(level_sizes):  # numpy: a constant when traced for export
            fx, fy = (w_in / self.steps[k], h_in / self.steps[k]) if self.steps else (float(fw), float(fh))
            xx, yy = np.meshgrid((np.arange(fw, dtype=f32) + f32(0.5)) / f32(fx),
                                 (np.arange(fh, dtype=f32) + f32(0.5)) / f32(fy))
            ctr = np.stack([xx.reshape(-1), yy.reshape(-1)], 1)[:, None, :]  # [HW, 1, 2]
            wh = self.wh[k].astype(f32)[None]  # [1, A_k, 2]
            out.append(np.concatenate([(ctr - f32(0.5) * wh) * size, (ctr + f32(0.5) * wh) * size], -1).reshape(-1, 4))
        return torch.from_numpy(np.concatenate(out)).to(device)
