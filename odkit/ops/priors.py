"""Priors: anchor boxes (Faster R-CNN / RetinaNet / FPN), SSD300 default boxes, anchor-free points.

Anchors are xyxy float32 in input-image pixels, ordered location-major: for a level of size
``H x W`` with ``A`` anchors per location, row ``(y * W + x) * A + a``, matching a head output
``[B, A*4, H, W]`` permuted to ``[B, H, W, A, 4]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from odkit.errors import ConfigError

__all__ = ["AnchorGenerator", "grid_points", "ssd300_priors", "ssd_priors"]


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
