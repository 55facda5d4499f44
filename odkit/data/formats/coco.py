"""COCO json reader and writer.

Reading parses the annotation list into numpy arrays in bulk (no per-box objects are kept).
COCO ``bbox`` is ``[x, y, w, h]`` in pixels with continuous coordinates; odkit stores
``[x1, y1, x2, y2] = [x, y, x + w, y + h]``. Category ids become contiguous labels sorted by id
(``class_ids`` keeps the ids). Image ``file_name`` is resolved against ``image_root`` when given,
otherwise against the json's folder, a sibling ``images/`` folder, ``../images/`` or
``../<split>`` (``instances_val2017.json`` -> ``../val2017``), whichever holds the first files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from odkit.data.formats._common import output_names, place_image
from odkit.data.masks import parse_segmentation, to_coco, to_rle
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import DataError

log = logging.getLogger(__name__)


def is_coco_json(path: Path) -> bool:
    """Whether a json file looks like a COCO detection file (an object with ``images``), from its head."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return False
    h = head.lstrip()
    return h.startswith(b"{") and b'"images"' in head and b'"shapes"' not in head


def coco_split_files(d: Path) -> dict[str, Path]:
    """The COCO jsons of a folder, by split name.

    Looks in ``d``, ``d/annotations`` and split folders up to two levels down
    (``train/_annotations.coco.json``, ``train_zip/train/...``). A json's split is its split
    folder's name, else the split word in its stem (``instances_val2017`` -> ``val2017``). A single
    json that names no split gets the key ``""`` (no splits); beside jsons that name splits, a json
    that names none is left out with a warning (its name is not guessed to be a split).
    """
    from odkit.data.splits import split_folders, split_from_file

    found: dict[str, Path] = {}
    loose = [p for p in sorted(d.glob("*.json")) + sorted((d / "annotations").glob("*.json")) if is_coco_json(p)]
    if len(loose) == 1 and split_from_file(loose[0].stem) is None and not (d.is_dir() and split_folders(d)):
        return {"": loose[0]}
    unnamed = []
    for p in loose:
        name = split_from_file(p.stem)
        if name is None:
            unnamed.append(p)
        else:
            found.setdefault(name, p)
    for sub in split_folders(d) if d.is_dir() else []:
        js = [p for p in sorted(sub.glob("*.json")) if is_coco_json(p)]
        if len(js) == 1:
            found.setdefault(sub.name, js[0])
    if not found and len(unnamed) == 1:
        return {"": unnamed[0]}
    if not found and unnamed:
        raise DataError(f"{d}: {len(unnamed)} COCO jsons and none names a split (train, val, test, ...): "
                        f"{', '.join(p.name for p in unnamed)}; give one json, or name them in an odkit dataset YAML")
    for p in unnamed:
        log.warning("%s: the name of this COCO json names no split (train, val, test, ...) beside jsons that do; "
                    "not read (give it on its own, or name it in an odkit dataset YAML)", p)
    return found


def _image_root_candidates(json_path: Path) -> list[Path]:
    d = json_path.parent
    cands = [d, d / "images", d.parent / "images"]
    stem = json_path.stem
    if "_" in stem:
        cands.append(d.parent / stem.split("_")[-1])
        cands.append(d.parent / "images" / stem.split("_")[-1])
    return cands


def _choose_root(json_path: Path, files: list[str], image_root: str | Path | None) -> Path:
    if image_root is not None:
        return Path(image_root)
    sample = [f for f in files[:8] if not Path(f).is_absolute()]
    if not sample:
        return json_path.parent
    best, best_n = json_path.parent, 0
    for c in _image_root_candidates(json_path):
        n = sum((c / f).exists() for f in sample)
        if n > best_n:
            best, best_n = c, n
        if n == len(sample):
            break
    return best


def _bboxes(raw: list[Any], file: str, ann_ids: list[Any], problems: list[Problem]) -> np.ndarray:
    """``[A,4]`` float64 xywh from the ``bbox`` fields; malformed entries become NaN (reported)."""
    try:
        arr = np.asarray(raw, dtype=np.float64)
        if arr.shape == (len(raw), 4):
            return arr
    except (ValueError, TypeError):
        pass
    arr = np.full((len(raw), 4), np.nan, dtype=np.float64)
    for k, b in enumerate(raw):
        try:
            v = np.asarray(b, dtype=np.float64)
            if v.shape == (4,):
                arr[k] = v
                continue
        except (ValueError, TypeError):
            pass
        problems.append(
            Problem("malformed_annotation", file, f"bbox {b!r} is not [x, y, w, h]", annotation=ann_ids[k])
        )
    return arr


