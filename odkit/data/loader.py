"""Batching for detection: a seeded batch sampler (multi-scale, distributed), collate, ``build_loader``.

The batch sampler runs in the main process and yields, per sample, the key
``(index, size, epoch, strong)``: the input size of the batch (multi-scale), the epoch and whether
strong augmentation is on. The dataset seeds each sample's RNG from ``(seed, epoch, index)``, so
batches and augmentations are identical for a given seed whatever the number of workers, and a
dataset copy inside a persistent worker never needs to be told the epoch.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from odkit.data.masks import rasterize
from odkit.errors import ConfigError

__all__ = [
    "DetectionBatchSampler",
    "DetectionLoader",
    "MultiScale",
    "build_loader",
    "collate_detection",
    "worker_init_fn",
]

log = logging.getLogger(__name__)


@dataclass
class MultiScale:
    """Multi-scale training: every ``every`` batches draw the input size from
    ``min_size, min_size + stride, ..., max_size`` (pixels, multiples of ``stride``)."""

    min_size: int
    max_size: int
    every: int = 10
    stride: int = 32

    @classmethod
    def around(cls, img_size: int, steps: int = 3, every: int = 10, stride: int = 32) -> MultiScale:
        """Sizes ``img_size +/- steps * stride`` (the low end kept >= ``stride``)."""
        return cls(max(stride, img_size - steps * stride), img_size + steps * stride, every, stride)

    @property
    def sizes(self) -> np.ndarray:
        return np.arange(self.min_size, self.max_size + 1, self.stride, dtype=np.int64)

    def validate(self) -> None:
        if self.stride <= 0 or self.every <= 0:
            raise ConfigError(f"multiscale stride and every must be positive, got {self}")
        if self.min_size % self.stride or self.max_size % self.stride or self.min_size > self.max_size:
            raise ConfigError(
                f"multiscale sizes must be multiples of {self.stride} with min <= max, got "
                f"{self.min_size}..{self.max_size}"
            )


class _SeededSampler:
    """Permutation of ``range(n)`` drawn from ``(seed, epoch)`` (or the identity without shuffle)."""

    def __init__(self, n: int, shuffle: bool, seed: int):
        self.n, self.shuffle, self.seed, self.epoch = n, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            return iter(np.random.default_rng([self.seed, self.epoch, 1]).permutation(self.n).tolist())
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


class DetectionBatchSampler(Sampler[list[tuple[int, int, int, bool]]]):
    """Batches of sample keys ``(index, size, epoch, strong)``.

    ``sampler`` gives the index order (a :class:`torch.utils.data.DistributedSampler` in
    distributed training, otherwise a permutation from ``(seed, epoch)``). The size is
    ``dataset.img_size`` or, with ``multiscale``, drawn from ``(seed, epoch, batch // every)`` so
    every rank uses the same size at the same step. ``strong`` comes from
    ``dataset.strong_augment(epoch)`` in the main process. Each pass advances the epoch by one
    unless :meth:`set_epoch` is called.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        sampler: Any,
        seed: int = 0,
        drop_last: bool = False,
        multiscale: MultiScale | None = None,
    ):
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.sampler = sampler
        self.seed = int(seed)
        self.drop_last = drop_last
        self.multiscale = multiscale
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def size_at(self, epoch: int, batch: int) -> int:
        """Input size (pixels) of batch ``batch`` of ``epoch``."""
        ms = self.multiscale
        if ms is None:
            return int(getattr(self.dataset, "img_size", 0))
        rng = np.random.default_rng([self.seed, epoch, batch // ms.every, 2])
        return int(rng.choice(ms.sizes))

    def __iter__(self) -> Iterator[list[tuple[int, int, int, bool]]]:
        epoch = self.epoch
        self.epoch = epoch + 1  # next pass gets fresh augmentation unless set_epoch says otherwise
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        strong_fn = getattr(self.dataset, "strong_augment", None)
        strong = bool(strong_fn(epoch)) if strong_fn is not None else False
        batch: list[int] = []
        b = 0
        for idx in self.sampler:
            batch.append(int(idx))
            if len(batch) == self.batch_size:
                size = self.size_at(epoch, b)
                yield [(i, size, epoch, strong) for i in batch]
                batch, b = [], b + 1
        if batch and not self.drop_last:
            size = self.size_at(epoch, b)
            yield [(i, size, epoch, strong) for i in batch]

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def collate_detection(
    batch: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]],
    channels_last: bool = False,
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]], list[dict[str, Any]]]:
    """Stack samples into ``(images [B,3,H,W] float32 in [0,1], targets, metas)``; the images are
    contiguous, or with ``channels_last`` in that memory format (the samples' own pixel order:
    one conversion pass instead of three, same values).

    ``targets[i] = {"boxes": float32 [N,4] xyxy input pixels, "labels": int64 [N]}``, plus
    ``"masks": uint8 [N, H, W]`` (0 / 1, one per box, in the input image's pixels) when the sample's
    meta carries masks (a dataset built with ``masks=True``); the polygons / RLEs are rasterised
    here and leave the metas. All images must have the same size (use a letterbox transform).
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    shapes = {tuple(s[0].shape) for s in batch}
    if len(shapes) != 1:
        raise ValueError(
            f"images in a batch must share one size, got {sorted(shapes)}; add a letterbox transform"
        )
    arr = np.stack([s[0] for s in batch])  # [B,H,W,3] uint8
    nchw = torch.from_numpy(arr).permute(0, 3, 1, 2)  # a channels_last view of the samples
    images = (nchw if channels_last else nchw.contiguous()).float().div_(255.0)
    targets = [
        {
            "boxes": torch.from_numpy(np.ascontiguousarray(s[1], dtype=np.float32).reshape(-1, 4)),
            "labels": torch.from_numpy(np.ascontiguousarray(s[2], dtype=np.int64).reshape(-1)),
        }
        for s in batch
    ]
    metas = [s[3] for s in batch]
    if any("masks" in m for m in metas):
        h, w = arr.shape[1:3]
        metas = [dict(m) for m in metas]
        for i, (t, m) in enumerate(zip(targets, metas)):
            segs = m.pop("masks", None)
            if segs is None or len(segs) != len(t["boxes"]):
                got = "no masks" if segs is None else f"{len(segs)} masks"
                raise ValueError(f"sample {m.get('path', i)}: {got} for {len(t['boxes'])} boxes")
            t["masks"] = torch.from_numpy(rasterize(segs, h, w))
    return images, targets, metas


def worker_init_fn(worker_id: int) -> None:
    """Seed Python/numpy global RNGs of a worker from torch's per-worker seed and keep it single-threaded.

    odkit transforms never use global RNGs; this only protects user code that does.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(0)
    except Exception:  # pragma: no cover
        pass


