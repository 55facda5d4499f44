"""The text layouts (PASCAL VOC 1.x, column-spec text) against hand-worked boxes, their round trip
through COCO and back with every box, and the rule that an unread annotation is never a negative."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from odkit.cli.main import main
from odkit.data.formats import load_dataset, parse_columns, save_splits
from odkit.data.formats.pascal_txt import parse_pascal
from odkit.data.formats.text_columns import from_xyxy, to_xyxy
from odkit.errors import ConfigError, DataError
from tests._trust_corpus import build_pennfudan, build_yolo_labels, jpeg, voc_xml


def _boxes(aset) -> dict[str, list[tuple]]:
    out = {}
    for r in aset:
        names = [aset.class_names[int(v)] for v in r.labels]
        out[r.path.stem] = sorted((n, *(round(float(x), 4) for x in b)) for n, b in zip(names, r.boxes))
    return out


def test_pascal_text_parsed_as_written(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text(
        '# PASCAL Annotation Version 1.00\n\nImage filename : "VOC2005_1/PNGImages/Caltech/0001.png"\n'
        "Image size (X x Y x C) : 559 x 536 x 3\n"
        'Objects with ground truth : 3 { "PASpersonWalking" "PAScarSide" "PAScarSide" }\n'
        'Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (160, 182) - (302, 431)\n'
        'Bounding box for object 2 "PAScarSide" (Xmin, Ymin) - (Xmax, Ymax) : (420, 171) - (535, 486)\n'
        'Bounding box for object 3 "PAScarSide" (Xmin, Ymin) - (Xmax, Ymax) : (1, 2) - three\n'
    )
    problems = []
    name, w, h, objs = parse_pascal(f, problems)
    assert (name, w, h) == ("VOC2005_1/PNGImages/Caltech/0001.png", 559, 536)
    assert objs == [("PASpersonWalking", [160.0, 182.0, 302.0, 431.0], False, 1),
                    ("PAScarSide", [420.0, 171.0, 535.0, 486.0], False, 2)]
    assert [(p.kind, p.annotation) for p in problems] == [("malformed_line", "line 8")]


def test_voc2005_layout_resolves_image_filename_against_parents(tmp_path):
    """``VOC2005_1/Annotations/<set>/*.txt`` naming ``VOC2005_1/PNGImages/<set>/*.png``."""
    root = tmp_path / "VOC2005_1"
    for k, (sub, stem) in enumerate((("Caltech", "0001"), ("TUGraz", "0001"))):  # same stem in two sets
        jpeg(root / "PNGImages" / sub / f"{stem}.png", 40, 30, k)
        (root / "Annotations" / sub).mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / sub / f"{stem}.txt").write_text(
            f'Image filename : "VOC2005_1/PNGImages/{sub}/{stem}.png"\nImage size (X x Y x C) : 40 x 30 x 3\n'
            f'Bounding box for object 1 "PAS{sub}" (Xmin, Ymin) - (Xmax, Ymax) : ({k + 1}, 2) - (20, 25)\n'
        )
    a = load_dataset(root)
    assert a.source == "pascal-txt" and sorted(a.files) == ["PNGImages/Caltech/0001.png", "PNGImages/TUGraz/0001.png"]
    got = {f: _boxes(a.select_images([i]))["0001"] for i, f in enumerate(a.files)}
    assert got == {"PNGImages/Caltech/0001.png": [("PASCaltech", 1.0, 2.0, 20.0, 25.0)],
                   "PNGImages/TUGraz/0001.png": [("PASTUGraz", 2.0, 2.0, 20.0, 25.0)]}


@pytest.mark.parametrize("box", ["xyxy", "xywh", "cxcywh"])
@pytest.mark.parametrize("one_based", [False, True])
def test_column_box_conventions_hand_worked(box, one_based):
    cols = {"xyxy": "x1,y1,x2,y2", "xywh": "x,y,w,h", "cxcywh": "cx,cy,w,h"}[box]
    spec = parse_columns(f"file,{cols},label", one_based=one_based)
    # the box covering pixels 10..19 x 5..24 (0-based), i.e. continuous [10, 20] x [5, 25]
    written = {
        ("xyxy", False): [10, 5, 20, 25], ("xyxy", True): [11, 6, 20, 25],
        ("xywh", False): [10, 5, 10, 20], ("xywh", True): [11, 6, 10, 20],
        ("cxcywh", False): [15, 15, 10, 20], ("cxcywh", True): [16, 16, 10, 20],
    }[box, one_based]
    names = {"xyxy": ("x1", "y1", "x2", "y2"), "xywh": ("x", "y", "w", "h"), "cxcywh": ("cx", "cy", "w", "h")}[box]
    vals = dict(zip(names, map(float, written)))
    assert to_xyxy(vals, spec) == [10.0, 5.0, 20.0, 25.0]
    assert from_xyxy([10.0, 5.0, 20.0, 25.0], spec) == vals


def test_column_spec_errors_name_the_problem():
    with pytest.raises(ConfigError, match="unknown column name"):
        parse_columns("file,x,y,width,hieght")
    with pytest.raises(ConfigError, match="one box"):
        parse_columns("file,x,y,x2,h")
    with pytest.raises(ConfigError, match="given twice"):
        parse_columns("file,x,y,w,h,label,label")


def test_one_file_dump_with_delimiter_header_comments_and_negatives(tmp_path):
    for i in range(3):
        jpeg(tmp_path / "pics" / f"{i}.jpg", 40, 30, i)
    (tmp_path / "gt.txt").write_text(
        "image;left;top;right;bottom;class\n# a comment\n"
        "pics/0.jpg;1;2;11;12;red car\npics/0.jpg;5;5;6;9;dog\npics/1.jpg;0;0;40;30;dog\npics/2.jpg\n"
    )
    a = load_dataset(tmp_path / "gt.txt", columns=parse_columns("file,x1,y1,x2,y2,label", delimiter=";"))
    assert a.source == "text" and len(a) == 3
    assert _boxes(a) == {"0": [("dog", 5.0, 5.0, 6.0, 9.0), ("red car", 1.0, 2.0, 11.0, 12.0)],
                         "1": [("dog", 0.0, 0.0, 40.0, 30.0)], "2": []}
    assert sorted(a.ann_ids.tolist()) == [3, 4, 5]  # line numbers
    assert (a.widths == 40).all() and any(p.kind == "sizes_from_images" for p in a.problems)
    # a malformed line is named with its line number
    (tmp_path / "bad.txt").write_text("pics/0.jpg;1;2;x;12;dog\n")
    bad = load_dataset(tmp_path / "bad.txt", columns=parse_columns("file,x1,y1,x2,y2,label", delimiter=";"))
    assert [(p.kind, p.annotation) for p in bad.problems if p.kind == "malformed_line"] == [("malformed_line", "line 1")]


def _penn_aset(tmp_path):
    return load_dataset(build_pennfudan(tmp_path / "PennFudanPed"))


def _text_aset(tmp_path):
    root = tmp_path / "txt"
    lines = []
    for i in range(4):
        jpeg(root / f"im{i}.jpg", 40 + i, 30, 50 + i)
        lines += [f"im{i}.jpg,{k + 1},{k + 2},{5 + k}.5,{3 + i},{['a', 'b c'][k % 2]}" for k in range(i)]
    (root / "boxes.txt").write_text("\n".join(lines) + "\nim0.jpg\n")
    return load_dataset(root / "boxes.txt", columns=parse_columns("file,x,y,w,h,label", one_based=True))


@pytest.mark.parametrize("make", [_penn_aset, _text_aset], ids=["pascal-txt", "text"])
def test_round_trip_through_coco_and_back_keeps_every_box(tmp_path, make):
    src = make(tmp_path)
    assert src.num_annotations > 0
    save_splits(src, tmp_path / "coco", "coco")
    mid = load_dataset(tmp_path / "coco")
    assert _boxes(mid) == _boxes(src)
    fmt = src.source
    spec = parse_columns("file,x,y,w,h,label", one_based=True) if fmt == "text" else None
    save_splits(mid, tmp_path / "back", fmt, columns=spec)
    back = load_dataset(tmp_path / "back")  # the written files declare their layout
    assert back.source == fmt and _boxes(back) == _boxes(src)
    assert sorted(back.widths.tolist()) == sorted(src.widths.tolist())


def test_convert_cli_pascal_to_coco_is_not_empty(tmp_path, capsys):
    root = build_pennfudan(tmp_path / "PennFudanPed")
    assert main(["data", "convert", str(root / "PNGImages"), str(tmp_path / "out.json"), "--labels",
                 str(root / "Annotation"), "--to", "coco"]) == 0
    assert "4 images, 6 boxes" in capsys.readouterr().out.replace("annotations", "boxes")
    assert load_dataset(tmp_path / "out.json").num_annotations == 6


# ---------------------------------------------------------------- unread annotations are never negatives
def test_yolo_labels_through_labels_negatives_by_convention(tmp_path):
    root = build_yolo_labels(tmp_path / "y")
    (root / "labels" / "classes.txt").write_text("cat\ndog\n")
    (root / "labels" / "images.cache").write_bytes(b"\x00\x01")  # an Ultralytics label cache is not an annotation
    a = load_dataset(root / "images", labels=root / "labels")
    assert _boxes(a) == {
        # "k%2 0.5 0.5 0.(k+2) 0.3" on 40 x 30: centre (20, 15), width 8 / 12, height 9
        "y0": [("cat", 16.0, 10.5, 24.0, 19.5), ("dog", 14.0, 10.5, 26.0, 19.5)],
        "y1": [("cat", 16.0, 10.5, 24.0, 19.5)], "y2": [], "y3": []}
    [note] = [p for p in a.problems if p.kind == "negative_by_convention"]
    assert note.message.startswith("1 of 4 images have no label file")


def test_unreadable_annotation_files_are_an_error_naming_them(tmp_path):
    for i in range(3):
        jpeg(tmp_path / "img" / f"{i}.jpg", 40, 30, i)
    (tmp_path / "ann").mkdir()
    for i in range(3):
        (tmp_path / "ann" / f"{i}.txt").write_text(f"{i}.jpg 3 4 10 12 hello\n")
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "img", labels=tmp_path / "ann")
    msg = str(e.value)
    assert "3 of 3 annotation files could not be read (0.txt, 1.txt, 2.txt)" in msg
    assert "PASCAL VOC 1.x text" in msg and "YOLO txt" in msg and "'0.jpg 3 4 10 12 hello'" in msg
    # only one unreadable file among readable ones is an error too
    for i in range(2):
        (tmp_path / "ann" / f"{i}.txt").unlink()
        (tmp_path / "ann" / f"{i}.xml").write_text(voc_xml(f"{i}.jpg", 40, 30, [("x", (1, 1, 5, 5))]))
    with pytest.raises(DataError, match=r"1 of 3 annotation files could not be read \(2.txt\)"):
        load_dataset(tmp_path / "img", labels=tmp_path / "ann")
    # annotation files whose names match no image
    (tmp_path / "ann" / "2.txt").unlink()
    for f in list((tmp_path / "ann").iterdir()):
        f.rename(f.with_name("other_" + f.name))
    with pytest.raises(DataError, match="none of its 2 annotation files has the name of an image"):
        load_dataset(tmp_path / "img", labels=tmp_path / "ann")


def test_image_without_annotation_is_left_out_not_a_negative(tmp_path):
    for i, objs in enumerate(([("x", (1, 1, 5, 5))], [], None)):
        jpeg(tmp_path / f"{i}.jpg", 40, 30, i)
        if objs is not None:
            (tmp_path / f"{i}.xml").write_text(voc_xml(f"{i}.jpg", 40, 30, objs))
    a = load_dataset(tmp_path)
    assert _boxes(a) == {"0": [("x", 1.0, 1.0, 5.0, 5.0)], "1": []}  # 1: an xml without objects
    [p] = [p for p in a.problems if p.kind == "image_without_annotation"]
    assert Path(p.file).name == "2.jpg" and "left out" in p.message


def test_every_text_spec_order_reads_the_same(tmp_path):
    """Any column order gives the same boxes (a brute force over the orders of five columns)."""
    jpeg(tmp_path / "a.jpg", 40, 30, 0)
    vals = {"file": "a.jpg", "x1": "1", "y1": "2", "x2": "30", "y2": "20", "label": "k"}
    for k, order in enumerate(itertools.permutations(["x1", "y1", "x2", "y2", "label"])):
        if k % 7:
            continue  # every 7th of the 120 orders keeps the test fast
        cols = ["file", *order]
        f = tmp_path / f"o{k}.txt"
        f.write_text(",".join(vals[c] for c in cols) + "\n")
        a = load_dataset(f, columns=",".join(cols))
        assert _boxes(a) == {"a": [("k", 1.0, 2.0, 30.0, 20.0)]}, cols
