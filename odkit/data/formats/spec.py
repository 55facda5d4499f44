"""The odkit dataset YAML: one file naming the format, the train/val data and the classes.

Example (all paths relative to the YAML's folder, or to ``root`` when given)::

    format: voc            # coco | voc | yolo | voc-flat | paired | csv | labelme | cvat | pascal-txt | text
    root: ../VOCdevkit/VOC2007
    train: trainval        # voc: split name or ImageSets txt; coco: json; yolo: image folder/txt
    val: test
    names: [aeroplane, bicycle, ...]   # optional for coco/voc; required for yolo without data.yaml
    image_root: images     # coco only, optional: where file_name is resolved

For voc-flat, paired, csv, labelme, cvat, pascal-txt and text, an entry is a file or folder of that
layout (read whole); text takes ``columns:`` (and ``delimiter:``, ``one_based:``). Unknown keys are
an error naming the closest known key. ``names`` fixes the label order: labels are positions in this list and annotations of
other classes are reported as ``unknown_class``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odkit.data.formats._common import apply_names
from odkit.data.structures import AnnotationSet
from odkit.errors import DataError

FORMATS = ("coco", "voc", "yolo", "voc-flat", "paired", "csv", "labelme", "cvat", "pascal-txt", "text")


def spec_splits(path: str | Path) -> list[str]:
    """The split entries an odkit dataset YAML defines (``train``, ``val``, ``test``, ...)."""
    from odkit.data.formats.yolo import load_data_yaml, yolo_splits

    return yolo_splits(load_data_yaml(Path(path)))


def is_spec(cfg: dict[str, Any]) -> bool:
    """Whether a loaded yaml mapping is an odkit dataset YAML (it has a ``format`` key)."""
    return isinstance(cfg, dict) and "format" in cfg


def read_spec(path: str | Path, split: str | None = "train") -> AnnotationSet:
    """Load split ``split`` (a key of the YAML, usually ``train`` or ``val``) of an odkit dataset
    YAML; ``None``: every split entry, with ``splits`` recording them."""
    if split is None:
        from odkit.data.splits import merge_splits

        keys = spec_splits(path)
        if not keys:
            raise DataError(f"{path}: no split entries (train, val, test, ...)")
        return merge_splits([(k, read_spec(path, k)) for k in keys])
    from odkit.data.formats.coco import read_coco
    from odkit.data.formats.voc import read_voc
    from odkit.data.formats.yolo import YAML_NAMES, load_data_yaml, load_yaml, parse_names, read_yolo_split

    path = Path(path)
    cfg = load_data_yaml(path)
    fmt = str(cfg.get("format", "")).lower()
    if fmt not in FORMATS:
        raise DataError(f"{path}: 'format' must be one of {FORMATS}, got {cfg.get('format')!r}")
    root = path.parent / cfg["root"] if cfg.get("root") else path.parent
    entry = cfg.get(split)
    if entry is None:
        keys = [k for k in ("train", "val", "test") if cfg.get(k) is not None]
        raise DataError(f"{path}: no {split!r} entry (entries present: {keys})")
    names = None
    class_ids = None
    if cfg.get("names") is not None:
        names, class_ids = parse_names(cfg["names"], str(path))
    where = f"{path}:{split}"
    if fmt == "coco":
        img_root = cfg.get("image_root")
        aset = read_coco(root / entry, image_root=root / img_root if img_root else None)
        if names is not None:
            aset = apply_names(aset, names)
    elif fmt == "voc":
        e = str(entry)
        split_arg = str(root / e) if e.endswith(".txt") else e
        aset = read_voc(root, split=split_arg, names=names)
    elif fmt != "yolo":
        from odkit.data.formats import load_dataset
        from odkit.data.formats.text_columns import parse_columns

        img_root = root / cfg["image_root"] if cfg.get("image_root") else None
        columns = None
        if cfg.get("columns"):
            columns = parse_columns(str(cfg["columns"]), cfg.get("delimiter"), bool(cfg.get("one_based")))
        aset = load_dataset(root / str(entry), format=fmt, image_root=img_root, columns=columns)
        aset.splits = {}
        if names is not None:
            aset = apply_names(aset, names)
    else:
        if names is None:
            for n in YAML_NAMES:
                if (root / n).is_file():
                    inner = load_yaml(root / n)
                    if "names" in inner:
                        names, class_ids = parse_names(inner["names"], str(root / n))
                        break
        if names is None or class_ids is None:
            raise DataError(f"{path}: a yolo dataset needs 'names' (in this YAML or a data.yaml in {root})")
        aset = read_yolo_split(root, entry, names, class_ids, where)
    return aset
