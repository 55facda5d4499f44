"""COCO json, Pascal VOC and YOLO txt readers and writers, and the odkit dataset YAML.

``load_dataset(path)`` accepts a COCO json (or a folder holding one), a VOC root folder, a YOLO
``data.yaml`` (or its folder) or an odkit dataset YAML, and returns an
:class:`~odkit.data.AnnotationSet` (boxes xyxy float32 pixels, continuous coordinates).
Parse-level problems are collected in ``aset.problems``; only files that cannot be parsed at
all raise :class:`~odkit.errors.DataError`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from odkit.data.formats.coco import read_coco, write_coco
from odkit.data.formats.spec import is_spec, read_spec
from odkit.data.formats.voc import read_voc, write_voc
from odkit.data.formats.yolo import YAML_NAMES, load_yaml, read_yolo, write_yolo
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

FORMATS = ("coco", "voc", "yolo", "spec")
WRITE_FORMATS = ("coco", "voc", "yolo")


def _yaml_kind(p: Path) -> str:
    cfg = load_yaml(p)
    if is_spec(cfg):
        return "spec"
    if "names" in cfg or "train" in cfg:
        return "yolo"
    raise DataError(f"{p}: neither an odkit dataset YAML (no 'format') nor a YOLO data.yaml (no 'names')")


def _coco_jsons(d: Path) -> list[Path]:
    return sorted(d.glob("*.json")) + sorted((d / "annotations").glob("*.json"))


def detect_format(path: str | Path) -> str:
    """Format of a dataset path: ``"coco"``, ``"voc"``, ``"yolo"`` or ``"spec"`` (odkit YAML)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file():
        suf = p.suffix.lower()
        if suf == ".json":
            return "coco"
        if suf in (".yaml", ".yml"):
            return _yaml_kind(p)
        raise DataError(f"{p}: cannot tell the dataset format from this file (expected .json or .yaml)")
    if (p / "Annotations").is_dir():
        return "voc"
    for n in YAML_NAMES:
        if (p / n).is_file():
            return _yaml_kind(p / n)
    if _coco_jsons(p):
        return "coco"
    raise DataError(
        f"{p}: cannot detect the dataset format (expected Annotations/ for VOC, data.yaml for YOLO "
        "or a COCO .json)"
    )


def _coco_file(p: Path, split: str | None) -> Path:
    if p.is_file():
        return p
    cands = _coco_jsons(p)
    if split is not None:
        picked = [c for c in cands if c.stem == split or c.stem.endswith(f"_{split}") or split in c.stem]
        if len(picked) >= 1:
            return picked[0]
        raise DataError(f"{p}: no COCO json for split {split!r} among {[c.name for c in cands]}")
    if len(cands) == 1:
        return cands[0]
    raise DataError(f"{p}: {len(cands)} json files here {[c.name for c in cands]}; name the file or a split")


def _check_format(fmt: str, allowed: tuple[str, ...]) -> str:
    fmt = fmt.lower()
    if fmt not in allowed:
        raise ConfigError(f"unknown dataset format {fmt!r}; expected one of {allowed}")
    return fmt


def load_dataset(
    path: str | Path,
    format: str | None = None,
    split: str | None = None,
    image_root: str | Path | None = None,
) -> AnnotationSet:
    """Load a dataset into an :class:`AnnotationSet`.

    ``split``: VOC -> an ``ImageSets/Main/<split>.txt`` (default: every xml file); YOLO -> a key of
    data.yaml (default ``"train"``); odkit YAML -> ``train``/``val`` (default ``"train"``); COCO ->
    ignored for a json file, used to pick the json when ``path`` is a folder. ``image_root``
    overrides where COCO ``file_name`` is resolved.
    """
    p = Path(path)
    fmt = _check_format(format, FORMATS) if format else detect_format(p)
    if fmt == "coco":
        return read_coco(_coco_file(p, split), image_root=image_root)
    if fmt == "voc":
        return read_voc(p, split=split)
    if fmt == "yolo":
        return read_yolo(p, split=split or "train")
    return read_spec(p, split=split or "train")


def load_split(path: str | Path, split: str, format: str | None = None) -> AnnotationSet:
    """Load the ``split`` (``"train"``/``"val"``) part of a dataset for training or evaluation.

    COCO json -> the same file for every split (a folder of jsons: the one named after the
    split); VOC root -> ``ImageSets/Main/<split>.txt``; YOLO data.yaml -> its ``split`` key;
    odkit YAML -> its ``split`` entry.
    """
    p = Path(path)
    fmt = _check_format(format, FORMATS) if format else detect_format(p)
    if fmt == "coco" and p.is_file():
        log.debug("%s: COCO json used as the %s split", p, split)
        return read_coco(p)
    return load_dataset(p, format=fmt, split=split)


def save_dataset(
    aset: AnnotationSet,
    out: str | Path,
    format: str,
    copy_images: bool = True,
    split: str | None = None,
) -> list[Problem]:
    """Write ``aset`` in ``format`` (``coco``/``voc``/``yolo``) under ``out``; returns the problems met.

    COCO: ``out`` is the json path (or a folder: ``<out>/<split or 'annotations'>.json``) with
    images copied to ``images/`` beside it. VOC: a full tree with ``ImageSets/Main/<split or
    'all'>.txt``. YOLO: ``images/<split>``, ``labels/<split>`` and ``data.yaml`` (split default
    ``train``). Annotations that cannot be written are returned as problems, never dropped
    silently; existing splits in ``out`` are kept.
    """
    fmt = _check_format(format, WRITE_FORMATS)
    writer = {"coco": write_coco, "voc": write_voc, "yolo": write_yolo}[fmt]
    problems = writer(aset, out, copy_images=copy_images, split=split)
    for pr in problems:
        log.warning("%s: %s (%s)", pr.kind, pr.message, pr.file)
    return problems


__all__ = [
    "FORMATS",
    "detect_format",
    "load_dataset",
    "load_split",
    "save_dataset",
    "read_coco",
    "write_coco",
    "read_voc",
    "write_voc",
    "read_yolo",
    "write_yolo",
    "read_spec",
]
