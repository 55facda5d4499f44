"""Helpers shared by the format readers and writers."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from odkit.data.structures import AnnotationSet, Problem

log = logging.getLogger(__name__)
T = TypeVar("T")

TQDM_MIN = 2000  # show progress bars for loops over at least this many files


def progress(it: Iterable[T], total: int, desc: str) -> Iterator[T]:
    """Wrap ``it`` in tqdm when the loop is long."""
    if total < TQDM_MIN:
        yield from it
        return
    from tqdm import tqdm

    yield from tqdm(it, total=total, desc=desc, unit="file", leave=False)


def output_names(aset: AnnotationSet) -> list[str]:
    """A flat, unique file name per image (for writers that put all images in one folder).

    Keeps the base name when it is unique; otherwise prefixes the parent folders (``a/b.jpg`` ->
    ``a_b.jpg``) and, if still clashing, a running number. Stems are unique too, so label files
    (``<stem>.txt``/``<stem>.xml``) never collide.
    """
    out: list[str] = []
    seen: set[str] = set()
    stems = [Path(f).stem.lower() for f in aset.files]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    for f, s in zip(aset.files, stems):
        p = Path(f)
        name = p.name if counts[s] == 1 else "_".join(p.parts[-3:]).replace(os.sep, "_")
        base, ext = os.path.splitext(name)
        cand, k = name, 1
        while Path(cand).stem.lower() in seen:
            cand = f"{base}_{k}{ext}"
            k += 1
        seen.add(Path(cand).stem.lower())
        out.append(cand)
    return out


def place_image(src: Path, dst: Path, copy_images: bool) -> Problem | None:
    """Copy (or symlink when ``copy_images`` is False) ``src`` to ``dst``; report a missing source."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        if dst.resolve() == src.resolve():
            return None
        dst.unlink()
    if not src.exists():
        return Problem(
            "missing_image",
            str(src),
            f"image not found, not written to {dst}",
            severity="error",
        )
    if copy_images:
        shutil.copyfile(src, dst)
    else:
        os.symlink(src.resolve(), dst)
    return None


def apply_names(aset: AnnotationSet, names: list[str]) -> AnnotationSet:
    """Re-index labels onto the class list ``names`` (by name); unknown names become label -1.

    ``class_ids`` become ``0..len(names)-1``. Rows whose class is not in ``names`` keep their
    name in ``raw_names`` and are reported as ``unknown_class`` problems.
    """
    names = [str(n) for n in names]
    if list(aset.class_names) == names:
        return aset
    index = {n: i for i, n in enumerate(names)}
    lut = np.array([index.get(n, -1) for n in aset.class_names] + [-1], dtype=np.int64)
    old = aset.labels
    new = lut[np.where(old >= 0, old, len(aset.class_names))]
    raw = dict(aset.raw_names)
    img = aset.image_index()
    for r in np.flatnonzero((new < 0) & (old >= 0)):
        name = aset.class_names[int(old[r])]
        raw[int(r)] = name
        i = int(img[r])
        aset.problems.append(
            Problem(
                "unknown_class",
                str(aset.path(i)),
                f"class {name!r} is not in the class list {names}",
                annotation=int(aset.ann_ids[r]),
            )
        )
    aset.labels = new
    aset.raw_names = raw
    aset.class_names = names
    aset.class_ids = list(range(len(names)))
    return aset
