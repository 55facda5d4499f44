"""CSV of boxes with a header row: one row per box (TensorFlow Object Detection / Roboflow style).

Columns are matched by name, in any order and case: image (``filename``, ``file_name``,
``path``, ``image``, ...), class (``class``, ``label``, ``category``, ...), ``xmin``, ``ymin``,
``xmax``, ``ymax`` (or ``x1``/``y1``/``x2``/``y2``), optional ``width``/``height`` of the image
(without them the sizes are read from the image headers, with one summary note)
and an optional ``split`` (``set``, ``subset``) column. Boxes are continuous pixel coordinates as
written. A row with an image but an empty class and empty coordinates is a negative image.
Several files are splits: ``train_labels.csv`` / ``test_labels.csv`` (the split word in the file
name) or ``train/_annotations.csv`` (the split folder, up to two levels down); a file naming no
split (``raccoon_labels.csv``) gives images in no split, reported. Image paths resolve against
``image_root`` when given, then the CSV's folder, then an ``images/`` folder beside it (or beside
its parent). Annotation refs (``ann_ids``) are the CSV line numbers (the header is line 1).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np

from odkit.data.formats._common import (
    Entry,
    box_label,
    build_set,
    fill_sizes,
    flags_dropped,
    placed_images,
    probe_sizes,
    rel,
)
from odkit.data.splits import split_folders, split_from_file, split_of_path
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import DataError

log = logging.getLogger(__name__)

COLUMNS = {
    "file": ("filename", "file_name", "file", "image", "image_name", "imagename", "image_path", "path",
             "img", "image_file", "imagepath", "image_id"),
    "class": ("class", "label", "class_name", "classname", "category", "category_name", "name", "label_name"),
    "xmin": ("xmin", "x_min", "x1", "left"),
    "ymin": ("ymin", "y_min", "y1", "top"),
    "xmax": ("xmax", "x_max", "x2", "right"),
    "ymax": ("ymax", "y_max", "y2", "bottom"),
    "width": ("width", "image_width", "img_width", "imagewidth"),
    "height": ("height", "image_height", "img_height", "imageheight"),
    "split": ("split", "set", "subset"),
}
REQUIRED = ("file", "class", "xmin", "ymin", "xmax", "ymax")
BOX = ("xmin", "ymin", "xmax", "ymax")


def _key(h: str) -> str:
    return h.strip().lower().replace(" ", "_").replace("-", "_")


def match_columns(header: list[str], where: str) -> dict[str, int]:
    """Column index of each known field in ``header``; DataError naming what is missing."""
    keys = [_key(h) for h in header]
    found: dict[str, int] = {}
    for field, aliases in COLUMNS.items():
        for a in aliases:
            if a in keys:
                found[field] = keys.index(a)
                break
    missing = [f for f in REQUIRED if f not in found]
    if missing:
        raise DataError(
            f"{where}: line 1: header {header} lacks column(s) for {', '.join(missing)} "
            f"(accepted names: {'; '.join(f + ': ' + '/'.join(COLUMNS[f]) for f in missing)})"
        )
    return found


def is_boxes_csv(path: Path) -> bool:
    """Whether ``path`` is a CSV whose header names an image, a class and four box columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
        match_columns(header, str(path))
        return True
    except (OSError, UnicodeDecodeError, DataError, csv.Error):
        return False


def csv_files(path: Path) -> list[Path]:
    """The box CSVs of ``path``: the file itself, or those in the folder and its split folders."""
    if path.is_file():
        return [path]
    found = [p for p in sorted(path.glob("*.csv")) if is_boxes_csv(p)]
    for sub in split_folders(path):
        found += [p for p in sorted(sub.glob("*.csv")) if is_boxes_csv(p)]
    return found


def _split_of(f: Path, root: Path) -> str | None:
    """Split of a CSV file: its split folder (up to two levels below ``root``), else a split word in
    its name (``train_labels.csv``, the TensorFlow Object Detection convention). Never anything
    else: ``raccoon_labels.csv`` names no split."""
    return split_of_path(f, root) or split_from_file(f.stem)


class _Resolver:
    """Finds image files named in a CSV, trying the candidate folders in order (memoised)."""

    def __init__(self, csv_path: Path, image_root: Path | None):
        d = csv_path.parent
        self.dirs = [x for x in (image_root, d, d / "images", d.parent / "images") if x is not None]
        self.best: Path | None = None

    def __call__(self, name: str) -> Path:
        p = Path(name.replace("\\", "/"))
        if p.is_absolute() and p.is_file():
            return p
        order = ([self.best] if self.best is not None else []) + self.dirs
        for d in order:
            for cand in (d / p, d / p.name):
                if cand.is_file():
                    self.best = d
                    return cand
        return p if p.is_absolute() else self.dirs[0] / p


def _cell(row: list[str], col: dict[str, int], field: str) -> str:
    k = col.get(field)
    return row[k].strip() if k is not None and k < len(row) else ""


