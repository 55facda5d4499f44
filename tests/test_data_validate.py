"""Dataset validation: every planted problem is found, named and affects the exit status."""

from __future__ import annotations

import itertools
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from odkit.cli.main import main
from odkit.data import AnnotationSet
from odkit.data.formats import load_dataset
from odkit.data.probe import probe_image
from odkit.data.validate import check_dataset
from tests._paths import BCCD  # noqa: E402

W, H = 40, 30
NAMES = ["cat", "dog", "bird"]


def _noise(w: int, h: int, seed: int, ch: int = 3, dtype=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 65535
    shape = (h, w, ch) if ch > 1 else (h, w)
    return rng.integers(0, hi, shape, dtype=dtype)


def _chunk(t: bytes, d: bytes) -> bytes:
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)


def palette_png(w: int, h: int) -> bytes:
    raw = b"".join(b"\x00" + bytes((x + y) % 4 for x in range(w)) for y in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
        + _chunk(b"PLTE", bytes(range(12)))
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def exif_jpeg(w: int, h: int, orientation: int) -> bytes:
    b = cv2.imencode(".jpg", _noise(w, h, 7))[1].tobytes()
    tiff = (
        b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 0x0112, 3, 1, orientation) + b"\x00" * 4
    )
    app1 = b"Exif\x00\x00" + tiff
    return b[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + b[2:]


def enc(ext: str, img: np.ndarray) -> bytes:
    return cv2.imencode(ext, img)[1].tobytes()


_XML = (
    "<annotation><filename>{f}</filename><size><width>{w}</width><height>{h}</height></size>{o}</annotation>"
)
_OBJ = "<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"


def base_items() -> dict:
    """stem -> dict(size, objs, image bytes, ext). Clean: distinct images, boxes inside."""
    return {
        "a": {
            "size": (W, H),
            "objs": [("dog", (10, 5, 20, 25))],
            "ext": ".jpg",
            "bytes": enc(".jpg", _noise(W, H, 1)),
        },
        "b": {
            "size": (W, H),
            "objs": [("cat", (1, 2, 30, 28)), ("bird", (0, 0, 40, 30))],
            "ext": ".jpg",
            "bytes": enc(".jpg", _noise(W, H, 2)),
        },
        "c": {
            "size": (W, H),
            "objs": [("bird", (5.5, 6.25, 7.5, 9))],
            "ext": ".png",
            "bytes": enc(".png", _noise(W, H, 3)),
        },
    }


def build(root: Path, items: dict) -> Path:
    """A VOC tree plus an odkit YAML fixing the class list; returns the YAML path."""
    voc = root / "voc"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / d).mkdir(parents=True, exist_ok=True)
    for stem, it in items.items():
        f = f"{stem}{it['ext']}"
        if it["bytes"] is not None:
            (voc / "JPEGImages" / f).write_bytes(it["bytes"])
        o = "".join(_OBJ.format(n=n, b=b) for n, b in it["objs"])
        (voc / "Annotations" / f"{stem}.xml").write_text(
            _XML.format(f=f, w=it["size"][0], h=it["size"][1], o=o)
        )
    (voc / "ImageSets" / "Main" / "train.txt").write_text("\n".join(items) + "\n")
    spec = root / "data.yaml"
    spec.write_text(
        yaml.safe_dump({"format": "voc", "root": "voc", "train": "train", "val": "train", "names": NAMES})
    )
    return spec


def _set(**kw):
    def f(items):
        for k, v in kw.items():
            stem, key = k.split("__")
            items[stem][key] = v

    return f


def _truncate(stem: str, n: int):
    def f(items):
        items[stem]["bytes"] = items[stem]["bytes"][:-n]

    return f


def _dup_image(items):
    items["c"]["ext"] = ".jpg"
    items["c"]["bytes"] = items["a"]["bytes"]  # byte-identical to a, labelled differently


