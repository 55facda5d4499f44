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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from odkit.data.formats._common import Entry, build_set, output_names, place_image, progress
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


@dataclass
class VocXml:
    """What one VOC xml file says: ``filename``/``path`` tags, size in pixels (0 = unknown) and
    objects ``(name, [x1, y1, x2, y2], difficult, index)`` with coordinates as written."""

    filename: str | None
    path: str | None
    width: int
    height: int
    objects: list[tuple[str, list[float], bool, int]]


def parse_voc_xml(xml_path: Path, problems: list[Problem]) -> VocXml:
    """Parse one VOC xml; non-finite coordinates and an unknown size are added to ``problems``."""
    r = _parse(xml_path)
    size = r.find("size")
    w, h = _num(_text(size, "width")), _num(_text(size, "height"))
    if not (w > 0 and h > 0):
        problems.append(
            Problem(
                "size_unknown",
                str(xml_path),
                f"<size> is {_text(size, 'width')}x{_text(size, 'height')}: image size unknown",
                severity="warning",
            )
        )
        w = h = 0
    objects = []
    for k, obj in enumerate(r.iter("object")):
        name = _text(obj, "name") or ""
        diff = _text(obj, "difficult")
        bb = obj.find("bndbox")
        vals = [_num(_text(bb, c)) for c in _COORDS]
        bad = [c for c, v in zip(_COORDS, vals) if not math.isfinite(v)]
        if bad:
            problems.append(
                Problem(
                    "non_finite_box",
                    str(xml_path),
                    f"object {k} ({name}): {', '.join(bad)} missing or not a finite number",
                    annotation=k,
                )
            )
        objects.append((name, vals, diff not in (None, "", "0"), k))
    return VocXml(_text(r, "filename"), _text(r, "path"), int(w), int(h), objects)


def is_voc_xml(path: Path) -> bool:
    """Whether ``path`` looks like a VOC annotation (root element ``<annotation>``), from its head."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return b"<annotation" in head and b"<annotations" not in head


def splits_of(root: Path) -> list[str]:
    """Split names of a VOC root: the ``ImageSets/Main/*.txt`` stems, without per-class lists
    (``<class>_<split>.txt``)."""
    stems = sorted(p.stem for p in (Path(root) / "ImageSets" / "Main").glob("*.txt"))
    return [s for s in stems if not any(s.endswith(f"_{t}") for t in stems if t != s)]


def read_voc(root: str | Path, split: str | None = None, names: list[str] | None = None) -> AnnotationSet:
    """Read a VOC tree (all xml files, or the ids of ``split``) into an :class:`AnnotationSet`.

    Without ``split`` every xml is read and ``splits`` holds the ImageSets/Main lists.
    """
    root = Path(root)
    ann_dir = root / "Annotations"
    if not ann_dir.is_dir():
        raise DataError(f"{root}: not a VOC root (no Annotations/ folder)")
    if split is not None:
        ids = split_ids(root, split)
    else:
        ids = sorted(p.stem for p in ann_dir.glob("*.xml"))
    problems: list[Problem] = []
    entries: list[Entry] = []
    for stem in progress(ids, len(ids), "reading VOC xml"):
        xml = ann_dir / f"{stem}.xml"
        if not xml.exists():
            problems.append(
                Problem("missing_annotation", str(xml), f"{split}.txt lists {stem!r} but its xml is missing")
            )
            entries.append(Entry(_find_image(root, stem, None, None), ann_file=str(xml)))
            continue
        v = parse_voc_xml(xml, problems)
        img = _find_image(root, stem, v.filename, v.path)
        entries.append(Entry(img, v.width, v.height, v.objects, ann_file=str(xml)))
    if names is None:
        found = {o[0] for e in entries for o in e.objects if o[0]}
        if split is not None:
            found |= _all_names(root, set(ids))
        names = sorted(found)
    aset = build_set(root, entries, "voc", problems, names=names)
    if split is None:
        pos = {s: i for i, s in enumerate(ids)}
        for s in splits_of(root):
            members = [pos[i] for i in split_ids(root, s) if i in pos]
            aset.splits[s] = np.unique(np.asarray(members, dtype=np.int64))
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


def voc_element(filename: str, folder: str, width: int, height: int, objects: list[tuple]) -> ET.Element:
    """A VOC ``<annotation>`` element; ``objects``: ``(name, [x1, y1, x2, y2], difficult)``."""
    r = ET.Element("annotation")
    ET.SubElement(r, "folder").text = folder
    ET.SubElement(r, "filename").text = filename
    size = ET.SubElement(r, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(r, "segmented").text = "0"
    for name, box, difficult in objects:
        o = ET.SubElement(r, "object")
        ET.SubElement(o, "name").text = name
        ET.SubElement(o, "pose").text = "Unspecified"
        ET.SubElement(o, "truncated").text = "0"
        ET.SubElement(o, "difficult").text = "1" if difficult else "0"
        bb = ET.SubElement(o, "bndbox")
        for c, v in zip(_COORDS, box):
            ET.SubElement(bb, c).text = _fmt(float(v))
    _indent(r)
    return r


def image_objects(aset: AnnotationSet, i: int) -> list[tuple[str, list[float], bool]]:
    """``(name, box, difficult)`` of every annotation of image ``i`` (raw name for unknown classes)."""
    s, e = int(aset.offsets[i]), int(aset.offsets[i + 1])
    out = []
    for r in range(s, e):
        lab = int(aset.labels[r])
        name = aset.class_names[lab] if lab >= 0 else aset.raw_names.get(r, "")
        out.append((name, aset.boxes[r].tolist(), bool(aset.difficult[r])))
    return out


def write_voc_xml(path: Path, filename: str, folder: str, width: int, height: int, objects: list[tuple]) -> None:
    """Write one VOC xml file (see :func:`voc_element`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(voc_element(filename, folder, width, height, objects)).write(path, encoding="unicode")


def write_voc(
    aset: AnnotationSet,
    out: str | Path,
    copy_images: bool = True,
    split: str | None = None,
    names: list[str] | None = None,
) -> list[Problem]:
    """Write ``aset`` as a VOC tree under ``out``; returns the problems met.

    Writes ``Annotations/<stem>.xml``, ``JPEGImages/<name>`` (copies, or symlinks when
    ``copy_images`` is False) and ``ImageSets/Main/<split or 'all'>.txt``. Other splits already in
    ``out`` are left alone, so several splits can be written into one tree. Unknown-class
    annotations are written with their original name. ``names``: output file name per image
    (default :func:`output_names`).
    """
    out = Path(out)
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    (out / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    problems: list[Problem] = []
    names = names or output_names(aset)
    for i in progress(range(len(aset)), len(aset), "writing VOC"):
        rec = aset[i]
        p = place_image(rec.path, out / "JPEGImages" / names[i], copy_images)
        if p:
            problems.append(p)
        write_voc_xml(
            out / "Annotations" / f"{Path(names[i]).stem}.xml",
            names[i],
            "JPEGImages",
            rec.width,
            rec.height,
            image_objects(aset, i),
        )
    lst = out / "ImageSets" / "Main" / f"{split or 'all'}.txt"
    lst.write_text("".join(f"{Path(n).stem}\n" for n in names))
    log.debug("wrote VOC %s (%d images, split file %s)", out, len(aset), lst.name)
    return problems
