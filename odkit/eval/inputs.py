"""Parsing of evaluation inputs into flat numpy arrays.

Ground truth comes as an :class:`~odkit.data.AnnotationSet` or a dataset path (COCO json, VOC root,
YOLO data.yaml, read by :func:`odkit.data.formats.load_dataset`). Detections come as a list of
prediction dicts (``{"boxes" [K,4] xyxy pixels, "scores" [K], "labels" [K]}`` with contiguous class
indices; one dict per image of the ground truth in order, or dicts carrying ``"image_id"``) or as a
COCO results json (a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` with the
original ids), given as a path or as the already-loaded list.

Everything is converted to float64 so that a COCO results json is evaluated on exactly the numbers
it holds; boxes are kept both as ``xywh`` (what COCO evaluation uses) and ``xyxy``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odkit.data.structures import AnnotationSet
from odkit.errors import ConfigError, DataError
from odkit.ops.masks import segmentations_to_array
from odkit.ops.rle import RLEArray, strings_to_counts

log = logging.getLogger(__name__)

__all__ = ["GroundTruth", "Detections", "load_ground_truth", "load_detections"]


@dataclass
class GroundTruth:
    """Ground truth boxes of an evaluation, one row per annotation.

    ``image_ids`` [I] original image ids (set order); ``class_ids`` original category id per
    contiguous label; ``img`` [G] image position (0..I-1); ``labels`` [G] contiguous class;
    ``xywh`` / ``xyxy`` [G,4] float64 pixels; ``area`` [G] float64 (COCO ``area`` field, or the
    box area w*h where the source has none); ``iscrowd`` / ``difficult`` [G] bool. ``masks``: the
    ground-truth masks (segm evaluation), one per row, and ``image_hw`` [I, 2] the image sizes.
    """

    image_ids: np.ndarray
    class_ids: list[int]
    class_names: list[str]
    img: np.ndarray
    labels: np.ndarray
    xywh: np.ndarray
    xyxy: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray
    ann_ids: np.ndarray | None = None
    masks: RLEArray | None = None
    image_hw: np.ndarray | None = None

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)


@dataclass
class Detections:
    """Detections, one row per box, in input order (the order breaks score ties, as in pycocotools).

    ``img`` [N] image position in the ground truth set; ``labels`` [N] contiguous class;
    ``xywh`` / ``xyxy`` [N,4] float64 pixels; ``scores`` [N] float64. For segm evaluation ``masks``
    (one per row) and ``area`` [N], the area pycocotools' ``loadRes`` gives a result: the box's
    ``w * h`` when the results carry boxes, else the mask area.
    """

    img: np.ndarray
    labels: np.ndarray
    xywh: np.ndarray
    xyxy: np.ndarray
    scores: np.ndarray
    masks: RLEArray | None = None
    area: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise DataError(f"{name}: cannot be read as an array ({e})") from None


def _dedupe_check(values: np.ndarray, what: str, source: str) -> None:
    uniq, counts = np.unique(values, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][:10].tolist()
        raise DataError(f"{source}: duplicate {what} {dup}")


def _annotation_set_to_gt(aset: AnnotationSet, source: str) -> GroundTruth:
    image_ids = np.asarray(aset.image_ids, dtype=np.int64)
    _dedupe_check(image_ids, "image ids", source)
    _dedupe_check(np.asarray(aset.class_ids, dtype=np.int64), "category ids", source)
    labels = np.asarray(aset.labels, dtype=np.int64)
    keep = labels >= 0
    if not keep.all():
        log.warning(
            "%s: %d annotation(s) of unknown classes are left out of the evaluation",
            source,
            int((~keep).sum()),
        )
    img = aset.image_index()[keep]
    xyxy = np.asarray(aset.boxes, dtype=np.float64).reshape(-1, 4)[keep]
    # float32 -> float64 is exact, and so is the difference of two float32 in float64, so
    # x + w gives back x2 exactly.
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    area = np.asarray(aset.areas, dtype=np.float64)[keep]
    area = np.where(np.isnan(area), xywh[:, 2] * xywh[:, 3], area)
    return GroundTruth(
        image_ids=image_ids,
        class_ids=[int(c) for c in aset.class_ids],
        class_names=list(aset.class_names),
        img=img,
        labels=labels[keep],
        xywh=xywh,
        xyxy=xyxy,
        area=area,
        iscrowd=np.asarray(aset.iscrowd, dtype=bool)[keep],
        difficult=np.asarray(aset.difficult, dtype=bool)[keep],
        ann_ids=np.asarray(aset.ann_ids, dtype=np.int64)[keep],
    )


def _coco_json_rows(path: Path, gt: GroundTruth) -> tuple[list[dict], dict[int, dict]] | None:
    """The json annotation objects of ``gt``'s rows (by annotation id) and the images by id."""
    if gt.ann_ids is None or len(np.unique(gt.ann_ids)) != len(gt.ann_ids):
        return None
    try:
        with open(path, "rb") as f:
            data = json.load(f)
        by_id = {int(a["id"]): a for a in data.get("annotations") or []}
        rows = [by_id[int(i)] for i in gt.ann_ids.tolist()]
        images = {int(im["id"]): im for im in data.get("images") or []}
    except (KeyError, TypeError, ValueError, AttributeError, OSError) as e:
        log.debug("%s: annotations not read back by id (%s)", path, e)
        return None
    return rows, images


