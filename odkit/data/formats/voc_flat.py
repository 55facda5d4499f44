"""Pascal VOC xml files beside their images (what LabelImg writes), flat or in split folders.

Layout: ``DIR/a.jpg`` + ``DIR/a.xml``, or ``DIR/train/a.jpg`` + ``DIR/train/a.xml``,
``DIR/valid/...``: every xml under ``DIR`` whose root element is ``<annotation>`` is read (at any
depth); a top-level folder with a split name (train, val, valid, test, ...) makes its files a split.
The image of ``a.xml`` is its ``<filename>`` in the xml's folder, else ``a.<image extension>``
there. Box values are taken as written (continuous pixels, no shift), as in :mod:`.voc`.
An image without an xml is not a negative (an xml without objects says that): it is left out and
reported (``image_without_annotation``). Linked folders are followed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from odkit.data.formats._common import (
    Entry,
    build_set,
    find_image,
    not_annotated,
    placed_images,
    progress,
    rel,
)
from odkit.data.formats.voc import image_objects, is_voc_xml, parse_voc_xml, write_voc_xml
from odkit.data.formats.walk import walk_files
from odkit.data.probe import IMAGE_EXTS
from odkit.data.splits import split_of_path
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import DataError

log = logging.getLogger(__name__)


def split_of(path: Path, root: Path) -> str | None:
    """The split of a file under ``root`` (a split folder up to two levels down, see
    :func:`odkit.data.splits.split_of_path`)."""
    return split_of_path(path, root)


def voc_xmls(root: Path) -> list[Path]:
    """VOC annotation files under ``root`` (any depth, linked folders followed), sorted."""
    return [p for p in walk_files(root, (".xml",)) if is_voc_xml(p)]


def read_voc_flat(root: str | Path, names: list[str] | None = None) -> AnnotationSet:
    """Read every VOC xml under ``root`` with the image beside it; ``splits`` from split folders."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    xmls = voc_xmls(root)
    if not xmls:
        raise DataError(f"{root}: no VOC xml files (root element <annotation>) in this folder or below")
    problems: list[Problem] = []
    entries: list[Entry] = []
    seen: set[Path] = set()
    for xml in progress(xmls, len(xmls), "reading VOC xml"):
        v = parse_voc_xml(xml, problems)
        img = find_image(xml.parent, xml.stem, Path(v.filename).name if v.filename else None)
        if img is None and v.path and Path(v.path).is_absolute() and Path(v.path).is_file():
            img = Path(v.path)
        if img is None:
            img = xml.parent / (Path(v.filename).name if v.filename else f"{xml.stem}.jpg")
        seen.add(img.resolve())
        entries.append(Entry(rel(img, root), v.width, v.height, v.objects, split_of(xml, root), str(xml)))
    images = [p for p in walk_files(root, IMAGE_EXTS) if p.resolve() not in seen]
    problems += not_annotated(images, "xml", len(entries))
    aset = build_set(root, entries, "voc-flat", problems, names=names)
    log.debug("read VOC xml beside images %s: %s", root, aset.summary())
    return aset


def write_voc_flat(
    aset: AnnotationSet,
    out: str | Path,
    copy_images: bool = True,
    split: str | None = None,
    names: list[str] | None = None,
) -> list[Problem]:
    """Write ``aset`` as images with their VOC xml beside them, in ``out/<split>/`` (or ``out/``).

    Images are copied (symlinked when ``copy_images`` is False). Returns the problems met.
    """
    d = Path(out) / split if split else Path(out)
    d.mkdir(parents=True, exist_ok=True)
    problems: list[Problem] = []
    for i, name in placed_images(aset, d, names, copy_images, problems, "writing VOC xml"):
        w, h = int(aset.widths[i]), int(aset.heights[i])
        write_voc_xml(d / f"{Path(name).stem}.xml", name, d.name, w, h, image_objects(aset, i))
    return problems