def _read_one(
    f: Path, split: str | None, image_root: Path | None, problems: list[Problem], order: dict[Path, Entry]
) -> None:
    try:
        fh = open(f, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"{f}: cannot read ({e.strerror or e})") from None
    with fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None:
            raise DataError(f"{f}: empty CSV (no header line)")
        col = match_columns(header, str(f))
        resolve = _Resolver(f, image_root)
        for ln, row in enumerate(rows, 2):
            if not any(c.strip() for c in row):
                continue
            name = _cell(row, col, "file")
            if not name:
                problems.append(Problem("malformed_line", str(f), f"line {ln}: no image name", f"line {ln}"))
                continue
            img = resolve(name)
            sp = _cell(row, col, "split") or split
            e = order.get(img)
            if e is None:
                e = order[img] = Entry(str(img), split=sp, ann_file=str(f))
            try:
                w, h = int(float(_cell(row, col, "width") or 0)), int(float(_cell(row, col, "height") or 0))
            except ValueError:
                w = h = 0
                problems.append(
                    Problem("malformed_line", str(f), f"line {ln}: image size is not numeric", f"line {ln}",
                            severity="warning")
                )
            if w > 0 and h > 0 and not (e.width and e.height):
                e.width, e.height = w, h
            cls = _cell(row, col, "class")
            raw = [_cell(row, col, c) for c in BOX]
            if not cls and not any(raw):
                continue  # a negative image
            try:
                box = [float(v) for v in raw]
            except ValueError:
                problems.append(
                    Problem(
                        "malformed_line",
                        str(f),
                        f"line {ln}: box {raw} of {name} is not four numbers; not loaded",
                        f"line {ln}",
                    )
                )
                continue
            if not all(math.isfinite(v) for v in box):
                problems.append(Problem("non_finite_box", str(f), f"line {ln}: box {raw} of {name}", f"line {ln}"))
            e.objects.append((cls, box, False, ln))


def read_csv_boxes(
    path: str | Path, image_root: str | Path | None = None, names: list[str] | None = None
) -> AnnotationSet:
    """Read one box CSV or every box CSV of a folder (files are splits when there are several)."""
    path = Path(path)
    files = csv_files(path)
    if not files:
        raise DataError(f"{path}: no CSV with image, class and xmin/ymin/xmax/ymax columns")
    root = path.parent if path.is_file() else path
    img_root = Path(image_root) if image_root is not None else None
    problems: list[Problem] = []
    entries: dict[Path, Entry] = {}  # first file naming an image gives its boxes
    membership: list[tuple[str, Path]] = []
    for f in files:
        part: dict[Path, Entry] = {}
        sp = _split_of(f, root)
        if len(files) > 1 and sp is None:
            problems.append(Problem("file_without_split", str(f), "neither the file name nor its folder names a split (train, "
                                    "val, test, ...): its images are read but are in no split", severity="info"))
        _read_one(f, sp, img_root, problems, part)
        for img, e in part.items():
            if e.split is not None:
                membership.append((e.split, img))
            entries.setdefault(img, e)
    problems += probe_sizes(list(entries.values()), root, "the CSV")
    for e in entries.values():
        e.file = rel(Path(e.file), root)
        e.split = None
    aset = build_set(root, list(entries.values()), "csv", problems, names=names)
    pos = {img: i for i, img in enumerate(entries)}
    splits: dict[str, list[int]] = {}
    for sp, img in membership:
        splits.setdefault(sp, []).append(pos[img])
    aset.splits = {k: np.unique(np.asarray(v, dtype=np.int64)) for k, v in splits.items()}
    aset.ann_ids = np.array([o[3] for e in entries.values() for o in e.objects], dtype=np.int64)
    log.debug("read CSV %s: %s", [str(f) for f in files], aset.summary())
    return aset


def write_csv_boxes(
    aset: AnnotationSet,
    out: str | Path,
    copy_images: bool = True,
    split: str | None = None,
    names: list[str] | None = None,
) -> list[Problem]:
    """Write ``out/<split>_labels.csv`` (``out/labels.csv`` without a split) and images in ``out/images/``.

    Columns ``filename,width,height,class,xmin,ymin,xmax,ymax``; a negative image is one row
    with empty class and box cells. Difficult / crowd flags cannot be stored and are reported.
    """
    out = Path(out)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    problems: list[Problem] = []
    path = out / (f"{split}_labels.csv" if split else "labels.csv")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"])
        for i, name in placed_images(aset, img_dir, names, copy_images, problems, "writing CSV"):
            iw, ih = fill_sizes(aset, i)
            s, e = int(aset.offsets[i]), int(aset.offsets[i + 1])
            if s == e:
                w.writerow([name, iw, ih, "", "", "", "", ""])
            for r in range(s, e):
                w.writerow([name, iw, ih, box_label(aset, r), *(_fmt(float(v)) for v in aset.boxes[r])])
    problems += flags_dropped(aset, path, "CSV", "column")
    return problems


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s
