"""CVAT for images XML 1.1: one ``annotations.xml`` for a whole task.

``<annotations><version>1.1</version><meta>... <labels><label><name>cat</name></label>...``
then ``<image id name width height [subset]>`` elements holding ``<box label xtl ytl xbr ybr>``
in pixels (continuous coordinates, as odkit's ``xyxy``). The class list is the ``<labels>`` of
the meta block (in its order) plus any other label found on a box. A ``<polygon points="x,y;...">``
is an instance mask (kept as a polygon; polygons of one label sharing a ``group_id`` are one
instance) with its bounds as box; a ``<mask rle left top width height>`` (row-major runs over its
box, zeros first) an RLE mask. Other shapes (polyline, points, ellipse, cuboid, skeleton) and image
tags are reported as ``unsupported_shape`` (file, image, shape) and not loaded. ``subset`` attributes become
splits. Image names resolve against ``image_root``, the xml's folder, ``images/`` beside it, or
``images/`` beside its parent. Annotation refs are box indices within the image.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from odkit.data.formats._common import (
    Entry,
    box_label,
    build_set,
    fill_sizes,
    flags_dropped,
    placed_images,
    rel,
)
from odkit.data.masks import is_polygons, polygon_box
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import DataError
from odkit.ops import rle as rle_ops

log = logging.getLogger(__name__)

SHAPES = ("polyline", "points", "ellipse", "cuboid", "skeleton", "tag")


def is_cvat_xml(path: Path) -> bool:
    """Whether an xml file looks like CVAT for images (root ``<annotations>`` with ``<image``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return b"<annotations" in head and (b"<image " in head or b"<version>" in head)


def _parse(path: Path) -> ET.Element:
    try:
        r = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{path}: invalid xml ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if r.tag != "annotations":
        raise DataError(f"{path}: not a CVAT for images file (root element <{r.tag}>, expected <annotations>)")
    return r


def _num(v: str | None) -> float:
    try:
        return float(v) if v is not None else math.nan
    except ValueError:
        return math.nan


def read_cvat(
    path: str | Path, image_root: str | Path | None = None, names: list[str] | None = None
) -> AnnotationSet:
    """Read a CVAT for images xml (or the CVAT xml of a folder) into an :class:`AnnotationSet`."""
    path = Path(path)
    if path.is_dir():
        cands = [p for p in sorted(path.glob("*.xml")) + sorted((path / "annotations").glob("*.xml")) if is_cvat_xml(p)]
        if len(cands) != 1:
            raise DataError(f"{path}: expected one CVAT xml here, found {[c.name for c in cands]}")
        path = cands[0]
    r = _parse(path)
    d = path.parent
    dirs = [Path(image_root)] if image_root is not None else []
    dirs += [d, d / "images", d.parent / "images"]
    meta = r.find("meta")
    meta_names = [
        lab.findtext("name", "").strip() for lab in (meta.iter("label") if meta is not None else [])
    ]
    meta_names = [n for n in meta_names if n]
    problems: list[Problem] = []
    entries: list[Entry] = []
    best: Path | None = None
    for im in r.iter("image"):
        name = im.get("name") or ""
        img = None
        for folder in ([best] if best is not None else []) + dirs:
            for cand in (folder / name, folder / Path(name).name):
                if cand.is_file():
                    img, best = cand, folder
                    break
            if img is not None:
                break
        if img is None:
            img = dirs[0] / name
        where = f"image {im.get('id')} ({name})"
        objects: list[tuple] = []
        segs: list[Any] = []
        groups: dict[tuple[str, str], int] = {}
        k = 0
        for child in im:
            label = child.get("label", "")
            if child.tag in ("polygon", "mask"):
                try:
                    seg = _read_shape(child, int(_num(im.get("height")) or 0), int(_num(im.get("width")) or 0))
                except ValueError as e:
                    problems.append(Problem("malformed_mask", str(path), f"{where}: {child.tag} {k} ({label}): {e}; "
                                            "not loaded", annotation=k))
                    k += 1
                    continue
                gid = child.get("group_id")
                if child.tag == "polygon" and gid and gid != "0" and (label, gid) in groups:
                    j = groups[(label, gid)]
                    segs[j] = segs[j] + seg
                    objects[j] = (label, polygon_box(segs[j]), False, objects[j][3])
                    continue
                if child.tag == "polygon" and gid and gid != "0":
                    groups[(label, gid)] = len(objects)
                objects.append((label, polygon_box(seg) if is_polygons(seg) else _rle_box(seg), False, k))
                segs.append(seg)
                k += 1
            elif child.tag == "box":
                box = [_num(child.get(a)) for a in ("xtl", "ytl", "xbr", "ybr")]
                if not all(math.isfinite(v) for v in box):
                    problems.append(
                        Problem("non_finite_box", str(path), f"{where}: box {k} ({label}) has coordinates "
                                f"{[child.get(a) for a in ('xtl', 'ytl', 'xbr', 'ybr')]}", annotation=k)
                    )
                objects.append((label, box, False, k))
                segs.append(None)
                k += 1
            elif child.tag in SHAPES:
                problems.append(
                    Problem(
                        "unsupported_shape",
                        str(path),
                        f"{where}: {child.tag} ({label}) is not a box; not loaded",
                        severity="warning",
                    )
                )
        w, h = int(_num(im.get("width")) or 0), int(_num(im.get("height")) or 0)
        entries.append(Entry(str(img), max(w, 0), max(h, 0), objects, im.get("subset") or None, str(path), segs))
    if names is None and meta_names:
        extra = sorted({o[0] for e in entries for o in e.objects} - set(meta_names))
        names = list(dict.fromkeys(meta_names)) + extra
    root = d
    for e in entries:
        e.file = rel(Path(e.file), root)
    aset = build_set(root, entries, "cvat", problems, names=names)
    log.debug("read CVAT %s: %s", path, aset.summary())
    return aset


def _read_shape(el: ET.Element, h: int, w: int) -> Any:
    """Polygons of a ``<polygon>`` or the RLE (image ``h x w``) of a ``<mask>``; ValueError if unreadable."""
    if el.tag == "polygon":
        try:
            pts = [float(v) for pair in (el.get("points") or "").split(";") for v in pair.split(",")]
        except ValueError:
            raise ValueError(f"points {el.get('points')!r} are not x,y;x,y;...") from None
        if len(pts) % 2 or not pts:
            raise ValueError(f"points {el.get('points')!r} are not x,y pairs")
        return [np.asarray(pts, dtype=np.float64)]
    if h <= 0 or w <= 0:
        raise ValueError("a mask needs the image's width and height")
    try:
        runs = np.array([int(v) for v in (el.get("rle") or "").split(",") if v.strip()], dtype=np.int64)
        left, top, mw, mh = (int(float(el.get(a) or "nan")) for a in ("left", "top", "width", "height"))
    except ValueError:
        raise ValueError("rle, left, top, width and height must be integers") from None
    if (runs < 0).any() or runs.sum() != mw * mh:
        raise ValueError(f"rle covers {int(runs.sum())} pixels, not its {mw}x{mh} box")
    if left < 0 or top < 0 or left + mw > w or top + mh > h:
        raise ValueError(f"its {mw}x{mh} box at ({left}, {top}) does not fit the {w}x{h} image")
    crop = np.repeat(np.arange(len(runs)) % 2, runs).astype(np.uint8).reshape(mh, mw)
    full = np.zeros((h, w), dtype=np.uint8)
    full[top : top + mh, left : left + mw] = crop
    return rle_ops.encode(full)


def _rle_box(r: rle_ops.RLE) -> list[float]:
    x, y, bw, bh = rle_ops.to_bbox(r)
    return [float(x), float(y), float(x + bw), float(y + bh)]


def _write_mask(im: ET.Element, seg: Any, label: str, row: int) -> None:
    """``<polygon>`` elements (a common ``group_id`` when several) or one ``<mask>`` for a mask."""
    common = {"label": label, "occluded": "0", "source": "manual", "z_order": "0"}
    if is_polygons(seg):
        for p in seg:
            xy = np.asarray(p, dtype=np.float64).reshape(-1, 2)
            attrs = dict(common, points=";".join(f"{_fmt(x)},{_fmt(y)}" for x, y in xy))
            if len(seg) > 1:
                attrs["group_id"] = str(row + 1)
            ET.SubElement(im, "polygon", attrs)
        return
    m = rle_ops.decode(seg)
    ys, xs = np.nonzero(m)
    if not len(xs):
        return
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    flat = m[y1:y2, x1:x2].reshape(-1)
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [len(flat)]]))  # crop starts with a zero run
    if flat[0]:
        runs = np.concatenate([[0], runs])
    ET.SubElement(im, "mask", dict(common, rle=", ".join(str(int(v)) for v in runs), left=str(x1), top=str(y1),
                                   width=str(x2 - x1), height=str(y2 - y1)))


