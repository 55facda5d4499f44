"""``DetectionDataset``: images and training targets from an :class:`~odkit.data.AnnotationSet`.

Images are decoded with :func:`odkit.data.imageio.read_image` and resized so the long side is
``img_size`` (the base the augmentations work from); an optional RAM cache keeps those resized
images in one contiguous buffer. Crowd annotations and annotations of unknown class (label -1)
never reach training targets: they are removed once, at construction, and counted in the log.

Per-sample randomness comes from ``numpy.random.default_rng([seed, epoch, index])``, so a sample
is the same whatever worker produces it. A key may be a plain index or the tuple
``(index, size, epoch, strong)`` that :class:`~odkit.data.loader.DetectionBatchSampler` yields.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from odkit.data.imageio import read_image
from odkit.data.masks import transform_segms
from odkit.data.structures import AnnotationSet
from odkit.errors import ConfigError, DataError

__all__ = ["DetectionDataset", "resized_shape"]

log = logging.getLogger(__name__)


def resized_shape(h: int, w: int, size: int) -> tuple[int, int, float]:
    """``(new_h, new_w, r)`` for resizing an ``h x w`` image so its long side is ``size``."""
    r = size / max(h, w)
    return max(1, round(h * r)), max(1, round(w * r)), r


class DetectionDataset:
    """Detection samples from ``aset``.

    ``dataset[i]`` returns ``(image uint8 [H,W,3] RGB, boxes float32 [N,4] xyxy pixels of that
    image, labels int64 [N], meta)``; ``meta`` follows the letterbox convention (``orig_size``,
    ``ratio``, ``pad``, ``image_id``, ``path``) plus ``index``. Without ``transforms`` the image is
    the original resized so its long side is ``img_size``.

    ``transforms`` is either a sample transform ``t(image, boxes, labels, meta, rng)`` (such as
    :class:`~odkit.data.transforms.ValTransform`) or a dataset-level pipeline with
    ``needs_dataset = True`` (:class:`~odkit.data.transforms.TrainAugment`).
    ``cache_ram_gb`` > 0 keeps resized images in RAM, in index order, up to that many GB
    (``cache_auto``: the budget was chosen for the user, so a partial cache is noted, not warned).
    ``drop_difficult`` removes VOC ``difficult`` boxes from the targets too (kept by default).
    ``masks``: carry the instance masks of ``aset`` (polygons / RLE, one per box) in
    ``meta["masks"]`` through the transforms (which must say ``carries_masks``), so that the
    loader's collate adds ``targets[i]["masks"]``; a box without a mask gets its box as mask
    (counted in the log). Off by default: then nothing about masks is read or done.
    """

    def __init__(
        self,
        aset: AnnotationSet,
        img_size: int,
        transforms: Any = None,
        cache_ram_gb: float = 0.0,
        seed: int = 0,
        drop_difficult: bool = False,
        cache_auto: bool = False,
        masks: bool = False,
    ):
        if int(img_size) <= 0:
            raise ConfigError(f"img_size must be positive, got {img_size}")
        if cache_ram_gb < 0:
            raise ConfigError(f"cache_ram_gb must be >= 0, got {cache_ram_gb}")
        self.img_size = int(img_size)
        self.transforms = transforms
        self.seed = int(seed)
        self.epoch = 0
        self.class_names = list(aset.class_names)
        self.num_classes = aset.num_classes
        self.source_root = Path(aset.root)

        # ---- training targets: CSR numpy arrays, no per-sample Python objects
        crowd = aset.iscrowd.astype(bool)
        unknown = aset.labels < 0
        keep = ~crowd & ~unknown
        n_diff = 0
        if drop_difficult:
            diff = aset.difficult.astype(bool) & keep
            n_diff = int(diff.sum())
            keep &= ~diff
        self.num_filtered = {
            "iscrowd": int(crowd.sum()),
            "unknown_class": int((unknown & ~crowd).sum()),
            "difficult": n_diff,
        }
        if (~keep).any():
            log.warning(
                "%s: %d annotations kept out of training targets (%d iscrowd, %d unknown class, %d difficult)",
                aset.root,
                int((~keep).sum()),
                self.num_filtered["iscrowd"],
                self.num_filtered["unknown_class"],
                n_diff,
            )
        img_of = aset.image_index()
        counts = np.bincount(img_of[keep], minlength=len(aset)).astype(np.int64)
        self._offsets = np.zeros(len(aset) + 1, dtype=np.int64)
        np.cumsum(counts, out=self._offsets[1:])
        self._boxes = np.ascontiguousarray(aset.boxes[keep], dtype=np.float32).reshape(-1, 4)
        self._labels = np.ascontiguousarray(aset.labels[keep], dtype=np.int64)
        self._image_ids = aset.image_ids.astype(np.int64).copy()
        self._ann_hw = np.stack([aset.heights, aset.widths], 1).astype(np.int64)
        self.masks = bool(masks)
        self._masks: list[Any] = []
        if self.masks:
            self._masks = self._kept_masks(aset, keep, transforms)

        # ---- paths as one byte buffer (avoids copy-on-access of Python strings in workers)
        enc = [str(aset.path(i)).encode("utf-8") for i in range(len(aset))]
        self._path_off = np.zeros(len(enc) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in enc], out=self._path_off[1:])
        self._path_buf = np.frombuffer(b"".join(enc), dtype=np.uint8).copy()

        # ---- RAM cache
        self._cache_buf = np.zeros(0, np.uint8)
        self._cache_off = np.full(len(aset) + 1, -1, dtype=np.int64)
        self._cache_hw = np.zeros((len(aset), 2), dtype=np.int64)
        self._cache_orig = np.zeros((len(aset), 2), dtype=np.int64)
        self.num_cached = 0
        if cache_ram_gb > 0 and len(aset):
            self._fill_cache(cache_ram_gb, warn_partial=not cache_auto)

    def _kept_masks(self, aset: AnnotationSet, keep: np.ndarray, transforms: Any) -> list[Any]:
        """The masks of the kept rows; a row without one gets its box as a rectangle polygon."""
        if aset.masks is None:
            raise ConfigError(f"{aset.root}: masks requested but the data set has no instance masks "
                              "(segmentation polygons / RLE)")
        if transforms is not None and not getattr(transforms, "carries_masks", False):
            raise ConfigError(f"masks requested but the transforms {type(transforms).__name__} do not carry masks "
                              "(the SSD augmentations do not)")
        rows = np.flatnonzero(keep)
        out = [aset.masks[int(r)] for r in rows]
        missing = [k for k, m in enumerate(out) if m is None]
        for k in missing:
            x1, y1, x2, y2 = (float(v) for v in aset.boxes[rows[k]])
            out[k] = [np.array([x1, y1, x2, y1, x2, y2, x1, y2], dtype=np.float64)]
        if missing:
            log.warning("%s: %d of %d training boxes have no mask; their boxes are used as masks",
                        aset.root, len(missing), len(out))
        return out

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self._offsets) - 1

    def path(self, i: int) -> str:
        """Image path of sample ``i``."""
        return bytes(self._path_buf[self._path_off[i] : self._path_off[i + 1]]).decode("utf-8")

    def annotations(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Filtered training targets of image ``i`` in original pixels: (boxes [N,4] copy, labels [N] copy)."""
        s, e = self._offsets[i], self._offsets[i + 1]
        return self._boxes[s:e].copy(), self._labels[s:e].copy()

    # ------------------------------------------------------------------ epochs / strong augmentation
    def set_epoch(self, epoch: int, max_epochs: int | None = None) -> None:
        """Record the current epoch; with ``max_epochs``, strong augmentation stops for the last
        ``transforms.cfg.close_mosaic`` epochs."""
        self.epoch = int(epoch)
        if max_epochs is not None:
            self.max_epochs = int(max_epochs)

    def close_mosaic(self) -> None:
        """Turn mosaic, mixup and affine off from now on (for every later epoch)."""
        self._closed = True

    def strong_augment(self, epoch: int | None = None) -> bool:
        """Whether mosaic/mixup/affine are on at ``epoch`` (default: the current epoch)."""
        if getattr(self, "_closed", False):
            return False
        epoch = self.epoch if epoch is None else int(epoch)
        max_epochs = getattr(self, "max_epochs", None)
        cfg = getattr(self.transforms, "cfg", None)
        n = int(getattr(cfg, "close_mosaic", 0) or 0)
        return not (max_epochs is not None and epoch >= max_epochs - n)

    # ------------------------------------------------------------------ loading
    def _decode_resized(self, i: int) -> tuple[np.ndarray, tuple[int, int], float]:
        path = self.path(i)
        img = read_image(path)
        h0, w0 = img.shape[:2]
        ah, aw = self._ann_hw[i]
        if ah > 0 and aw > 0 and (ah, aw) != (h0, w0):
            raise DataError(
                f"{path}: image is {w0}x{h0} but its annotation says {aw}x{ah}; boxes would be misplaced "
                "(check the dataset with `odkit data check`)"
            )
        nh, nw, r = resized_shape(h0, w0, self.img_size)
        if (nh, nw) != (h0, w0):
            interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
            img = cv2.resize(img, (nw, nh), interpolation=interp)
        return img, (h0, w0), r

    def _fill_cache(self, budget_gb: float, warn_partial: bool = True) -> None:
        budget = int(budget_gb * 1024**3)
        n = len(self)
        hw = self._ann_hw.copy()
        shapes = np.zeros((n, 2), dtype=np.int64)
        for i in range(n):
            h, w = hw[i]
            if h > 0 and w > 0:
                shapes[i] = resized_shape(int(h), int(w), self.img_size)[:2]
        unknown = (shapes == 0).any(1)
        nbytes = shapes[:, 0] * shapes[:, 1] * 3
        # images of unknown size are decoded to measure them, only while the budget may still hold
        total, count = 0, 0
        for i in range(n):
            if unknown[i]:
                img, _, _ = self._decode_resized(i)
                shapes[i] = img.shape[:2]
                nbytes[i] = img.size
            if total + nbytes[i] > budget:
                break
            total += int(nbytes[i])
            count += 1
        self._cache_buf = np.empty(total, dtype=np.uint8)
        off = 0
        for i in tqdm(range(count), desc="caching images", unit="img", leave=False, disable=count < 50):
            img, orig, _ = self._decode_resized(i)
            if img.size != nbytes[i]:  # size in annotation was wrong; _decode_resized raised otherwise
                raise DataError(f"{self.path(i)}: decoded size changed while caching")
            self._cache_buf[off : off + img.size] = img.reshape(-1)
            self._cache_off[i] = off
            self._cache_hw[i] = img.shape[:2]
            self._cache_orig[i] = orig
            off += img.size
        self.num_cached = count
        log.info(
            "cached %d/%d images resized to long side %d in RAM (%.2f GB of %.2f GB budget)",
            count,
            n,
            self.img_size,
            total / 1024**3,
            budget_gb,
        )
        if count < n:
            (log.warning if warn_partial else log.info)(
                "RAM cache budget %.2f GB holds %d of %d images; the rest load from disk", budget_gb, count, n
            )

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Sample ``i`` resized so its long side is ``img_size``: image, boxes (in that image), labels, meta."""
        if self._cache_off[i] >= 0:
            h, w = self._cache_hw[i]
            o = int(self._cache_off[i])
            img = self._cache_buf[o : o + h * w * 3].reshape(h, w, 3).copy()
            orig = (int(self._cache_orig[i, 0]), int(self._cache_orig[i, 1]))
            r = resized_shape(orig[0], orig[1], self.img_size)[2]
        else:
            img, orig, r = self._decode_resized(i)
        boxes, labels = self.annotations(i)
        boxes *= np.float32(r)
        meta = {
            "orig_size": orig,
            "ratio": r,
            "pad": (0.0, 0.0),
            "image_id": int(self._image_ids[i]),
            "path": self.path(i),
            "index": int(i),
        }
        if self.masks:
            meta["masks"] = self._load_masks(i, orig, r, img.shape[:2])
        return img, boxes, labels, meta

    def _load_masks(self, i: int, orig: tuple[int, int], r: float, hw: tuple[int, int]) -> list[Any]:
        """The masks of image ``i`` scaled by ``r`` onto the resized image of size ``hw``."""
        s, e = self._offsets[i], self._offsets[i + 1]
        segs = self._masks[s:e]
        for k, g in enumerate(segs):
            if not isinstance(g, list) and tuple(g.size) != tuple(orig):
                raise DataError(f"{self.path(i)}: mask {k} is an RLE of {g.size[1]}x{g.size[0]} pixels on a "
                                f"{orig[1]}x{orig[0]} image (check the dataset with `odkit data check`)")
        if r == 1.0 and tuple(hw) == tuple(orig):
            return list(segs)
        return transform_segms(segs, np.array([[r, 0.0, 0.0], [0.0, r, 0.0]]), hw)

    def __getitem__(self, key: int | tuple[int, int, int, bool]):
        if isinstance(key, tuple):
            i, size, epoch, strong = int(key[0]), int(key[1]), int(key[2]), bool(key[3])
        else:
            i, size, epoch = int(key), self.img_size, self.epoch
            strong = self.strong_augment(epoch)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample index {i} out of range for {n} images")
        rng = np.random.default_rng([self.seed, epoch, i])
        t = self.transforms
        if t is None:
            return self.load(i)
        if getattr(t, "needs_dataset", False):
            return t(self, i, size, rng, strong)
        img, boxes, labels, meta = self.load(i)
        meta["input_size"] = (size, size)
        return t(img, boxes, labels, meta, rng)
