"""LabelMe JSON: one ``<image stem>.json`` per image with a list of shapes.

A json holds ``imagePath`` (relative to the json), ``imageWidth``/``imageHeight`` and ``shapes``:
``{"label", "points": [[x, y], ...], "shape_type"}`` in pixels. A ``rectangle`` (two opposite
corners, in any order) is a box ``[min x, min y, max x, max y]``. A ``polygon`` is an instance
mask (kept as a polygon) with its bounds as box; polygons of one label sharing a ``group_id`` are
one instance. A ``mask`` shape (``points`` the first and last pixel of its box, inclusive, and
``mask`` a base64 PNG of that box) is an RLE mask. Other shapes (polyline, circle, line, point) are
reported as ``unsupported_shape`` naming the file and the shape, and not loaded. The folder may
hold split sub-folders (train/, val/, ...). Annotation refs are shape indices in the json (the
first shape of a group).
"""

from __future__ import annotations

import base64
import json
import logging
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from odkit.data.formats._common import (
    Entry,
    box_label,
    build_set,
    find_image,
    flags_dropped,
    not_annotated,
    placed_images,
    progress,
    rel,
)
from odkit.data.formats.voc_flat import split_of
from odkit.data.formats.walk import walk_files
from odkit.data.masks import is_polygons, polygon_box
from odkit.data.probe import IMAGE_EXTS
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import DataError
from odkit.ops import rle as rle_ops

log = logging.getLogger(__name__)


