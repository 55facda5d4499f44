"""SSD's training augmentation (Liu et al. 2016; torchvision's detection reference ``ssd`` /
``ssdlite`` pipelines): photometric distortion -> zoom-out (expand) -> min-IoU random crop ->
horizontal flip -> resize to the input (plain resize for SSD, or the model's resize mode). No
Mosaic, no letterbox.

Samples follow :mod:`odkit.data.transforms`: ``(image uint8 [H, W, 3] RGB, boxes float32 [N, 4] xyxy
pixels, labels int64 [N], meta)``; randomness comes only from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from odkit.data.transforms import HorizontalFlip, Sample, fit_to_input
from odkit.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from odkit.data.dataset import DetectionDataset

__all__ = ["SSDAugment", "SSDAugmentConfig", "min_iou_crop", "photometric_distort", "zoom_out"]

# torchvision's RandomIoUCrop: minimum IoU options (None: keep the whole image)
IOU_OPTIONS: tuple[float | None, ...] = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, None)


@dataclass
class SSDAugmentConfig:
    """SSD augmentation settings (torchvision reference defaults).

    ``photometric_prob``: probability of each photometric change (brightness ``U(1 +- brightness)``,
    contrast / saturation ``U(1 +- 0.5)``, hue shift ``U(+- hue)`` of the half turn, channel swap);
    ``expand_prob``: zoom-out probability, canvas side ``U(1, expand_max)`` times the image's, filled
    with ``fill`` (RGB); ``crop``: min-IoU random crop (``crop_trials`` tries per IoU option, crop
    side ``U(crop_scale)`` of the image, aspect ``crop_aspect``); ``flip_prob``; ``min_box_size``:
    boxes narrower or lower than this (pixels of the result) are dropped. ``close_mosaic``: final
    epochs with only flip + resize (the dataset reads it as for the YOLOX pipeline).
    """

    photometric_prob: float = 0.5
    brightness: float = 0.125
    hue: float = 0.05
    expand_prob: float = 0.5
    expand_max: float = 4.0
    fill: tuple[int, int, int] = (123, 117, 104)
    crop: bool = True
    crop_trials: int = 40
    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_aspect: tuple[float, float] = (0.5, 2.0)
    flip_prob: float = 0.5
    min_box_size: float = 1.0
    close_mosaic: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SSDAugmentConfig:
        """From ``--aug`` / recipe values (``ConfigError`` naming unknown keys)."""
        from dataclasses import fields

        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown SSD augmentation settings: {', '.join(unknown)} "
                              f"(known: {', '.join(f.name for f in fields(cls))})")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def __post_init__(self) -> None:
        for name in ("photometric_prob", "expand_prob", "flip_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"ssd augment {name} must be in [0, 1], got {v}")
        if self.expand_max < 1.0:
            raise ConfigError(f"ssd augment expand_max must be >= 1, got {self.expand_max}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"ssd augment crop_scale must be 0 < low <= high <= 1, got {self.crop_scale}")


def photometric_distort(image: np.ndarray, rng: np.random.Generator, cfg: SSDAugmentConfig) -> np.ndarray:
    """Random brightness, contrast (before or after), saturation, hue and channel order, each with
    probability ``cfg.photometric_prob`` (torchvision's ``RandomPhotometricDistort``)."""
    p = cfg.photometric_prob
    img = image.astype(np.float32)
    if rng.random() < p:
        img *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    contrast_first = rng.random() < 0.5
    contrast = rng.uniform(0.5, 1.5) if rng.random() < p else None

    def apply_contrast(x: np.ndarray) -> np.ndarray:
        gray = x.clip(0, 255) @ np.array([0.299, 0.587, 0.114], np.float32)
        return (x - gray.mean()) * contrast + gray.mean()

    if contrast is not None and contrast_first:
        img = apply_contrast(img)
    sat = rng.uniform(0.5, 1.5) if rng.random() < p else None
    hue = rng.uniform(-cfg.hue, cfg.hue) if rng.random() < p else None
    if sat is not None or hue is not None:
        hsv = cv2.cvtColor(img.clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
        if sat is not None:
            hsv[..., 1] *= sat
        if hue is not None:
            hsv[..., 0] = (hsv[..., 0] + hue * 180.0) % 180.0
        img = cv2.cvtColor(hsv.clip(0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    if contrast is not None and not contrast_first:
        img = apply_contrast(img)
    if rng.random() < p:
        img = img[..., rng.permutation(3)]
    return np.ascontiguousarray(img.clip(0, 255).astype(np.uint8))


def zoom_out(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, max_ratio: float,
             fill: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Place the image at a random offset on a ``fill`` canvas ``U(1, max_ratio)`` times its size;
    boxes shift by the offset."""
    h, w = image.shape[:2]
    r = rng.uniform(1.0, max_ratio)
    ch, cw = int(h * r), int(w * r)
    top, left = int(rng.integers(0, ch - h + 1)), int(rng.integers(0, cw - w + 1))
    canvas = np.empty((ch, cw, 3), np.uint8)
    canvas[:] = np.asarray(fill, np.uint8)
    canvas[top : top + h, left : left + w] = image
    return canvas, np.asarray(boxes, np.float32) + np.array([left, top, left, top], np.float32)


def _iou(boxes: np.ndarray, crop: np.ndarray) -> np.ndarray:
    iw = (np.minimum(boxes[:, 2], crop[2]) - np.maximum(boxes[:, 0], crop[0])).clip(0)
    ih = (np.minimum(boxes[:, 3], crop[3]) - np.maximum(boxes[:, 1], crop[1])).clip(0)
    inter = iw * ih
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + (crop[2] - crop[0]) * (crop[3] - crop[1]) - inter, 1e-9)


def min_iou_crop(image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                 cfg: SSDAugmentConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SSD's random crop: draw a minimum IoU from :data:`IOU_OPTIONS` (``None``: no crop), then up to
    ``crop_trials`` crops (side ``U(crop_scale)``, aspect within ``crop_aspect``); accept the first
    that contains some box centre and whose IoU with one of those boxes is ``>=`` the minimum. Boxes
    whose centre lies inside are kept, clipped to the crop. Images without boxes are not cropped."""
    if len(boxes) == 0:
        return image, boxes, labels
    h, w = image.shape[:2]
    while True:
        min_iou = IOU_OPTIONS[int(rng.integers(0, len(IOU_OPTIONS)))]
        if min_iou is None:
            return image, boxes, labels
        for _ in range(cfg.crop_trials):
            sw, sh = rng.uniform(*cfg.crop_scale, size=2)
            cw, ch = int(w * sw), int(h * sh)
            if ch == 0 or cw == 0 or not cfg.crop_aspect[0] <= cw / ch <= cfg.crop_aspect[1]:
                continue
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            crop = np.array([x0, y0, x0 + cw, y0 + ch], np.float32)
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            inside = (cx > crop[0]) & (cx < crop[2]) & (cy > crop[1]) & (cy < crop[3])
            if not inside.any() or _iou(boxes[inside], crop).max() < min_iou:
                continue
            b = boxes[inside].copy()
            b[:, 0::2] = b[:, 0::2].clip(crop[0], crop[2]) - crop[0]
            b[:, 1::2] = b[:, 1::2].clip(crop[1], crop[3]) - crop[1]
            return np.ascontiguousarray(image[y0 : y0 + ch, x0 : x0 + cw]), b, labels[inside]


class SSDAugment:
    """Dataset-level SSD training pipeline: ``aug(dataset, index, size, rng, strong)``.

    ``strong=False`` (a final no-augmentation tail) keeps only flip + resize. The result is resized to
    ``size x size`` with ``resize`` (``"stretch"``: SSD's plain resize; ``"letterbox"``)."""

    needs_dataset = True

    def __init__(self, cfg: SSDAugmentConfig | None = None, resize: str = "stretch") -> None:
        self.cfg = cfg or SSDAugmentConfig()
        self.resize = resize
        self.flip = HorizontalFlip(self.cfg.flip_prob)

    def __call__(self, ds: DetectionDataset, index: int, size: int, rng: np.random.Generator,
                 strong: bool = True) -> Sample:
        img, boxes, labels, meta = ds.load(index)
        return self.apply(img, boxes, labels, meta, size, rng, strong)

    def apply(self, img: np.ndarray, boxes: np.ndarray, labels: np.ndarray, meta: dict[str, Any], size: int,
              rng: np.random.Generator, strong: bool = True) -> Sample:
        """The pipeline on one loaded sample (see the class docstring)."""
        c = self.cfg
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        labels = np.asarray(labels, np.int64)
        if strong:
            img = photometric_distort(img, rng, c)
            if rng.random() < c.expand_prob:
                img, boxes = zoom_out(img, boxes, rng, c.expand_max, c.fill)
            if c.crop:
                img, boxes, labels = min_iou_crop(img, boxes, labels, rng, c)
            meta = dict(meta, augmented=True)
        img, boxes, labels, meta = self.flip(img, boxes, labels, meta, rng)
        img, boxes, meta = fit_to_input(img, boxes, meta, size, self.resize, int(np.mean(c.fill)))
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, img.shape[1])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, img.shape[0])
        keep = ((boxes[:, 2] - boxes[:, 0]) >= c.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= c.min_box_size)
        return img, boxes[keep], labels[keep], meta
