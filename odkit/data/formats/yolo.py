"""YOLO txt reader and writer (``data.yaml``, ``images/<split>/``, ``labels/<split>/*.txt``).

A label line is ``class cx cy w h`` normalised to [0, 1] by the image width/height; a polygon
line ``class x1 y1 x2 y2 ...`` (YOLO segmentation) is an instance mask, kept as a polygon in pixels,
with its bounds as box. The image size comes from the
image header (read with :func:`odkit.data.probe.probe_image`, EXIF orientation applied, as the
loader does); boxes are stored as ``xyxy``
pixels. When the size of an image cannot be read, its boxes stay normalised and its
width/height are 0 (the missing or unreadable image is a reported problem).

``data.yaml`` keys: ``path`` (dataset root; relative to the yaml, default its folder),
``train``/``val``/``test`` (image folders, txt lists of images, or lists of those; relative to
``path``) and ``names`` (a list, or a dict ``{index: name}``). The label of a YOLO class index is
its position in the sorted index list; ``class_ids`` keep the indices.
"""

from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from odkit.data.formats._common import (
    flags_dropped,
    placed_images,
    progress,
)
from odkit.data.formats.walk import walk_files
from odkit.data.masks import is_polygons, polygons_from_mask
from odkit.data.probe import IMAGE_EXTS, probe_image
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import DataError

log = logging.getLogger(__name__)

YAML_NAMES = ("data.yaml", "dataset.yaml", "data.yml")


def folder_yaml(p: Path) -> Path | None:
    """The dataset yaml of folder ``p``: a data.yaml (or dataset.yaml), else the only ``.yaml`` /
    ``.yml`` of the folder when the folder holds ``images/`` (``coco8.yaml`` beside ``images/`` and
    ``labels/``)."""
    for n in YAML_NAMES:
        if (p / n).is_file():
            return p / n
    ymls = sorted(q for q in p.glob("*.y*ml") if q.suffix.lower() in (".yaml", ".yml") and q.is_file())
    if len(ymls) == 1 and (p / "images").is_dir():
        return ymls[0]
    return None


def find_yaml(path: str | Path) -> Path:
    """The data.yaml of a YOLO dataset given the yaml itself or its folder."""
    p = Path(path)
    if p.is_dir():
        y = folder_yaml(p)
        if y is None:
            raise DataError(f"{p}: no data.yaml in this folder")
        return y
    return p


def load_yaml(path: Path) -> dict[str, Any]:
    """``yaml.safe_load`` a dataset yaml; DataError when it is not a mapping."""
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise DataError(f"{path}: invalid yaml ({e})") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{path}: expected a mapping of keys, got {type(cfg).__name__}")
    return cfg


# Keys a data set yaml may hold: YOLO / Ultralytics / Roboflow ones, then odkit's own.
KNOWN_KEYS = (
    "path", "train", "val", "valid", "validation", "test", "testing", "trainval", "dev", "minival",
    "names", "nc", "download", "roboflow", "kpt_shape", "flip_idx", "channels", "yaml_file",
    "license", "author", "url", "version", "date", "description", "info", "contributor", "year",
    "format", "root", "image_root", "columns", "delimiter", "one_based",
)


def check_keys(cfg: dict[str, Any], path: Path) -> None:
    """DataError for a key of a data set yaml that odkit does not know, naming the closest known
    key (a typo such as ``vall:`` would otherwise be ignored without a word)."""
    import difflib

    for k in cfg:
        if str(k) in KNOWN_KEYS:
            continue
        close = difflib.get_close_matches(str(k), KNOWN_KEYS, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"{path}: unknown key {k!r}{hint}; known keys: {', '.join(KNOWN_KEYS)}")


def load_data_yaml(path: Path) -> dict[str, Any]:
    """:func:`load_yaml` a data set yaml and refuse unknown keys (:func:`check_keys`)."""
    cfg = load_yaml(path)
    check_keys(cfg, path)
    return cfg


