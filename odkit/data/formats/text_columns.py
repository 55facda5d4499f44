"""Plain text boxes described by a column spec: per-image files or one file for many images.

The spec names the columns in order (comma- or space-separated), for example
``--columns "file,x,y,w,h,label"``:

- ``file`` (``filename``, ``image``, ``path``): the image, resolved against ``--images``, the text
  file's folder and an ``images/`` folder beside it; optional for per-image files (the text file's
  stem names the image);
- the box, one of ``x1,y1,x2,y2`` (``xmin,ymin,xmax,ymax``, ``left,top,right,bottom``),
  ``x,y,w,h`` (top-left corner and size) or ``cx,cy,w,h`` (centre and size), in pixels;
- ``label`` (``class``, ``name``, ``text``): the class; the last column takes the rest of the line,
  so it may hold spaces. Without a label column every box is of class ``object``;
- ``_`` (``skip``): a column that is ignored.

Coordinates are 0-based continuous pixels by default (a box ``x1=10, x2=20`` is 10 pixels wide);
``one_based=True`` (``--one-based``) reads the convention where the first pixel is 1 and ``x2``/``y2``
name the last pixel inside the box, so ``x1 - 1`` and ``y1 - 1`` are stored (``x2``, ``y2``, ``w``,
``h`` unchanged). The delimiter is a comma when a line holds one and whitespace otherwise, unless
given (``--delimiter ";"``, ``tab``). Lines starting with ``#`` are comments; a first line naming
the columns is a header. In a file with a ``file`` column, a line holding only the image name is an
image without objects. An empty per-image file is an image without objects.

A file may describe itself in its first line, as odkit writes it:
``# columns: file,x1,y1,x2,y2,label | delimiter: "," | one-based: no``; such files need no spec.

Layouts: one text file (every line names its image); a folder of per-image files beside the images
(``a.jpg`` + ``a.txt``), or in a folder of their own (``IMAGES_DIR --labels TXT_DIR``, read by the
paired reader); or a folder of text files that each list many images (split folders make splits).
Image sizes are read from the image headers (one summary note). Annotation refs are line numbers.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from odkit.data.formats._common import (
    Entry,
    box_label,
    build_set,
    flags_dropped,
    not_annotated,
    placed_images,
    probe_sizes,
    progress,
    rel,
)
from odkit.data.formats.walk import walk_files
from odkit.data.probe import IMAGE_EXTS
from odkit.data.splits import split_of_path
from odkit.data.structures import AnnotationSet, Problem
from odkit.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_ALIASES = {
    "file": ("file", "filename", "file_name", "image", "image_name", "path", "img"),
    "label": ("label", "class", "name", "category", "text", "class_name"),
    "x1": ("x1", "xmin", "left"),
    "y1": ("y1", "ymin", "top"),
    "x2": ("x2", "xmax", "right"),
    "y2": ("y2", "ymax", "bottom"),
    "x": ("x",),
    "y": ("y",),
    "cx": ("cx", "xc", "x_center"),
    "cy": ("cy", "yc", "y_center"),
    "w": ("w", "width"),
    "h": ("h", "height"),
    "_": ("_", "skip", "-", "ignore"),
}
_BOXES = {"xyxy": ("x1", "y1", "x2", "y2"), "xywh": ("x", "y", "w", "h"), "cxcywh": ("cx", "cy", "w", "h")}
_DELIMS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "space": " ", "whitespace": " ", "pipe": "|"}
DEFAULT_SPEC = "file,x1,y1,x2,y2,label"


@dataclass(frozen=True)
class ColumnSpec:
    """A parsed column spec: ``fields`` (canonical names in column order), ``box`` (``xyxy``,
    ``xywh`` or ``cxcywh``), ``one_based`` and ``delimiter`` (``None``: comma when a line has one,
    else whitespace; ``" "``: whitespace)."""

    fields: tuple[str, ...]
    box: str
    one_based: bool = False
    delimiter: str | None = None

    @property
    def has_file(self) -> bool:
        return "file" in self.fields

    def text(self) -> str:
        """The spec as a ``--columns`` string."""
        return ",".join(self.fields)


def parse_columns(spec: str | ColumnSpec, delimiter: str | None = None, one_based: bool = False) -> ColumnSpec:
    """A :class:`ColumnSpec` from a ``--columns`` string; ConfigError naming what is wrong."""
    if isinstance(spec, ColumnSpec):
        return spec
    lookup = {a: k for k, al in _ALIASES.items() for a in al}
    names = [t for t in re.split(r"[,\s;]+", spec.strip().lower()) if t]
    bad = [t for t in names if t not in lookup]
    if bad:
        raise ConfigError(f"--columns {spec!r}: unknown column name(s) {bad}; known: "
                          + "; ".join(f"{k}: {'/'.join(v)}" for k, v in _ALIASES.items()))
    fields = tuple(lookup[t] for t in names)
    dup = sorted({f for f in fields if f != "_" and fields.count(f) > 1})
    if dup:
        raise ConfigError(f"--columns {spec!r}: column(s) {dup} given twice")
    kinds = [b for b, cols in _BOXES.items() if set(cols) <= set(fields)]
    box_cols = {"x1", "y1", "x2", "y2", "x", "y", "cx", "cy", "w", "h"}
    if len(kinds) != 1 or len(box_cols & set(fields)) != 4:
        raise ConfigError(f"--columns {spec!r}: give one box as x1,y1,x2,y2 or x,y,w,h or cx,cy,w,h "
                          f"(found {sorted(box_cols & set(fields))})")
    if delimiter is not None:
        delimiter = _DELIMS.get(delimiter.lower(), delimiter)
        if len(delimiter) != 1:
            raise ConfigError(f"--delimiter {delimiter!r}: one character, or tab / comma / semicolon / space")
    return ColumnSpec(fields, kinds[0], bool(one_based), delimiter)


_HEADER = re.compile(r'^#\s*columns:\s*([^|]+?)\s*(?:\|\s*delimiter:\s*"([^"]*)"\s*)?(?:\|\s*one-based:\s*(yes|no)\s*)?$')


def header_line(spec: ColumnSpec) -> str:
    """The first line that makes a text file describe its own columns."""
    d = spec.delimiter or ","
    return f'# columns: {spec.text()} | delimiter: "{d}" | one-based: {"yes" if spec.one_based else "no"}'


def spec_from_header(path: Path) -> ColumnSpec | None:
    """The column spec a text file declares in its first line (see :func:`header_line`), if any."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            first = f.readline().strip()
    except OSError:
        return None
    m = _HEADER.match(first)
    if m is None:
        return None
    try:
        return parse_columns(m.group(1), m.group(2) or None, m.group(3) == "yes")
    except ConfigError as e:
        raise DataError(f"{path}: line 1: {e}") from None


