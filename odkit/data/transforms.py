"""Box-aware image transforms for detection.

A sample is ``(image, boxes, labels, meta)``: ``image`` uint8 ``[H, W, 3]`` RGB, ``boxes`` float32
``[N, 4]`` xyxy in absolute pixels of ``image`` (continuous coordinates), ``labels`` int64 ``[N]``
and ``meta`` a dict. Every transform is a callable ``t(image, boxes, labels, meta, rng)`` returning
a new sample; random transforms draw only from the ``numpy.random.Generator`` they are given.

Instance masks ride in ``meta["masks"]`` (one polygon list or RLE per box, in pixels of ``image``;
see :mod:`odkit.data.masks`): the geometric transforms map them with the image and drop them with
their boxes, and the transforms that do so say ``carries_masks = True``.

``meta`` follows the letterbox convention: ``orig_size=(h, w)``, ``ratio=r``, ``pad=(dx, dy)`` with
``original = (box - [dx, dy, dx, dy]) / r`` (see :func:`unletterbox_boxes`). ``meta["input_size"]``
``(h, w)``, when present, is the size :class:`Letterbox` pads to if it was built without one.
A plain resize (``"stretch"`` mode of :func:`fit_to_input`, SSD's) records ``ratio=(rx, ry)``, one
scale per axis: ``original_x = (x - dx) / rx``, ``original_y = (y - dy) / ry``.

:class:`TrainAugment` (mosaic -> affine -> mixup -> HSV -> flip -> letterbox) and
:class:`ValTransform` (letterbox) are the two pipelines a :class:`~odkit.data.DetectionDataset` uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from odkit.data.masks import pixel_matrix, transform_segms
from odkit.data.mosaic import MixUp, Mosaic

if TYPE_CHECKING:  # pragma: no cover
    from odkit.data.dataset import DetectionDataset

__all__ = [
    "AugmentConfig",
    "Compose",
    "HSVJitter",
    "HorizontalFlip",
    "Letterbox",
    "RandomAffine",
    "TrainAugment",
    "ValTransform",
    "affine_boxes",
    "box_candidates",
    "fit_to_input",
    "letterbox",
    "random_affine_matrix",
    "stretch",
    "unletterbox_boxes",
    "warp_affine",
]

Sample = tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]

# How an image becomes the square network input: "letterbox" (keep the aspect ratio, pad) or
# "stretch" (plain resize to the input size, separate x/y scales; SSD's).
RESIZE_MODES = ("letterbox", "stretch")


def _map_masks(meta: dict[str, Any], m: np.ndarray, out_hw: tuple[int, int]) -> None:
    """Map ``meta["masks"]`` (when present) by the affine ``m`` onto an ``out_hw`` image, in place."""
    if "masks" in meta:
        meta["masks"] = transform_segms(meta["masks"], m, out_hw)


def _need_rng(rng: np.random.Generator | None, name: str) -> np.random.Generator:
    if rng is None:
        raise ValueError(f"{name} is random: pass a numpy Generator as rng")
    return rng


# ---------------------------------------------------------------------------------------- letterbox
def letterbox(
    image: np.ndarray,
    boxes: np.ndarray,
    meta: dict[str, Any] | None,
    size: int | tuple[int, int],
    pad_value: int = 114,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Resize keeping the aspect ratio to fit ``size`` (``s`` or ``(h, w)``) and pad centred with ``pad_value``.

    The image content is mapped exactly by ``x' = r * x + dx`` (continuous pixel coordinates) with
    ``r = min(h_out / h, w_out / w)`` and integer ``(dx, dy)`` left/top padding; boxes follow the same
    map. ``meta`` is updated by composition, so ``ratio``/``pad`` always map back to the original
    image (a fresh meta gets ``orig_size`` = the input size).
    """
    oh, ow = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = image.shape[:2]
    r = min(oh / h, ow / w)
    nw, nh = w * r, h * r
    dx, dy = int((ow - round(nw)) // 2), int((oh - round(nh)) // 2)
    meta = dict(meta) if meta is not None else {}
    rx0, ry0 = ratio_xy(meta)
    p0 = meta.get("pad", (0.0, 0.0))
    meta.setdefault("orig_size", (h, w))
    meta["ratio"] = rx0 * r if rx0 == ry0 else (rx0 * r, ry0 * r)
    meta["pad"] = (p0[0] * r + dx, p0[1] * r + dy)
    meta["input_size"] = (oh, ow)
    if (h, w) == (oh, ow):
        return image, boxes, meta
    if r < 0.5:  # strong downscale: area interpolation avoids aliasing (content scale within 0.5 px)
        small = cv2.resize(image, (max(1, round(nw)), max(1, round(nh))), interpolation=cv2.INTER_AREA)
        out = np.full((oh, ow, image.shape[2]), pad_value, dtype=np.uint8)
        out[dy : dy + small.shape[0], dx : dx + small.shape[1]] = small[: oh - dy, : ow - dx]
    else:
        m = np.array([[r, 0.0, dx], [0.0, r, dy]], dtype=np.float64)
        out = warp_affine(image, m, (ow, oh), pad_value)
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.float32(r)
    b += np.array([dx, dy, dx, dy], dtype=np.float32)
    _map_masks(meta, np.array([[r, 0.0, dx], [0.0, r, dy]]), (oh, ow))
    return out, b, meta


def ratio_xy(meta: dict[str, Any] | None) -> tuple[float, float]:
    """``(rx, ry)`` of a meta's ``ratio`` (a number for letterbox, an ``(rx, ry)`` pair for stretch)."""
    r = (meta or {}).get("ratio", 1.0)
    if isinstance(r, (tuple, list)):
        return float(r[0]), float(r[1])
    return float(r), float(r)


def stretch(
    image: np.ndarray, boxes: np.ndarray, meta: dict[str, Any] | None, size: int | tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Plain resize to ``size`` (``s`` or ``(h, w)``), aspect ratio not kept (SSD's input transform).

    Continuous pixel coordinates map by ``x' = rx * x``, ``y' = ry * y`` with ``rx = w_out / w``,
    ``ry = h_out / h``; boxes follow. ``meta`` is updated by composition (``ratio`` becomes
    ``(rx, ry)``, ``pad`` is scaled), so it still maps back to the original image.
    """
    oh, ow = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    h, w = image.shape[:2]
    rx, ry = ow / w, oh / h
    meta = dict(meta) if meta is not None else {}
    rx0, ry0 = ratio_xy(meta)
    p0 = meta.get("pad", (0.0, 0.0))
    meta.setdefault("orig_size", (h, w))
    meta["ratio"] = (rx0 * rx, ry0 * ry)
    meta["pad"] = (p0[0] * rx, p0[1] * ry)
    meta["input_size"] = (oh, ow)
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.array([rx, ry, rx, ry], dtype=np.float32)
    if (h, w) == (oh, ow):
        return image, b, meta
    _map_masks(meta, np.array([[rx, 0.0, 0.0], [0.0, ry, 0.0]]), (oh, ow))
    interp = cv2.INTER_AREA if min(rx, ry) < 0.5 else cv2.INTER_LINEAR
    return cv2.resize(image, (ow, oh), interpolation=interp), b, meta


def fit_to_input(
    image: np.ndarray,
    boxes: np.ndarray,
    meta: dict[str, Any] | None,
    size: int | tuple[int, int],
    mode: str = "letterbox",
    pad_value: int = 114,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Bring an image (and its boxes) to the network input ``size`` the way the model was trained:
    ``mode`` ``"letterbox"`` (:func:`letterbox`) or ``"stretch"`` (:func:`stretch`). The returned meta
    undoes either (:func:`unletterbox_boxes`, :func:`odkit.models.postprocess.undo_letterbox`)."""
    if mode == "letterbox":
        return letterbox(image, boxes, meta, size, pad_value)
    if mode == "stretch":
        return stretch(image, boxes, meta, size)
    from odkit.errors import ConfigError

    raise ConfigError(f"resize mode must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")


def unletterbox_boxes(boxes: Any, meta: dict[str, Any], clip: bool = True) -> Any:
    """Map boxes ``[N, 4]`` (numpy or torch) from network-input pixels back to original image pixels.

    ``original = (box - [dx, dy, dx, dy]) / ratio`` (per axis for a stretch meta's ``(rx, ry)``),
    clipped to ``[0, w] x [0, h]`` of ``meta["orig_size"]`` when ``clip``. Returns the same array
    type as given.
    """
    dx, dy = meta.get("pad", (0.0, 0.0))
    rx, ry = ratio_xy(meta)
    r: Any = rx if rx == ry else [rx, ry, rx, ry]
    h, w = meta["orig_size"]
    if hasattr(boxes, "new_tensor"):  # torch
        out = (boxes - boxes.new_tensor([dx, dy, dx, dy])) / (boxes.new_tensor(r) if isinstance(r, list) else r)
        if clip:
            out = out.clone()
            out[..., 0::2] = out[..., 0::2].clamp(0, w)
            out[..., 1::2] = out[..., 1::2].clamp(0, h)
        return out
    b = np.asarray(boxes, dtype=np.float64)
    out = (b - np.array([dx, dy, dx, dy], dtype=np.float64)) / np.asarray(r, dtype=np.float64)
    if clip:
        out[..., 0::2] = out[..., 0::2].clip(0, w)
        out[..., 1::2] = out[..., 1::2].clip(0, h)
    return out.astype(np.asarray(boxes).dtype if np.asarray(boxes).dtype.kind == "f" else np.float32)


class Letterbox:
    """Letterbox to ``size`` (or to ``meta["input_size"]`` when ``size`` is None); see :func:`letterbox`.
    ``mode="stretch"`` resizes plainly instead (:func:`fit_to_input`)."""

    carries_masks = True

    def __init__(self, size: int | tuple[int, int] | None = None, pad_value: int = 114, mode: str = "letterbox"):
        self.size = size
        self.pad_value = pad_value
        self.mode = mode

    def __call__(self, image, boxes, labels, meta=None, rng=None) -> Sample:
        size = self.size
        if size is None:
            if meta is None or "input_size" not in meta:
                raise ValueError("Letterbox() without a size needs meta['input_size']")
            size = tuple(meta["input_size"])
        image, boxes, meta = fit_to_input(image, boxes, meta, size, self.mode, self.pad_value)
        return image, boxes, labels, meta


# ---------------------------------------------------------------------------------------- affine
def warp_affine(
    image: np.ndarray, m: np.ndarray, out_wh: tuple[int, int], pad_value: int = 114
) -> np.ndarray:
    """Warp ``image`` with the 2x3 (or 3x3) matrix ``m`` that maps continuous pixel coordinates.

    OpenCV maps pixel centres (integer indices), so the translation is adjusted by
    ``A @ [0.5, 0.5] - 0.5`` to make ``m`` exact for continuous coordinates (a box corner at
    ``(x, y)`` lands at ``m @ (x, y, 1)``).
    """
    return cv2.warpAffine(
        image,
        pixel_matrix(m),
        (int(out_wh[0]), int(out_wh[1])),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(pad_value, pad_value, pad_value),
    )


def random_affine_matrix(
    rng: np.random.Generator,
    in_wh: tuple[float, float],
    out_wh: tuple[float, float],
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.1, 2.0),
    shear: float = 2.0,
    extra_scale: float = 1.0,
) -> tuple[np.ndarray, float]:
    """Draw a 3x3 affine matrix (continuous pixel coordinates) and its isotropic scale.

    ``M = T @ Sh @ R @ C``: ``C`` moves the input centre to the origin, ``R`` rotates by
    ``U(-degrees, degrees)`` and scales by ``U(*scale) * extra_scale``, ``Sh`` shears by
    ``U(-shear, shear)`` degrees on each axis, ``T`` moves to ``U(0.5 - translate, 0.5 + translate)``
    of the output size.
    """
    c = np.eye(3)
    c[0, 2], c[1, 2] = -in_wh[0] / 2.0, -in_wh[1] / 2.0
    a = rng.uniform(-degrees, degrees)
    s = rng.uniform(scale[0], scale[1]) * extra_scale
    r = np.eye(3)
    r[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=a, scale=s)
    sh = np.eye(3)
    sh[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    sh[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    t = np.eye(3)
    t[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_wh[0]
    t[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * out_wh[1]
    return t @ sh @ r @ c, float(s)


def affine_boxes(boxes: np.ndarray, m: np.ndarray, out_wh: tuple[float, float]) -> np.ndarray:
    """Transform boxes through their 4 corners and return the exact box of the visible part.

    The parallelogram image of each box is intersected with the output rectangle
    ``[0, W] x [0, H]`` and the axis-aligned bounds of that intersection are returned (float32
    ``[N, 4]``), so a rotated box cut by the border stays tight. Boxes with no visible part come
    back with zero width/height.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = len(b)
    if n == 0:
        return np.zeros((0, 4), np.float32)
    W, H = float(out_wh[0]), float(out_wh[1])
    m = np.asarray(m, dtype=np.float64)
    xs = b[:, [0, 2, 2, 0]]
    ys = b[:, [1, 1, 3, 3]]
    px = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]  # [N,4] corners in drawing order
    py = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    if abs(m[0, 1]) < 1e-12 and abs(m[1, 0]) < 1e-12:  # axis-aligned: clipping is exact
        out = np.stack([px.min(1), py.min(1), px.max(1), py.max(1)], 1)
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, W)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, H)
        return out.astype(np.float32)
    eps = 1e-9
    cand_x, cand_y, cand_ok = [px], [py], [(px >= -eps) & (px <= W + eps) & (py >= -eps) & (py <= H + eps)]
    # rectangle corners inside the (convex) parallelogram
    qx = np.array([0.0, W, W, 0.0])
    qy = np.array([0.0, 0.0, H, H])
    ex = np.roll(px, -1, 1) - px  # edge vectors [N,4]
    ey = np.roll(py, -1, 1) - py
    cross = ex[:, :, None] * (qy[None, None] - py[:, :, None]) - ey[:, :, None] * (
        qx[None, None] - px[:, :, None]
    )
    area2 = np.abs((px * np.roll(py, -1, 1) - np.roll(px, -1, 1) * py).sum(1))  # twice the polygon area
    inside = ((cross >= -eps).all(1) | (cross <= eps).all(1)) & (area2 > eps)[:, None]  # [N,4 rect corners]
    cand_x.append(np.broadcast_to(qx, (n, 4)))
    cand_y.append(np.broadcast_to(qy, (n, 4)))
    cand_ok.append(inside)
    # edge crossings with the 4 rectangle sides
    for val, axis in ((0.0, 0), (W, 0), (0.0, 1), (H, 1)):
        p0, d0, p1, d1, lim = (px, ex, py, ey, H) if axis == 0 else (py, ey, px, ex, W)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (val - p0) / d0
        other = p1 + t * d1
        ok = np.isfinite(t) & (t >= -eps) & (t <= 1 + eps) & (other >= -eps) & (other <= lim + eps)
        cx_, cy_ = (np.full_like(other, val), other) if axis == 0 else (other, np.full_like(other, val))
        cand_x.append(cx_)
        cand_y.append(cy_)
        cand_ok.append(ok)
    cx = np.concatenate(cand_x, 1)
    cy = np.concatenate(cand_y, 1)
    ok = np.concatenate(cand_ok, 1)
    any_ok = ok.any(1)
    x1 = np.where(ok, cx, np.inf).min(1)
    y1 = np.where(ok, cy, np.inf).min(1)
    x2 = np.where(ok, cx, -np.inf).max(1)
    y2 = np.where(ok, cy, -np.inf).max(1)
    out = np.stack([x1, y1, x2, y2], 1)
    out[~any_ok] = 0.0
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, W)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, H)
    return out.astype(np.float32)


def box_candidates(
    before: np.ndarray,
    after: np.ndarray,
    min_size: float = 2.0,
    max_aspect_ratio: float = 20.0,
    min_area_ratio: float = 0.1,
    scale: float = 1.0,
) -> np.ndarray:
    """Boolean mask of boxes worth keeping after a geometric transform (YOLOv5/YOLOX rule).

    Keep when width and height (pixels, after) exceed ``min_size``, the visible area after
    clipping is more than ``min_area_ratio`` of the area before times ``scale**2`` (the scale the
    transform applied), and ``max(w/h, h/w) < max_aspect_ratio``.
    """
    b0 = np.asarray(before, dtype=np.float64).reshape(-1, 4)
    b1 = np.asarray(after, dtype=np.float64).reshape(-1, 4)
    w0, h0 = b0[:, 2] - b0[:, 0], b0[:, 3] - b0[:, 1]
    w1, h1 = b1[:, 2] - b1[:, 0], b1[:, 3] - b1[:, 1]
    eps = 1e-16
    ar = np.maximum(w1 / (h1 + eps), h1 / (w1 + eps))
    return (
        (w1 > min_size)
        & (h1 > min_size)
        & (w1 * h1 / (w0 * h0 * scale * scale + eps) > min_area_ratio)
        & (ar < max_aspect_ratio)
    )


@dataclass
class _BoxFilter:
    min_size: float = 2.0
    max_aspect_ratio: float = 20.0
    min_area_ratio: float = 0.1


def apply_affine(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    m: np.ndarray,
    s: float,
    out_wh: tuple[int, int],
    flt: _BoxFilter,
    pad_value: int = 114,
    meta: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp image and boxes by ``m`` (3x3, continuous pixels) into ``out_wh`` and filter the boxes;
    the masks of ``meta`` (when it has any) are mapped and filtered with them, in place."""
    out = warp_affine(image, m, out_wh, pad_value)
    nb = affine_boxes(boxes, m, out_wh)
    keep = box_candidates(boxes, nb, flt.min_size, flt.max_aspect_ratio, flt.min_area_ratio, s)
    if meta is not None and "masks" in meta:
        kept = [g for g, k in zip(meta["masks"], keep) if k]
        meta["masks"] = transform_segms(kept, m, (int(out_wh[1]), int(out_wh[0])))
    return out, nb[keep], np.asarray(labels, dtype=np.int64)[keep]


class RandomAffine:
    """Random rotation/scale/shear/translation (see :func:`random_affine_matrix`) to ``size``.

    ``size`` None keeps the input size (or uses ``meta["input_size"]``). Boxes go through their 4
    corners (:func:`affine_boxes`) and are filtered by :func:`box_candidates`.
    """

    carries_masks = True

    def __init__(
        self,
        degrees: float = 10.0,
        translate: float = 0.1,
        scale: tuple[float, float] = (0.1, 2.0),
        shear: float = 2.0,
        size: int | tuple[int, int] | None = None,
        min_size: float = 2.0,
        max_aspect_ratio: float = 20.0,
        min_area_ratio: float = 0.1,
        pad_value: int = 114,
    ):
        self.degrees, self.translate, self.scale, self.shear = degrees, translate, tuple(scale), shear
        self.size = size
        self.filter = _BoxFilter(min_size, max_aspect_ratio, min_area_ratio)
        self.pad_value = pad_value

    def __call__(self, image, boxes, labels, meta=None, rng=None, extra_scale: float = 1.0) -> Sample:
        rng = _need_rng(rng, "RandomAffine")
        h, w = image.shape[:2]
        if self.size is None:
            oh, ow = tuple(meta["input_size"]) if meta and "input_size" in meta else (h, w)
        else:
            oh, ow = (self.size, self.size) if isinstance(self.size, int) else self.size
        m, s = random_affine_matrix(
            rng, (w, h), (ow, oh), self.degrees, self.translate, self.scale, self.shear, extra_scale
        )
        meta = dict(meta) if meta is not None else {}
        img, b, lab = apply_affine(image, boxes, labels, m, s, (ow, oh), self.filter, self.pad_value, meta)
        meta["augmented"] = True
        return img, b, lab, meta


# ---------------------------------------------------------------------------------------- photometric / flip
class HSVJitter:
    """YOLOX HSV jitter: each of hue/saturation/value is, with probability 1/2, shifted by
    ``U(-gain, gain)`` (OpenCV units: hue 0..180 wraps, saturation/value 0..255 saturate).
    Applied with probability ``prob``; boxes are unchanged."""

    carries_masks = True

    def __init__(self, hgain: float = 5.0, sgain: float = 30.0, vgain: float = 30.0, prob: float = 1.0):
        self.gains = np.array([hgain, sgain, vgain], dtype=np.float64)
        self.prob = prob

    def __call__(self, image, boxes, labels, meta=None, rng=None) -> Sample:
        rng = _need_rng(rng, "HSVJitter")
        if rng.random() >= self.prob:
            return image, boxes, labels, meta
        d = rng.uniform(-1, 1, 3) * self.gains * rng.integers(0, 2, 3)
        d = np.round(d).astype(np.int64)
        if not d.any():
            return image, boxes, labels, meta
        x = np.arange(256, dtype=np.int64)
        lut_h = ((x + d[0]) % 180).astype(np.uint8)
        lut_s = np.clip(x + d[1], 0, 255).astype(np.uint8)
        lut_v = np.clip(x + d[2], 0, 255).astype(np.uint8)
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        h, s, v = cv2.split(hsv)
        hsv = cv2.merge((cv2.LUT(h, lut_h), cv2.LUT(s, lut_s), cv2.LUT(v, lut_v)))
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), boxes, labels, meta


class HorizontalFlip:
    """Mirror left-right with probability ``prob``: ``x' = W - x`` for image, boxes and masks."""

    carries_masks = True

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def __call__(self, image, boxes, labels, meta=None, rng=None) -> Sample:
        rng = _need_rng(rng, "HorizontalFlip")
        if rng.random() >= self.prob:
            return image, boxes, labels, meta
        w = image.shape[1]
        img = np.ascontiguousarray(image[:, ::-1])
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
        b[:, [0, 2]] = w - b[:, [2, 0]]
        meta = dict(meta) if meta is not None else {}
        meta["flipped"] = not meta.get("flipped", False)
        _map_masks(meta, np.array([[-1.0, 0.0, w], [0.0, 1.0, 0.0]]), image.shape[:2])
        return img, b, labels, meta


class Compose:
    """Apply sample transforms in order, passing the same Generator to each."""

    def __init__(self, transforms: Sequence[Callable[..., Sample]]):
        self.transforms = list(transforms)

    @property
    def carries_masks(self) -> bool:
        """Whether every transform maps instance masks."""
        return all(getattr(t, "carries_masks", False) for t in self.transforms)

    def __call__(self, image, boxes, labels, meta=None, rng=None) -> Sample:
        for t in self.transforms:
            image, boxes, labels, meta = t(image, boxes, labels, meta, rng)
        return image, boxes, labels, meta


# ---------------------------------------------------------------------------------------- pipelines
@dataclass
class AugmentConfig:
    """Training augmentation hyper-parameters (defaults: YOLOX-s/m/l recipe).

    Probabilities in [0, 1]; ``degrees``/``shear`` in degrees; ``translate`` a fraction of the
    input size; ``scale`` the range of the affine scale; ``hsv_gains`` in OpenCV HSV units;
    ``min_box_size`` in pixels; ``close_mosaic`` = number of final epochs without mosaic, mixup
    and affine. :meth:`light` gives the YOLOX-nano/tiny recipe.
    """

    mosaic_prob: float = 1.0
    mixup_prob: float = 1.0
    mixup_beta: float | None = None
    degrees: float = 10.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.1, 2.0)
    shear: float = 2.0
    hsv_prob: float = 1.0
    hsv_gains: tuple[float, float, float] = (5.0, 30.0, 30.0)
    flip_prob: float = 0.5
    min_box_size: float = 2.0
    min_area_ratio: float = 0.1
    max_aspect_ratio: float = 20.0
    close_mosaic: int = 15
    pad_value: int = 114

    @classmethod
    def light(cls, **overrides: Any) -> AugmentConfig:
        """YOLOX-nano/tiny recipe: mosaic scale (0.5, 1.5), no mixup."""
        kw: dict[str, Any] = {"scale": (0.5, 1.5), "mixup_prob": 0.0}
        kw.update(overrides)
        return cls(**kw)

    def validate(self) -> None:
        from odkit.errors import ConfigError

        for name in ("mosaic_prob", "mixup_prob", "hsv_prob", "flip_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"augment {name} must be in [0, 1], got {v}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"augment scale must be 0 < low <= high, got {self.scale}")
        if self.close_mosaic < 0:
            raise ConfigError(f"augment close_mosaic must be >= 0, got {self.close_mosaic}")


class TrainAugment:
    """Training pipeline: mosaic -> affine -> mixup -> HSV -> flip -> letterbox to the input size.

    Unlike sample transforms it draws extra images from the dataset, so the dataset calls it as
    ``aug(dataset, index, size, rng, strong)``; ``strong=False`` (the final ``close_mosaic``
    epochs) skips mosaic, affine and mixup. The mosaic canvas is ``2 * dataset.img_size`` and the
    affine maps it to ``size x size`` with an extra scale ``size / img_size`` (multi-scale).
    """

    needs_dataset = True

    def __init__(self, cfg: AugmentConfig | None = None, resize: str = "letterbox"):
        self.cfg = cfg or AugmentConfig()
        self.resize = resize  # final fit to the input size (fit_to_input mode)
        self.cfg.validate()
        c = self.cfg
        self.filter = _BoxFilter(c.min_box_size, c.max_aspect_ratio, c.min_area_ratio)
        self.mixup = MixUp(c.mixup_beta)
        self.hsv = HSVJitter(*c.hsv_gains, prob=c.hsv_prob)
        self.flip = HorizontalFlip(c.flip_prob)

    carries_masks = True

    def _geometric(self, ds: DetectionDataset, index: int, size: int, rng: np.random.Generator):
        c = self.cfg
        base = ds.img_size
        if c.mosaic_prob > 0 and rng.random() < c.mosaic_prob:
            idx = [index, *(int(j) for j in rng.integers(0, len(ds), 3))]
            samples = [ds.load(j) for j in idx]
            meta = samples[0][3]
            mosaic = Mosaic(base, pad_value=c.pad_value)
            if "masks" in meta:
                img, boxes, labels, masks = mosaic.with_masks(samples, rng)
                meta = dict(meta, masks=masks)
            else:
                img, boxes, labels = mosaic(samples, rng)
            in_wh, extra = (2 * base, 2 * base), size / base
            meta = dict(meta, mosaic=True)
        else:
            img, boxes, labels, meta = ds.load(index)
            img, boxes, meta = letterbox(img, boxes, meta, size, c.pad_value)
            in_wh, extra = (size, size), 1.0
        m, s = random_affine_matrix(rng, in_wh, (size, size), c.degrees, c.translate, c.scale, c.shear, extra)
        img, boxes, labels = apply_affine(img, boxes, labels, m, s, (size, size), self.filter, c.pad_value, meta)
        meta["augmented"] = True
        return img, boxes, labels, meta

    def __call__(
        self, ds: DetectionDataset, index: int, size: int, rng: np.random.Generator, strong: bool = True
    ) -> Sample:
        c = self.cfg
        if strong:
            img, boxes, labels, meta = self._geometric(ds, index, size, rng)
            if c.mixup_prob > 0 and rng.random() < c.mixup_prob:
                j = int(rng.integers(0, len(ds)))
                other = self._geometric(ds, j, size, rng)
                img, boxes, labels = self.mixup((img, boxes, labels), other[:3], rng)
                meta["mixup"] = True
                if "masks" in meta:
                    meta["masks"] = list(meta["masks"]) + list(other[3]["masks"])
        else:
            img, boxes, labels, meta = ds.load(index)
        img, boxes, labels, meta = self.hsv(img, boxes, labels, meta, rng)
        img, boxes, labels, meta = self.flip(img, boxes, labels, meta, rng)
        img, boxes, meta = fit_to_input(img, boxes, meta, size, self.resize, c.pad_value)
        return img, boxes, labels, meta


class ValTransform(Letterbox):
    """Evaluation pipeline: letterbox only (to ``size``, or to the dataset's input size when None)."""
