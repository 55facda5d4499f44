"""Helpers shared by the format readers and writers."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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


def placed_images(aset: AnnotationSet, img_dir: Path, names: list[str] | None, copy_images: bool,
                  problems: list[Problem], desc: str = "writing annotations") -> Iterator[tuple[int, str]]:
    """The writers' loop over images: for image ``i`` of ``aset``, place the file at ``img_dir/name``
    (copied, or symlinked when ``copy_images`` is False; ``names`` default to :func:`output_names`),
    add a missing source to ``problems``, and yield ``(i, name)`` for its annotation to be written."""
    names = names or output_names(aset)
    for i in progress(range(len(aset)), len(aset), desc):
        p = place_image(aset.path(i), img_dir / names[i], copy_images)
        if p:
            problems.append(p)
        yield i, names[i]


def box_label(aset: AnnotationSet, row: int) -> str:
    """Class name of annotation row ``row`` (the raw name when its class is unknown)."""
    lab = int(aset.labels[row])
    return aset.class_names[lab] if lab >= 0 else aset.raw_names.get(row, "")


def flags_dropped(aset: AnnotationSet, where: str | Path, layout: str, field_word: str = "flag",
                  flags: tuple[str, ...] = ("difficult", "iscrowd")) -> list[Problem]:
    """Warnings for the ``flags`` set in ``aset`` that ``layout`` cannot store (written as ordinary boxes)."""
    out = []
    for what in flags:
        flag = getattr(aset, what)
        if flag.any():
            out.append(Problem(f"{what}_dropped", str(where), f"{layout} has no {what} {field_word}: "
                               f"{int(flag.sum())} {what} boxes written as ordinary boxes", severity="warning"))
    return out


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


# ---------------------------------------------------------------- per-image readers
@dataclass
class Entry:
    """One image as a per-image reader finds it.

    ``file``: image path (absolute, or relative to the set's root); ``width``/``height``: pixels
    (0 = unknown); ``objects``: ``(class name, [x1, y1, x2, y2] pixels, difficult, annotation
    ref)`` with continuous coordinates; ``split``: split name or ``None``; ``ann_file``: the file
    holding the annotations (named in problems); ``masks``: None, or one mask (polygons / RLE, see
    :mod:`odkit.data.masks`) or None per object.
    """

    file: str
    width: int = 0
    height: int = 0
    objects: list[tuple[str, list[float], bool, int]] = field(default_factory=list)
    split: str | None = None
    ann_file: str = ""
    masks: list[Any] | None = None


def build_set(
    root: Path,
    entries: list[Entry],
    source: str,
    problems: list[Problem],
    names: list[str] | None = None,
) -> AnnotationSet:
    """An :class:`AnnotationSet` (with ``splits`` and ``ann_files``) from per-image entries.

    Without ``names`` the classes are the sorted names found in every entry (so all splits of one
    source share a class list). Objects of other classes get label -1 and an ``unknown_class``
    problem naming their annotation file. ``ann_ids`` are the entries' annotation refs when they
    are unique over the set (CSV line numbers), else a running index.
    """
    if names is None:
        names = sorted({o[0] for e in entries for o in e.objects if o[0]})
    names = [str(n) for n in names]
    index = {n: i for i, n in enumerate(names)}
    counts = np.array([len(e.objects) for e in entries], dtype=np.int64)
    offsets = np.zeros(len(entries) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    objs = [o for e in entries for o in e.objects]
    a = len(objs)
    labels = np.array([index.get(o[0], -1) for o in objs], dtype=np.int64)
    refs = np.array([o[3] for o in objs], dtype=np.int64)
    raw_names: dict[int, str] = {}
    img_of = np.repeat(np.arange(len(entries)), counts)
    for r in np.flatnonzero(labels < 0):
        raw_names[int(r)] = objs[r][0]
        e = entries[int(img_of[r])]
        problems.append(
            Problem(
                "unknown_class",
                e.ann_file or e.file,
                f"object {objs[r][3]}: class {objs[r][0]!r} is not in {names}",
                annotation=objs[r][3],
            )
        )
    splits: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        if e.split is not None:
            splits.setdefault(e.split, []).append(i)
    return AnnotationSet(
        root=root,
        files=[e.file for e in entries],
        image_ids=np.arange(len(entries), dtype=np.int64),
        widths=np.array([e.width for e in entries], dtype=np.int64),
        heights=np.array([e.height for e in entries], dtype=np.int64),
        offsets=offsets,
        boxes=np.array([o[1] for o in objs], dtype=np.float32).reshape(a, 4),
        labels=labels,
        iscrowd=np.zeros(a, dtype=bool),
        difficult=np.array([o[2] for o in objs], dtype=bool),
        ann_ids=refs if len(np.unique(refs)) == a else np.arange(a, dtype=np.int64),
        areas=np.full(a, np.nan, dtype=np.float32),
        class_names=names,
        class_ids=list(range(len(names))),
        source=source,
        raw_names=raw_names,
        problems=problems,
        splits={k: np.asarray(v, dtype=np.int64) for k, v in splits.items()},
        ann_files=[e.ann_file for e in entries],
        masks=entry_masks(entries),
    )


def entry_masks(entries: list[Entry]) -> list[Any] | None:
    """The masks of all objects of ``entries`` in order (None for objects without); None when no
    object has one."""
    if not any(e.masks is not None and any(m is not None for m in e.masks) for e in entries):
        return None
    return [m for e in entries for m in (e.masks if e.masks is not None else [None] * len(e.objects))]


def not_annotated(images: list[Path], what: str, annotated: int) -> list[Problem]:
    """Warnings for images that have no annotation file in a layout where a negative is an
    annotation without objects: they are left out, not loaded as negatives. ``what``: the expected
    annotation (``"xml"``, ``"LabelMe json"``); ``annotated``: how many images have one."""
    out = [
        Problem(
            "image_without_annotation",
            str(img),
            f"no {what} for this image: left out (not a negative: a negative is an annotation without "
            f"objects); {len(images)} of {len(images) + annotated} images have none",
            severity="warning",
        )
        for img in images
    ]
    if images:
        log.debug("%d of %d images have no %s and are left out (e.g. %s)", len(images),
                    len(images) + annotated, what, images[0])
    return out


def rel(p: Path, root: Path) -> str:
    """``p`` relative to ``root`` (posix) when inside it, else absolute."""
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p.absolute())


def find_image(folder: Path, stem: str, name: str | None = None) -> Path | None:
    """The image of ``stem`` in ``folder`` (``name`` first, then ``stem`` + any image extension)."""
    from odkit.data.probe import IMAGE_EXTS

    if name:
        p = folder / name
        if p.is_file():
            return p
    for ext in IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS):
        p = folder / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def label_names(aset: AnnotationSet) -> list[str]:
    """Class name of every annotation row (the raw name for unknown classes)."""
    return [
        aset.class_names[int(lab)] if lab >= 0 else aset.raw_names.get(r, "")
        for r, lab in enumerate(aset.labels.tolist())
    ]


def fill_sizes(aset: AnnotationSet, i: int) -> tuple[int, int]:
    """``(width, height)`` of image ``i``: the annotation's, else the image header's (0, 0 unknown)."""
    w, h = int(aset.widths[i]), int(aset.heights[i])
    if w > 0 and h > 0:
        return w, h
    from odkit.data.probe import probe_image

    info = probe_image(aset.path(i))
    return info.display_size if info.width > 0 else (0, 0)


def probe_sizes(entries: list[Entry], root: Path, what: str) -> list[Problem]:
    """Fill the unknown sizes (0x0) of ``entries`` from their image headers (thread pool, EXIF
    orientation applied); returns one ``sizes_from_images`` info note for them all (none when
    every size was known). ``what``: the layout, named in the note."""
    from concurrent.futures import ThreadPoolExecutor

    from odkit.data.probe import probe_image

    todo = [e for e in entries if not (e.width > 0 and e.height > 0)]
    if not todo:
        return []
    paths = [Path(e.file) if Path(e.file).is_absolute() else root / e.file for e in todo]
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as ex:
        infos = list(progress(ex.map(probe_image, paths), len(paths), "reading image sizes"))
    read = 0
    for e, info in zip(todo, infos):
        if info.width > 0 and info.height > 0:
            e.width, e.height = info.display_size
            read += 1
    return [
        Problem(
            "sizes_from_images",
            str(root),
            f"{what} gives no image sizes: {read} of {len(todo)} sizes read from the image headers",
            severity="info",
        )
    ]