# name -> (mutation, expected kind, stem named, unrepairable error?)
PLANTS = {
    "missing": (_set(a__bytes=None), "missing_image", "a.jpg", True),
    "unreadable": (_set(a__bytes=b"this is not an image at all" * 10), "unreadable_image", "a.jpg", True),
    # a JPEG cut short still decodes (the rest grey): a warning; a PNG without IEND does not
    "truncated_jpeg": (_truncate("a", 60), "truncated_image", "a.jpg", False),
    "truncated_png": (_truncate("c", 12), "truncated_image", "c.png", True),
    "zero_byte": (_set(a__bytes=b""), "empty_file", "a.jpg", True),
    "ext_mismatch": (_set(a__bytes=enc(".png", _noise(W, H, 9))), "extension_mismatch", "a.jpg", False),
    "size_mismatch": (_set(b__size=(80, 60)), "size_mismatch", "b.jpg", True),
    "size_zero_in_xml": (_set(b__size=(0, 0)), "size_unknown", "b.jpg", False),
    "grayscale": (_set(a__bytes=enc(".jpg", _noise(W, H, 4, ch=1))), "image_grayscale", "a.jpg", False),
    "rgba": (_set(c__bytes=enc(".png", _noise(W, H, 4, ch=4))), "image_alpha", "c.png", False),
    "palette": (_set(c__bytes=palette_png(W, H)), "image_palette", "c.png", False),
    "16bit": (_set(c__bytes=enc(".png", _noise(W, H, 4, dtype=np.uint16))), "image_16bit", "c.png", False),
    "exif": (_set(a__bytes=exif_jpeg(W, H, 3)), "exif_orientation", "a.jpg", False),
    # rotated 90 by EXIF, annotated in the displayed (rotated) frame: only the warning
    "exif_rotated": (_set(a__bytes=exif_jpeg(H, W, 6)), "exif_orientation", "a.jpg", False),
    "oob_slight": (_set(a__objs=[("dog", (38, 5, 41.5, 20))]), "box_out_of_bounds", "a.jpg", False),
    "oob_far": (_set(a__objs=[("dog", (10, 5, 60, 20))]), "box_out_of_bounds", "a.jpg", True),
    "zero_size": (
        _set(a__objs=[("dog", (5, 5, 5, 10)), ("dog", (1, 1, 9, 9))]),
        "zero_size_box",
        "a.jpg",
        False,
    ),
    "negative_size": (_set(a__objs=[("dog", (20, 5, 10, 10))]), "negative_size_box", "a.jpg", True),
    "nan": (_set(a__objs=[("dog", (10, "nan", 20, 25))]), "non_finite_box", "a.jpg", True),
    "inf": (_set(a__objs=[("dog", (10, 5, "inf", 25))]), "non_finite_box", "a.jpg", True),
    "unknown_class": (_set(b__objs=[("emu", (1, 2, 30, 28))]), "unknown_class", "b.jpg", True),
    "near_dup": (
        _set(a__objs=[("dog", (10, 5, 20, 25)), ("dog", (10.2, 5, 20, 25.1))]),
        "near_duplicate_box",
        "a.jpg",
        False,
    ),
    "dup_image": (_dup_image, "duplicate_image_conflict", "c.jpg", False),
}


def test_clean_dataset_passes(tmp_path):
    spec = build(tmp_path, base_items())
    rep = check_dataset(spec, split="train")
    assert rep.problems == [], rep.text()
    assert rep.exit_code(strict=True) == 0
    assert main(["data", "check", str(spec), "--split", "train", "--strict"]) == 0


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_planted_problem_is_found_and_named(tmp_path, plant):
    mutate, kind, named, unrepairable = PLANTS[plant]
    items = base_items()
    mutate(items)
    spec = build(tmp_path, items)
    rep = check_dataset(spec, split="train")
    found = [p for p in rep.problems if p.kind == kind]
    assert set(rep.counts()) == {kind}, f"expected only {kind}; got {rep.counts()}"
    # image-level problems name the image; box-level ones the annotation file of that image
    assert any(Path(p.file).stem == Path(named).stem for p in found), [p.file for p in found]
    assert kind in rep.text() and Path(named).stem in rep.text()
    assert rep.has_errors == unrepairable, rep.text()
    args = ["data", "check", str(spec), "--split", "train"]
    assert main([*args, "--strict"]) == 1
    assert main(args) == (1 if unrepairable else 0)