def _exact_coco_values(path: Path, gt: GroundTruth, rows: list[dict]) -> None:
    """Replace the float32 boxes / areas of a COCO json ground truth by the file's float64 values.

    An AnnotationSet stores float32 boxes; pycocotools uses the json numbers as they are, so for
    results identical to it the original values are read back by annotation id (in place).
    """
    if len(rows) == 0:
        return
    try:
        xywh = np.array([a["bbox"] for a in rows], dtype=np.float64)
        area = np.array([a.get("area", np.nan) for a in rows], dtype=np.float64)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        log.debug("%s: keeping float32 boxes (%s)", path, e)
        return
    if xywh.shape != gt.xywh.shape or not np.allclose(xywh, gt.xywh, rtol=1e-5, atol=1e-2):
        log.debug("%s: json boxes do not line up with the loaded set; keeping float32 boxes", path)
        return
    gt.xywh = xywh
    gt.xyxy = _xywh_to_xyxy(xywh)
    gt.area = np.where(np.isnan(area), xywh[:, 2] * xywh[:, 3], area)


def _masks_from_segmentations(segms: list[Any], gt: GroundTruth, source: str, area_missing: np.ndarray) -> None:
    """Ground-truth masks (in place) from COCO segmentations on their images' sizes (``annToRLE``).

    Rows without a COCO ``area`` (``area_missing``) get the mask area for the area ranges.
    """
    ann_ids = gt.ann_ids if gt.ann_ids is not None else np.arange(len(segms))
    missing = [int(ann_ids[k]) for k, sg in enumerate(segms) if sg is None or (isinstance(sg, list) and not sg)]
    if missing:
        raise DataError(
            f"{source}: segm evaluation needs a segmentation on every annotation; "
            f"annotation id(s) {missing[:20]} have none"
        )
    assert gt.image_hw is not None
    hw = gt.image_hw[gt.img]
    try:
        gt.masks = segmentations_to_array(segms, hw[:, 0], hw[:, 1])
    except ValueError as e:
        k = str(e).split(":")[0].removeprefix("segmentation ")
        ann = int(ann_ids[int(k)]) if k.isdigit() else "?"
        raise DataError(f"{source}: annotation id {ann}: {e}") from None
    gt.area = np.where(area_missing, gt.masks.areas.astype(np.float64), gt.area)


