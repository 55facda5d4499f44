"""Separate image and annotation folders paired by file stem (any folder names).

Layouts: ``DIR/images/a.jpg`` + ``DIR/annotations/a.xml`` (or ``annots/``, ``labels/``, ...),
the same inside split folders (``DIR/train/images``, ``DIR/train/annotations``, up to two levels
down: ``DIR/train_zip/train/...``) or with split sub-folders on both sides
(``DIR/images/train/a.jpg`` + ``DIR/annotations/train/a.xml``). An image and an annotation pair
when their paths relative to their folders are equal up to the suffix. Annotation files are read
by what they hold: VOC xml, LabelMe json, PASCAL 1.x text, text boxes described by ``columns``
(:mod:`.text_columns`) or YOLO txt (``class cx cy w h`` normalised; class names from a
``classes.txt`` in or above the folder, else the class indices). A file none of these reads is an
error naming the files, the layouts tried and its first line: never a negative.

An image without an annotation file is a negative only under the YOLO convention (reported as a
count); in the other layouts it is left out and reported (a negative is an annotation without
objects). An annotation without an image is reported and its boxes are not loaded. Give the
folders explicitly with ``read_paired(images, labels=...)`` (``odkit data check IMAGES_DIR
--labels ANN_DIR``) or let :func:`find_pairs` find them (there, ``.txt`` folders pair only when
they hold PASCAL 1.x text, or text boxes when ``columns`` is given).
"""

from __future__ import annotations

import logging
from pathlib import Path

from odkit.data.formats._common import (
    Entry,
    build_set,
    not_annotated,
    placed_images,
    probe_sizes,
    progress,
    rel,
)
from odkit.data.formats.pascal_txt import parse_pascal, sniff_pascal
from odkit.data.formats.text_columns import ColumnSpec, parse_columns, parse_text
from odkit.data.formats.voc import image_objects, is_voc_xml, parse_voc_xml, write_voc_xml
from odkit.data.formats.walk import sub_dirs, walk_files
from odkit.data.probe import IMAGE_EXTS
from odkit.data.splits import SPLIT_DEPTH, is_split_name
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import DataError

log = logging.getLogger(__name__)

ANN_EXTS = (".xml", ".json", ".txt")
SKIP_STEMS = ("classes", "readme", "license", "licence", "notes")
# Files beside annotations that are not annotations (caches, docs, archives, configs).
SKIP_SUFFIXES = (".cache", ".md", ".pdf", ".html", ".zip", ".gz", ".tar", ".py", ".sh", ".yaml", ".yml", ".ini", ".db")
LAYOUTS_TRIED = ("VOC xml (<annotation>), LabelMe json (shapes), PASCAL VOC 1.x text ('Bounding box for object "
                 "...'), YOLO txt ('class cx cy w h', normalised), text boxes with --columns")


def _files(d: Path, exts: tuple[str, ...] | None) -> dict[str, Path]:
    """Relative stem (posix, no suffix) -> file, for files under ``d`` with one of ``exts`` (any
    non-image file when ``None``; read-me and class-list files skipped)."""
    out: dict[str, Path] = {}
    for p in walk_files(d, exts):
        if exts is None and (p.suffix.lower() in IMAGE_EXTS + SKIP_SUFFIXES or p.name.startswith(".")):
            continue
        if p.stem.lower() in SKIP_STEMS:
            continue
        out.setdefault(p.relative_to(d).with_suffix("").as_posix(), p)
    return out


def _ann_like(p: Path, columns: ColumnSpec | None) -> bool:
    suf = p.suffix.lower()
    if suf in (".xml", ".json"):
        return True
    return suf == ".txt" and p.stem.lower() not in SKIP_STEMS and (columns is not None or sniff_pascal(p))