def parse_names(names: Any, where: str) -> tuple[list[str], list[int]]:
    """YOLO ``names`` (list or ``{index: name}``) -> (class names, class indices), sorted by index."""
    if isinstance(names, list | tuple):
        return [str(n) for n in names], list(range(len(names)))
    if isinstance(names, dict):
        try:
            items = sorted((int(k), str(v)) for k, v in names.items())
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'names' keys must be integer class indices") from None
        return [v for _, v in items], [k for k, _ in items]
    raise DataError(f"{where}: 'names' must be a list or a dict of index: name, got {names!r}")


def label_path(img: Path) -> Path:
    """The label file of an image: the last ``images`` folder becomes ``labels``, suffix ``.txt``."""
    parts = list(img.parts)
    for k in range(len(parts) - 2, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _list_images(root: Path, entry: str, where: str) -> tuple[list[Path], list[Path]]:
    """Images of one split entry, and the image folders it names (for orphan-label checks)."""
    p = Path(entry)
    if not p.is_absolute():
        p = root / p
        up = Path(entry).parts
        if not p.exists() and up and up[0] == ".." and (root / Path(*up[1:])).exists():
            log.info("%s: %s not found; using %s (Roboflow exports name their splits '../train/images')",
                     where, p, root / Path(*up[1:]))
            p = root / Path(*up[1:])
    if p.is_dir():
        imgs = walk_files(p, IMAGE_EXTS)
        return imgs, [p]
    if p.is_file() and p.suffix == ".txt":
        out = []
        for line in p.read_text().splitlines():
            s = line.strip()
            if not s:
                continue
            q = Path(s)
            if not q.is_absolute():
                q = (p.parent / s) if (p.parent / s).exists() or not (root / s).exists() else root / s
            out.append(q)
        return out, []
    if p.is_file():
        return [p], []
    raise DataError(f"{where}: split path {entry!r} not found (looked for {p})")


def _parse_label(
    text: str, lbl: Path, cls_index: dict[int, int], polys: list[Any] | None = None
) -> tuple[list[int], list[str], list[list[float]], list[Problem]]:
    """Labels, raw classes, normalised boxes and problems of a label file; the normalised polygon
    of each line (None for a box line) is appended to ``polys`` when given."""
    labels: list[int] = []
    raws: list[str] = []
    boxes: list[list[float]] = []
    problems: list[Problem] = []
    for ln, line in enumerate(text.splitlines(), 1):
        tok = line.split()
        if not tok:
            continue
        try:
            vals = [float(t) for t in tok[1:]]
            c = float(tok[0])
            if not (math.isfinite(c) and c == int(c)):
                raise ValueError
        except ValueError:
            problems.append(
                Problem("malformed_line", str(lbl), f"line {ln}: {line.strip()!r} is not numeric", ln)
            )
            continue
        poly = None
        if len(vals) == 4:
            cx, cy, w, h = vals
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif len(vals) >= 6 and len(vals) % 2 == 0:
            xs, ys = vals[0::2], vals[1::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
            poly = np.asarray(vals, dtype=np.float64)
        else:
            problems.append(
                Problem(
                    "malformed_line",
                    str(lbl),
                    f"line {ln}: expected 'class cx cy w h', got {len(tok)} fields",
                    ln,
                )
            )
            continue
        if not all(math.isfinite(v) for v in vals):
            problems.append(
                Problem("non_finite_box", str(lbl), f"line {ln}: non-finite value in {line.strip()!r}", ln)
            )
        labels.append(cls_index.get(int(c), -1))
        raws.append(tok[0])
        boxes.append(box)
        if polys is not None:
            polys.append(poly)
    return labels, raws, boxes, problems


def _other_layout(root: Path, entries: list[Any], names: list[str], where: str) -> AnnotationSet | None:
    """The split entries read in the layout detected from their paths (VOC xml beside the images,
    COCO json, CSV, ...), as :func:`odkit.data.formats.load_dataset` would read those folders; None
    when an entry is in no other layout. Labels follow ``names``."""
    from odkit.data.formats import detect_format, load_dataset
    from odkit.data.formats._common import apply_names
    from odkit.data.splits import merge_splits

    parts = []
    for e in entries:
        p = Path(str(e))
        p = p if p.is_absolute() else root / p
        try:
            fmt = detect_format(p)
        except DataError:
            return None
        if fmt in ("yolo", "spec"):
            return None
        a = load_dataset(p, format=fmt)
        a.splits = {}
        parts.append(("part", apply_names(a, names)))
        log.debug("%s: no YOLO label files; %s read as %s", where, p, fmt)
    out = parts[0][1] if len(parts) == 1 else merge_splits(parts, root=root)
    out.splits = {}
    out.problems.append(Problem("layout_detected", where, f"no YOLO label files: read as {out.source} "
                                "(detected from the split's folder)", severity="info"))
    return out


def read_yolo_split(
    root: Path,
    entries: Any,
    names: list[str],
    class_ids: list[int],
    where: str,
) -> AnnotationSet:
    """Read the images of ``entries`` (folders / txt lists relative to ``root``) and their labels."""
    if isinstance(entries, str | Path):
        entries = [entries]
    imgs: list[Path] = []
    dirs: list[Path] = []
    for e in entries:
        a, b = _list_images(root, str(e), where)
        imgs += a
        dirs += b
    if imgs and not any(label_path(q).is_file() for q in imgs):
        other = _other_layout(root, entries, names, where)
        if other is not None:
            return other
        raise DataError(f"{where}: none of the {len(imgs)} images has a YOLO label file (expected e.g. "
                        f"{label_path(imgs[0])}) and no other annotation layout was found in "
                        f"{', '.join(str(e) for e in entries)}")
    problems: list[Problem] = []
    # Label files with no image, in the labels folder of each image folder.
    for d in dirs:
        ld = label_path(d / "x.jpg").parent
        if ld.is_dir():
            stems = {q.with_suffix("").relative_to(d).as_posix() for q in walk_files(d)}
            for t in walk_files(ld, (".txt",)):
                if t.name == "classes.txt":
                    continue
                if t.with_suffix("").relative_to(ld).as_posix() not in stems:
                    problems.append(
                        Problem(
                            "label_without_image",
                            str(t),
                            f"label file has no image in {d}; its boxes are not loaded",
                            severity="warning",
                        )
                    )
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as ex:
        infos = list(progress(ex.map(probe_image, imgs), len(imgs), "reading image sizes"))
    cls_index = {c: k for k, c in enumerate(class_ids)}
    files, widths, heights, counts = [], [], [], []
    all_labels: list[int] = []
    all_raw: list[str] = []
    all_boxes: list[list[float]] = []
    all_masks: list[Any] = []
    n_label_files = 0
    for img, info in progress(zip(imgs, infos), len(imgs), "reading YOLO labels"):
        w, h = info.display_size if info.error is None or info.truncated else (0, 0)
        try:
            files.append(img.relative_to(root).as_posix())
        except ValueError:
            files.append(str(img))
        widths.append(w)
        heights.append(h)
        lbl = label_path(img)
        try:
            text = lbl.read_text()
            n_label_files += 1
        except FileNotFoundError:
            counts.append(0)
            continue
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{lbl}: cannot read label file ({e})") from None
        polys: list[Any] = []
        labels, raws, boxes, probs = _parse_label(text, lbl, cls_index, polys)
        problems += probs
        if w > 0 and h > 0:
            boxes = [[b[0] * w, b[1] * h, b[2] * w, b[3] * h] for b in boxes]
            scale = np.array([w, h], dtype=np.float64)
            # Pixels rounded to 1e-6: what normalising to 10 decimals lost (x.5 pixels stay x.5).
            all_masks += [None if p is None else [np.round((p.reshape(-1, 2) * scale).reshape(-1), 6)] for p in polys]
        else:
            all_masks += [None] * len(polys)
        all_labels += labels
        all_raw += raws
        all_boxes += boxes
        counts.append(len(labels))
    if n_label_files < len(imgs):
        problems.append(Problem("negative_by_convention", where, f"{len(imgs) - n_label_files} of {len(imgs)} images "
                                "have no label file: negatives (no boxes) by the YOLO convention", severity="info"))
    a = len(all_labels)
    labels_arr = np.asarray(all_labels, dtype=np.int64)
    cnt = np.asarray(counts, dtype=np.int64)
    offsets = np.zeros(len(files) + 1, dtype=np.int64)
    np.cumsum(cnt, out=offsets[1:])
    raw_names = {}
    img_of_row = np.repeat(np.arange(len(files)), cnt)
    for r in np.flatnonzero(labels_arr < 0):
        raw_names[int(r)] = all_raw[r]
        i = int(img_of_row[r])
        problems.append(
            Problem(
                "unknown_class",
                str(label_path(imgs[i])),
                f"class index {all_raw[r]} is not in names (indices {class_ids[:10]}{'...' if len(class_ids) > 10 else ''})",
                annotation=int(r - offsets[i]),
            )
        )
    return AnnotationSet(
        root=root,
        files=files,
        image_ids=np.arange(len(files), dtype=np.int64),
        widths=np.asarray(widths, dtype=np.int64),
        heights=np.asarray(heights, dtype=np.int64),
        offsets=offsets,
        boxes=np.asarray(all_boxes, dtype=np.float32).reshape(a, 4),
        labels=labels_arr,
        iscrowd=np.zeros(a, dtype=bool),
        difficult=np.zeros(a, dtype=bool),
        ann_ids=np.arange(a, dtype=np.int64),
        areas=np.full(a, np.nan, dtype=np.float32),
        class_names=names,
        class_ids=class_ids,
        source="yolo",
        raw_names=raw_names,
        problems=problems,
        ann_files=[str(label_path(q)) for q in imgs],
        masks=all_masks if any(m is not None for m in all_masks) else None,
    )


def dataset_root(yaml_path: Path, cfg: dict[str, Any]) -> Path:
    """The root folder of a YOLO data.yaml (``path`` relative to the yaml; its folder by default)."""
    base = yaml_path.parent
    p = cfg.get("path")
    if not p:
        return base
    root = Path(p)
    if not root.is_absolute():
        root = base / root
    if not root.is_dir():
        log.warning("%s: path %s does not exist; using the yaml's folder %s", yaml_path, root, base)
        return base
    return root


SPLIT_KEYS = ("train", "val", "valid", "validation", "test", "trainval", "dev")


def yolo_splits(cfg: dict[str, Any]) -> list[str]:
    """The split keys a data.yaml (or odkit YAML) defines, in a fixed order."""
    return [k for k in SPLIT_KEYS if cfg.get(k)]


def read_yolo(path: str | Path, split: str | None = "train") -> AnnotationSet:
    """Read split ``split`` (a key of data.yaml) of a YOLO dataset; ``None``: every split, with
    ``splits`` recording which images each key names."""
    yp = find_yaml(path)
    cfg = load_data_yaml(yp)
    if "names" not in cfg:
        raise DataError(f"{yp}: no 'names' key (the class list is required)")
    names, class_ids = parse_names(cfg["names"], str(yp))
    root = dataset_root(yp, cfg)
    if split is None:
        from odkit.data.splits import merge_splits

        keys = yolo_splits(cfg)
        if not keys:
            raise DataError(f"{yp}: no split keys ({', '.join(SPLIT_KEYS)}) name any images")
        parts = [(k, read_yolo_split(root, cfg[k], names, class_ids, f"{yp}:{k}")) for k in keys]
        aset = merge_splits(parts, root=root)
    else:
        if cfg.get(split) is None:
            raise DataError(f"{yp}: no {split!r} split (splits present: {yolo_splits(cfg)})")
        aset = read_yolo_split(root, cfg[split], names, class_ids, f"{yp}:{split}")
    if "nc" in cfg and cfg["nc"] != len(names):
        aset.problems.append(
            Problem(
                "class_count_mismatch",
                str(yp),
                f"nc={cfg['nc']} but names has {len(names)} entries",
                severity="warning",
            )
        )
    log.debug("read YOLO %s split=%s: %s", yp, split, aset.summary())
    return aset


def _fmt(v: float, digits: int = 8) -> str:
    s = f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _one_polygon(seg: Any) -> np.ndarray:
    """One flat polygon of a mask: its polygons joined by bridges that go from the first point of
    each polygon to the next and back (traversed twice, they cover nothing); an RLE is traced."""
    from odkit.ops.rle import decode

    polys = list(seg) if is_polygons(seg) else polygons_from_mask(decode(seg))
    polys = [np.asarray(p, dtype=np.float64).reshape(-1) for p in polys if len(p) >= 2]
    if len(polys) <= 1:
        return polys[0] if polys else np.zeros(0)
    starts = [p[:2] for p in polys]
    parts = []
    for p, st in zip(polys, starts):
        parts += [p, st]
    parts += starts[-2:0:-1]
    return np.concatenate(parts)


def write_yolo(
    aset: AnnotationSet,
    out: str | Path,
    copy_images: bool = True,
    split: str | None = None,
    names: list[str] | None = None,
) -> list[Problem]:
    """Write ``aset`` as YOLO under ``out`` (``images/<split>``, ``labels/<split>``, ``data.yaml``).

    ``split`` defaults to ``"train"``; an existing data.yaml in ``out`` is updated, so several
    splits can be written into one tree. Class indices are the contiguous labels. Images are
    copied (or symlinked when ``copy_images`` is False). Returns the problems met: annotations
    that cannot be written (unknown class, unknown image size) and flags YOLO cannot store.
    ``names``: output file name per image (default :func:`output_names`). A box with a mask is a
    segmentation line: its polygon (several polygons joined into one by zero-width bridges, which
    rasterise to the same pixels), an RLE mask traced to its outlines (:func:`polygons_from_mask`).
    """
    out = Path(out)
    split = split or "train"
    problems: list[Problem] = []
    img_dir, lbl_dir = out / "images" / split, out / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lbl_dir.mkdir(parents=True, exist_ok=True)
    for i, name in placed_images(aset, img_dir, names, copy_images, problems, "writing YOLO"):
        rec = aset[i]
        w, h = rec.width, rec.height
        if (w <= 0 or h <= 0) and len(rec.boxes):
            w, h = probe_image(rec.path).display_size
        lines = []
        s = int(aset.offsets[i])
        for k in range(len(rec.boxes)):
            lab = int(rec.labels[k])
            if lab < 0:
                raw = aset.raw_names.get(s + k, "")
                if not raw.lstrip("-").isdigit():
                    problems.append(
                        Problem(
                            "not_written",
                            str(rec.path),
                            f"box {k} of unknown class {raw!r} cannot be written as YOLO; skipped",
                            k,
                        )
                    )
                    continue
                cls = raw
            else:
                cls = str(lab)
            if w <= 0 or h <= 0:
                problems.append(
                    Problem(
                        "not_written",
                        str(rec.path),
                        f"box {k}: image size unknown, cannot normalise; skipped",
                        k,
                    )
                )
                continue
            x1, y1, x2, y2 = (float(v) for v in rec.boxes[k])
            vals = ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)
            seg = rec.masks[k] if rec.masks is not None else None
            if seg is not None:
                poly = _one_polygon(seg)
                if len(poly) >= 6:
                    vals = tuple((poly.reshape(-1, 2) / np.array([w, h], dtype=np.float64)).reshape(-1))
            digits = 8 if len(vals) == 4 else 10
            lines.append(" ".join([cls, *(_fmt(v, digits) for v in vals)]))
        (lbl_dir / f"{Path(name).stem}.txt").write_text("".join(line + "\n" for line in lines))
    problems += flags_dropped(aset, out, "YOLO")
    yp = out / "data.yaml"
    cfg = load_yaml(yp) if yp.exists() else {}
    cfg["path"] = str(out.resolve())
    cfg[split] = f"images/{split}"
    cfg["nc"] = len(aset.class_names)
    cfg["names"] = list(aset.class_names)
    yp.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    log.debug("wrote YOLO %s split %s (%d images)", out, split, len(aset))
    return problems
