"""Which layout a data set path is in, from the names and the first bytes of its files.

Files: ``.json`` -> COCO or LabelMe (by its keys), ``.yaml`` -> YOLO data.yaml or odkit YAML,
``.csv`` -> CSV of boxes, ``.xml`` -> CVAT for images. Folders, in this order: ``Annotations/``
(VOC root), a data.yaml, COCO jsons (in the folder, ``annotations/`` or split folders), a CVAT
xml, box CSVs, an image folder + annotation folder paired by stem, LabelMe jsons, VOC xml beside
images.
"""

from __future__ import annotations

from pathlib import Path

from odkit.errors import DataError

LAYOUTS = (
    "VOC root (Annotations/), YOLO data.yaml, odkit YAML, COCO .json, CVAT xml, CSV with "
    "filename/class/xmin/ymin/xmax/ymax columns, images/ + annotations/ folders paired by stem "
    "(or IMAGES_DIR --labels ANN_DIR), LabelMe json, or VOC xml beside the images"
)


def _yaml_kind(p: Path) -> str:
    from odkit.data.formats.spec import is_spec
    from odkit.data.formats.yolo import load_yaml

    cfg = load_yaml(p)
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
    if suf == ".xml":
        if is_cvat_xml(p):
            return "cvat"
        raise DataError(f"{p}: a single VOC xml is not a data set; give the folder holding the xml files")
    raise DataError(f"{p}: cannot tell the dataset format from this file (expected .json, .yaml, .csv or .xml)")


def _any(paths: object, test: object) -> bool:
    return any(test(p) for p in paths)  # type: ignore[operator, attr-defined]


def detect_format(path: str | Path, labels: str | Path | None = None) -> str:
    """Format name of a data set path (see :data:`odkit.data.formats.FORMATS`).

    ``labels`` (an annotation folder) means the ``paired`` layout with ``path`` the image folder.
    """
    from odkit.data.formats.coco import coco_split_files
    from odkit.data.formats.csv_boxes import csv_files
    from odkit.data.formats.cvat import is_cvat_xml
    from odkit.data.formats.labelme import is_labelme_json
    from odkit.data.formats.paired import find_pairs
    from odkit.data.formats.voc import is_voc_xml
    from odkit.data.formats.yolo import YAML_NAMES

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if labels is not None:
        return "paired"
    if p.is_file():
        return _file_format(p)
    if (p / "Annotations").is_dir():
        return "voc"
    for n in YAML_NAMES:
        if (p / n).is_file():
            return _yaml_kind(p / n)
    if coco_split_files(p):
        return "coco"
    if _any(list(p.glob("*.xml")) + list((p / "annotations").glob("*.xml")), is_cvat_xml):
        return "cvat"
    if csv_files(p):
        return "csv"
    if find_pairs(p):
        return "paired"
    if _any(p.rglob("*.json"), is_labelme_json):
        return "labelme"
    if _any(p.rglob("*.xml"), is_voc_xml):
        return "voc-flat"
    hint = ""
    if (p / "images").is_dir() and (p / "labels").is_dir():
        hint = " (images/ + labels/ txt looks like YOLO: add a data.yaml with 'names' and 'train')"
    raise DataError(f"{p}: cannot detect the dataset format; expected one of: {LAYOUTS}{hint}")
