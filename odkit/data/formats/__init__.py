"""Data set layouts: readers, writers, detection, splits.

``load_dataset(path)`` reads any supported layout into an :class:`~odkit.data.AnnotationSet`
(boxes xyxy float32 pixels, continuous coordinates) with ``splits`` as the source defines them:

- ``coco``: a COCO json, or a folder of them (one per split; also ``<split>/_annotations.coco.json``);
- ``voc``: a VOC root (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<split>.txt``);
- ``voc-flat``: VOC xml beside the images, flat or in split folders (LabelImg);
- ``paired``: an image folder and an annotation folder (VOC xml / LabelMe json) paired by stem;
- ``csv``: CSV files of boxes with a header (one file per split);
- ``labelme``: LabelMe json files; ``cvat``: CVAT for images XML 1.1;
- ``pascal-txt``: PASCAL VOC 1.x text annotations (VOC2005, PennFudan);
- ``text``: text boxes described by a column spec (``columns="file,x,y,w,h,label"``);
- ``yolo``: a YOLO data.yaml; ``spec``: an odkit dataset YAML.

Annotation files that exist but that no reader understands are an error naming them, never
negatives.

Parse-level problems are collected in ``aset.problems``; only files that cannot be parsed at all
raise :class:`~odkit.errors.DataError`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from odkit.data.formats._common import output_names
from odkit.data.formats.coco import coco_split_files, read_coco, write_coco
from odkit.data.formats.csv_boxes import read_csv_boxes, write_csv_boxes
from odkit.data.formats.cvat import read_cvat, write_cvat
from odkit.data.formats.detect import detect_format
from odkit.data.formats.labelme import read_labelme, write_labelme
from odkit.data.formats.paired import read_paired, write_paired
from odkit.data.formats.pascal_txt import read_pascal_txt, write_pascal_txt
from odkit.data.formats.spec import read_spec, spec_splits
from odkit.data.formats.text_columns import ColumnSpec, parse_columns, read_text_columns, write_text_columns
from odkit.data.formats.voc import read_voc, splits_of, write_voc
from odkit.data.formats.voc_flat import read_voc_flat, write_voc_flat
from odkit.data.formats.yolo import find_yaml, load_data_yaml, read_yolo, write_yolo, yolo_splits
from odkit.data.splits import UNASSIGNED, merge_splits, split_word, take_split, unassigned
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMATS = ("coco", "voc", "voc-flat", "paired", "csv", "labelme", "cvat", "pascal-txt", "text", "yolo", "spec")
WRITE_FORMATS = ("coco", "voc", "voc-flat", "paired", "csv", "labelme", "cvat", "pascal-txt", "text", "yolo")
Writer = Callable[..., list[Problem]]
WRITERS: dict[str, Writer] = {
    "coco": write_coco,
    "voc": write_voc,
    "voc-flat": write_voc_flat,
    "paired": write_paired,
    "csv": write_csv_boxes,
    "labelme": write_labelme,
    "cvat": write_cvat,
    "pascal-txt": write_pascal_txt,
    "text": write_text_columns,
    "yolo": write_yolo,
}
Columns = str | ColumnSpec | None


def _check_format(fmt: str, allowed: tuple[str, ...]) -> str:
    fmt = fmt.lower().replace("_", "-")
    if fmt not in allowed:
        raise ConfigError(f"unknown dataset format {fmt!r}; expected one of {', '.join(allowed)}")
    return fmt


def _pick_coco(files: dict[str, Path], where: Path, split: str) -> Path:
    """The json of ``split``: exact name, then the same split word (``val`` ~ ``val2017``), then a
    name containing it."""
    if split in files:
        return files[split]
    for f in files.values():
        if f.stem == split:
            return f
    p = Path(split)
    if p.suffix == ".json" and p.is_file():
        return p
    for test in (
        lambda k: split_word(k) is not None and k.lower().rstrip("0123456789_-") == split.lower(),
        lambda k: k.endswith(f"_{split}"),
        lambda k: split in k,
    ):
        hits = [k for k in files if test(k)]
        if hits:
            return files[sorted(hits)[0]]
    raise DataError(f"{where}: no COCO json for split {split!r} among {[f.name for f in files.values()]}")


def _read_coco_path(p: Path, split: str | None, image_root: str | Path | None) -> AnnotationSet:
    if p.is_file():
        return read_coco(p, image_root=image_root)
    files = coco_split_files(p)
    if not files:
        raise DataError(f"{p}: no COCO json here (nor in annotations/ or split folders)")
    if split is not None:
        return read_coco(_pick_coco(files, p, split), image_root=image_root)
    if "" in files:
        return read_coco(files[""], image_root=image_root)
    return merge_splits([(k, read_coco(f, image_root=image_root)) for k, f in files.items()])


def _read_whole(
    fmt: str, p: Path, image_root: str | Path | None, labels: str | Path | None, columns: Columns = None
) -> AnnotationSet:
    if fmt == "voc-flat":
        return read_voc_flat(p)
    if fmt == "paired":
        return read_paired(p, labels=labels, columns=columns)
    if fmt == "pascal-txt":
        return read_pascal_txt(p)
    if fmt == "text":
        return read_text_columns(p, columns, image_root=image_root)
    if fmt == "csv":
        return read_csv_boxes(p, image_root=image_root)
    if fmt == "labelme":
        return read_labelme(p, image_root=image_root)
    return read_cvat(p, image_root=image_root)


def load_dataset(
    path: str | Path,
    format: str | None = None,
    split: str | None = None,
    image_root: str | Path | None = None,
    labels: str | Path | None = None,
    columns: Columns = None,
) -> AnnotationSet:
    """Load a data set, or one split of it, into an :class:`AnnotationSet`.

    ``split=None``: every image the source names, with ``aset.splits`` recording the splits (VOC
    root: every xml; YOLO / odkit YAML: every split key; a COCO folder: every json). With
    ``split`` only that split is returned (its ``splits`` is empty). ``image_root``: where image
    names are resolved (COCO ``file_name``, CSV, LabelMe, CVAT). ``labels``: the annotation folder
    of the ``paired`` layout, ``path`` being the image folder. ``columns``: the column spec of text
    annotations (a string such as ``"file,x,y,w,h,label"`` or a
    :class:`~odkit.data.formats.text_columns.ColumnSpec` with delimiter and base).
    """
    p = Path(path)
    fmt = _check_format(format, FORMATS) if format else detect_format(p, labels=labels, columns=columns)
    if fmt == "coco":
        return _read_coco_path(p, split, image_root)
    if fmt == "voc":
        return read_voc(p, split=split)
    if fmt == "yolo":
        return read_yolo(p, split=split)
    if fmt == "spec":
        return read_spec(find_yaml(p), split=split)
    aset = _read_whole(fmt, p, image_root, labels, columns)
    return take_split(aset, split) if split is not None else aset


def load_split(path: str | Path, split: str, format: str | None = None, **kw: object) -> AnnotationSet:
    """Load the ``split`` part of a data set for training or evaluation.

    A single COCO json has no splits: the same file is returned for every split. Otherwise as
    :func:`load_dataset` with ``split``.
    """
    p = Path(path)
    fmt = _check_format(format, FORMATS) if format else detect_format(
        p, labels=kw.get("labels"), columns=kw.get("columns"))  # type: ignore[arg-type]
    if fmt == "coco" and p.is_file():
        log.debug("%s: COCO json used as the %s split", p, split)
        return read_coco(p, image_root=kw.get("image_root"))  # type: ignore[arg-type]
    return load_dataset(p, format=fmt, split=split, **kw)  # type: ignore[arg-type]


def list_splits(
    path: str | Path,
    format: str | None = None,
    image_root: str | Path | None = None,
    labels: str | Path | None = None,
    columns: Columns = None,
) -> list[str]:
    """Names of the splits a data set defines (empty when it defines none, e.g. one COCO json)."""
    p = Path(path)
    fmt = _check_format(format, FORMATS) if format else detect_format(p, labels=labels, columns=columns)
    if fmt == "coco":
        return [] if p.is_file() else [k for k in coco_split_files(p) if k]
    if fmt == "voc":
        return splits_of(p)
    if fmt == "yolo":
        return yolo_splits(load_data_yaml(find_yaml(p)))
    if fmt == "spec":
        return spec_splits(find_yaml(p))
    return sorted(_read_whole(fmt, p, image_root, labels, columns).splits)


def save_dataset(
    aset: AnnotationSet,
    out: str | Path,
    format: str,
    copy_images: bool = True,
    split: str | None = None,
    names: list[str] | None = None,
    columns: Columns = None,
) -> list[Problem]:
    """Write ``aset`` as one split (``split``, or the writer's default) in ``format`` under ``out``.

    COCO: ``out`` is the json path (or a folder: ``<out>/<split or 'annotations'>.json``) with
    images copied to ``images/`` beside it. VOC: a full tree with ``ImageSets/Main/<split or
    'all'>.txt``. YOLO: ``images/<split>``, ``labels/<split>`` and ``data.yaml`` (split default
    ``train``). VOC-flat / LabelMe: ``out/<split>/`` with images and annotations side by side;
    paired: ``out/images/<split>`` + ``out/annotations/<split>``; CSV: ``out/<split>_labels.csv``
    + ``out/images/``; CVAT: ``out/annotations.xml`` (split = subset) + ``out/images/``.
    Annotations that cannot be written are returned as problems, never dropped silently; other
    splits already in ``out`` are kept. ``names``: output file name per image. PASCAL 1.x text:
    ``out/Annotation/[<split>/]`` + ``out/Images/[<split>/]``; text: ``out/[<split>/]annotations.txt``
    in the ``columns`` spec (default ``file,x1,y1,x2,y2,label``) + ``images/`` beside it.
    """
    fmt = _check_format(format, WRITE_FORMATS)
    extra = {"columns": columns} if fmt == "text" and columns is not None else {}
    problems = WRITERS[fmt](aset, out, copy_images=copy_images, split=split, names=names, **extra)
    for pr in problems:
        log.warning("%s: %s (%s)", pr.kind, pr.message, pr.file)
    return problems


def save_splits(
    aset: AnnotationSet,
    out: str | Path,
    format: str,
    copy_images: bool = True,
    names: list[str] | None = None,
    columns: Columns = None,
) -> tuple[list[Problem], dict[str, int]]:
    """Write every split of ``aset`` (see :func:`save_dataset`); returns (problems, images per split).

    File names are chosen once over the whole set, so images of different splits never collide.
    Images in no split of a set that has splits are written as the split ``unassigned``. A set
    without splits is written as one split with the writer's default name (key ``""``).
    ``names``: output file name per image (default :func:`output_names` over the whole set).
    """
    fmt = _check_format(format, WRITE_FORMATS)
    if not aset.splits:
        return save_dataset(aset, out, fmt, copy_images, names=names, columns=columns), {"": len(aset)}
    if fmt == "coco" and Path(out).suffix.lower() == ".json" and len(aset.splits) > 1:
        raise ConfigError(
            f"{out}: {len(aset.splits)} splits ({', '.join(aset.splits)}) need a folder (one json per split); "
            "give a folder, or narrow with --split"
        )
    names = names or output_names(aset)
    parts = dict(aset.splits)
    left = unassigned(aset)
    if len(left):
        parts[UNASSIGNED] = left
    problems: list[Problem] = []
    counts: dict[str, int] = {}
    for split, members in parts.items():
        sub = aset.select_images(members)
        sub.splits = {}
        problems += save_dataset(sub, out, fmt, copy_images, split=split, names=[names[i] for i in members],
                                 columns=columns)
        counts[split] = len(members)
    return problems, counts


__all__ = [
    "FORMATS",
    "WRITE_FORMATS",
    "detect_format",
    "list_splits",
    "load_dataset",
    "load_split",
    "save_dataset",
    "save_splits",
    "read_coco",
    "write_coco",
    "read_voc",
    "write_voc",
    "read_yolo",
    "write_yolo",
    "read_spec",
    "read_voc_flat",
    "read_paired",
    "read_csv_boxes",
    "read_labelme",
    "read_cvat",
    "read_pascal_txt",
    "write_pascal_txt",
    "read_text_columns",
    "write_text_columns",
    "parse_columns",
    "ColumnSpec",
]