def load_ground_truth(
    gt: AnnotationSet | GroundTruth | str | Path,
    format: str | None = None,
    split: str | None = None,
    masks: bool = False,
) -> GroundTruth:
    """Ground truth from an AnnotationSet or a dataset path (COCO json, VOC root, YOLO data.yaml).

    ``masks``: also the ground-truth masks (segm evaluation), from the COCO json's segmentations
    (as pycocotools reads them) or from the set's ``segmentations``; a DataError when there are none.
    """
    if isinstance(gt, GroundTruth):
        if masks and gt.masks is None:
            raise DataError("ground truth: segm evaluation needs ground-truth masks, and this one has none")
        return gt
    if isinstance(gt, AnnotationSet):
        g = _annotation_set_to_gt(gt, "ground truth")
        if masks:
            _masks_from_set(gt, g, "ground truth")
        return g
    if isinstance(gt, (str, Path)):
        path = Path(gt)
        if not path.exists():
            raise DataError(f"{path}: ground truth not found")
        try:
            from odkit.data.formats import load_dataset
        except ImportError as e:
            raise ConfigError(f"{path}: dataset loading is not available in this build ({e})") from None
        aset = load_dataset(path, format=format, split=split)
        g = _annotation_set_to_gt(aset, str(path))
        read = _coco_json_rows(path, g) if aset.source == "coco" and path.is_file() else None
        if read is not None:
            _exact_coco_values(path, g, read[0])
        if masks:
            if read is not None:
                rows, images = read
                g.image_hw = _image_sizes(g, images, str(path))
                area_missing = np.array([r.get("area") is None for r in rows], dtype=bool)
                _masks_from_segmentations([r.get("segmentation") for r in rows], g, str(path), area_missing)
            else:
                _masks_from_set(aset, g, str(path))
        return g
    raise ConfigError(f"ground truth must be an AnnotationSet or a path, got {type(gt).__name__}")


def _image_sizes(g: GroundTruth, images: dict[int, dict], source: str) -> np.ndarray:
    """``[I, 2]`` (height, width) of the json's images, in ``g``'s image order."""
    try:
        return np.array(
            [[int(images[int(i)]["height"]), int(images[int(i)]["width"])] for i in g.image_ids.tolist()],
            dtype=np.int64,
        ).reshape(-1, 2)
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{source}: segm evaluation needs the height and width of every image ({e})") from None


def _masks_from_set(aset: AnnotationSet, g: GroundTruth, source: str) -> None:
    """Ground-truth masks of the set's rows (``AnnotationSet.masks``, in COCO form); a row without a
    mask is its box (logged with the count)."""
    from odkit.data.masks import to_coco

    if aset.masks is None:
        raise DataError(f"{source}: segm evaluation needs masks, and this data set has none")
    segms, boxes = [], np.asarray(aset.boxes, dtype=np.float64).reshape(-1, 4)
    for m, (x1, y1, x2, y2) in zip(aset.masks, boxes):
        segms.append(to_coco(m) if m is not None else [[x1, y1, x2, y1, x2, y2, x1, y2]])
    missing = sum(m is None for m in aset.masks)
    if missing:
        log.warning("%s: %d object(s) without a mask are evaluated as their boxes", source, missing)
    keep = np.asarray(aset.labels) >= 0
    g.image_hw = np.stack([np.asarray(aset.heights), np.asarray(aset.widths)], 1).astype(np.int64)
    area_missing = np.isnan(np.asarray(aset.areas, dtype=np.float64))[keep]
    rows = [sg for sg, k in zip(segms, keep) if k]
    _masks_from_segmentations(rows, g, source, area_missing)


def _xyxy_to_xywh(xyxy: np.ndarray) -> np.ndarray:
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def _xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def _empty_detections() -> Detections:
    z = np.zeros(0, dtype=np.int64)
    b = np.zeros((0, 4), dtype=np.float64)
    return Detections(img=z, labels=z.copy(), xywh=b, xyxy=b.copy(), scores=np.zeros(0))


