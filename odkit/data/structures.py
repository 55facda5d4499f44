"""The in-memory dataset representation shared by every reader, writer, validator and loader.

All annotations of a dataset live in a handful of flat numpy arrays (CSR layout: the
annotations of image ``i`` are rows ``offsets[i]:offsets[i + 1]``), so a million boxes cost a
few tens of megabytes and no per-box Python objects.

Conventions: boxes are ``xyxy`` float32 in absolute pixels with continuous coordinates
(width = x2 - x1, no "+1"). Labels are contiguous class indices ``0..C-1``; ``-1`` marks an
annotation whose class is not in ``class_names`` (kept so that validation can report it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Problem:
    """One finding about a dataset.

    ``kind`` is a short stable identifier (for example ``"box_out_of_bounds"``), ``file`` the
    annotation or image file concerned, ``annotation`` the annotation id / line / object index
    (``None`` when the problem concerns a whole image), ``message`` a human sentence, and
    ``severity`` one of ``"error"`` (cannot train on it), ``"warning"`` (suspicious) or
    ``"info"`` (a count worth knowing, such as negatives). ``repaired`` says what the default
    mode did about it, if anything.
    """

    kind: str
    file: str
    message: str
    annotation: Any = None
    severity: str = "error"
    repaired: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "file": self.file,
            "annotation": self.annotation,
            "message": self.message,
            "repaired": self.repaired,
        }


@dataclass
class ImageRecord:
    """A view of one image and its annotations (arrays are views into the parent set)."""

    index: int
    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray  # [N,4] float32 xyxy
    labels: np.ndarray  # [N] int64
    iscrowd: np.ndarray  # [N] bool
    difficult: np.ndarray  # [N] bool
    ann_ids: np.ndarray  # [N] int64
    areas: np.ndarray  # [N] float32 (NaN when the source has no area field)
    masks: list[Any] | None = None  # [N] Segm or None each (odkit.data.masks), None: no masks


def _remap_splits(splits: dict[str, np.ndarray], idx: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Split indices after selecting images ``idx`` (old indices, in new order) out of ``n``."""
    if not splits:
        return {}
    new_of_old = np.full(n, -1, dtype=np.int64)
    new_of_old[idx] = np.arange(len(idx), dtype=np.int64)
    out = {}
    for name, members in splits.items():
        m = new_of_old[np.asarray(members, dtype=np.int64)]
        out[name] = np.unique(m[m >= 0])
    return out


def _empty(dtype: Any, *shape: int) -> np.ndarray:
    return np.zeros(shape if shape else (0,), dtype=dtype)