def _segmentations(anns: list[Any], order: np.ndarray, file: str, ann_ids: list[Any],
                   problems: list[Problem]) -> list[Any] | None:
    """Masks of the annotations ``order`` (polygons or RLE, None where absent or unreadable, each
    unreadable one reported); None when no annotation has a non-empty ``segmentation``."""
    raw = [anns[k].get("segmentation") if isinstance(anns[k], dict) else None for k in order]
    # "segmentation": [] or [[]] is how box-only annotations are often written: no mask
    raw = [None if isinstance(sg, list) and all(isinstance(p, list) and not p for p in sg) else sg for sg in raw]
    if not any(sg is not None for sg in raw):
        return None
    out: list[Any] = []
    for k, sg in zip(order, raw):
        if sg is None:
            out.append(None)
            continue
        try:
            out.append(parse_segmentation(sg))
        except ValueError as e:
            problems.append(Problem("malformed_mask", file, f"segmentation: {e}; mask not loaded",
                                    annotation=ann_ids[int(k)]))
            out.append(None)
    return out


def read_coco(path: str | Path, image_root: str | Path | None = None) -> AnnotationSet:
    """Read a COCO detection json into an :class:`AnnotationSet` (boxes xyxy pixels; instance masks,
    polygons or RLE, when any annotation has a ``segmentation``)."""
    path = Path(path)
    file = str(path)
    try:
        with open(path, "rb") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: invalid json ({e})") from None
    if not isinstance(d, dict) or not isinstance(d.get("images"), list):
        raise DataError(f"{path}: not a COCO detection file (no 'images' list)")
    images = d["images"]
    anns = d.get("annotations") or []
    cats = d.get("categories") or []
    if not isinstance(anns, list) or not isinstance(cats, list):
        raise DataError(f"{path}: 'annotations' and 'categories' must be lists")
    problems: list[Problem] = []

    # ---------------- categories: contiguous labels sorted by category id
    cat_by_id: dict[int, str] = {}
    for c in cats:
        if not isinstance(c, dict) or "id" not in c:
            raise DataError(f"{path}: category entry {c!r} has no 'id'")
        cid = c["id"]
        if cid in cat_by_id:
            problems.append(
                Problem("duplicate_category_id", file, f"category id {cid} is defined twice; first kept")
            )
            continue
        cat_by_id[cid] = str(c.get("name", cid))
    class_ids = sorted(cat_by_id)
    class_names = [cat_by_id[c] for c in class_ids]
    cat2label = {c: k for k, c in enumerate(class_ids)}

    # ---------------- images
    try:
        img_ids = [im["id"] for im in images]
        files = [str(im["file_name"]) for im in images]
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: an image entry lacks {e}") from None
    n = len(images)
    widths = np.array([im.get("width") or 0 for im in images], dtype=np.int64)
    heights = np.array([im.get("height") or 0 for im in images], dtype=np.int64)
    id2idx: dict[Any, int] = {}
    for i, iid in enumerate(img_ids):
        if iid in id2idx:
            problems.append(
                Problem(
                    "duplicate_image_id",
                    file,
                    f"image id {iid} ({files[i]}) is used twice; annotations go to the first",
                )
            )
            continue
        id2idx[iid] = i
    try:
        image_ids = np.array(img_ids, dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        image_ids = np.arange(n, dtype=np.int64)
        problems.append(Problem("non_integer_image_id", file, "image ids are not integers; renumbered"))

    # ---------------- annotations, in bulk
    a_img = np.array([id2idx.get(a.get("image_id"), -1) for a in anns], dtype=np.int64)
    raw_aid = [a.get("id", k) for k, a in enumerate(anns)]
    orphans = np.flatnonzero(a_img < 0)
    for k in orphans[:1000]:
        problems.append(
            Problem(
                "orphan_annotation",
                file,
                f"annotation refers to image id {anns[k].get('image_id')!r}, which is not in 'images'; not loaded",
                annotation=raw_aid[k],
            )
        )
    if len(orphans) > 1000:
        problems.append(
            Problem("orphan_annotation", file, f"... and {len(orphans) - 1000} more orphan annotations")
        )
    xywh = _bboxes([a.get("bbox") for a in anns], file, raw_aid, problems)
    cat_raw = [a.get("category_id") for a in anns]
    labels = np.array([cat2label.get(c, -1) for c in cat_raw], dtype=np.int64)
    iscrowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    difficult = np.array([bool(a.get("difficult", 0)) for a in anns], dtype=bool)
    areas = np.array([a.get("area", np.nan) for a in anns], dtype=np.float64).astype(np.float32)
    try:
        ann_ids = np.array(raw_aid, dtype=np.int64)
    except (ValueError, TypeError, OverflowError):
        ann_ids = np.arange(len(anns), dtype=np.int64)

    keep = a_img >= 0
    order = np.flatnonzero(keep)[np.argsort(a_img[keep], kind="stable")]
    boxes = np.empty((len(order), 4), dtype=np.float32)
    xywh = xywh[order]
    boxes[:, :2] = xywh[:, :2]
    boxes[:, 2:] = xywh[:, :2] + xywh[:, 2:]
    counts = np.bincount(a_img[order], minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    labels = labels[order]
    raw_names = {}
    for r in np.flatnonzero(labels < 0):
        k = int(order[r])
        raw_names[int(r)] = str(cat_raw[k])
        problems.append(
            Problem(
                "unknown_class",
                file,
                f"category id {cat_raw[k]!r} is not in 'categories'",
                annotation=raw_aid[k],
            )
        )
    root = _choose_root(path, files, image_root)
    aset = AnnotationSet(
        root=root,
        files=files,
        image_ids=image_ids,
        widths=widths,
        heights=heights,
        offsets=offsets,
        boxes=boxes,
        labels=labels,
        iscrowd=iscrowd[order],
        difficult=difficult[order],
        ann_ids=ann_ids[order],
        areas=areas[order],
        class_names=class_names,
        class_ids=class_ids,
        source="coco",
        raw_names=raw_names,
        problems=problems,
        masks=_segmentations(anns, order, file, raw_aid, problems),
    )
    log.debug("read %s: %s", path, aset.summary())
    return aset


def _mask_area(segm: Any, h: int, w: int) -> float:
    """COCO ``area`` of a mask: its pixel count (0 when the image size is unknown for polygons)."""
    from odkit.ops.rle import area

    if isinstance(segm, list) and (h <= 0 or w <= 0):
        return 0.0
    return float(area(to_rle(segm, h, w)))


def _unique_or_range(values: np.ndarray, start: int) -> list[int]:
    if len(np.unique(values)) == len(values) and (len(values) == 0 or values.min() >= 0):
        return [int(v) for v in values]
    return list(range(start, start + len(values)))


def write_coco(
    aset: AnnotationSet,
    out: str | Path,
    copy_images: bool = True,
    split: str | None = None,
    names: list[str] | None = None,
) -> list[Problem]:
    """Write ``aset`` as COCO json; returns the problems met (annotations that could not be written).

    ``out`` is a ``.json`` path or a folder (then ``<out>/<split or 'annotations'>.json``). With
    ``copy_images`` the images are copied to ``images/`` next to the json and ``file_name`` is the
    bare name; otherwise ``file_name`` is the absolute path of the source image. ``names``: output
    file name per image (default :func:`output_names`). Masks are written as ``segmentation``:
    polygons as polygons, an RLE with a counts list for a crowd annotation (COCO's ground truth
    convention) and a counts string otherwise; ``area`` is the mask's when the source gave none.
    """
    out = Path(out)
    json_path = out if out.suffix.lower() == ".json" else out / f"{split or 'annotations'}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    problems: list[Problem] = []
    n = len(aset)
    if copy_images:
        names = names or output_names(aset)
    else:
        names = None
    image_ids = _unique_or_range(aset.image_ids, 1)
    class_ids = list(aset.class_ids)
    if len(set(class_ids)) != len(class_ids):
        class_ids = list(range(len(aset.class_names)))
    images: list[dict[str, Any]] = []
    for i in range(n):
        src = aset.path(i)
        if names is not None:
            p = place_image(src, json_path.parent / "images" / names[i], True)
            if p:
                problems.append(p)
            fname = names[i]
        else:
            fname = str(src.resolve())
        images.append(
            {
                "id": image_ids[i],
                "file_name": fname,
                "width": int(aset.widths[i]),
                "height": int(aset.heights[i]),
            }
        )
    img_index = aset.image_index()
    ann_ids = _unique_or_range(aset.ann_ids, 1)
    b = aset.boxes.astype(np.float64)
    wh = b[:, 2:] - b[:, :2]
    area = np.where(np.isfinite(aset.areas), aset.areas.astype(np.float64), wh[:, 0] * wh[:, 1])
    write_difficult = bool(aset.difficult.any())
    annotations: list[dict[str, Any]] = []
    for r in range(aset.num_annotations):
        lab = int(aset.labels[r])
        if lab >= 0:
            cid = class_ids[lab]
        else:
            raw = aset.raw_names.get(r, "")
            try:
                cid = int(raw)
            except ValueError:
                problems.append(
                    Problem(
                        "not_written",
                        str(aset.path(int(img_index[r]))),
                        f"annotation of unknown class {raw!r} cannot be written as COCO; skipped",
                        annotation=int(aset.ann_ids[r]),
                    )
                )
                continue
        a = {
            "id": ann_ids[r],
            "image_id": image_ids[int(img_index[r])],
            "category_id": cid,
            "bbox": [round(float(v), 4) for v in (b[r, 0], b[r, 1], wh[r, 0], wh[r, 1])],
            "area": round(float(area[r]), 4),
            "iscrowd": int(aset.iscrowd[r]),
        }
        if write_difficult:
            a["difficult"] = int(aset.difficult[r])
        segm = aset.masks[r] if aset.masks is not None else None
        if segm is not None:
            a["segmentation"] = to_coco(segm, compressed=not bool(aset.iscrowd[r]))
            if not np.isfinite(aset.areas[r]):
                i = int(img_index[r])
                a["area"] = _mask_area(segm, int(aset.heights[i]), int(aset.widths[i]))
        annotations.append(a)
    cats = [{"id": int(c), "name": name, "supercategory": ""} for c, name in zip(class_ids, aset.class_names)]
    doc = {"images": images, "annotations": annotations, "categories": cats}
    tmp = json_path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, allow_nan=True)
    tmp.replace(json_path)
    log.debug("wrote %s (%d images, %d annotations)", json_path, n, len(annotations))
    return problems