def is_labelme_json(path: Path) -> bool:
    """Whether a json file looks like LabelMe (``shapes`` and ``imagePath`` keys), from its head."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    return b'"shapes"' in head and (b'"imagePath"' in head or b'"imageHeight"' in head)


def labelme_jsons(root: Path) -> list[Path]:
    """LabelMe files under ``root`` (any depth), sorted."""
    return [p for p in walk_files(root, (".json",)) if is_labelme_json(p)]


def _load(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: invalid LabelMe json ({e})") from None
    if not isinstance(d, dict) or not isinstance(d.get("shapes"), list):
        raise DataError(f"{path}: not a LabelMe file (no 'shapes' list)")
    return d


def _mask_shape(sh: dict[str, Any], pts: Any, h: int, w: int) -> rle_ops.RLE:
    """The RLE (image size ``h x w``) of a LabelMe ``mask`` shape; ValueError when unreadable."""
    if h <= 0 or w <= 0:
        raise ValueError("a mask shape needs imageHeight / imageWidth")
    (x1, y1), _ = [(int(float(p[0])), int(float(p[1]))) for p in pts]
    try:
        buf = np.frombuffer(base64.b64decode(sh.get("mask") or ""), dtype=np.uint8)
    except ValueError:
        raise ValueError("its 'mask' is not base64") from None
    crop = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if len(buf) else None
    if crop is None:
        raise ValueError("its 'mask' is not a PNG image")
    full = np.zeros((h, w), dtype=np.uint8)
    ch, cw = crop.shape
    if x1 < 0 or y1 < 0 or y1 + ch > h or x1 + cw > w:
        raise ValueError(f"its {cw}x{ch} mask at ({x1}, {y1}) does not fit the {w}x{h} image")
    full[y1 : y1 + ch, x1 : x1 + cw] = crop > 0
    return rle_ops.encode(full)


def _polygon(pts: Any) -> np.ndarray:
    """Flat float64 ``[x0, y0, ...]`` of LabelMe points; ValueError when they are not [x, y] pairs."""
    a = np.asarray(pts, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError
    return a.reshape(-1)


def parse_labelme(
    path: Path, problems: list[Problem], masks: list[Any] | None = None
) -> tuple[dict[str, Any], list[tuple]]:
    """The json document and its objects ``(label, [x1, y1, x2, y2], False, shape index)``; the mask
    of each object (polygons, RLE, or None for a rectangle) is appended to ``masks`` when given."""
    d = _load(path)
    objects: list[tuple] = []
    segs: list[Any] = []
    groups: dict[tuple[str, Any], int] = {}
    for k, sh in enumerate(d["shapes"]):
        label = str(sh.get("label", "")) if isinstance(sh, dict) else ""
        kind = (sh.get("shape_type") or "polygon") if isinstance(sh, dict) else "?"
        pts = sh.get("points") if isinstance(sh, dict) else None
        if kind in ("polygon", "mask"):
            try:
                if kind == "polygon":
                    seg: Any = [_polygon(pts)]
                else:
                    seg = _mask_shape(sh, pts, int(d.get("imageHeight") or 0), int(d.get("imageWidth") or 0))
            except (TypeError, ValueError, IndexError) as e:
                why = f": {e}" if str(e) else ""
                problems.append(Problem("malformed_mask", str(path), f"shape {k} ({label}): {kind} points {pts!r} "
                                        f"cannot be read{why}; not loaded", annotation=k))
                continue
            gid = sh.get("group_id")
            if kind == "polygon" and gid is not None and (label, gid) in groups:
                j = groups[(label, gid)]
                segs[j] = segs[j] + seg
                objects[j] = (label, polygon_box(segs[j]), False, objects[j][3])
                continue
            if kind == "polygon" and gid is not None:
                groups[(label, gid)] = len(objects)
            box = polygon_box(seg) if is_polygons(seg) else _rle_box(seg)
            objects.append((label, box, False, k))
            segs.append(seg)
            continue
        if kind != "rectangle":
            problems.append(
                Problem(
                    "unsupported_shape",
                    str(path),
                    f"shape {k} ({label}) is a {kind}, not a rectangle; not loaded",
                    annotation=k,
                    severity="warning",
                )
            )
            continue
        try:
            xs = [float(p[0]) for p in pts]
            ys = [float(p[1]) for p in pts]
            if len(xs) != 2:
                raise ValueError
        except (TypeError, ValueError, IndexError):
            problems.append(
                Problem("malformed_annotation", str(path), f"shape {k} ({label}): rectangle points {pts!r} "
                        "are not two [x, y] corners", annotation=k)
            )
            continue
        box = [min(xs), min(ys), max(xs), max(ys)]
        if not all(math.isfinite(v) for v in box):
            problems.append(Problem("non_finite_box", str(path), f"shape {k} ({label}): {pts!r}", annotation=k))
        objects.append((label, box, False, k))
        segs.append(None)
    if masks is not None:
        masks += segs
    return d, objects


def _rle_box(r: rle_ops.RLE) -> list[float]:
    x, y, w, h = rle_ops.to_bbox(r)
    return [float(x), float(y), float(x + w), float(y + h)]


def _image_of(js: Path, d: dict[str, Any], image_root: Path | None) -> Path:
    ip = d.get("imagePath")
    cands = []
    if ip:
        ip = str(ip).replace("\\", "/")
        cands += [js.parent / ip, js.parent / Path(ip).name]
        if image_root is not None:
            cands += [image_root / ip, image_root / Path(ip).name]
    for c in cands:
        if c.is_file():
            return c
    for folder in [js.parent] + ([image_root] if image_root is not None else []):
        found = find_image(folder, js.stem)
        if found is not None:
            return found
    return cands[0] if cands else js.with_suffix(".jpg")


def read_labelme(
    path: str | Path, image_root: str | Path | None = None, names: list[str] | None = None
) -> AnnotationSet:
    """Read a LabelMe json, or every LabelMe json under a folder; ``splits`` from split folders."""
    path = Path(path)
    root = path.parent if path.is_file() else path
    jsons = [path] if path.is_file() else labelme_jsons(path)
    if not jsons:
        raise DataError(f"{path}: no LabelMe json files (with 'shapes') in this folder or below")
    img_root = Path(image_root) if image_root is not None else None
    problems: list[Problem] = []
    entries: list[Entry] = []
    seen: set[Path] = set()
    for js in progress(jsons, len(jsons), "reading LabelMe json"):
        segs: list[Any] = []
        d, objects = parse_labelme(js, problems, segs)
        img = _image_of(js, d, img_root)
        seen.add(img.resolve())
        w, h = d.get("imageWidth") or 0, d.get("imageHeight") or 0
        entries.append(Entry(rel(img, root), int(w), int(h), objects, split_of(js, root), str(js), segs))
    if path.is_dir():
        images = [p for p in walk_files(path, IMAGE_EXTS) if p.resolve() not in seen]
        problems += not_annotated(images, "LabelMe json", len(entries))
    aset = build_set(root, entries, "labelme", problems, names=names)
    log.debug("read LabelMe %s: %s", path, aset.summary())
    return aset


def write_labelme(
    aset: AnnotationSet,
    out: str | Path,
    copy_images: bool = True,
    split: str | None = None,
    names: list[str] | None = None,
) -> list[Problem]:
    """Write ``aset`` as images with a LabelMe json beside each, in ``out/<split>/``.

    A box is a ``rectangle``; a box with a polygon mask is one ``polygon`` shape per polygon (with a
    common ``group_id`` when there are several), one with an RLE mask a ``mask`` shape (exact pixels).
    Difficult and crowd flags have no LabelMe field: they are reported when present.
    """
    d = Path(out) / split if split else Path(out)
    d.mkdir(parents=True, exist_ok=True)
    problems: list[Problem] = []
    for i, name in placed_images(aset, d, names, copy_images, problems, "writing LabelMe"):
        s, e = int(aset.offsets[i]), int(aset.offsets[i + 1])
        shapes: list[dict[str, Any]] = []
        for r in range(s, e):
            seg = aset.masks[r] if aset.masks is not None else None
            if seg is not None:
                shapes += _mask_shapes(seg, box_label(aset, r), r)
                continue
            x1, y1, x2, y2 = (float(v) for v in aset.boxes[r])
            shapes.append(
                {
                    "label": box_label(aset, r),
                    "points": [[x1, y1], [x2, y2]],
                    "group_id": None,
                    "shape_type": "rectangle",
                    "flags": {},
                }
            )
        doc = {
            "version": "5.0.1",
            "flags": {},
            "shapes": shapes,
            "imagePath": name,
            "imageData": None,
            "imageHeight": int(aset.heights[i]),
            "imageWidth": int(aset.widths[i]),
        }
        (d / f"{Path(name).stem}.json").write_text(json.dumps(doc, indent=1))
    problems += flags_dropped(aset, out, "LabelMe")
    return problems


def _mask_shapes(seg: Any, label: str, row: int) -> list[dict[str, Any]]:
    """LabelMe shapes of one mask: its polygons (grouped by ``row`` when several) or a ``mask`` shape."""
    if is_polygons(seg):
        gid = row if len(seg) > 1 else None
        return [{"label": label, "points": np.asarray(p, dtype=np.float64).reshape(-1, 2).tolist(),
                 "group_id": gid, "shape_type": "polygon", "flags": {}} for p in seg]
    m = rle_ops.decode(seg)
    ys, xs = np.nonzero(m)
    if not len(xs):
        return []
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    ok, png = cv2.imencode(".png", m[y1 : y2 + 1, x1 : x2 + 1] * 255)
    return [{"label": label, "points": [[x1, y1], [x2, y2]], "group_id": None, "shape_type": "mask",
             "flags": {}, "mask": base64.b64encode(png.tobytes()).decode("ascii")}]