def test_exif_rotation_sets_the_frame(tmp_path):
    from odkit.data.imageio import read_image

    items = base_items()
    items["a"]["bytes"] = exif_jpeg(W, H, 6)  # stored 40x30, displayed (and decoded) 30x40
    spec = build(tmp_path, items)
    assert read_image(tmp_path / "voc" / "JPEGImages" / "a.jpg").shape[:2] == (W, H)
    rep = check_dataset(spec, split="train")
    assert rep.counts() == {"exif_orientation": 1, "size_mismatch": 1}
    msg = [p.message for p in rep.problems if p.kind == "size_mismatch"][0]
    assert "un-rotated" in msg and "30x40" in msg


def test_out_of_bounds_amount_and_clip_repair(tmp_path, capsys):
    items = base_items()
    items["a"]["objs"] = [("dog", (38, -1.5, 41.5, 20)), ("dog", (5, 5, 5, 10))]
    items["b"]["objs"] = [("cat", (-30, 2, 30, 28))]
    spec = build(tmp_path, items)
    rep = check_dataset(spec, split="train")
    oob = sorted((p for p in rep.problems if p.kind == "box_out_of_bounds"), key=lambda p: p.file)
    assert len(oob) == 2
    assert "1.5 px right" in oob[0].message and "1.5 px top" in oob[0].message and oob[0].repaired
    assert "30 px left" in oob[1].message and oob[1].repaired is None and oob[1].severity == "error"
    fixed = rep.dataset
    np.testing.assert_allclose(fixed[0].boxes, [[38, 0, 40, 20]])  # clipped, zero-area box dropped
    np.testing.assert_allclose(fixed[1].boxes, [[-30, 2, 30, 28]])  # far out: left for the user
    assert rep.repairs == {"zero-area boxes dropped": 1, "boxes clipped to the image": 1}
    # --fix-out writes the repaired set in the same format; checking it finds no repairable problems
    out = tmp_path / "fixed"
    assert (
        main(
            [
                "data",
                "check",
                str(spec),
                "--split",
                "train",
                "--fix-out",
                str(out),
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 1
    )
    again = check_dataset(out, split="train")
    assert set(again.counts()) == {"box_out_of_bounds"}
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["counts"] == rep.counts()
    assert len(doc["problems"]) == len(rep.problems)
    assert set(doc["problems"][0]) == {"kind", "severity", "file", "annotation", "message", "repaired"}


def test_negatives_are_info_and_do_not_fail_strict(tmp_path):
    items = base_items()
    items["c"]["objs"] = []
    spec = build(tmp_path, items)
    rep = check_dataset(spec, split="train")
    assert rep.counts() == {"negative_image": 1}
    assert rep.exit_code(strict=True) == 0
    assert main(["data", "check", str(spec), "--split", "train", "--strict"]) == 0


def test_no_images_skips_file_checks(tmp_path):
    items = base_items()
    items["a"]["bytes"] = None
    items["b"]["objs"] = [("cat", (3, 3, 3, 9))]
    spec = build(tmp_path, items)
    rep = check_dataset(spec, split="train", check_images=False)
    assert rep.counts() == {"zero_size_box": 1}
    assert main(["data", "check", str(spec), "--split", "train", "--no-images"]) == 0


def test_yolo_parse_problems_reach_the_report(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "train" / "x.jpg"), _noise(W, H, 1))
    (tmp_path / "labels" / "train" / "x.txt").write_text("0 0.5 0.5 0.2\n3 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "names": ["a", "b"]}))
    rep = check_dataset(tmp_path / "data.yaml")
    assert rep.counts() == {"malformed_line": 1, "unknown_class": 1, "label_without_image": 1}
    assert rep.exit_code() == 1


def _brute_near_dups(aset: AnnotationSet, thr: float) -> set:
    out = set()
    for r in aset:
        for p, q in itertools.combinations(range(len(r.boxes)), 2):
            if r.labels[p] != r.labels[q]:
                continue
            a, b = r.boxes[p].astype(float), r.boxes[q].astype(float)
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if inter / u > thr:
                out.add((str(r.path), p, q))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_near_duplicates_match_brute_force(tmp_path, seed):
    rng = np.random.default_rng(seed)
    files, boxes, labels = [], [], []
    for i in range(20):
        k = int(rng.integers(0, 12))
        base = rng.uniform(0, 50, (k, 2))
        b = np.concatenate([base, base + rng.uniform(5, 20, (k, 2))], 1)
        j = rng.integers(0, max(k, 1), k // 2)
        b[: k // 2] = b[j] + rng.normal(0, 0.4, (k // 2, 4)) if k else b[: k // 2]
        files.append(f"i{i}.jpg")
        boxes.append(b.astype(np.float32))
        labels.append(rng.integers(0, 2, k))
    aset = AnnotationSet.from_lists(tmp_path, files, [100] * 20, [100] * 20, boxes, labels, ["a", "b"])
    for thr in (0.5, 0.9):
        rep = check_dataset(aset, check_images=False, near_dup_iou=thr)
        got = {(p.file, *p.annotation) for p in rep.problems if p.kind == "near_duplicate_box"}
        ref = _brute_near_dups(aset, thr)
        assert got == ref
    assert ref  # the generator does plant duplicates


def test_probe_reads_headers(tmp_path):
    for ext, img, mode in [
        (".jpg", _noise(33, 17, 1), "rgb"),
        (".png", _noise(33, 17, 1, ch=1), "gray"),
        (".bmp", _noise(33, 17, 1), "rgb"),
        (".webp", _noise(33, 17, 1), "rgb"),
        (".tif", _noise(33, 17, 1), "rgb"),
    ]:
        p = tmp_path / f"x{ext}"
        cv2.imwrite(str(p), img)
        info = probe_image(p)
        assert (info.width, info.height, info.mode, info.error) == (33, 17, mode, None), (ext, info)
    p = tmp_path / "e.jpg"
    p.write_bytes(exif_jpeg(20, 10, 8))
    info = probe_image(p)
    assert (info.width, info.height, info.orientation, info.error) == (20, 10, 8, None)
    assert probe_image(tmp_path / "nope.jpg").exists is False


@pytest.mark.skipif(not BCCD.is_dir(), reason="BCCD not available")
def test_bccd_acceptance():
    rep = check_dataset(load_dataset(BCCD))
    c = rep.counts()
    assert c == {"zero_size_box": 2, "near_duplicate_box": 7}, c
    zero = sorted(Path(p.file).stem for p in rep.problems if p.kind == "zero_size_box")
    assert zero == ["BloodImage_00338", "BloodImage_00343"]
    assert rep.dataset.num_annotations == 4888 - 2
    assert rep.exit_code() == 0 and rep.exit_code(strict=True) == 1


def test_yolo_uses_the_displayed_frame(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "images" / "train" / "x.jpg").write_bytes(exif_jpeg(W, H, 6))  # displayed 30x40
    (tmp_path / "labels" / "train" / "x.txt").write_text("0 0.5 0.5 1 1\n")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "names": ["a"]}))
    a = load_dataset(tmp_path)
    assert (a.widths[0], a.heights[0]) == (H, W)
    np.testing.assert_allclose(a.boxes, [[0, 0, H, W]])