def _from_prediction_dicts(preds: list[Any], gt: GroundTruth) -> Detections:
    with_ids = [isinstance(p, dict) and "image_id" in p for p in preds]
    if any(with_ids) and not all(with_ids):
        raise DataError("predictions: either every prediction dict carries 'image_id' or none does")
    if any(with_ids):
        pos = {int(i): k for k, i in enumerate(gt.image_ids.tolist())}
        unknown = sorted({int(_to_numpy(p["image_id"], "image_id")) for p in preds} - pos.keys())
        if unknown:
            raise DataError(f"predictions: image ids not in the ground truth: {unknown[:20]}")
        images = [pos[int(_to_numpy(p["image_id"], "image_id"))] for p in preds]
    else:
        if len(preds) != gt.num_images:
            raise DataError(
                f"predictions: {len(preds)} prediction dicts for {gt.num_images} ground-truth images "
                "(give one per image in order, or add 'image_id' to each)"
            )
        images = list(range(len(preds)))
    boxes, scores, labels, img = [], [], [], []
    for k, (p, i) in enumerate(zip(preds, images)):
        if not isinstance(p, dict):
            raise DataError(f"predictions[{k}]: expected a dict, got {type(p).__name__}")
        missing = [key for key in ("boxes", "scores", "labels") if key not in p]
        if missing:
            raise DataError(f"predictions[{k}]: missing key(s) {missing}")
        b = _to_numpy(p["boxes"], f"predictions[{k}]['boxes']").astype(np.float64)
        s = _to_numpy(p["scores"], f"predictions[{k}]['scores']").astype(np.float64).reshape(-1)
        lab = _to_numpy(p["labels"], f"predictions[{k}]['labels']").reshape(-1)
        if b.size == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise DataError(f"predictions[{k}]['boxes']: expected shape [K,4], got {list(b.shape)}")
        if not (len(b) == len(s) == len(lab)):
            raise DataError(
                f"predictions[{k}]: boxes ({len(b)}), scores ({len(s)}) and labels ({len(lab)}) differ in length"
            )
        if len(lab) and not np.issubdtype(lab.dtype, np.integer):
            if not np.all(np.equal(np.mod(lab, 1), 0)):
                raise DataError(f"predictions[{k}]['labels']: class indices must be integers")
        lab = lab.astype(np.int64)
        if not np.isfinite(b).all():
            raise DataError(f"predictions[{k}]['boxes']: non-finite coordinates")
        if not np.isfinite(s).all():
            raise DataError(f"predictions[{k}]['scores']: NaN or infinite score")
        bad = lab[(lab < 0) | (lab >= gt.num_classes)]
        if len(bad):
            raise DataError(
                f"predictions[{k}]['labels']: class indices {sorted(set(bad.tolist()))[:20]} outside "
                f"0..{gt.num_classes - 1}"
            )
        boxes.append(b)
        scores.append(s)
        labels.append(lab)
        img.append(np.full(len(s), i, dtype=np.int64))
    if not boxes:
        return _empty_detections()
    xyxy = np.concatenate(boxes)
    return Detections(
        img=np.concatenate(img),
        labels=np.concatenate(labels),
        xywh=_xyxy_to_xywh(xyxy),
        xyxy=xyxy,
        scores=np.concatenate(scores),
    )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _from_coco_results(results: Any, gt: GroundTruth, source: str, masks: bool = False) -> Detections:
    if isinstance(results, dict) and "annotations" in results:
        results = results["annotations"]
    if not isinstance(results, list):
        raise DataError(f"{source}: a COCO results file must hold a list of detections")
    n = len(results)
    if n == 0:
        d = _empty_detections()
        if masks:
            d.masks, d.area = RLEArray.from_rles([]), np.zeros(0)
        return d
    # pycocotools' loadRes: results with boxes keep them (and their area); mask-only results get
    # the box and the area of their masks.
    with_bbox = not masks or (isinstance(results[0], dict) and results[0].get("bbox", []) != [])
    fast = _coco_results_fast(results, with_bbox)
    if fast is not None:
        image_id, cat_id, xywh, scores = fast
    else:
        image_id, cat_id, xywh, scores = _coco_results_checked(results, source, with_bbox)
    d = _map_coco_ids(image_id, cat_id, xywh, scores, gt, source)
    if masks:
        d.masks = _result_masks(results, gt, d.img, source)
        if with_bbox:
            d.area = xywh[:, 2] * xywh[:, 3]
        else:
            d.xywh = d.masks.boxes.copy()
            d.xyxy = _xywh_to_xyxy(d.xywh)
            d.area = d.masks.areas.astype(np.float64)
    return d


