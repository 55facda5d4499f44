"""Separate image and annotation folders paired by file stem (any folder names).

Layouts: ``DIR/images/a.jpg`` + ``DIR/annotations/a.xml`` (or ``annots/``, ``labels/``, ...),
the same inside split folders (``DIR/train/images``, ``DIR/train/annotations``) or with split
sub-folders on both sides (``DIR/images/train/a.jpg`` + ``DIR/annotations/train/a.xml``).
Annotation files are VOC xml (boxes as written) or LabelMe json. An image and an annotation
pair when their paths relative to their folders are equal up to the suffix. An image without an
annotation is loaded as a negative (reported); an annotation without an image is reported and its
boxes are not loaded. Give the folders explicitly with ``read_paired(images, labels=...)``
(``odkit data check IMAGES_DIR --labels ANN_DIR``) or let :func:`find_pairs` find them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from odkit.data.formats._common import Entry, build_set, output_names, place_image, progress, rel
from odkit.data.formats.voc import image_objects, is_voc_xml, parse_voc_xml, write_voc_xml
from odkit.data.probe import IMAGE_EXTS
from odkit.data.splits import is_split_name
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import DataError

log = logging.getLogger(__name__)

ANN_EXTS = (".xml", ".json")


def _files(d: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    """Relative stem (posix, no suffix) -> file, for files under ``d`` with one of ``exts``."""
    out: dict[str, Path] = {}
    for p in sorted(d.rglob("*")):
        if p.suffix.lower() in exts and p.is_file():
            out.setdefault(p.relative_to(d).with_suffix("").as_posix(), p)
    return out


def _is_pair(img_dir: Path, ann_dir: Path) -> bool:
    imgs = _files(img_dir, IMAGE_EXTS)
    anns = _files(ann_dir, ANN_EXTS)
    return bool(imgs) and bool(anns) and len(imgs.keys() & anns.keys()) >= max(1, len(anns) // 2)


def _kinds(d: Path) -> tuple[bool, bool]:
    """Whether folder ``d`` (at any depth) holds images, and annotation files."""
    has_img = has_ann = False
    for p in d.rglob("*"):
        suf = p.suffix.lower()
        has_img |= suf in IMAGE_EXTS
        has_ann |= suf in ANN_EXTS
        if has_img and has_ann:
            break
    return has_img, has_ann


def _pair_in(d: Path) -> tuple[Path, Path] | None:
    """An image-only sub-folder and an annotation-only sub-folder of ``d`` with matching stems."""
    subs = [q for q in sorted(d.iterdir()) if q.is_dir() and not q.name.startswith(".")]
    kinds = {q: _kinds(q) for q in subs}
    img_dirs = [q for q in subs if kinds[q] == (True, False)]
    ann_dirs = [q for q in subs if kinds[q] == (False, True)]
    for a in ann_dirs:
        for i in img_dirs:
            if _is_pair(i, a):
                return i, a
    return None


def find_pairs(root: Path) -> list[tuple[str | None, Path, Path]]:
    """``(split, images dir, annotations dir)`` pairs under ``root``: a pair of sub-folders of
    ``root``, or one pair inside each split folder. Empty when there is none."""
    if not root.is_dir():
        return []
    pair = _pair_in(root)
    if pair is not None:
        return [(None, *pair)]
    out = []
    for sub in sorted(q for q in root.iterdir() if q.is_dir() and is_split_name(q.name)):
        pair = _pair_in(sub)
        if pair is not None:
            out.append((sub.name, *pair))
    return out


def _parse(ann: Path, problems: list[Problem]) -> tuple[int, int, list[tuple]]:
    if ann.suffix.lower() == ".xml":
        if not is_voc_xml(ann):
            raise DataError(f"{ann}: not a VOC annotation (root element <annotation> expected)")
        v = parse_voc_xml(ann, problems)
        return v.width, v.height, v.objects
    from odkit.data.formats.labelme import parse_labelme

    d, objects = parse_labelme(ann, problems)
    return int(d.get("imageWidth") or 0), int(d.get("imageHeight") or 0), objects


def read_paired(
    images: str | Path, labels: str | Path | None = None, names: list[str] | None = None
) -> AnnotationSet:
    """Read images paired by stem with annotation files.

    ``labels`` given: ``images`` is the image folder and ``labels`` the annotation folder.
    Otherwise ``images`` is the data set folder and the pairs come from :func:`find_pairs`.
    Splits: the split folders holding the pairs, else the first sub-folder level shared by both
    sides when it names splits.
    """
    images = Path(images)
    if labels is not None:
        pairs: list[tuple[str | None, Path, Path]] = [(None, images, Path(labels))]
        root = images.parent
        for d in (images, Path(labels)):
            if not d.is_dir():
                raise DataError(f"{d}: no such folder")
    else:
        root = images
        pairs = find_pairs(images)
        if not pairs:
            raise DataError(
                f"{images}: no image folder and annotation folder with matching file stems found "
                "(give them as IMAGES_DIR --labels ANN_DIR)"
            )
    problems: list[Problem] = []
    entries: list[Entry] = []
    for split, img_dir, ann_dir in pairs:
        imgs = _files(img_dir, IMAGE_EXTS)
        anns = _files(ann_dir, ANN_EXTS)
        for key in progress(sorted(imgs), len(imgs), "reading annotations"):
            img = imgs[key]
            sp = split
            parts = key.split("/")
            if sp is None and len(parts) > 1 and is_split_name(parts[0]):
                sp = parts[0]
            ann = anns.get(key)
            if ann is None:
                problems.append(
                    Problem(
                        "image_without_annotation",
                        str(img),
                        f"no annotation file {key}.xml / .json in {ann_dir}: loaded as a negative (no boxes)",
                        severity="warning",
                    )
                )
                entries.append(Entry(rel(img, root), split=sp, ann_file=str(ann_dir / f"{key}.xml")))
                continue
            w, h, objects = _parse(ann, problems)
            entries.append(Entry(rel(img, root), w, h, objects, sp, str(ann)))
        for key in sorted(anns.keys() - imgs.keys()):
            problems.append(
                Problem(
                    "label_without_image",
                    str(anns[key]),
                    f"annotation file has no image {key}.* in {img_dir}; its boxes are not loaded",
                    severity="warning",
                )
            )
    aset = build_set(root, entries, "paired", problems, names=names)
    log.debug("read paired folders %s: %s", [(s, str(i), str(a)) for s, i, a in pairs], aset.summary())
    return aset


def write_paired(
    aset: AnnotationSet,
    out: str | Path,
    copy_images: bool = True,
    split: str | None = None,
    names: list[str] | None = None,
) -> list[Problem]:
    """Write ``out/images/[<split>/]<name>`` and ``out/annotations/[<split>/]<stem>.xml`` (VOC xml)."""
    out = Path(out)
    img_dir = out / "images" / split if split else out / "images"
    ann_dir = out / "annotations" / split if split else out / "annotations"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    names = names or output_names(aset)
    problems: list[Problem] = []
    for i in progress(range(len(aset)), len(aset), "writing annotations"):
        p = place_image(aset.path(i), img_dir / names[i], copy_images)
        if p:
            problems.append(p)
        write_voc_xml(
            ann_dir / f"{Path(names[i]).stem}.xml",
            names[i],
            img_dir.name,
            int(aset.widths[i]),
            int(aset.heights[i]),
            image_objects(aset, i),
        )
    return problems
