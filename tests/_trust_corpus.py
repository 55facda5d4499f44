"""A corpus of data set layouts met in the wild, built in a temporary folder (no downloads).

Each case writes files as a public data set or a tool ships them and says what ``odkit data check``
must answer: the exact image and box counts (and splits) the files hold, or an error naming a file.
"""

from __future__ import annotations

import csv
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np


@dataclass
class Case:
    """``argv`` for ``odkit data check`` (after ``data check``); ``images``/``boxes``: what the files
    hold (None when the case must end in an error); ``splits``: images per split; ``error``: a
    text the error must contain (a file name) and ``code`` its exit status."""

    argv: list[str]
    images: int | None = None
    boxes: int | None = None
    splits: dict[str, int] = field(default_factory=dict)
    error: str = ""
    code: int = 0


def jpeg(path: Path, w: int = 40, h: int = 30, seed: int = 0, exif_orientation: int | None = None) -> Path:
    """A random-noise JPEG (distinct bytes per seed), optionally with an EXIF orientation tag."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(path.suffix or ".jpg", img)
    data = buf.tobytes()
    if exif_orientation is not None:
        tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
        tiff += struct.pack("<HHII", 0x0112, 3, 1, exif_orientation) + struct.pack("<I", 0)
        seg = b"Exif\x00\x00" + tiff
        data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(seg) + 2) + seg + data[2:]
    path.write_bytes(data)
    return path


def voc_xml(fname: str, w: int, h: int, objs: list[tuple[str, tuple]]) -> str:
    o = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
        f"<ymax>{b[3]}</ymax></bndbox></object>"
        for n, b in objs
    )
    return f"<annotation><filename>{fname}</filename><size><width>{w}</width><height>{h}</height></size>{o}</annotation>"


def pascal_txt(image_path: str, w: int, h: int, boxes: list[tuple]) -> str:
    """A PASCAL 1.x annotation as PennFudanPed ships it (1-based pixel convention, as written)."""
    labels = " ".join('"PASpersonWalking"' for _ in boxes)
    out = [
        "# Compatible with PASCAL Annotation Version 1.00",
        f'Image filename : "{image_path}"',
        f"Image size (X x Y x C) : {w} x {h} x 3",
        'Database : "The Penn-Fudan-Pedestrian Database"',
        f"Objects with ground truth : {len(boxes)} {{ {labels} }}",
        "# Note there may be some objects not included in the ground truth list for they are severe-occluded",
        "# or have very small size.",
        "# Top left pixel co-ordinates : (1, 1)",
    ]
    for k, b in enumerate(boxes, 1):
        out += [
            f'# Details for pedestrian {k} ("PASpersonWalking")',
            f'Original label for object {k} "PASpersonWalking" : "PennFudanPed"',
            f'Bounding box for object {k} "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : ({b[0]}, {b[1]}) - ({b[2]}, {b[3]})',
            f'Pixel mask for object {k} "PASpersonWalking" : "PennFudanPed/PedMasks/FudanPed_mask.png"',
            "",
        ]
    return "\n".join(out)


# Boxes per image of the PennFudan-like case (the last image is an annotated negative).
PENN = [[(10, 5, 30, 25)], [(2, 3, 12, 20), (15, 4, 38, 29)], [(1, 1, 39, 29), (5, 5, 9, 9), (20, 2, 30, 12)], []]


def build_pennfudan(root: Path) -> Path:
    """``PennFudanPed/PNGImages/*.png``, ``PedMasks/*_mask.png``, ``Annotation/*.txt``."""
    for i, boxes in enumerate(PENN):
        stem = f"FudanPed{i + 1:05d}"
        jpeg(root / "PNGImages" / f"{stem}.png", 40, 30, 100 + i)
        jpeg(root / "PedMasks" / f"{stem}_mask.png", 40, 30, 200 + i)
        (root / "Annotation").mkdir(parents=True, exist_ok=True)
        (root / "Annotation" / f"{stem}.txt").write_text(pascal_txt(f"PennFudanPed/PNGImages/{stem}.png", 40, 30, boxes))
    return root


def build_per_image_text(root: Path) -> Path:
    """``imgs/*.jpg`` + ``gt/*.txt`` with ``filename x y w h text`` lines (text-detection style)."""
    for i in range(3):
        jpeg(root / "imgs" / f"img_{i}.jpg", 40, 30, 300 + i)
        lines = [f"img_{i}.jpg {2 + k} {3 + k} {10 + k} {8} word {k}" for k in range(i + 1)]
        (root / "gt").mkdir(parents=True, exist_ok=True)
        (root / "gt" / f"img_{i}.txt").write_text("\n".join(lines) + "\n")
    return root


def build_yolo_labels(root: Path) -> Path:
    """``images/*.jpg`` + ``labels/*.txt`` (YOLO, no yaml): one image without a label file, one empty file."""
    counts = [2, 1, 0, None]  # None: no label file
    for i, n in enumerate(counts):
        jpeg(root / "images" / f"y{i}.jpg", 40, 30, 400 + i)
        if n is not None:
            (root / "labels").mkdir(parents=True, exist_ok=True)
            (root / "labels" / f"y{i}.txt").write_text("".join(f"{k % 2} 0.5 0.5 0.{k + 2} 0.3\n" for k in range(n)))
    return root


def build_yaml_over_voc(root: Path) -> Path:
    """A YOLO-style data.yaml without ``format:`` whose split folders hold VOC xml beside the images."""
    n = 0
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            jpeg(root / split / f"{split}{i}.jpg", 40, 30, 500 + n)
            (root / split / f"{split}{i}.xml").write_text(voc_xml(f"{split}{i}.jpg", 40, 30,
                                                                     [("dog", (1 + 9 * k, 2, 9 + 9 * k, 25)) for k in range(i + 1)]))
            n += 1
    (root / "data.yaml").write_text("train: train\nval: val\nnames: [dog]\n")
    return root


def build_zip_splits(root: Path) -> Path:
    """``train_zip/train`` and ``test_zip/test`` with xml beside the images (Kaggle downloads)."""
    n = 0
    for split, count in (("train", 4), ("test", 2)):
        for i in range(count):
            d = root / f"{split}_zip" / split
            jpeg(d / f"{split}{i}.jpg", 40, 30, 600 + n)
            (d / f"{split}{i}.xml").write_text(voc_xml(f"{split}{i}.jpg", 40, 30, [("fruit", (3, 3, 13, 13)), ("fruit", (20, 3, 30, 13))]))
            n += 1
    return root


def build_linked_splits(root: Path, all_links: bool) -> Path:
    """Split folders where ``test`` (or every split) is a symbolic link to a folder elsewhere, plus
    a link loop that must not be followed forever."""
    store = root.parent / f"{root.name}_store"
    n = 0
    for split, count in (("train", 3), ("test", 2)):
        d = store / split if (all_links or split == "test") else root / split
        for i in range(count):
            jpeg(d / f"{split}{i}.jpg", 40, 30, 700 + n + 20 * all_links)
            (d / f"{split}{i}.xml").write_text(voc_xml(f"{split}{i}.jpg", 40, 30, [("cat", (1, 1, 9, 9))]))
            n += 1
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test") if all_links else ("test",):
        os.symlink(store / split, root / split, target_is_directory=True)
    os.symlink(root, store / "test" / "loop", target_is_directory=True)  # a loop back up
    return root


def _csv(path: Path, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"])
        w.writerows(rows)


def build_yaml_contained_csv(root: Path) -> Path:
    """A YAML whose val CSV lists images its train CSV lists too (a leak)."""
    rows = [(f"r{i}.jpg", 40, 30, "raccoon", 1, 1, 20 + i, 20) for i in range(5)]
    for i in range(5):
        jpeg(root / "images" / f"r{i}.jpg", 40, 30, 800 + i)
    _csv(root / "train.csv", rows)
    _csv(root / "val.csv", rows[3:])
    (root / "data.yaml").write_text("format: csv\ntrain: train.csv\nval: val.csv\n")
    return root


def build_yaml_typo(root: Path) -> Path:
    build_yaml_over_voc(root)
    (root / "data.yaml").write_text("train: train\nvall: val\nnames: [dog]\n")
    return root


def build_raccoon(root: Path) -> Path:
    """``raccoon_labels.csv`` (every image) beside ``train_labels.csv`` and ``test_labels.csv``."""
    rows = [(f"raccoon-{i}.jpg", 40, 30, "raccoon", 2, 2, 30, 25) for i in range(6)]
    for i in range(6):
        jpeg(root / "images" / f"raccoon-{i}.jpg", 40, 30, 900 + i)
    _csv(root / "raccoon_labels.csv", rows)
    _csv(root / "train_labels.csv", rows[:4])
    _csv(root / "test_labels.csv", rows[4:])
    return root


def build_coco8(root: Path) -> Path:
    """Ultralytics ``coco8`` style: ``coco8.yaml`` beside ``images/{train,val}`` and ``labels/{train,val}``."""
    n = 0
    for split, count in (("train", 3), ("val", 2)):
        for i in range(count):
            jpeg(root / "images" / split / f"{i:012d}.jpg", 40, 30, 1000 + n)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{i:012d}.txt").write_text("0 0.5 0.5 0.4 0.4\n2 0.25 0.25 0.1 0.2\n")
            n += 1
    (root / "coco8.yaml").write_text("path: ../datasets/coco8\ntrain: images/train\nval: images/val\n"
                                     "test:\nnames:\n  0: person\n  1: bicycle\n  2: car\n"
                                     "download: https://example.invalid/coco8.zip\n")
    return root


def build_csv_without_sizes(root: Path) -> Path:
    for i in range(4):
        jpeg(root / "images" / f"c{i}.jpg", 40 + i, 30, 1100 + i)
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text("filename,class,xmin,ymin,xmax,ymax\n"
                                     + "".join(f"c{i}.jpg,cell,1,1,{10 + i},12\nc{i}.jpg,cell,2,2,8,9\n" for i in range(4)))
    return root


def build_partly_unreadable(root: Path) -> Path:
    """An annotation folder where two files are VOC xml and one is in no known layout."""
    for i in range(3):
        jpeg(root / "images" / f"p{i}.jpg", 40, 30, 1200 + i)
    (root / "ann").mkdir(parents=True, exist_ok=True)
    for i in range(2):
        (root / "ann" / f"p{i}.xml").write_text(voc_xml(f"p{i}.jpg", 40, 30, [("x", (1, 1, 5, 5))]))
    (root / "ann" / "p2.txt").write_text("p2.jpg;x;1;1;5;5\n")
    return root


def corpus(tmp: Path) -> dict[str, Case]:
    """Every case of the corpus, built under ``tmp``."""
    t = tmp
    penn = build_pennfudan(t / "PennFudanPed")
    per = build_per_image_text(t / "pertext")
    yl = build_yolo_labels(t / "yololabels")
    cases: dict[str, Case] = {
        "pascal-1.x via --labels": Case([str(penn / "PNGImages"), "--labels", str(penn / "Annotation")], 4, 6),
        "pascal-1.x folder": Case([str(penn)], 4, 6),
        "per-image text, no spec": Case([str(per / "imgs"), "--labels", str(per / "gt")], error="img_0.txt", code=2),
        "per-image text, --columns": Case([str(per / "imgs"), "--labels", str(per / "gt"), "--columns",
                                           "file,x,y,w,h,label"], 3, 6),
        "YOLO txt via --labels": Case([str(yl / "images"), "--labels", str(yl / "labels")], 4, 3),
        "yaml without format over VOC": Case([str(build_yaml_over_voc(t / "yamlvoc") / "data.yaml")], 5, 9,
                                             {"train": 3, "val": 2}),
        "train_zip/train + test_zip/test": Case([str(build_zip_splits(t / "fruits"))], 6, 12, {"train": 4, "test": 2}),
        "linked test split": Case([str(build_linked_splits(t / "linked", False))], 5, 5, {"train": 3, "test": 2}),
        "every split linked": Case([str(build_linked_splits(t / "alllinked", True))], 5, 5, {"train": 3, "test": 2}),
        "val CSV inside train CSV": Case([str(build_yaml_contained_csv(t / "contained") / "data.yaml")],
                                         error="r3.jpg", code=1),
        "typo'd yaml key": Case([str(build_yaml_typo(t / "typo") / "data.yaml")], error="'vall' (did you mean 'val'?)",
                                code=2),
        "raccoon_labels.csv": Case([str(build_raccoon(t / "raccoon"))], 6, 6, {"train": 4, "test": 2}),
        "coco8.yaml beside images/": Case([str(build_coco8(t / "coco8"))], 5, 10, {"train": 3, "val": 2}),
        "CSV without sizes": Case([str(build_csv_without_sizes(t / "csvnosize"))], 4, 8),
        "partly unreadable annotations": Case([str(build_partly_unreadable(t / "partly") / "images"), "--labels",
                                               str(t / "partly" / "ann")], error="p2.txt", code=2),
    }
    return cases

