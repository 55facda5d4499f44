"""Which layout a data set path is in, from the names and the first bytes of its files.

Files: ``.json`` -> COCO or LabelMe (by its keys), ``.yaml`` -> YOLO data.yaml or odkit YAML,
``.csv`` -> CSV of boxes, ``.xml`` -> CVAT for images, ``.txt`` -> text boxes (with a column spec).
Folders, in this order: ``Annotations/`` with xml (VOC root), a data.yaml (or the only yaml of the
folder, ``coco8.yaml`` style), COCO jsons (in the folder, ``annotations/`` or split folders), a
CVAT xml, box CSVs, PASCAL 1.x text annotations, an image folder + annotation folder paired by
stem, LabelMe jsons, VOC xml beside images. A column spec (``columns``) means the text layout,
an annotation folder (``labels``) the paired one. Linked folders are followed.
"""

from __future__ import annotations

from pathlib import Path

from odkit.errors import DataError

LAYOUTS = (
    "VOC root (Annotations/), YOLO data.yaml, odkit YAML, COCO .json, CVAT xml, CSV with "
    "filename/class/xmin/ymin/xmax/ymax columns, PASCAL VOC 1.x text, images/ + annotations/ folders "
    "paired by stem (or IMAGES_DIR --labels ANN_DIR), LabelMe json, VOC xml beside the images, or "
    "text boxes with --columns"
)


def _yaml_kind(p: Path) -> str:
    from odkit.data.formats.spec import is_spec
    from odkit.data.formats.yolo import load_data_yaml

    cfg = load_data_yaml(p)
    if is_spec(cfg):
        return "spec"
    if "names" in cfg or "train" in cfg:
        return "yolo"
    raise DataError(f"{p}: neither an odkit dataset YAML (no 'format') nor a YOLO data.yaml (no 'names')")


def _file_format(p: Path) -> str:
    from odkit.data.formats.cvat import is_cvat_xml
    from odkit.data.formats.labelme import is_labelme_json

    suf = p.suffix.lower()
    if suf == ".json":
        return "labelme" if is_labelme_json(p) else "coco"
    if suf in (".yaml", ".yml"):
        return _yaml_kind(p)
    if suf == ".csv":
        return "csv"
    if suf == ".txt":
        from odkit.data.formats.pascal_txt import sniff_pascal
        from odkit.data.formats.text_columns import spec_from_header

        if spec_from_header(p) is not None:
            return "text"
        if sniff_pascal(p):
            raise DataError(f"{p}: a single PASCAL 1.x text file is not a data set; give the folder holding them")
        raise DataError(f"{p}: a text file of boxes needs a column spec, e.g. --columns \"file,x,y,w,h,label\"")
    if suf == ".xml":
        if is_cvat_xml(p):
            return "cvat"
        raise DataError(f"{p}: a single VOC xml is not a data set; give the folder holding the xml files")
    raise DataError(f"{p}: cannot tell the dataset format from this file (expected .json, .yaml, .csv or .xml)")


def _any(paths: object, test: object) -> bool:
    return any(test(p) for p in paths)  # type: ignore[operator, attr-defined]


def _has_pascal(p: Path) -> bool:
    """Whether PASCAL 1.x text files are under ``p`` (the first few text files are sniffed)."""
    from odkit.data.formats.pascal_txt import sniff_pascal
    from odkit.data.formats.text_columns import text_files

    return any(sniff_pascal(t) for t in text_files(p)[:5])


def _has_text_header(p: Path) -> bool:
    """Whether text files under ``p`` declare their columns (as odkit writes them)."""
    from odkit.data.formats.text_columns import spec_from_header, text_files

    return any(spec_from_header(t) is not None for t in text_files(p)[:5])


def detect_format(path: str | Path, labels: str | Path | None = None, columns: object = None) -> str:
    """Format name of a data set path (see :data:`odkit.data.formats.FORMATS`).

    ``labels`` (an annotation folder) means the ``paired`` layout with ``path`` the image folder;
    ``columns`` (a column spec) the ``text`` layout.
    """
    from odkit.data.formats.coco import coco_split_files
    from odkit.data.formats.csv_boxes import csv_files
    from odkit.data.formats.cvat import is_cvat_xml
    from odkit.data.formats.labelme import is_labelme_json
    from odkit.data.formats.paired import find_pairs
    from odkit.data.formats.voc import is_voc_xml
    from odkit.data.formats.walk import walk_files
    from odkit.data.formats.yolo import folder_yaml

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if labels is not None:
        return "paired"
    if columns is not None:
        return "text"
    if p.is_file():
        return _file_format(p)
    if (p / "Annotations").is_dir() and any((p / "Annotations").glob("*.xml")):
        return "voc"
    y = folder_yaml(p)
    if y is not None:
        return _yaml_kind(y)
    if coco_split_files(p):
        return "coco"
    if _any(list(p.glob("*.xml")) + list((p / "annotations").glob("*.xml")), is_cvat_xml):
        return "cvat"
    if csv_files(p):
        return "csv"
    if _has_pascal(p):
        return "pascal-txt"
    if _has_text_header(p):
        return "text"
    if find_pairs(p):
        return "paired"
    if _any(walk_files(p, (".json",)), is_labelme_json):
        return "labelme"
    if _any(walk_files(p, (".xml",)), is_voc_xml):
        return "voc-flat"
    hint = ""
    if (p / "images").is_dir() and (p / "labels").is_dir():
        ymls = sorted(q.name for q in p.glob("*.y*ml") if q.suffix.lower() in (".yaml", ".yml"))
        hint = (f" (images/ + labels/ txt looks like YOLO: give the data yaml of the {len(ymls)} here as DATA: "
                f"{', '.join(ymls)})" if ymls else
                " (images/ + labels/ txt looks like YOLO: add a data.yaml with 'names' and 'train')")
    raise DataError(f"{p}: cannot detect the dataset format; expected one of: {LAYOUTS}{hint}")
