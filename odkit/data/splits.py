"""Splits of a data set: names, the union of per-split sets, taking one split, the hold-out split.

A split is a named subset of the images of an :class:`~odkit.data.AnnotationSet`
(``aset.splits[name]`` = sorted image indices). Readers fill ``splits`` from what the source
defines; :func:`holdout_split` makes a deterministic, class-stratified train/val split for a data
set that has none.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import DataError

log = logging.getLogger(__name__)

# Folder / file names read as split names (case-insensitive).
SPLIT_WORDS = ("train", "training", "val", "valid", "validation", "test", "testing", "trainval", "dev",
               "unassigned")
VAL_NAMES = ("val", "valid", "validation", "dev")
UNASSIGNED = "unassigned"


def is_split_name(name: str) -> bool:
    """Whether a folder or file stem names a split (``train``, ``valid``, ``test2017``, ...)."""
    return split_word(name) is not None


def split_word(name: str) -> str | None:
    """The split a name stands for, as written (``"train2017"`` -> ``"train2017"``), or ``None``.

    A name is a split name when, lower-cased and stripped of a trailing year/number, it is one
    of :data:`SPLIT_WORDS`.
    """
    base = re.sub(r"[-_]?\d+$", "", name.lower())
    return name if base in SPLIT_WORDS else None


SPLIT_DEPTH = 2  # split folders are looked for this many folder levels below a data set root


def split_of_path(path: Path, root: Path) -> str | None:
    """The split of a file under ``root``: the first of its top :data:`SPLIT_DEPTH` folders whose
    name is a split name (``train/a.jpg``, ``train_zip/train/a.jpg`` -> ``train``), else ``None``."""
    try:
        parts = path.relative_to(root).parts[:-1]
    except ValueError:
        return None
    for d in parts[:SPLIT_DEPTH]:
        if is_split_name(d):
            return d
    return None


def split_folders(root: Path) -> list[Path]:
    """Folders with a split name up to :data:`SPLIT_DEPTH` levels below ``root`` (``train/``,
    ``train_zip/train/``; linked folders included), sorted."""
    out: list[Path] = []
    level = [root]
    for _ in range(SPLIT_DEPTH):
        nxt = []
        for d in level:
            try:
                subs = sorted(q for q in d.iterdir() if q.is_dir() and not q.name.startswith("."))
            except OSError:
                continue
            for q in subs:
                (out if is_split_name(q.name) else nxt).append(q)
        level = nxt
    return out


def split_from_file(stem: str) -> str | None:
    """Split named by a file stem: ``train_labels`` / ``labels_train`` / ``train`` -> ``train``."""
    for tok in re.split(r"[-_.\s]+", stem):
        if split_word(tok):
            return tok
    return None


def take_split(aset: AnnotationSet, split: str) -> AnnotationSet:
    """The images of split ``split`` (their ``splits`` entry reset: the result *is* that split)."""
    if split not in aset.splits:
        avail = sorted(aset.splits)
        raise DataError(
            f"{aset.root}: no split {split!r} (available splits: {', '.join(avail) if avail else 'none'})"
        )
    sub = aset.select_images(aset.splits[split])
    sub.splits = {}
    return sub


def merge_splits(parts: list[tuple[str, AnnotationSet]], root: Path | None = None) -> AnnotationSet:
    """One set holding every image of the named parts, with ``splits`` recording membership.

    Images are identified by their resolved path: an image in two parts (``train`` and
    ``trainval``) appears once and belongs to both. When its annotations differ between the
    parts, the first part's are kept and a ``split_conflict`` problem names the file. Class lists
    are unified by name (the first part's order, then new names in order of appearance).
    """
    if not parts:
        raise DataError("no splits to merge")
    names: list[str] = []
    class_ids: list[int] = []
    for _, a in parts:
        for n, c in zip(a.class_names, a.class_ids):
            if n not in names:
                names.append(n)
                class_ids.append(c)
    if len(set(class_ids)) != len(class_ids):
        class_ids = list(range(len(names)))
    base = root if root is not None else parts[0][1].root
    index: dict[str, int] = {}
    keep_parts: list[tuple[AnnotationSet, np.ndarray]] = []
    membership: dict[str, list[int]] = {}
    problems: list[Problem] = []
    total = 0
    for split, a in parts:
        a = _relabel(a, names)
        problems += a.problems
        members = membership.setdefault(split, [])
        new_rows = []
        for i in range(len(a)):
            key = str(a.path(i).resolve())
            if key in index:
                members.append(index[key])
                first = _find(keep_parts, index[key])
                if not _same_annotations(first, a, i):
                    problems.append(
                        Problem(
                            "split_conflict",
                            str(a.path(i)),
                            f"annotated differently in split {split!r} than in an earlier split; "
                            "the first annotation is kept",
                        )
                    )
                continue
            index[key] = total
            members.append(total)
            new_rows.append(i)
            total += 1
        keep_parts.append((a, np.asarray(new_rows, dtype=np.int64)))
    out = _concat([a.select_images(rows) for a, rows in keep_parts], base, names, class_ids)
    out.problems = problems
    out.splits = {k: np.unique(np.asarray(v, dtype=np.int64)) for k, v in membership.items()}
    return out


def _find(parts: list[tuple[AnnotationSet, np.ndarray]], k: int) -> tuple[AnnotationSet, int]:
    for a, rows in parts:
        if k < len(rows):
            return a, int(rows[k])
        k -= len(rows)
    raise IndexError(k)


def _same_annotations(first: tuple[AnnotationSet, int], b: AnnotationSet, j: int) -> bool:
    a, i = first
    ra, rb = a[i], b[j]
    if len(ra.boxes) != len(rb.boxes):
        return False
    la = [a.class_names[x] if x >= 0 else "?" for x in ra.labels]
    lb = [b.class_names[x] if x >= 0 else "?" for x in rb.labels]
    return la == lb and np.allclose(ra.boxes, rb.boxes, equal_nan=True)


def _relabel(a: AnnotationSet, names: list[str]) -> AnnotationSet:
    if list(a.class_names) == names:
        return a
    lut = np.array([names.index(n) for n in a.class_names] + [-1], dtype=np.int64)
    b = a.select_images(np.arange(len(a)))
    b.labels = lut[np.where(a.labels >= 0, a.labels, len(a.class_names))]
    b.class_names = list(names)
    return b


def _concat(sets: list[AnnotationSet], root: Path, names: list[str], class_ids: list[int]) -> AnnotationSet:
    """Concatenate sets sharing one class list; files made relative to ``root`` where possible."""
    files: list[str] = []
    ann_files: list[str] = []
    raw: dict[int, str] = {}
    row0 = 0
    for s in sets:
        for i in range(len(s)):
            p = s.path(i)
            try:
                files.append(p.relative_to(root).as_posix())
            except ValueError:
                files.append(str(p))
        ann_files += s.ann_files if s.ann_files else [""] * len(s)
        raw.update({row0 + r: n for r, n in s.raw_names.items()})
        row0 += s.num_annotations
    counts = np.concatenate([np.diff(s.offsets) for s in sets]) if sets else np.zeros(0, np.int64)
    offsets = np.zeros(len(files) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])

    def cat(attr: str, dtype: object, width: int = 0) -> np.ndarray:
        arrs = [getattr(s, attr) for s in sets]
        if not arrs:
            return np.zeros((0, width) if width else (0,), dtype=dtype)
        return np.concatenate(arrs, axis=0).astype(dtype, copy=False)

    return AnnotationSet(
        root=root,
        files=files,
        image_ids=cat("image_ids", np.int64),
        widths=cat("widths", np.int64),
        heights=cat("heights", np.int64),
        offsets=offsets,
        boxes=cat("boxes", np.float32, 4).reshape(-1, 4),
        labels=cat("labels", np.int64),
        iscrowd=cat("iscrowd", bool),
        difficult=cat("difficult", bool),
        ann_ids=cat("ann_ids", np.int64),
        areas=cat("areas", np.float32),
        class_names=list(names),
        class_ids=list(class_ids),
        source=sets[0].source if sets else "",
        raw_names=raw,
        ann_files=ann_files if any(ann_files) else [],
        masks=_cat_masks(sets),
    )


def _cat_masks(sets: list[AnnotationSet]) -> list | None:
    """The masks of concatenated sets (rows of a set without masks get None); None when none has any."""
    if not any(s.masks is not None for s in sets):
        return None
    return [m for s in sets for m in (s.masks if s.masks is not None else [None] * s.num_annotations)]


def unassigned(aset: AnnotationSet) -> np.ndarray:
    """Indices of images in no split (empty when the set defines no splits)."""
    if not aset.splits:
        return np.zeros(0, dtype=np.int64)
    used = np.zeros(len(aset), dtype=bool)
    for m in aset.splits.values():
        used[m] = True
    return np.flatnonzero(~used)


def find_val_split(names: list[str] | dict) -> str | None:
    """The validation split among ``names`` (``val``, ``valid``, ``validation`` or ``dev``), if any."""
    lower = {n.lower(): n for n in names}
    for v in VAL_NAMES:
        if v in lower:
            return lower[v]
    return None


# ---------------------------------------------------------------- hold-out split
@dataclass
class Holdout:
    """A hold-out split: image indices of ``train`` and ``val`` (sorted) and how it was made."""

    train: np.ndarray
    val: np.ndarray
    fraction: float
    seed: int

    def describe(self, n: int) -> str:
        return (
            f"{len(self.val)} of {n} images held out for validation ({self.fraction:.0%}, stratified "
            f"by the rarest class of each image, seed {self.seed}); {len(self.train)} train"
        )


def holdout_split(aset: AnnotationSet, fraction: float = 0.2, seed: int = 0) -> Holdout:
    """Deterministic, class-stratified train/val split of ``aset``.

    Each image is put in the stratum of its rarest class (by box count over the set; images
    without boxes form their own stratum). Images are ordered by stratum, then by a seeded random
    key, and every ``1 / fraction``-th one goes to val, so each stratum gives about ``fraction`` of
    its images. At least one image goes to each side when the set has two or more. The result
    depends only on the set (its order of files) and ``seed``.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"hold-out fraction must be in (0, 1), got {fraction}")
    n = len(aset)
    if n < 2:
        raise DataError(f"{aset.root}: {n} image(s): too few to hold some out for validation")
    labels = aset.labels
    counts = np.bincount(labels[labels >= 0], minlength=max(aset.num_classes, 1))
    img = aset.image_index()
    stratum = np.full(n, -1, dtype=np.int64)  # -1: no box (or only unknown classes)
    rarity = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    for r in np.flatnonzero(labels >= 0):
        i, c = int(img[r]), int(labels[r])
        if (counts[c], c) < (rarity[i], stratum[i]) or stratum[i] < 0:
            rarity[i], stratum[i] = counts[c], c
    key = np.random.default_rng(seed).random(n)
    order = np.lexsort((key, stratum))
    pos = np.arange(1, n + 1)
    pick = np.floor(pos * fraction) > np.floor((pos - 1) * fraction)
    val_mask = np.zeros(n, dtype=bool)
    val_mask[order[pick]] = True
    if not val_mask.any():
        val_mask[order[0]] = True
    if val_mask.all():
        val_mask[order[-1]] = False
    return Holdout(np.flatnonzero(~val_mask), np.flatnonzero(val_mask), float(fraction), int(seed))
