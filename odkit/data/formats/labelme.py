"""LabelMe JSON: one ``<image stem>.json`` per image with a list of shapes.

A json holds ``imagePath`` (relative to the json), ``imageWidth``/``imageHeight`` and ``shapes``:
``{"label", "points": [[x, y], ...], "shape_type"}`` in pixels. A ``rectangle`` (two opposite
corners, in any order) is a box ``[min x, min y, max x, max y]``. Other shapes (polygon,
polyline, circle, line, point, mask) are not boxes: each is reported as ``unsupported_shape``
naming the file and the shape, and not loaded. The folder may hold split sub-folders (train/,
val/, ...). Annotation refs are shape indices in the json.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

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
from odkit.data.probe import IMAGE_EXTS
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import DataError

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


def parse_labelme(path: Path, problems: list[Problem]) -> tuple[dict[str, Any], list[tuple]]:
    """The json document and its boxes ``(label, [x1, y1, x2, y2], False, shape index)``."""
    d = _load(path)
    objects = []
    for k, sh in enumerate(d["shapes"]):
        label = str(sh.get("label", "")) if isinstance(sh, dict) else ""
        kind = (sh.get("shape_type") or "polygon") if isinstance(sh, dict) else "?"
        pts = sh.get("points") if isinstance(sh, dict) else None
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
    return d, objects


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
        d, objects = parse_labelme(js, problems)
        img = _image_of(js, d, img_root)
        seen.add(img.resolve())
        w, h = d.get("imageWidth") or 0, d.get("imageHeight") or 0
        entries.append(Entry(rel(img, root), int(w), int(h), objects, split_of(js, root), str(js)))
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
    """Write ``aset`` as images with a LabelMe json (rectangles) beside each, in ``out/<split>/``.

    Difficult and crowd flags have no LabelMe field: they are reported when present.
    """
    d = Path(out) / split if split else Path(out)
    d.mkdir(parents=True, exist_ok=True)
    problems: list[Problem] = []
    for i, name in placed_images(aset, d, names, copy_images, problems, "writing LabelMe"):
        s, e = int(aset.offsets[i]), int(aset.offsets[i + 1])
        shapes = []
        for r in range(s, e):
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
