"""COCO / VOC / YOLO readers and writers, the odkit dataset YAML, detection and conversion."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from odkit.cli.main import main
from odkit.data import AnnotationSet
from odkit.data.formats import detect_format, load_dataset, load_split, save_dataset
from odkit.errors import DataError
from tests._paths import BCCD  # noqa: E402


def _img(path: Path, w: int, h: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def synthetic(tmp_path: Path) -> AnnotationSet:
    """Four images of different sizes, fractional boxes, 3 classes, a difficult box, a negative."""
    rng = np.random.default_rng(1)
    sizes = [(64, 48), (50, 70), (33, 33), (80, 40)]
    files, boxes, labels, diff = [], [], [], []
    for i, (w, h) in enumerate(sizes):
        f = f"img{i}.jpg" if i != 2 else f"sub/img{i}.png"
        _img(tmp_path / "src" / f, w, h, i)
        k = 0 if i == 3 else 3
        x1 = rng.uniform(0, w / 2, k)
        y1 = rng.uniform(0, h / 2, k)
        b = np.stack([x1, y1, x1 + rng.uniform(1, w / 2, k), y1 + rng.uniform(1, h / 2, k)], 1)
        files.append(f)
        boxes.append(b.astype(np.float32))
        labels.append(rng.integers(0, 3, k))
        diff.append(np.arange(k) == 1)
    return AnnotationSet.from_lists(
        tmp_path / "src",
        files,
        [s[0] for s in sizes],
        [s[1] for s in sizes],
        boxes,
        labels,
        ["cat", "dog", "zebra"],
        difficult=diff,
    )


def _by_name(aset: AnnotationSet) -> dict[str, tuple[np.ndarray, list[str]]]:
    out = {}
    for r in aset:
        names = [aset.class_names[int(lab)] for lab in r.labels]
        out[Path(r.path).stem.split("_")[-1]] = (r.boxes.astype(np.float64), names)
    return out


def _same(a: AnnotationSet, b: AnnotationSet, tol: float = 1e-3) -> None:
    da, db = _by_name(a), _by_name(b)
    assert sorted(da) == sorted(db)
    for k in da:
        np.testing.assert_allclose(db[k][0], da[k][0], atol=tol, rtol=0)
        assert db[k][1] == da[k][1], k


# ---------------------------------------------------------------- round trips
def test_round_trip_synthetic_all_directions(tmp_path):
    src = synthetic(tmp_path)
    save_dataset(src, tmp_path / "voc", "voc", split="train")
    voc = load_dataset(tmp_path / "voc", split="train")
    # class list of the VOC tree is the sorted names: same order here
    assert voc.class_names == ["cat", "dog", "zebra"]
    _same(src, voc, tol=1e-4)
    assert voc.difficult.sum() == src.difficult.sum() == 3
    save_dataset(voc, tmp_path / "coco.json", "coco")
    coco = load_dataset(tmp_path / "coco.json")
    _same(src, coco)
    assert coco.difficult.sum() == 3
    probs = save_dataset(coco, tmp_path / "yolo", "yolo")
    assert [p.kind for p in probs] == ["difficult_dropped"]  # reported, not silent
    yolo = load_dataset(tmp_path / "yolo" / "data.yaml")
    _same(src, yolo)
    save_dataset(yolo, tmp_path / "voc2", "voc")
    _same(src, load_dataset(tmp_path / "voc2"))
    # the remaining directions: YOLO -> COCO, COCO -> VOC, VOC -> YOLO
    save_dataset(yolo, tmp_path / "c2", "coco")
    _same(src, load_dataset(tmp_path / "c2" / "annotations.json"))
    save_dataset(coco, tmp_path / "v3", "voc")
    _same(src, load_dataset(tmp_path / "v3"))
    save_dataset(voc, tmp_path / "y3", "yolo", copy_images=False)
    _same(src, load_dataset(tmp_path / "y3"))
    assert (tmp_path / "y3" / "images" / "train" / "img0.jpg").is_symlink()


@pytest.mark.skipif(not BCCD.is_dir(), reason="BCCD not available")
def test_round_trip_bccd_voc_coco_yolo_voc(tmp_path):
    src = load_dataset(BCCD, split="trainval")
    assert len(src) == 292
    rc = main(
        [
            "data",
            "convert",
            str(BCCD),
            str(tmp_path / "coco"),
            "--to",
            "coco",
            "--split",
            "trainval",
            "--link-images",
        ]
    )
    assert rc == 0
    coco = load_dataset(tmp_path / "coco" / "trainval.json")
    rc = main(
        [
            "data",
            "convert",
            str(tmp_path / "coco" / "trainval.json"),
            str(tmp_path / "yolo"),
            "--to",
            "yolo",
            "--link-images",
        ]
    )
    assert rc == 0
    yolo = load_dataset(tmp_path / "yolo")
    rc = main(
        [
            "data",
            "convert",
            str(tmp_path / "yolo"),
            str(tmp_path / "voc"),
            "--from",
            "yolo",
            "--to",
            "voc",
            "--link-images",
        ]
    )
    assert rc == 0
    back = load_dataset(tmp_path / "voc")
    for s in (coco, yolo, back):
        assert s.class_names == src.class_names
        assert s.num_annotations == src.num_annotations
        _same(src, s)


# ---------------------------------------------------------------- COCO
def _coco_doc() -> dict:
    return {
        "images": [
            {"id": 10, "file_name": "a.jpg", "width": 40, "height": 30},
            {"id": 20, "file_name": "b.jpg", "width": 50, "height": 20},
            {"id": 30, "file_name": "c.jpg", "width": 10, "height": 10},
        ],
        "annotations": [
            {"id": 5, "image_id": 20, "category_id": 7, "bbox": [1, 2, 3, 4], "area": 11.5, "iscrowd": 0},
            {"id": 6, "image_id": 10, "category_id": 3, "bbox": [0.5, 1.5, 10, 5], "area": 50, "iscrowd": 1},
            {"id": 9, "image_id": 20, "category_id": 1, "bbox": [5, 5, 5, 5], "area": 25, "iscrowd": 0},
            {"id": 11, "image_id": 10, "category_id": 7, "bbox": [2, 2, 2, 2], "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "seven"}, {"id": 1, "name": "one"}, {"id": 3, "name": "three"}],
    }


def test_coco_reader_matches_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    p = tmp_path / "ann.json"
    p.write_text(json.dumps(_coco_doc()))
    a = load_dataset(p)
    assert a.source == "coco" and detect_format(p) == "coco"
    assert a.class_ids == [1, 3, 7] and a.class_names == ["one", "three", "seven"]
    assert a.image_ids.tolist() == [10, 20, 30]
    gt = COCO(str(p))
    for r in a:
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[r.image_id]))
        assert sorted(r.ann_ids.tolist()) == sorted(x["id"] for x in anns)
        ref = {x["id"]: x for x in anns}
        for k, aid in enumerate(r.ann_ids.tolist()):
            x, y, w, h = ref[aid]["bbox"]
            np.testing.assert_allclose(r.boxes[k], [x, y, x + w, y + h])
            assert a.class_ids[int(r.labels[k])] == ref[aid]["category_id"]
            assert bool(r.iscrowd[k]) == bool(ref[aid]["iscrowd"])
            if "area" in ref[aid]:
                assert r.areas[k] == pytest.approx(ref[aid]["area"])
            else:
                assert np.isnan(r.areas[k])
    assert len(a[2].boxes) == 0  # negative kept


def test_coco_file_name_resolution(tmp_path):
    doc = _coco_doc()
    (tmp_path / "ann").mkdir()
    p = tmp_path / "ann" / "x.json"
    p.write_text(json.dumps(doc))
    # 1. relative to the json's folder
    _img(tmp_path / "ann" / "a.jpg", 40, 30)
    assert load_dataset(p).root == tmp_path / "ann"
    (tmp_path / "ann" / "a.jpg").unlink()
    # 2. sibling images/ folder
    for f in ("a.jpg", "b.jpg"):
        _img(tmp_path / "ann" / "images" / f, 40, 30)
    assert load_dataset(p).path(0) == tmp_path / "ann" / "images" / "a.jpg"
    # 3. explicit image_root
    a = load_dataset(p, image_root=tmp_path / "elsewhere")
    assert a.path(1) == tmp_path / "elsewhere" / "b.jpg"


def test_coco_parse_problems_are_collected(tmp_path):
    doc = _coco_doc()
    doc["annotations"].append({"id": 40, "image_id": 10, "category_id": 99, "bbox": [1, 1, 2, 2]})
    doc["annotations"].append({"id": 41, "image_id": 999, "category_id": 1, "bbox": [1, 1, 2, 2]})
    doc["annotations"].append({"id": 42, "image_id": 30, "category_id": 1, "bbox": [1, 2]})
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(doc))
    a = load_dataset(p)
    kinds = sorted(pr.kind for pr in a.problems)
    assert kinds == ["malformed_annotation", "orphan_annotation", "unknown_class"]
    row = int(np.flatnonzero(a.ann_ids == 40)[0])
    assert a.labels[row] == -1 and a.raw_names[row] == "99"
    row = int(np.flatnonzero(a.ann_ids == 42)[0])
    assert np.isnan(a.boxes[row]).all()
    assert all(str(p) in pr.file for pr in a.problems)


def test_unparseable_files_raise_naming_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        load_dataset(bad)
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    (tmp_path / "voc" / "Annotations" / "x.xml").write_text("<annotation><size>")
    with pytest.raises(DataError, match="x.xml"):
        load_dataset(tmp_path / "voc")
    y = tmp_path / "data.yaml"
    y.write_text("train: images/train\n")
    with pytest.raises(DataError, match="names"):
        load_dataset(y, format="yolo")
    assert main(["data", "check", str(bad)]) == 2


def test_coco_bulk_load_groups_100k_annotations(tmp_path):
    rng = np.random.default_rng(0)
    n_img, n_ann = 10_000, 100_000
    images = [{"id": i + 1, "file_name": f"{i:06d}.jpg", "width": 640, "height": 480} for i in range(n_img)]
    img = rng.integers(1, n_img + 1, n_ann).tolist()
    xy = np.round(rng.uniform(0, 400, (n_ann, 2)), 2).tolist()
    wh = np.round(rng.uniform(1, 200, (n_ann, 2)), 2).tolist()
    cat = rng.integers(1, 81, n_ann).tolist()
    anns = [
        {
            "id": k + 1,
            "image_id": img[k],
            "category_id": cat[k],
            "bbox": xy[k] + wh[k],
            "area": 1.0,
            "iscrowd": 0,
        }
        for k in range(n_ann)
    ]
    cats = [{"id": c, "name": f"c{c}"} for c in range(1, 81)]
    p = tmp_path / "big.json"
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    a = load_dataset(p)
    assert a.num_annotations == n_ann and len(a) == n_img
    # spot check grouping against the raw list
    k = 12345
    i = img[k] - 1
    r = a[i]
    row = int(np.flatnonzero(r.ann_ids == k + 1)[0])
    np.testing.assert_allclose(
        r.boxes[row], [xy[k][0], xy[k][1], xy[k][0] + wh[k][0], xy[k][1] + wh[k][1]], rtol=1e-6
    )
    assert a.class_ids[int(r.labels[row])] == cat[k]


# ---------------------------------------------------------------- VOC
_XML = """<annotation><filename>{f}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"""
_OBJ = "<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"


def write_voc_tree(
    root: Path, items: dict[str, tuple[int, int, list[tuple]]], splits: dict[str, list[str]]
) -> None:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for stem, (w, h, objs) in items.items():
        _img(root / "JPEGImages" / f"{stem}.jpg", max(w, 1), max(h, 1))
        o = "".join(_OBJ.format(n=n, d=d, b=b) for n, d, b in objs)
        (root / "Annotations" / f"{stem}.xml").write_text(_XML.format(f=f"{stem}.jpg", w=w, h=h, objs=o))
    for s, ids in splits.items():
        (root / "ImageSets" / "Main" / f"{s}.txt").write_text("\n".join(ids) + "\n")


def test_voc_reader_no_shift_difficult_splits(tmp_path):
    items = {
        "a": (40, 30, [("dog", 0, (10, 5, 20, 25)), ("cat", 1, (0.5, 1.5, 3.25, 4))]),
        "b": (50, 20, [("bird", 0, (1, 2, 3, 4))]),
        "c": (10, 10, []),
    }
    write_voc_tree(tmp_path, items, {"train": ["a", "c"], "val": ["b"]})
    assert detect_format(tmp_path) == "voc"
    a = load_dataset(tmp_path)
    assert len(a) == 3 and a.class_names == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(a[0].boxes, [[10, 5, 20, 25], [0.5, 1.5, 3.25, 4]])  # as written
    assert a[0].difficult.tolist() == [False, True]
    assert a.widths.tolist() == [40, 50, 10]
    tr, va = load_split(tmp_path, "train"), load_split(tmp_path, "val")
    assert [Path(f).stem for f in tr.files] == ["a", "c"]
    # classes come from every xml of the root, so both splits agree
    assert tr.class_names == va.class_names == ["bird", "cat", "dog"]
    assert va.class_names[int(va.labels[0])] == "bird"
    with pytest.raises(DataError, match="available splits"):
        load_split(tmp_path, "test")


def test_voc_parse_problems(tmp_path):
    items = {"a": (0, 0, [("dog", 0, (1, 2, "nan", 4)), ("dog", 0, (1, 2, 3, 4))])}
    write_voc_tree(tmp_path, items, {})
    a = load_dataset(tmp_path)
    kinds = sorted(p.kind for p in a.problems)
    assert kinds == ["non_finite_box", "size_unknown"]
    assert np.isnan(a.boxes[0, 2])


# ---------------------------------------------------------------- YOLO
def write_yolo_tree(
    root: Path, names, labels: dict[str, str], sizes: dict[str, tuple[int, int]], split="train"
):
    for stem, (w, h) in sizes.items():
        _img(root / "images" / split / f"{stem}.jpg", w, h)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        (root / "labels" / split / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", split: f"images/{split}", "names": names}))


def test_yolo_reader_names_list_and_dict(tmp_path):
    write_yolo_tree(
        tmp_path, ["a", "b"], {"x": "1 0.5 0.5 0.5 0.25\n0 0.1 0.2 0.2 0.2\n"}, {"x": (40, 20), "y": (8, 8)}
    )
    assert detect_format(tmp_path / "data.yaml") == "yolo"
    s = load_dataset(tmp_path / "data.yaml")
    np.testing.assert_allclose(s[0].boxes, [[10, 7.5, 30, 12.5], [0, 2, 8, 6]], atol=1e-5)
    assert s[0].labels.tolist() == [1, 0] and len(s[1].boxes) == 0
    # dict names with non-contiguous indices: the label is the position, class_ids keep the index
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "names": {0: "a", 5: "b"}}))
    (tmp_path / "labels" / "train" / "x.txt").write_text("5 0.5 0.5 0.5 0.25\n")
    s = load_dataset(tmp_path)
    assert s.class_ids == [0, 5] and s.labels.tolist() == [1]


def test_yolo_parse_problems(tmp_path):
    labels = {
        "x": "0 0.5 0.5 0.5\n7 0.5 0.5 0.2 0.2\n0 nan 0.5 0.1 0.1\nfoo 1 2 3 4\n1 0.1 0.1 0.3 0.1 0.3 0.4\n",
        "ghost": "0 0.5 0.5 0.1 0.1\n",
    }
    write_yolo_tree(tmp_path, ["a", "b"], labels, {"x": (40, 20)})
    s = load_dataset(tmp_path / "data.yaml")
    kinds = sorted(p.kind for p in s.problems)
    assert kinds == [
        "label_without_image",
        "malformed_line",
        "malformed_line",
        "non_finite_box",
        "unknown_class",
    ]
    assert s.labels.tolist() == [-1, 0, 1] and s.raw_names == {0: "7"}
    assert np.isnan(s.boxes[1, 0])
    np.testing.assert_allclose(s.boxes[2], [4, 2, 12, 8], atol=1e-5)  # polygon -> its box
    ghost = [p for p in s.problems if p.kind == "label_without_image"][0]
    assert ghost.file.endswith("ghost.txt")


# ---------------------------------------------------------------- odkit dataset YAML
def test_spec_yaml_all_formats(tmp_path):
    items = {"a": (40, 30, [("dog", 0, (10, 5, 20, 25))]), "b": (50, 20, [("cat", 0, (1, 2, 3, 4))])}
    write_voc_tree(tmp_path / "voc", items, {"train": ["a"], "val": ["b"]})
    spec = tmp_path / "d.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"format": "voc", "root": "voc", "train": "train", "val": "val", "names": ["dog", "cat"]}
        )
    )
    assert detect_format(spec) == "spec"
    tr, va = load_dataset(spec, split="train"), load_split(spec, "val")
    assert tr.class_names == ["dog", "cat"] and tr.labels.tolist() == [0] and va.labels.tolist() == [1]
    # COCO via spec with names re-indexing by name
    save_dataset(tr, tmp_path / "coco" / "train.json", "coco")
    save_dataset(va, tmp_path / "coco" / "val.json", "coco")
    spec.write_text(
        yaml.safe_dump(
            {"format": "coco", "train": "coco/train.json", "val": "coco/val.json", "names": ["cat", "dog"]}
        )
    )
    assert load_split(spec, "val").labels.tolist() == [0]
    assert load_dataset(tmp_path / "coco", split="val").class_names == ["dog", "cat"]
    # YOLO images folder via spec
    save_dataset(tr, tmp_path / "yolo", "yolo")
    spec.write_text(
        yaml.safe_dump(
            {
                "format": "yolo",
                "root": "yolo",
                "train": "images/train",
                "val": "images/train",
                "names": ["dog", "cat"],
            }
        )
    )
    y = load_dataset(spec)
    np.testing.assert_allclose(y.boxes, [[10, 5, 20, 25]], atol=1e-4)
    # COCO json: same file for both splits
    assert load_split(tmp_path / "coco" / "train.json", "val").num_annotations == 1


def test_convert_reports_problems(tmp_path, capsys):
    items = {"a": (40, 30, [("dog", 0, (10, 5, 20, 25)), ("emu", 0, (1, 1, 5, 5))])}
    write_voc_tree(tmp_path / "voc", items, {"train": ["a"]})
    spec = tmp_path / "d.yaml"
    spec.write_text(yaml.safe_dump({"format": "voc", "root": "voc", "train": "train", "names": ["dog"]}))
    rc = main(["data", "convert", str(spec), str(tmp_path / "out"), "--to", "coco"])
    out = capsys.readouterr().out
    assert "unknown_class" in out and "emu" in out and "not_written" in out
    assert rc == 1
    # VOC keeps the unknown name as it was
    rc = main(["data", "convert", str(spec), str(tmp_path / "v"), "--to", "voc"])
    assert rc == 0
    assert "emu" in (tmp_path / "v" / "Annotations" / "a.xml").read_text()