def _is_pair(img_dir: Path, ann_dir: Path, columns: ColumnSpec | None) -> bool:
    imgs = _files(img_dir, IMAGE_EXTS)
    anns = {k: v for k, v in _files(ann_dir, ANN_EXTS).items() if _ann_like(v, columns)}
    return bool(imgs) and bool(anns) and len(imgs.keys() & anns.keys()) >= max(1, len(anns) // 2)


def _kinds(d: Path, columns: ColumnSpec | None) -> tuple[bool, bool]:
    """Whether folder ``d`` (at any depth) holds images, and annotation files."""
    has_img = has_ann = False
    sniffed = 0  # text files are sniffed (PASCAL 1.x?) a few at a time, not all
    for p in walk_files(d):
        suf = p.suffix.lower()
        has_img |= suf in IMAGE_EXTS
        if not has_ann and suf in ANN_EXTS and (suf != ".txt" or sniffed < 3):
            sniffed += suf == ".txt"
            has_ann = _ann_like(p, columns)
        if has_img and has_ann:
            break
    return has_img, has_ann


def _pair_in(d: Path, columns: ColumnSpec | None) -> tuple[Path, Path] | None:
    """An image-only sub-folder and an annotation-only sub-folder of ``d`` with matching stems."""
    subs = sub_dirs(d)
    kinds = {q: _kinds(q, columns) for q in subs}
    img_dirs = [q for q in subs if kinds[q] == (True, False)]
    ann_dirs = [q for q in subs if kinds[q] == (False, True)]
    for a in ann_dirs:
        for i in img_dirs:
            if _is_pair(i, a, columns):
                return i, a
    return None


def find_pairs(root: Path, columns: ColumnSpec | None = None) -> list[tuple[str | None, Path, Path]]:
    """``(split, images dir, annotations dir)`` pairs under ``root``: a pair of sub-folders of
    ``root``, or one pair inside each split folder (up to two levels down). Empty when none."""
    if not root.is_dir():
        return []
    pair = _pair_in(root, columns)
    if pair is not None:
        return [(None, *pair)]
    out = []
    level = [root]
    for _ in range(SPLIT_DEPTH):
        nxt = []
        for d in level:
            for sub in sub_dirs(d):
                if is_split_name(sub.name):
                    pair = _pair_in(sub, columns)
                    if pair is not None:
                        out.append((sub.name, *pair))
                else:
                    nxt.append(sub)
        level = nxt
    return out


def is_yolo_text(text: str) -> bool:
    """Whether every non-empty line (of the first 50) is ``class cx cy w h`` (or a polygon) with an
    integer class and coordinates normalised to about [0, 1]."""
    lines = [t for t in text.splitlines()[:50] if t.strip()]
    if not lines:
        return False
    for line in lines:
        tok = line.split()
        if len(tok) < 5 or len(tok) % 2 == 0 or not tok[0].lstrip("-").isdigit():
            return False
        try:
            vals = [float(t) for t in tok[1:]]
        except ValueError:
            return False
        if not all(-0.5 <= v <= 1.5 for v in vals):
            return False
    return True


def _first_line(p: Path) -> str:
    try:
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    return line.strip()[:200]
    except OSError as e:
        return f"<cannot read: {e.strerror or e}>"
    return "<empty>"


def _kind(ann: Path, columns: ColumnSpec | None) -> str | None:
    """What an annotation file holds: voc, labelme, pascal, columns, yolo, empty; None: unknown."""
    from odkit.data.formats.labelme import is_labelme_json

    suf = ann.suffix.lower()
    if suf == ".xml":
        return "voc" if is_voc_xml(ann) else None
    if suf == ".json":
        return "labelme" if is_labelme_json(ann) else None
    if suf != ".txt":
        return None
    if sniff_pascal(ann):
        return "pascal"
    if columns is not None:
        return "columns"
    try:
        text = ann.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not text.strip():
        return "empty"
    return "yolo" if is_yolo_text(text) else None


def _class_list(ann_dir: Path) -> list[str] | None:
    for d in (ann_dir, ann_dir.parent):
        f = d / "classes.txt"
        if f.is_file():
            return [t.strip() for t in f.read_text(encoding="utf-8", errors="replace").splitlines() if t.strip()]
    return None


class _Reader:
    """Reads the annotation files of one pair of folders, by kind."""

    def __init__(self, ann_dir: Path, columns: ColumnSpec | None, problems: list[Problem]):
        self.columns, self.problems = columns, problems
        self.classes = _class_list(ann_dir)
        self.yolo_names_used = False

    def read(self, ann: Path, kind: str) -> tuple[int, int, list[tuple], bool]:
        """``(width, height, objects, normalised)``: the boxes of YOLO files are normalised."""
        if kind == "voc":
            v = parse_voc_xml(ann, self.problems)
            return v.width, v.height, v.objects, False
        if kind == "labelme":
            from odkit.data.formats.labelme import parse_labelme

            d, objects = parse_labelme(ann, self.problems)
            return int(d.get("imageWidth") or 0), int(d.get("imageHeight") or 0), objects, False
        if kind == "pascal":
            _, w, h, objects = parse_pascal(ann, self.problems)
            return w, h, objects, False
        if kind == "columns":
            assert self.columns is not None
            rows = parse_text(ann, self.columns, self.problems)
            return 0, 0, [(lab, box, False, ln) for _, lab, box, ln in rows if box is not None], False
        if kind == "empty":
            return 0, 0, [], False
        from odkit.data.formats.yolo import _parse_label

        _, raws, boxes, probs = _parse_label(ann.read_text(encoding="utf-8", errors="replace"), ann, {})
        self.problems += probs
        names = [self._yolo_name(r) for r in raws]
        return 0, 0, [(n, b, False, k) for k, (n, b) in enumerate(zip(names, boxes))], True

    def _yolo_name(self, raw: str) -> str:
        k = int(float(raw))
        if self.classes is not None and 0 <= k < len(self.classes):
            return self.classes[k]
        self.yolo_names_used = True
        return str(k)


def _unreadable(ann_dir: Path, bad: list[Path], total: int) -> DataError:
    shown = ", ".join(p.name for p in bad[:5]) + (f" ... ({len(bad) - 5} more)" if len(bad) > 5 else "")
    return DataError(
        f"{ann_dir}: {len(bad)} of {total} annotation files could not be read ({shown}); layouts tried: "
        f"{LAYOUTS_TRIED}. First line of {bad[0].name}: {_first_line(bad[0])!r}. "
        "For other text layouts describe the columns, e.g. --columns \"file,x,y,w,h,label\""
    )


def read_paired(
    images: str | Path,
    labels: str | Path | None = None,
    names: list[str] | None = None,
    columns: str | ColumnSpec | None = None,
) -> AnnotationSet:
    """Read images paired by stem with annotation files.

    ``labels`` given: ``images`` is the image folder and ``labels`` the annotation folder.
    Otherwise ``images`` is the data set folder and the pairs come from :func:`find_pairs`.
    Splits: the split folders holding the pairs, else the first sub-folder level shared by both
    sides when it names splits. ``columns``: the column spec of text annotations.
    """
    images = Path(images)
    spec = parse_columns(columns) if columns is not None else None
    if labels is not None:
        pairs: list[tuple[str | None, Path, Path]] = [(None, images, Path(labels))]
        root = images.parent
        for d in (images, Path(labels)):
            if not d.is_dir():
                raise DataError(f"{d}: no such folder")
    else:
        root = images
        pairs = find_pairs(images, spec)
        if not pairs:
            raise DataError(
                f"{images}: no image folder and annotation folder with matching file stems found "
                "(give them as IMAGES_DIR --labels ANN_DIR)"
            )
    problems: list[Problem] = []
    entries: list[Entry] = []
    normalised: list[bool] = []
    for split, img_dir, ann_dir in pairs:
        imgs = _files(img_dir, IMAGE_EXTS)
        anns = _files(ann_dir, None if labels is not None else ANN_EXTS)
        if not imgs:
            raise DataError(f"{img_dir}: no images here or below")
        if not anns:
            raise DataError(f"{ann_dir}: no annotation files here or below")
        kinds = {k: _kind(p, spec) for k, p in anns.items()}
        bad = [anns[k] for k, v in kinds.items() if v is None]
        if bad:
            raise _unreadable(ann_dir, bad, len(anns))
        if all(v == "empty" for v in kinds.values()):
            raise DataError(f"{ann_dir}: all {len(anns)} annotation files are empty (first: {next(iter(anns.values()))})")
        matched = imgs.keys() & anns.keys()
        if not matched:
            a, i = next(iter(anns.values())), next(iter(imgs.values()))
            raise DataError(f"{ann_dir}: none of its {len(anns)} annotation files has the name of an image of "
                            f"{img_dir} (e.g. {a.relative_to(ann_dir)} vs {i.relative_to(img_dir)})")
        yolo = any(v == "yolo" for v in kinds.values())
        reader = _Reader(ann_dir, spec, problems)
        missing: list[Path] = []
        n_neg = 0
        for key in progress(sorted(imgs), len(imgs), "reading annotations"):
            img = imgs[key]
            sp = split
            parts = key.split("/")
            if sp is None and len(parts) > 1 and is_split_name(parts[0]):
                sp = parts[0]
            ann = anns.get(key)
            if ann is None:
                if yolo:
                    n_neg += 1
                    entries.append(Entry(rel(img, root), split=sp, ann_file=str(ann_dir / f"{key}.txt")))
                    normalised.append(False)
                else:
                    missing.append(img)
                continue
            w, h, objects, norm = reader.read(ann, kinds[key])
            entries.append(Entry(rel(img, root), w, h, objects, sp, str(ann)))
            normalised.append(norm)
        problems += not_annotated(missing, "annotation file", len(imgs) - len(missing))
        if n_neg:
            problems.append(Problem("negative_by_convention", str(ann_dir), f"{n_neg} of {len(imgs)} images have no "
                                    "label file: negatives (no boxes) by the YOLO convention", severity="info"))
        if reader.yolo_names_used:
            problems.append(Problem("class_names_unknown", str(ann_dir), "YOLO labels without a classes.txt: classes "
                                    "are named by their index", severity="info"))
        for key in sorted(anns.keys() - imgs.keys()):
            problems.append(
                Problem(
                    "label_without_image",
                    str(anns[key]),
                    f"annotation file has no image {key}.* in {img_dir}; its boxes are not loaded",
                    severity="warning",
                )
            )
    problems += probe_sizes(entries, root, "the annotation")
    for e, norm in zip(entries, normalised):
        if norm and e.width > 0 and e.height > 0:
            e.objects = [(n, [b[0] * e.width, b[1] * e.height, b[2] * e.width, b[3] * e.height], d, k)
                         for n, b, d, k in e.objects]
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
    problems: list[Problem] = []
    for i, name in placed_images(aset, img_dir, names, copy_images, problems):
        write_voc_xml(
            ann_dir / f"{Path(name).stem}.xml",
            name,
            img_dir.name,
            int(aset.widths[i]),
            int(aset.heights[i]),
            image_objects(aset, i),
        )
    return problems