@dataclass
class AnnotationSet:
    """A detection dataset in memory.

    Per image: ``files`` (paths relative to ``root`` or absolute), ``image_ids`` (original ids),
    ``widths``/``heights`` in pixels as stated by the annotation (0 when unknown).
    Per annotation (rows grouped by image, see ``offsets``): ``boxes`` [A,4] float32 xyxy pixels,
    ``labels`` [A] int64 (contiguous, -1 = unknown class), ``iscrowd``/``difficult`` [A] bool,
    ``ann_ids`` [A] int64 original annotation ids (or running index), ``areas`` [A] float32
    (COCO ``area`` field, NaN when absent), ``raw_names`` class name per annotation for unknown
    classes only (dict row -> name).
    Dataset level: ``class_names`` (index = label), ``class_ids`` (original category id per
    label: COCO category id, YOLO index, VOC position), ``source`` (format name) and ``problems``
    found while parsing.
    ``splits``: split name -> sorted int64 image indices, as the source defines them (ImageSets
    files, YAML keys, CSV files, split folders, CVAT subsets); an image may be in several splits,
    and an empty dict means the source defines none. ``ann_files``: per image, the file holding its
    annotations (xml, json, txt, csv), or an empty list when the reader does not say.
    ``masks``: ``None`` when the source has no instance masks, else one entry per annotation row:
    polygons or an RLE in pixels of its image (see :mod:`odkit.data.masks`), or ``None`` for a row
    without a mask.
    """

    root: Path
    files: list[str]
    image_ids: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    offsets: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray
    ann_ids: np.ndarray
    areas: np.ndarray
    class_names: list[str]
    class_ids: list[int]
    source: str = ""
    raw_names: dict[int, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    ann_files: list[str] = field(default_factory=list)
    masks: list[Any] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_lists(
        cls,
        root: str | Path,
        files: list[str],
        widths: list[int] | np.ndarray,
        heights: list[int] | np.ndarray,
        boxes: list[np.ndarray],
        labels: list[np.ndarray],
        class_names: list[str],
        class_ids: list[int] | None = None,
        image_ids: list[int] | np.ndarray | None = None,
        iscrowd: list[np.ndarray] | None = None,
        difficult: list[np.ndarray] | None = None,
        ann_ids: list[np.ndarray] | None = None,
        areas: list[np.ndarray] | None = None,
        source: str = "",
        masks: list[list[Any]] | None = None,
    ) -> AnnotationSet:
        """Build a set from per-image arrays (convenient for small sets and tests); ``masks``: per
        image, one mask (polygons, RLE or None) per box."""
        n = len(files)
        counts = np.array([len(b) for b in boxes], dtype=np.int64)
        if len(boxes) != n or len(labels) != n:
            raise ValueError("files, boxes and labels must have one entry per image")
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])

        def cat(parts: list[np.ndarray] | None, dtype: Any, fill: Any, width: int = 0) -> np.ndarray:
            if parts is None:
                shape = (int(offsets[-1]), width) if width else (int(offsets[-1]),)
                return np.full(shape, fill, dtype=dtype)
            if not parts:
                return np.zeros((0, width) if width else (0,), dtype=dtype)
            arrs = [np.asarray(p, dtype=dtype).reshape((-1, width) if width else (-1,)) for p in parts]
            return np.concatenate(arrs, axis=0)

        total = int(offsets[-1])
        if masks is not None and [len(m) for m in masks] != counts.tolist():
            raise ValueError("masks must hold one entry per box of each image")
        return cls(
            root=Path(root),
            files=list(files),
            image_ids=np.asarray(image_ids if image_ids is not None else np.arange(n), dtype=np.int64),
            widths=np.asarray(widths, dtype=np.int64).reshape(n),
            heights=np.asarray(heights, dtype=np.int64).reshape(n),
            offsets=offsets,
            boxes=cat(boxes, np.float32, 0.0, 4),
            labels=cat(labels, np.int64, 0),
            iscrowd=cat(iscrowd, bool, False),
            difficult=cat(difficult, bool, False),
            ann_ids=cat(ann_ids, np.int64, 0) if ann_ids is not None else np.arange(total, dtype=np.int64),
            areas=cat(areas, np.float32, np.nan),
            class_names=list(class_names),
            class_ids=list(class_ids) if class_ids is not None else list(range(len(class_names))),
            source=source,
            masks=[m for per in masks for m in per] if masks is not None else None,
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_annotations(self) -> int:
        return int(self.offsets[-1])

    def path(self, i: int) -> Path:
        """Absolute (or root-joined) path of image ``i``."""
        p = Path(self.files[i])
        return p if p.is_absolute() else self.root / p

    def image_index(self) -> np.ndarray:
        """Image index of every annotation row, ``[A]`` int64."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.offsets))

    def __getitem__(self, i: int) -> ImageRecord:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"image index {i} out of range for {len(self)} images")
        s, e = int(self.offsets[i]), int(self.offsets[i + 1])
        return ImageRecord(
            index=i,
            image_id=int(self.image_ids[i]),
            path=self.path(i),
            width=int(self.widths[i]),
            height=int(self.heights[i]),
            boxes=self.boxes[s:e],
            labels=self.labels[s:e],
            iscrowd=self.iscrowd[s:e],
            difficult=self.difficult[s:e],
            ann_ids=self.ann_ids[s:e],
            areas=self.areas[s:e],
            masks=self.masks[s:e] if self.masks is not None else None,
        )

    @property
    def has_masks(self) -> bool:
        """Whether the set carries instance masks (some rows may still have none)."""
        return self.masks is not None

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    # ------------------------------------------------------------------ editing
    def select_images(self, indices: np.ndarray | list[int]) -> AnnotationSet:
        """A new set holding the given images (in that order) and their annotations."""
        idx = np.asarray(indices, dtype=np.int64)
        counts = np.diff(self.offsets)[idx]
        rows = (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx])
            if len(idx)
            else np.zeros(0, dtype=np.int64)
        ).astype(np.int64)
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        old_to_new = {int(r): k for k, r in enumerate(rows)}
        return AnnotationSet(
            root=self.root,
            files=[self.files[i] for i in idx],
            image_ids=self.image_ids[idx].copy(),
            widths=self.widths[idx].copy(),
            heights=self.heights[idx].copy(),
            offsets=offsets,
            boxes=self.boxes[rows].copy(),
            labels=self.labels[rows].copy(),
            iscrowd=self.iscrowd[rows].copy(),
            difficult=self.difficult[rows].copy(),
            ann_ids=self.ann_ids[rows].copy(),
            areas=self.areas[rows].copy(),
            class_names=list(self.class_names),
            class_ids=list(self.class_ids),
            source=self.source,
            raw_names={old_to_new[r]: n for r, n in self.raw_names.items() if r in old_to_new},
            problems=list(self.problems),
            splits=_remap_splits(self.splits, idx, len(self)),
            ann_files=[self.ann_files[i] for i in idx] if self.ann_files else [],
            masks=[self.masks[int(r)] for r in rows] if self.masks is not None else None,
        )

    def select_annotations(self, keep: np.ndarray) -> AnnotationSet:
        """A new set keeping only annotation rows where boolean mask ``keep`` is True.

        Every image is kept, even one left without boxes (it becomes a valid negative).
        """
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.num_annotations,):
            raise ValueError(f"mask must have shape ({self.num_annotations},), got {keep.shape}")
        img = self.image_index()
        counts = np.bincount(img[keep], minlength=len(self)).astype(np.int64)
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        new_index = np.cumsum(keep) - 1
        return AnnotationSet(
            root=self.root,
            files=list(self.files),
            image_ids=self.image_ids.copy(),
            widths=self.widths.copy(),
            heights=self.heights.copy(),
            offsets=offsets,
            boxes=self.boxes[keep].copy(),
            labels=self.labels[keep].copy(),
            iscrowd=self.iscrowd[keep].copy(),
            difficult=self.difficult[keep].copy(),
            ann_ids=self.ann_ids[keep].copy(),
            areas=self.areas[keep].copy(),
            class_names=list(self.class_names),
            class_ids=list(self.class_ids),
            source=self.source,
            raw_names={int(new_index[r]): n for r, n in self.raw_names.items() if keep[r]},
            problems=list(self.problems),
            splits={k: v.copy() for k, v in self.splits.items()},
            ann_files=list(self.ann_files),
            masks=[m for m, k in zip(self.masks, keep) if k] if self.masks is not None else None,
        )

    def targets(self, i: int) -> dict[str, np.ndarray]:
        """Training/eval target dict of image ``i``: boxes, labels, iscrowd, difficult (and ``masks``,
        the polygons / RLEs, when the set has masks)."""
        r = self[i]
        out = {"boxes": r.boxes, "labels": r.labels, "iscrowd": r.iscrowd, "difficult": r.difficult}
        if r.masks is not None:
            out["masks"] = r.masks
        return out

    def summary(self) -> str:
        return (
            f"{len(self)} images, {self.num_annotations} boxes, {self.num_classes} classes "
            f"({', '.join(self.class_names)})"
        )
