"""PASCAL VOC 1.x text annotations (VOC2005, PennFudan): one ``.txt`` per image.

A file looks like::

    # PASCAL Annotation Version 1.00
    Image filename : "PennFudanPed/PNGImages/FudanPed00001.png"
    Image size (X x Y x C) : 559 x 536 x 3
    Objects with ground truth : 2 { "PASpersonWalking" "PASpersonWalking" }
    Original label for object 1 "PASpersonWalking" : "PennFudanPed"
    Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (160, 182) - (302, 431)

The class of an object is its quoted label (``PASpersonWalking``); box values are taken as
written (continuous pixels, no shift), as for VOC xml, so conversions round-trip exactly. Layout:
a folder holding the text files at any depth (``Annotation/``, ``Annotations/<set>/``) and the
images; the image of a file is its ``Image filename`` resolved against the file's folder and its
parents (the names start with the data set's own folder), else the image of the same name, else
of the same stem, anywhere under the data set folder. Split folders (``train/``, ``test/``, up to
two levels down) make splits. Images in the folders of annotated images that have no text file
are left out and reported (a file without objects is what makes a negative).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from odkit.data.formats._common import (
    Entry,
    build_set,
    not_annotated,
    placed_images,
    progress,
    rel,
)
from odkit.data.formats.voc import image_objects
from odkit.data.formats.walk import walk_files
from odkit.data.probe import IMAGE_EXTS
from odkit.data.splits import split_of_path
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import DataError

log = logging.getLogger(__name__)

_NUM = r"(-?\d+(?:\.\d*)?)"
_FILENAME = re.compile(r'^\s*Image filename\s*:\s*"([^"]*)"')
_SIZE = re.compile(r"^\s*Image size\s*\(X x Y x C\)\s*:\s*(\d+)\s*x\s*(\d+)")
_COUNT = re.compile(r"^\s*Objects with ground truth\s*:\s*(\d+)")
_BOX = re.compile(
    r'^\s*Bounding box for object\s+(\d+)\s+"([^"]*)"\s*\(Xmin, Ymin\)\s*-\s*\(Xmax, Ymax\)\s*:\s*'
    rf"\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*-\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*$"
)


def is_pascal_text(head: str) -> bool:
    """Whether the start of a text file is a PASCAL 1.x annotation."""
    return "PASCAL Annotation" in head or bool(re.search(r"^\s*(Image filename|Bounding box for object)", head, re.M))


def sniff_pascal(path: Path) -> bool:
    """Whether ``path`` is a PASCAL 1.x text annotation (from its first 2 KB)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return is_pascal_text(f.read(2048))
    except OSError:
        return False