def _result_masks(results: list[Any], gt: GroundTruth, img: np.ndarray, source: str) -> RLEArray:
    """The masks of COCO results: RLE objects (compressed counts strings read in one pass) or polygons."""
    segs = [r.get("segmentation") if isinstance(r, dict) else None for r in results]
    try:
        if all(isinstance(sg, dict) and isinstance(sg.get("counts"), (str, bytes)) for sg in segs):
            counts, offsets = strings_to_counts([sg["counts"] for sg in segs])
            sizes = np.array([sg["size"] for sg in segs], dtype=np.int64).reshape(-1, 2)
            out = RLEArray(counts, offsets, sizes)
        else:
            bad = [k for k, sg in enumerate(segs) if sg is None]
            if bad:
                raise DataError(f"{source}: detection {bad[0]} has no segmentation (segm evaluation)")
            hw = gt.image_hw[img] if gt.image_hw is not None else np.zeros((len(segs), 2), dtype=np.int64)
            out = segmentations_to_array(segs, hw[:, 0], hw[:, 1])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{source}: detection segmentation cannot be read ({e})") from None
    _warn_sizes(out, gt, img, source)
    return out


def _warn_sizes(m: RLEArray, gt: GroundTruth, img: np.ndarray, source: str) -> None:
    if gt.image_hw is None or len(img) == 0:
        return
    off = (m.sizes != gt.image_hw[img]).any(1)
    if off.any():
        k = int(np.flatnonzero(off)[0])
        log.warning(
            "%s: %d detection mask(s) differ in size from their image (first: detection %d, %s vs %s); "
            "they match nothing",
            source, int(off.sum()), k, m.sizes[k].tolist(), gt.image_hw[img[k]].tolist(),
        )


def _coco_results_fast(results: list[Any], with_bbox: bool = True) -> tuple[np.ndarray, ...] | None:
    """Vectorised parse of a well-formed results list; None when anything looks wrong."""
    try:
        image_id = np.array([r["image_id"] for r in results])
        cat_id = np.array([r["category_id"] for r in results])
        xywh = np.array([r["bbox"] for r in results]) if with_bbox else np.zeros((len(results), 4))
        scores = np.array([r["score"] for r in results])
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    n = len(results)
    for arr in (image_id, cat_id):
        if arr.shape != (n,) or arr.dtype.kind not in "iu":
            return None
    if (
        xywh.shape != (n, 4)
        or xywh.dtype.kind not in "iuf"
        or scores.shape != (n,)
        or scores.dtype.kind not in "iuf"
    ):
        return None
    xywh = xywh.astype(np.float64)
    scores = scores.astype(np.float64)
    if not (np.isfinite(xywh).all() and np.isfinite(scores).all()):
        return None
    return image_id.astype(np.int64), cat_id.astype(np.int64), xywh, scores


def _coco_results_checked(results: list[Any], source: str, with_bbox: bool = True) -> tuple[np.ndarray, ...]:
    """Detection-by-detection parse that names the first malformed entry."""
    n = len(results)
    image_id = np.empty(n, dtype=np.int64)
    cat_id = np.empty(n, dtype=np.int64)
    xywh = np.empty((n, 4), dtype=np.float64)
    scores = np.empty(n, dtype=np.float64)
    for k, r in enumerate(results):
        if not isinstance(r, dict):
            raise DataError(f"{source}: detection {k} is not an object")
        keys = ("image_id", "category_id", "bbox", "score") if with_bbox else ("image_id", "category_id", "score")
        missing = [key for key in keys if key not in r]
        if missing:
            raise DataError(f"{source}: detection {k} misses key(s) {missing}")
        b, s = r.get("bbox", [0.0, 0.0, 0.0, 0.0]), r["score"]
        if not isinstance(b, (list, tuple)) or len(b) != 4 or not all(_is_number(v) for v in b):
            raise DataError(f"{source}: detection {k}: bbox must be 4 numbers [x, y, w, h], got {b!r}")
        if not all(math.isfinite(v) for v in b):
            raise DataError(f"{source}: detection {k}: bbox has non-finite values {b!r}")
        if not _is_number(s) or not math.isfinite(s):
            raise DataError(f"{source}: detection {k}: score must be a finite number, got {s!r}")
        for key in ("image_id", "category_id"):
            v = r[key]
            if not _is_number(v) or int(v) != v:
                raise DataError(f"{source}: detection {k}: {key} must be an integer, got {v!r}")
        image_id[k] = int(r["image_id"])
        cat_id[k] = int(r["category_id"])
        xywh[k] = b
        scores[k] = s
    return image_id, cat_id, xywh, scores