class DetectionLoader(DataLoader):
    """A :class:`DataLoader` over sample keys with :meth:`set_epoch`."""

    def set_epoch(self, epoch: int, max_epochs: int | None = None) -> None:
        """Select the epoch (sample order, augmentation seeds, multi-scale sizes, close-mosaic)."""
        self.batch_sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch, max_epochs) if max_epochs is not None else self.dataset.set_epoch(
                epoch
            )


def build_loader(
    dataset: Any,
    batch_size: int,
    shuffle: bool = True,
    workers: int = 0,
    seed: int = 0,
    multiscale: MultiScale | tuple[int, int] | None = None,
    drop_last: bool = False,
    distributed: bool = False,
    persistent_workers: bool = True,
    pin_memory: bool | None = None,
    prefetch_factor: int | None = None,
    channels_last: bool = False,
) -> DetectionLoader:
    """A loader yielding ``(images [B,3,H,W] float in [0,1], targets, metas)`` (see :func:`collate_detection`).

    ``channels_last``: images come in that memory format (see :func:`collate_detection`).
    ``seed`` fixes sample order, augmentation (it becomes ``dataset.seed``) and multi-scale sizes:
    the same seed gives the same batches with any number of ``workers``. ``multiscale`` is a
    :class:`MultiScale` or ``(min_size, max_size)``. With ``distributed`` the order comes from a
    :class:`~torch.utils.data.DistributedSampler` over the initialised process group.
    Call ``loader.set_epoch(epoch)`` every epoch (otherwise each pass advances the epoch by one).
    """
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    if isinstance(multiscale, tuple):
        multiscale = MultiScale(int(multiscale[0]), int(multiscale[1]))
    if multiscale is not None:
        multiscale.validate()
    if hasattr(dataset, "seed"):
        dataset.seed = int(seed)
    if distributed:
        import torch.distributed as dist
        from torch.utils.data import DistributedSampler

        if not (dist.is_available() and dist.is_initialized()):
            raise ConfigError("distributed=True needs an initialised torch.distributed process group")
        sampler: Any = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    else:
        sampler = _SeededSampler(len(dataset), shuffle, seed)
    batch_sampler = DetectionBatchSampler(dataset, batch_size, sampler, seed, drop_last, multiscale)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    g = torch.Generator()
    g.manual_seed(int(seed))
    kw: dict[str, Any] = {}
    if workers > 0:
        kw["persistent_workers"] = persistent_workers
        kw["worker_init_fn"] = worker_init_fn
        if prefetch_factor is not None:
            kw["prefetch_factor"] = prefetch_factor
    return DetectionLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=functools.partial(collate_detection, channels_last=True) if channels_last else collate_detection,
        pin_memory=pin_memory,
        generator=g,
        **kw,
    )