def parse_pascal(path: Path, problems: list[Problem]) -> tuple[str | None, int, int, list[tuple]]:
    """``(image filename, width, height, objects)`` of one PASCAL 1.x file; objects are
    ``(label, [x1, y1, x2, y2], False, object number)``. A line about a bounding box that does not
    parse, or a count of objects that differs from the boxes read, is added to ``problems``."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    filename, w, h, declared = None, 0, 0, None
    objects: list[tuple] = []
    box_lines = 0
    for ln, line in enumerate(text.splitlines(), 1):
        if m := _FILENAME.match(line):
            filename = m.group(1)
        elif m := _SIZE.match(line):
            w, h = int(m.group(1)), int(m.group(2))
        elif m := _COUNT.match(line):
            declared = int(m.group(1))
        elif line.lstrip().startswith("Bounding box for object"):
            box_lines += 1
            m = _BOX.match(line)
            if m is None:
                problems.append(Problem("malformed_line", str(path), f"line {ln}: {line.strip()!r} is not "
                                        '\'Bounding box for object N "label" (Xmin, Ymin) - (Xmax, Ymax) : '
                                        "(x1, y1) - (x2, y2)'", f"line {ln}"))
                continue
            box = [float(m.group(k)) for k in (3, 4, 5, 6)]
            objects.append((m.group(2), box, False, int(m.group(1))))
    if declared is not None and declared != box_lines:
        problems.append(Problem("object_count_mismatch", str(path),
                                f"'Objects with ground truth' says {declared} but {box_lines} bounding boxes are given"))
    if not (w > 0 and h > 0):
        w = h = 0
    return filename, w, h, objects


class _Images:
    """Images under a folder, found by relative path, by name or by stem."""

    def __init__(self, root: Path):
        self.root = root
        files = walk_files(root, IMAGE_EXTS)
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        for f in files:
            self.by_name.setdefault(f.name.lower(), f)
            self.by_stem.setdefault(f.stem.lower(), f)
        self.files = files

    def find(self, txt: Path, filename: str | None) -> Path | None:
        if filename:
            rel_name = Path(filename.replace("\\", "/"))
            for base in [txt.parent, *txt.parents]:
                cand = base / rel_name
                if cand.is_file():
                    return cand
                if base == self.root.parent:
                    break
            hit = self.by_name.get(rel_name.name.lower())
            if hit is not None:
                return hit
        return self.by_stem.get(txt.stem.lower())


def pascal_files(root: Path) -> list[Path]:
    """The PASCAL 1.x text files under ``root`` (any depth, linked folders followed)."""
    return [p for p in walk_files(root, (".txt",)) if sniff_pascal(p)]


def read_pascal_txt(root: str | Path, names: list[str] | None = None) -> AnnotationSet:
    """Read every PASCAL 1.x text file under ``root`` with its image (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    txts = pascal_files(root)
    if not txts:
        raise DataError(f"{root}: no PASCAL 1.x text annotations (lines 'Bounding box for object ...') here or below")
    images = _Images(root)
    problems: list[Problem] = []
    entries: list[Entry] = []
    used: set[Path] = set()
    for txt in progress(txts, len(txts), "reading PASCAL text"):
        filename, w, h, objects = parse_pascal(txt, problems)
        img = images.find(txt, filename)
        if img is None:
            problems.append(Problem("missing_image", str(txt), f"image {filename or txt.stem!r} not found under {root}"))
            img = txt.parent / Path(filename or f"{txt.stem}.png").name
        used.add(img.resolve())
        entries.append(Entry(rel(img, root), w, h, objects, split_of_path(txt, root), str(txt)))
    folders = {Path(e.file).parent if Path(e.file).is_absolute() else (root / e.file).parent for e in entries}
    left = [f for f in images.files if f.parent in folders and f.resolve() not in used]
    problems += not_annotated(left, "PASCAL text file", len(entries))
    aset = build_set(root, entries, "pascal-txt", problems, names=names)
    log.debug("read PASCAL 1.x text %s: %s", root, aset.summary())
    return aset


def _fmt(v: float) -> str:
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def pascal_text(filename: str, width: int, height: int, objects: list[tuple]) -> str:
    """One PASCAL 1.x annotation; ``objects``: ``(label, [x1, y1, x2, y2], difficult)``."""
    labels = " ".join(f'"{o[0]}"' for o in objects)
    lines = [
        "# PASCAL Annotation Version 1.00",
        "",
        f'Image filename : "{filename}"',
        f"Image size (X x Y x C) : {width} x {height} x 3",
        'Database : "odkit"',
        f"Objects with ground truth : {len(objects)} {{ {labels} }}",
        "",
    ]
    for k, (label, box, _difficult) in enumerate(objects, 1):
        x1, y1, x2, y2 = (_fmt(float(v)) for v in box)
        lines += [
            f'# Details for object {k} ("{label}")',
            f'Original label for object {k} "{label}" : "{label}"',
            f'Bounding box for object {k} "{label}" (Xmin, Ymin) - (Xmax, Ymax) : ({x1}, {y1}) - ({x2}, {y2})',
            "",
        ]
    return "\n".join(lines)


def write_pascal_txt(
    aset: AnnotationSet,
    out: str | Path,
    copy_images: bool = True,
    split: str | None = None,
    names: list[str] | None = None,
) -> list[Problem]:
    """Write ``out/Annotation/[<split>/]<stem>.txt`` and ``out/Images/[<split>/]<name>``.

    ``Image filename`` is the image's path relative to ``out``. Difficult flags cannot be stored
    (reported). Images are copied (symlinked when ``copy_images`` is False).
    """
    out = Path(out)
    img_dir = out / "Images" / split if split else out / "Images"
    ann_dir = out / "Annotation" / split if split else out / "Annotation"
    ann_dir.mkdir(parents=True, exist_ok=True)
    problems: list[Problem] = []
    for i, name in placed_images(aset, img_dir, names, copy_images, problems, "writing PASCAL text"):
        text = pascal_text((img_dir / name).relative_to(out).as_posix(), int(aset.widths[i]),
                           int(aset.heights[i]), image_objects(aset, i))
        (ann_dir / f"{Path(name).stem}.txt").write_text(text)
    if aset.difficult.any():
        problems.append(Problem("difficult_dropped", str(out), f"PASCAL 1.x text has no difficult flag: "
                                f"{int(aset.difficult.sum())} difficult boxes written as ordinary boxes",
                                severity="warning"))
    return problems