def _map_coco_ids(
    image_id: np.ndarray,
    cat_id: np.ndarray,
    xywh: np.ndarray,
    scores: np.ndarray,
    gt: GroundTruth,
    source: str,
) -> Detections:
    """Original image / category ids -> positions in ``gt``; DataError naming unknown ids."""
    n = len(image_id)
    ids = gt.image_ids
    order = np.argsort(ids, kind="stable")
    pos = np.searchsorted(ids[order], image_id).clip(0, max(len(ids) - 1, 0))
    known = (ids[order][pos] == image_id) if len(ids) else np.zeros(n, dtype=bool)
    if not known.all():
        bad = sorted(set(image_id[~known].tolist()))
        raise DataError(f"{source}: detections on image ids not in the ground truth: {bad[:20]}")
    img = order[pos]
    cids = np.asarray(gt.class_ids, dtype=np.int64)
    corder = np.argsort(cids, kind="stable")
    cpos = np.searchsorted(cids[corder], cat_id).clip(0, max(len(cids) - 1, 0))
    cknown = (cids[corder][cpos] == cat_id) if len(cids) else np.zeros(n, dtype=bool)
    if not cknown.all():
        bad = sorted(set(cat_id[~cknown].tolist()))
        raise DataError(f"{source}: detections with category ids not in the ground truth: {bad[:20]}")
    return Detections(
        img=img.astype(np.int64),
        labels=corder[cpos].astype(np.int64),
        xywh=xywh,
        xyxy=_xywh_to_xyxy(xywh),
        scores=scores,
    )


def load_detections(dt: Any, gt: GroundTruth, masks: bool = False) -> Detections:
    """Detections from prediction dicts, a COCO results list, or a COCO results json path.

    ``masks`` (segm evaluation): results must carry a ``segmentation`` (RLE, compressed or not, or
    polygons), prediction dicts ``"masks"`` ([K, H, W] arrays in original image pixels, nonzero, or
    above 0.5 when floating, is inside; or RLE objects).
    """
    if isinstance(dt, Detections):
        if masks and dt.masks is None:
            raise DataError("detections: segm evaluation needs masks, and these detections have none")
        return dt
    if isinstance(dt, (str, Path)):
        path = Path(dt)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            raise DataError(f"{path}: detections file not found") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid json ({e})") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot be read ({e})") from None
        return _from_coco_results(data, gt, str(path), masks)
    if isinstance(dt, (list, tuple)):
        dt = list(dt)
        if dt and isinstance(dt[0], dict) and ("bbox" in dt[0] or "segmentation" in dt[0]):
            return _from_coco_results(dt, gt, "detections", masks)
        d = _from_prediction_dicts(dt, gt)
        if masks:
            _prediction_masks(dt, gt, d)
        return d
    raise ConfigError(
        f"detections must be a list of prediction dicts, a COCO results list or a json path, got {type(dt).__name__}"
    )


def _prediction_masks(preds: list[Any], gt: GroundTruth, d: Detections) -> None:
    """``masks`` of prediction dicts into ``d`` (in place); the area is the box's, as for results with boxes."""
    from odkit.ops.rle import RLE, encode, from_coco

    rles: list[RLE] = []
    for k, p in enumerate(preds):
        if "masks" not in p:
            raise DataError(f"predictions[{k}]: segm evaluation needs 'masks'")
        m = p["masks"]
        n = len(_to_numpy(p["scores"], "scores").reshape(-1))
        if isinstance(m, (list, tuple)) and (not m or isinstance(m[0], (dict, RLE))):
            items = [x if isinstance(x, RLE) else from_coco(x) for x in m]
        else:
            arr = _to_numpy(m, f"predictions[{k}]['masks']")
            if arr.ndim != 3:
                raise DataError(f"predictions[{k}]['masks']: expected [K, H, W], got shape {list(arr.shape)}")
            arr = arr > 0.5 if np.issubdtype(arr.dtype, np.floating) else arr != 0
            items = encode(arr) if len(arr) else []
        if len(items) != n:
            raise DataError(f"predictions[{k}]: {len(items)} masks for {n} detections")
        rles.extend(items)
    d.masks = RLEArray.from_rles(rles)
    d.area = d.xywh[:, 2] * d.xywh[:, 3]
    _warn_sizes(d.masks, gt, d.img, "predictions")