def _xml_file(out: Path) -> Path:
    return out if out.suffix.lower() == ".xml" else out / "annotations.xml"


def write_cvat(
    aset: AnnotationSet,
    out: str | Path,
    copy_images: bool = True,
    split: str | None = None,
    names: list[str] | None = None,
) -> list[Problem]:
    """Write ``aset`` as CVAT for images 1.1 (``out/annotations.xml``, images in ``out/images/``).

    ``split`` becomes the images' ``subset`` attribute; an existing annotations.xml in ``out`` is
    extended, so several splits can be written into one file. A box with a polygon mask is written
    as its ``<polygon>`` elements, one with an RLE mask as a ``<mask>`` (exact pixels). Difficult /
    crowd flags have no CVAT field and are reported.
    """
    out = Path(out)
    xml_path = _xml_file(out)
    base = xml_path.parent
    (base / "images").mkdir(parents=True, exist_ok=True)
    problems: list[Problem] = []
    if xml_path.exists():
        r = _parse(xml_path)
        labels_el = r.find("meta/task/labels")
    else:
        r = ET.Element("annotations")
        ET.SubElement(r, "version").text = "1.1"
        task = ET.SubElement(ET.SubElement(r, "meta"), "task")
        labels_el = ET.SubElement(task, "labels")
    have = {el.findtext("name") for el in labels_el.findall("label")} if labels_el is not None else set()
    for n in aset.class_names:
        if labels_el is not None and n not in have:
            ET.SubElement(ET.SubElement(labels_el, "label"), "name").text = n
    next_id = 1 + max((int(im.get("id", -1)) for im in r.iter("image")), default=-1)
    for i, name in placed_images(aset, base / "images", names, copy_images, problems, "writing CVAT"):
        w, h = fill_sizes(aset, i)
        attrs = {"id": str(next_id + i), "name": f"images/{name}", "width": str(w), "height": str(h)}
        if split:
            attrs["subset"] = split
        im = ET.SubElement(r, "image", attrs)
        s, e = int(aset.offsets[i]), int(aset.offsets[i + 1])
        for row in range(s, e):
            seg = aset.masks[row] if aset.masks is not None else None
            if seg is not None:
                _write_mask(im, seg, box_label(aset, row), row)
                continue
            b = [float(v) for v in aset.boxes[row]]
            ET.SubElement(
                im,
                "box",
                {
                    "label": box_label(aset, row),
                    "occluded": "0",
                    "source": "manual",
                    "xtl": _fmt(b[0]),
                    "ytl": _fmt(b[1]),
                    "xbr": _fmt(b[2]),
                    "ybr": _fmt(b[3]),
                    "z_order": "0",
                },
            )
    ET.indent(r)
    ET.ElementTree(r).write(xml_path, encoding="utf-8", xml_declaration=True)
    problems += flags_dropped(aset, xml_path, "CVAT boxes")
    return problems


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    t = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if t == "-0" else t
