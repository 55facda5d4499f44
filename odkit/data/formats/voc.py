"""Pascal VOC reader and writer (``Annotations/*.xml``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``).

Box values are taken as continuous pixel coordinates exactly as written (no +1/-1 shift):
``<xmin>10</xmin><xmax>20</xmax>`` is a box 10 pixels wide. The ``difficult`` flag is kept.
Without an explicit class list, classes are the sorted set of object names found in *all*
xml files of the root (so every split of one root gets the same labels); for the 20 VOC classes
this is the official VOC order. ``class_ids`` are the positions ``0..C-1``.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from odkit.data.formats._common import output_names, place_image, progress
from odkit.data.probe import IMAGE_EXTS
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import DataError

log = logging.getLogger(__name__)

_COORDS = ("xmin", "ymin", "xmax", "ymax")


def _text(el: ET.Element | None, tag: str) -> str | None:
    if el is None:
        return None
    c = el.find(tag)
    return c.text.strip() if c is not None and c.text is not None else None


def _num(s: str | None) -> float:
    try:
        return float(s) if s is not None else math.nan
    except ValueError:
        return math.nan


def _parse(xml_path: Path) -> ET.Element:
    try:
        return ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{xml_path}: invalid xml ({e})") from None
    except OSError as e:
        raise DataError(f"{xml_path}: cannot read ({e.strerror or e})") from None


def split_ids(root: Path, split: str) -> list[str]:
    """Image ids listed in ``ImageSets/Main/<split>.txt`` (or in ``split`` when it is a txt path)."""
    f = Path(split)
    if not (f.suffix == ".txt" and f.is_file()):
        f = root / "ImageSets" / "Main" / f"{split}.txt"
    if not f.is_file():
        avail = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt"))
        raise DataError(f"{f}: VOC split file not found (available splits: {avail or 'none'})")
    ids = []
    for line in f.read_text().splitlines():
        tok = line.split()
        if tok:
            ids.append(tok[0])
    return ids


def _find_image(root: Path, stem: str, filename: str | None, path_tag: str | None) -> str:
    img_dir = root / "JPEGImages"
    if filename and (img_dir / filename).exists():
        return f"JPEGImages/{filename}"
    for ext in IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS):
        if (img_dir / f"{stem}{ext}").exists():
            return f"JPEGImages/{stem}{ext}"
    if path_tag and Path(path_tag).is_absolute() and Path(path_tag).exists():
        return path_tag
    return f"JPEGImages/{filename or stem + '.jpg'}"


def _all_names(root: Path, skip: set[str]) -> set[str]:
    names: set[str] = set()
    xmls = sorted((root / "Annotations").glob("*.xml"))
    for x in progress(xmls, len(xmls), "VOC class names"):
        if x.stem in skip:
            continue
        for obj in _parse(x).iter("object"):
            n = _text(obj, "name")
            if n:
                names.add(n)
    return names


def read_voc(root: str | Path, split: str | None = None, names: list[str] | None = None) -> AnnotationSet:
    """Read a VOC tree (all xml files, or the ids of ``split``) into an :class:`AnnotationSet`."""
    root = Path(root)
    ann_dir = root / "Annotations"
    if not ann_dir.is_dir():
        raise DataError(f"{root}: not a VOC root (no Annotations/ folder)")
    if split is not None:
        ids = split_ids(root, split)
    else:
        ids = sorted(p.stem for p in ann_dir.glob("*.xml"))
    problems: list[Problem] = []
    files: list[str] = []
    widths: list[int] = []
    heights: list[int] = []
    per_obj: list[tuple[str, bool, float, float, float, float]] = []
    counts: list[int] = []
    for stem in progress(ids, len(ids), "reading VOC xml"):
        xml = ann_dir / f"{stem}.xml"
        if not xml.exists():
            img = _find_image(root, stem, None, None)
            problems.append(
                Problem("missing_annotation", str(xml), f"{split}.txt lists {stem!r} but its xml is missing")
            )
            files.append(img)
            widths.append(0)
            heights.append(0)
            counts.append(0)
            continue
        r = _parse(xml)
        size = r.find("size")
        w, h = _num(_text(size, "width")), _num(_text(size, "height"))
        img = _find_image(root, stem, _text(r, "filename"), _text(r, "path"))
        files.append(img)
        if not (w > 0 and h > 0):
            problems.append(
                Problem(
                    "size_unknown",
                    str(xml),
                    f"<size> is {_text(size, 'width')}x{_text(size, 'height')}: image size unknown",
                    severity="warning",
                )
            )
            w = h = 0
        widths.append(int(w))
        heights.append(int(h))
        k = 0
        for k, obj in enumerate(r.iter("object"), 1):
            name = _text(obj, "name") or ""
            diff = _text(obj, "difficult")
            bb = obj.find("bndbox")
            vals = [_num(_text(bb, c)) for c in _COORDS]
            bad = [c for c, v in zip(_COORDS, vals) if not math.isfinite(v)]
            if bad:
                problems.append(
                    Problem(
                        "non_finite_box",
                        str(xml),
                        f"object {k - 1} ({name}): {', '.join(bad)} missing or not a finite number",
                        annotation=k - 1,
                    )
                )
            per_obj.append((name, diff not in (None, "", "0"), *vals))
        counts.append(k)

    if names is None:
        found = {o[0] for o in per_obj if o[0]}
        if split is not None:
            found |= _all_names(root, set(ids))
        names = sorted(found)
    names = [str(n) for n in names]
    index = {n: i for i, n in enumerate(names)}
    labels = np.array([index.get(o[0], -1) for o in per_obj], dtype=np.int64)
    raw_names: dict[int, str] = {}
    cnt = np.asarray(counts, dtype=np.int64)
    offsets = np.zeros(len(files) + 1, dtype=np.int64)
    np.cumsum(cnt, out=offsets[1:])
    img_of_row = np.repeat(np.arange(len(files)), cnt)
    for r_ in np.flatnonzero(labels < 0):
        raw_names[int(r_)] = per_obj[r_][0]
        i = int(img_of_row[r_])
        problems.append(
            Problem(
                "unknown_class",
                str(ann_dir / f"{ids[i]}.xml"),
                f"object {int(r_ - offsets[i])}: class {per_obj[r_][0]!r} is not in {names}",
                annotation=int(r_ - offsets[i]),
            )
        )
    a = len(per_obj)
    boxes = np.array([o[2:] for o in per_obj], dtype=np.float32).reshape(a, 4)
    aset = AnnotationSet(
        root=root,
        files=files,
        image_ids=np.arange(len(files), dtype=np.int64),
        widths=np.asarray(widths, dtype=np.int64),
        heights=np.asarray(heights, dtype=np.int64),
        offsets=offsets,
        boxes=boxes,
        labels=labels,
        iscrowd=np.zeros(a, dtype=bool),
        difficult=np.array([o[1] for o in per_obj], dtype=bool),
        ann_ids=np.arange(a, dtype=np.int64),
        areas=np.full(a, np.nan, dtype=np.float32),
        class_names=names,
        class_ids=list(range(len(names))),
        source="voc",
        raw_names=raw_names,
        problems=problems,
    )
    log.debug("read VOC %s split=%s: %s", root, split, aset.summary())
    return aset


def _fmt(v: float) -> str:
    """A coordinate as written in xml: integers without decimals, others with up to 4."""
    if not math.isfinite(v):
        return str(v)
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def _indent(el: ET.Element, level: int = 0) -> None:
    pad = "\n" + "\t" * level
    if len(el):
        el.text = pad + "\t"
        for c in el:
            _indent(c, level + 1)
        c.tail = pad
    if level and not el.tail:
        el.tail = pad


def write_voc(
    aset: AnnotationSet, out: str | Path, copy_images: bool = True, split: str | None = None
) -> list[Problem]:
    """Write ``aset`` as a VOC tree under ``out``; returns the problems met.

    Writes ``Annotations/<stem>.xml``, ``JPEGImages/<name>`` (copies, or symlinks when
    ``copy_images`` is False) and ``ImageSets/Main/<split or 'all'>.txt``. Other splits already in
    ``out`` are left alone, so several splits can be written into one tree. Unknown-class
    annotations are written with their original name.
    """
    out = Path(out)
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    problems: list[Problem] = []
    names = output_names(aset)
    for i in progress(range(len(aset)), len(aset), "writing VOC"):
        rec = aset[i]
        p = place_image(rec.path, out / "JPEGImages" / names[i], copy_images)
        if p:
            problems.append(p)
        r = ET.Element("annotation")
        ET.SubElement(r, "folder").text = "JPEGImages"
        ET.SubElement(r, "filename").text = names[i]
        size = ET.SubElement(r, "size")
        ET.SubElement(size, "width").text = str(rec.width)
        ET.SubElement(size, "height").text = str(rec.height)
        ET.SubElement(size, "depth").text = "3"
        ET.SubElement(r, "segmented").text = "0"
        s = int(aset.offsets[i])
        for k in range(len(rec.boxes)):
            lab = int(rec.labels[k])
            name = aset.class_names[lab] if lab >= 0 else aset.raw_names.get(s + k, "")
            o = ET.SubElement(r, "object")
            ET.SubElement(o, "name").text = name
            ET.SubElement(o, "pose").text = "Unspecified"
            ET.SubElement(o, "truncated").text = "0"
            ET.SubElement(o, "difficult").text = "1" if rec.difficult[k] else "0"
            bb = ET.SubElement(o, "bndbox")
            for c, v in zip(_COORDS, rec.boxes[k].tolist()):
                ET.SubElement(bb, c).text = _fmt(v)
        _indent(r)
        ET.ElementTree(r).write(out / "Annotations" / f"{Path(names[i]).stem}.xml", encoding="unicode")
    lst = out / "ImageSets" / "Main" / f"{split or 'all'}.txt"
    lst.write_text("".join(f"{Path(n).stem}\n" for n in names))
    log.debug("wrote VOC %s (%d images, split file %s)", out, len(aset), lst.name)
    return problems