def _split_line(line: str, spec: ColumnSpec) -> list[str]:
    n = len(spec.fields)
    last_label = spec.fields[-1] == "label"
    d = spec.delimiter if spec.delimiter is not None else ("," if "," in line else " ")
    if d == " ":
        toks = line.split(None, n - 1) if last_label else line.split()
    else:
        toks = [t.strip() for t in (line.split(d, n - 1) if last_label else line.split(d))]
    return toks


def to_xyxy(vals: dict[str, float], spec: ColumnSpec) -> list[float]:
    """The stored box (0-based continuous ``xyxy``) of one line's box values."""
    if spec.box == "xyxy":
        x1, y1, x2, y2 = vals["x1"], vals["y1"], vals["x2"], vals["y2"]
    elif spec.box == "xywh":
        x1, y1 = vals["x"], vals["y"]
        x2, y2 = x1 + vals["w"], y1 + vals["h"]
    else:
        x1, y1 = vals["cx"] - vals["w"] / 2, vals["cy"] - vals["h"] / 2
        x2, y2 = x1 + vals["w"], y1 + vals["h"]
    if spec.one_based:
        x1, y1 = x1 - 1, y1 - 1
        if spec.box != "xyxy":
            x2, y2 = x2 - 1, y2 - 1
    return [x1, y1, x2, y2]


