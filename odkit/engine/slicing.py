"""Sliced inference for large images (SAHI's scheme): the image is cut into overlapping slices,
each slice is predicted at the model's input size (slices go through the model ``batch`` at a time,
so memory is bounded by one batch whatever the image size), boxes are shifted back to the image,
optionally joined by a prediction of the whole (letterboxed) image, and merged class-aware, by
default with greedy non-maximum merging on intersection over the smaller box (a box cut by a slice
border is merged with the rest of the object from the neighbouring slice).

Coordinates: slices are ``(x0, y0, x1, y1)`` integer pixels, end exclusive.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from odkit.data.tiles import tile_grid as slice_grid
from odkit.engine.merging import Dets, _images, check_merge, concat_dets, merge_detections
from odkit.errors import ConfigError

__all__ = ["SliceConfig", "SlicedPredictor", "predict_slices", "slice_grid"]


@dataclass
class SliceConfig:
    """Sliced prediction settings: slice side in pixels, overlap fraction, whether the whole image
    is predicted too, and how detections are merged (see :func:`odkit.engine.merging.merge_detections`)."""

    size: int = 640
    overlap: float = 0.2
    full_image: bool = False
    merge: str = "greedy-nmm"
    match: str = "ios"
    match_thr: float = 0.5

    def check(self) -> SliceConfig:
        if int(self.size) < 1:
            raise ConfigError(f"--slice must be >= 1 pixel, got {self.size}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ConfigError(f"--overlap must be in [0, 1), got {self.overlap}")
        check_merge(self.merge, self.match, self.match_thr)
        return self


def _batches(img: np.ndarray, grid: list[tuple[int, int, int, int]], batch: int) -> Iterator[tuple[list, list]]:
    for s in range(0, len(grid), batch):
        cells = grid[s : s + batch]
        yield [img[y0:y1, x0:x1] for x0, y0, x1, y1 in cells], cells  # views: no copies


def predict_slices(base: Any, img: np.ndarray, cfg: SliceConfig, conf: float | None = None, iou: float | None = None,
                   max_det: int | None = None, img_size: int | None = None, batch: int = 8) -> list[Dets]:
    """Per-slice detections of ``img`` (uint8 ``[H, W, 3]`` RGB) shifted to image pixels (float64
    boxes), one dict per
    slice in grid order, then one for the whole image when ``cfg.full_image`` and there are several
    slices. ``max_det`` applies per slice."""
    grid = slice_grid(img.shape[0], img.shape[1], int(cfg.size), float(cfg.overlap))
    out = []
    for crops, cells in _batches(img, grid, max(int(batch), 1)):
        preds = base.predict(crops, conf=conf, iou=iou, max_det=max_det, img_size=img_size, batch=batch)
        for (x0, y0, _, _), p in zip(cells, preds):
            shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float64)
            out.append({**p, "boxes": p["boxes"].double() + shift})  # float64: no rounding of the shift
    if cfg.full_image and len(grid) > 1:
        full = base.predict([img], conf=conf, iou=iou, max_det=max_det, img_size=img_size, batch=1)
        out.extend({**p, "boxes": p["boxes"].double()} for p in full)
    return out


class SlicedPredictor:
    """A predictor (PyTorch, exported, TTA or ensemble) run slice by slice (:class:`SliceConfig`);
    ``predict`` has the interface of :meth:`odkit.engine.predictor.Predictor.predict` and returns the
    merged detections in original image pixels, by decreasing score (``max_det`` is per slice: the
    merged set is not cut)."""

    def __init__(self, base: Any, cfg: SliceConfig):
        self.base, self.cfg = base, cfg.check()
        self.class_names = base.class_names
        self.img_size = base.img_size
        self.name = base.name

    def predict(self, images: Any, conf: float | None = None, iou: float | None = None,
                max_det: int | None = None, img_size: int | None = None, batch: int = 8) -> list[Dets]:
        from odkit.engine.predictor import prepare_inputs

        out = []
        for item in _images(images):
            (img, _), = prepare_inputs(item)
            parts = predict_slices(self.base, img, self.cfg, conf, iou, max_det, img_size, batch)
            out.append(merge_detections([concat_dets(parts)], self.cfg.merge, self.cfg.match, self.cfg.match_thr))
        return out

    __call__ = predict
