"""Every data set layout, built in a temporary folder as tools export it, reads to the same
AnnotationSet (boxes, classes, splits); every writable layout round-trips; problems name the file."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest

from odkit.cli.main import main
from odkit.data import AnnotationSet
from odkit.data.formats import WRITE_FORMATS, detect_format, list_splits, load_dataset, save_splits
from odkit.errors import DataError

# split -> stem -> (width, height, [(class, (x1, y1, x2, y2))])
REF: dict[str, dict[str, tuple[int, int, list[tuple[str, tuple[float, ...]]]]]] = {
    "train": {
        "a": (48, 32, [("dog", (10, 5, 20, 25)), ("cat", (0.5, 1.5, 30.25, 12))]),
        "b": (40, 30, [("bird", (1, 2, 3, 4))]),
        "c": (40, 30, []),  # a negative
        "d": (36, 40, [("cat", (5, 5, 30, 35)), ("cat", (2, 20, 12, 38)), ("dog", (0, 0, 36, 40))]),
    },
    "val": {
        "e": (48, 32, [("dog", (4, 4, 40, 28))]),
        "f": (40, 30, [("bird", (10.5, 10, 20, 20.75)), ("cat", (1, 1, 39, 29))]),
    },
}


def _jpeg(path: Path, w: int, h: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)


def _items():
    for k, (split, items) in enumerate(REF.items()):
        for j, (stem, (w, h, objs)) in enumerate(items.items()):
            yield split, stem, w, h, objs, 10 * k + j


def canon(aset: AnnotationSet) -> tuple[dict, dict]:
    """``({stem: sorted (class, box)}, {split: sorted stems})`` of a set: what every layout must agree on."""
    boxes = {}
    for r in aset:
        names = [aset.class_names[int(v)] for v in r.labels]
        boxes[r.path.stem] = sorted((n, tuple(round(float(x), 3) for x in b)) for n, b in zip(names, r.boxes))
    splits = {k: sorted(Path(aset.files[i]).stem for i in v) for k, v in aset.splits.items()}
    return boxes, splits


def expected(with_splits: bool = True) -> tuple[dict, dict]:
    boxes = {s: sorted((n, tuple(round(float(x), 3) for x in b)) for n, b in objs) for _, s, _, _, objs, _ in _items()}
    splits = {sp: sorted(items) for sp, items in REF.items()} if with_splits else {}
    return boxes, splits


# ---------------------------------------------------------------- layout builders
def _voc_xml(stem: str, fname: str, w: int, h: int, objs) -> str:
    o = "".join(
        f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objs
    )
    return (
        f"<annotation><folder>x</folder><filename>{fname}</filename><size><width>{w}</width>"
        f"<height>{h}</height><depth>3</depth></size>{o}</annotation>"
    )


def build_voc_flat(root: Path, splits: bool) -> Path:
    """LabelImg: xml next to each image, flat or in train/ val/ folders."""
    for split, stem, w, h, objs, seed in _items():
        d = root / split if splits else root
        _jpeg(d / f"{stem}.jpg", w, h, seed)
        (d / f"{stem}.xml").write_text(_voc_xml(stem, f"{stem}.jpg", w, h, objs))
    return root


def build_paired(root: Path, splits: bool) -> Path:
    """images/ + annots/ with matching stems (in split folders when ``splits``)."""
    for split, stem, w, h, objs, seed in _items():
        base = root / split if splits else root
        _jpeg(base / "images" / f"{stem}.jpg", w, h, seed)
        (base / "annots").mkdir(parents=True, exist_ok=True)
        (base / "annots" / f"{stem}.xml").write_text(_voc_xml(stem, f"{stem}.jpg", w, h, objs))
    return root


def build_csv(root: Path) -> Path:
    """train_labels.csv / val_labels.csv (TensorFlow OD export) with shuffled columns, images in images/."""
    root.mkdir(parents=True, exist_ok=True)
    cols = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]
    random.Random(3).shuffle(cols)
    for split, items in REF.items():
        with open(root / f"{split}_labels.csv", "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow([c.upper() if c == "class" else c for c in cols])  # header case does not matter
            for stem, (w, h, objs) in items.items():
                rows = [dict(zip(["class", "xmin", "ymin", "xmax", "ymax"], [n, *b])) for n, b in objs] or [{}]
                for r in rows:
                    r.update(filename=f"{stem}.jpg", width=w, height=h)
                    wr.writerow([r.get(c, "") for c in cols])
    for _, stem, w, h, _, seed in _items():
        _jpeg(root / "images" / f"{stem}.jpg", w, h, seed)
    return root


def build_labelme(root: Path) -> Path:
    """LabelMe json beside each image in split folders; image a also has a circle."""
    for split, stem, w, h, objs, seed in _items():
        _jpeg(root / split / f"{stem}.jpg", w, h, seed)
        shapes = [
            {"label": n, "points": [[b[2], b[3]], [b[0], b[1]]], "group_id": None, "shape_type": "rectangle", "flags": {}}
            for n, b in objs
        ]
        if stem == "a":
            shapes.append({"label": "dog", "points": [[3, 3], [5, 5]], "shape_type": "circle", "flags": {}})
        doc = {"version": "5.2.1", "flags": {}, "shapes": shapes, "imagePath": f"{stem}.jpg", "imageData": None,
               "imageHeight": h, "imageWidth": w}
        (root / split / f"{stem}.json").write_text(json.dumps(doc))
    return root


def build_cvat(root: Path) -> Path:
    """CVAT for images 1.1 with subsets; image b also has a polyline."""
    imgs = []
    root.mkdir(parents=True, exist_ok=True)
    for k, (split, stem, w, h, objs, seed) in enumerate(_items()):
        _jpeg(root / "images" / f"{stem}.jpg", w, h, seed)
        shapes = "".join(
            f'<box label="{n}" occluded="0" source="manual" xtl="{b[0]}" ytl="{b[1]}" xbr="{b[2]}" ybr="{b[3]}" z_order="0"/>'
            for n, b in objs
        )
        if stem == "b":
            shapes += '<polyline label="bird" source="manual" occluded="0" points="1,1;5,5;9,2" z_order="0"/>'
        imgs.append(f'<image id="{k}" name="{stem}.jpg" subset="{split}" width="{w}" height="{h}">{shapes}</image>')
    labels = "".join(f"<label><name>{n}</name><color>#ff0000</color><attributes/></label>" for n in ("cat", "dog", "bird"))
    (root / "annotations.xml").write_text(
        f'<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version><meta><task><id>1</id>'
        f"<name>t</name><labels>{labels}</labels></task></meta>{''.join(imgs)}</annotations>"
    )
    return root


LAYOUTS = {
    "voc-flat": (lambda r: build_voc_flat(r, splits=False), "voc-flat", False),
    "voc-flat-splits": (lambda r: build_voc_flat(r, splits=True), "voc-flat", True),
    "paired": (lambda r: build_paired(r, splits=False), "paired", False),
    "paired-splits": (lambda r: build_paired(r, splits=True), "paired", True),
    "csv": (build_csv, "csv", True),
    "labelme": (build_labelme, "labelme", True),
    "cvat": (build_cvat, "cvat", True),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_reads_to_the_same_set(tmp_path, layout, capsys):
    build, fmt, with_splits = LAYOUTS[layout]
    root = build(tmp_path / "d")
    assert detect_format(root) == fmt
    aset = load_dataset(root)
    assert aset.source == fmt
    assert canon(aset) == expected(with_splits)
    assert sorted(list_splits(root)) == (sorted(REF) if with_splits else [])
    assert sorted(aset.class_names) == ["bird", "cat", "dog"]
    # one split alone, with the class list of the whole set
    if with_splits:
        val = load_dataset(root, split="val")
        assert sorted(Path(f).stem for f in val.files) == ["e", "f"] and val.class_names == aset.class_names
    # `odkit data check` reads it as it is; shapes that are not boxes are the only warnings
    rc = main(["data", "check", str(root)])
    out = capsys.readouterr().out
    assert f"layout: {fmt}" in out
    assert rc == 0, out


def test_shapes_that_are_not_boxes_are_reported(tmp_path):
    lm = load_dataset(build_labelme(tmp_path / "lm"))
    (p,) = [p for p in lm.problems if p.kind == "unsupported_shape"]
    assert p.file.endswith("a.json") and "shape 2 (dog) is a circle" in p.message and p.severity == "warning"
    cv = load_dataset(build_cvat(tmp_path / "cv"))
    (p,) = [p for p in cv.problems if p.kind == "unsupported_shape"]
    assert p.file.endswith("annotations.xml") and "b.jpg" in p.message and "polyline (bird)" in p.message
    assert cv.class_names == ["cat", "dog", "bird"]  # the order of the CVAT labels


def test_paired_folders_given_explicitly(tmp_path, capsys):
    root = build_paired(tmp_path / "d", splits=False)
    (root / "pics").mkdir()
    for f in (root / "images").iterdir():
        f.rename(root / "pics" / f.name)
    (root / "images").rmdir()
    aset = load_dataset(root / "pics", labels=root / "annots")
    assert canon(aset) == expected(False)
    assert main(["data", "check", str(root / "pics"), "--labels", str(root / "annots")]) == 0
    # an image without annotation is left out and reported (only an annotation without objects makes a
    # negative); an annotation without image is reported
    _jpeg(root / "pics" / "extra.jpg", 20, 20, 99)
    (root / "annots" / "ghost.xml").write_text(_voc_xml("ghost", "ghost.jpg", 20, 20, [("dog", (1, 1, 5, 5))]))
    aset = load_dataset(root / "pics", labels=root / "annots")
    kinds = {p.kind: p for p in aset.problems}
    assert kinds["image_without_annotation"].file.endswith("extra.jpg")
    assert kinds["label_without_image"].file.endswith("ghost.xml")
    assert "ghost" not in canon(aset)[0] and "extra" not in canon(aset)[0]
    assert canon(aset) == expected(False)


def test_csv_image_resolution_and_errors_name_file_and_line(tmp_path):
    root = build_csv(tmp_path / "d")
    (root / "images").rename(tmp_path / "elsewhere")
    a = load_dataset(root, image_root=tmp_path / "elsewhere")
    assert a.path(0).parent == tmp_path / "elsewhere" and canon(a) == expected()
    assert main(["data", "check", str(root), "--images", str(tmp_path / "elsewhere")]) == 0
    # a non-numeric box is reported with its line and not loaded
    f = tmp_path / "one.csv"
    f.write_text("image,label,x1,y1,x2,y2\nq.jpg,dog,1,2,3,4\nq.jpg,cat,1,two,3,4\n")
    a = load_dataset(f)
    (p,) = [p for p in a.problems if p.kind == "malformed_line"]
    assert p.file == str(f) and p.annotation == "line 3" and "two" in p.message
    assert a.num_annotations == 1 and a.ann_ids.tolist() == [2]
    # a header without the needed columns names the file, the line and what is missing
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,class,left,top\n")
    with pytest.raises(DataError, match=r"bad\.csv: line 1: .*xmax"):
        load_dataset(bad, format="csv")


def test_unknown_layout_lists_the_layouts(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="CSV with filename/class/xmin"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("fmt", WRITE_FORMATS)
def test_every_writable_layout_round_trips(tmp_path, fmt):
    src = load_dataset(build_voc_flat(tmp_path / "src", splits=True))
    out = tmp_path / "out"
    problems, counts = save_splits(src, out, fmt)
    assert not [p for p in problems if p.severity == "error"], problems
    assert counts == {"train": 4, "val": 2}
    back = load_dataset(out)
    assert back.source == fmt
    assert canon(back) == expected()
    assert sorted(back.class_names) == ["bird", "cat", "dog"]