def from_xyxy(box: list[float], spec: ColumnSpec) -> dict[str, float]:
    """The column values of a stored box (inverse of :func:`to_xyxy`)."""
    x1, y1, x2, y2 = box
    if spec.one_based:
        x1, y1 = x1 + 1, y1 + 1
        if spec.box != "xyxy":
            x2, y2 = x2 + 1, y2 + 1
    if spec.box == "xyxy":
        return {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
    if spec.box == "xywh":
        return {"x": x1, "y": y1, "w": x2 - x1, "h": y2 - y1}
    return {"cx": (x1 + x2) / 2, "cy": (y1 + y2) / 2, "w": x2 - x1, "h": y2 - y1}


def _is_header(toks: list[str], spec: ColumnSpec) -> bool:
    """A first line naming the columns: none of its box cells is a number."""
    row = dict(zip(spec.fields, toks))
    for k in _BOXES[spec.box]:
        try:
            float(row.get(k, ""))
            return False
        except ValueError:
            pass
    return True


def parse_text(path: Path, spec: ColumnSpec, problems: list[Problem]) -> list[tuple[str | None, str | None, list[float], int]]:
    """Lines of one text file as ``(file or None, label or None, box or None, line number)``; a box
    of ``None`` is a line naming an image without objects. Malformed lines go to ``problems``."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    out: list[tuple] = []
    n = len(spec.fields)
    first = True
    for ln, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        toks = _split_line(line.strip(), spec)
        header, first = first and _is_header(toks, spec), False
        if header:
            continue
        row = dict(zip(spec.fields, toks))
        fname = row.get("file") if spec.has_file else None
        if spec.has_file and len(toks) == 1:
            out.append((toks[0], None, None, ln))
            continue
        if len(toks) < n - (spec.fields[-1] == "label"):
            problems.append(Problem("malformed_line", str(path), f"line {ln}: {line.strip()!r} has {len(toks)} "
                                    f"columns, the spec {spec.text()!r} names {n}", f"line {ln}"))
            continue
        try:
            vals = {k: float(row[k]) for k in _BOXES[spec.box]}
        except ValueError:
            problems.append(Problem("malformed_line", str(path), f"line {ln}: {line.strip()!r}: box columns "
                                    f"{', '.join(_BOXES[spec.box])} are not numbers", f"line {ln}"))
            continue
        box = to_xyxy(vals, spec)
        if not all(math.isfinite(v) for v in box):
            problems.append(Problem("non_finite_box", str(path), f"line {ln}: non-finite value in {line.strip()!r}",
                                    f"line {ln}"))
        label = row.get("label", "object") if "label" in spec.fields else "object"
        out.append((fname, label.strip() if label else "", box, ln))
    return out


def text_files(root: Path) -> list[Path]:
    """The ``.txt`` files under ``root`` (linked folders followed; ``classes.txt`` and read-me files skipped)."""
    return [p for p in walk_files(root, (".txt",)) if p.stem.lower() not in ("classes", "readme", "license")]


def _resolver(txt: Path, image_root: Path | None):
    from odkit.data.formats.csv_boxes import _Resolver

    return _Resolver(txt, image_root)


def read_text_columns(
    path: str | Path,
    columns: str | ColumnSpec | None = None,
    image_root: str | Path | None = None,
    names: list[str] | None = None,
) -> AnnotationSet:
    """Read text boxes described by ``columns`` (see the module docstring): one file, a folder of
    per-image files beside the images, or a folder of files listing many images each. ``columns``
    ``None``: the spec the first file declares in its first line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    root = path.parent if path.is_file() else path
    img_root = Path(image_root) if image_root is not None else None
    files = [path] if path.is_file() else text_files(path)
    if not files:
        raise DataError(f"{path}: no .txt files here or below")
    if columns is None:
        declared = spec_from_header(files[0])
        if declared is None:
            raise DataError(f"{files[0]}: text boxes need a column spec (--columns \"file,x,y,w,h,label\")")
        columns = declared
    spec = parse_columns(columns)
    problems: list[Problem] = []
    images = {} if path.is_file() else {p.with_suffix("").relative_to(root).as_posix(): p
                                       for p in walk_files(root, IMAGE_EXTS)}
    per_image = bool(images) and sum(f.with_suffix("").relative_to(root).as_posix() in images for f in files) * 2 >= len(files)
    entries: dict[Path, Entry] = {}
    for f in progress(files, len(files), "reading text boxes"):
        rows = parse_text(f, spec, problems)
        split = split_of_path(f, root)
        if per_image:
            img = images.get(f.with_suffix("").relative_to(root).as_posix())
            if img is None:
                problems.append(Problem("label_without_image", str(f), "text file has no image of the same name; "
                                        "its boxes are not loaded", severity="warning"))
                continue
            e = entries.setdefault(img, Entry(rel(img, root), split=split, ann_file=str(f)))
            e.objects += [(lab, box, False, ln) for _, lab, box, ln in rows if box is not None]
            continue
        if not spec.has_file:
            raise DataError(f"{f}: the spec {spec.text()!r} has no file column, so each text file must be named "
                            "after its image (a.jpg + a.txt); no image of that name found")
        resolve = _resolver(f, img_root)
        for fname, lab, box, ln in rows:
            img = resolve(fname)
            e = entries.setdefault(img, Entry(str(img), split=split, ann_file=str(f)))
            if box is not None:
                e.objects.append((lab, box, False, ln))
    ents = list(entries.values())
    for e in ents:
        e.file = rel(Path(e.file), root) if Path(e.file).is_absolute() else e.file
    if per_image:
        seen = {p.resolve() for p in entries}
        problems += not_annotated([p for p in images.values() if p.resolve() not in seen], "text file", len(ents))
    problems += probe_sizes(ents, root, "text annotation")
    aset = build_set(root, ents, "text", problems, names=names)
    log.debug("read text boxes %s (%s): %s", path, spec.text(), aset.summary())
    return aset


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    s = f"{v:.4f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def write_text_columns(
    aset: AnnotationSet,
    out: str | Path,
    copy_images: bool = True,
    split: str | None = None,
    names: list[str] | None = None,
    columns: str | ColumnSpec | None = None,
) -> list[Problem]:
    """Write ``out/[<split>/]annotations.txt`` (one line per box in the ``columns`` spec, default
    ``file,x1,y1,x2,y2,label`` comma-separated, after a first line declaring the spec; an image
    without boxes is a line with its name) and
    the images in ``out/[<split>/]images/``. Difficult / crowd flags cannot be stored (reported)."""
    spec = parse_columns(columns or DEFAULT_SPEC)
    if not spec.has_file:
        raise ConfigError(f"--columns {spec.text()!r}: writing one text file needs a file column")
    out = Path(out)
    d = out / split if split else out
    img_dir = d / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    delim = spec.delimiter or ","
    problems: list[Problem] = []
    lines: list[str] = []
    for i, name in placed_images(aset, img_dir, names, copy_images, problems, "writing text boxes"):
        fname = f"images/{name}"
        s, e = int(aset.offsets[i]), int(aset.offsets[i + 1])
        if s == e:
            lines.append(fname)
        for r in range(s, e):
            label = box_label(aset, r)
            vals = from_xyxy([float(v) for v in aset.boxes[r]], spec)
            row = {"file": fname, "label": label, "_": "", **{k: _fmt(v) for k, v in vals.items()}}
            lines.append(delim.join(row[f] for f in spec.fields))
    (d / "annotations.txt").write_text("".join(line + "\n" for line in [header_line(spec), *lines]))
    problems += flags_dropped(aset, d, "text boxes")
    return problems
