"""Dataset statistics against brute-force counts; box drawing, grids and the dataset viewer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odkit.data.preview import dataset_grid
from odkit.data.stats import compute_stats, format_stats, plot_stats
from odkit.data.structures import AnnotationSet
from odkit.viz.draw import class_color, draw_boxes, image_grid
from tests._paths import BCCD  # noqa: E402


def _hand_set() -> AnnotationSet:
    """Four images, three classes; sizes hit the COCO thresholds exactly."""
    boxes = [
        np.array([[0, 0, 32, 32], [0, 0, 31, 32], [10, 10, 106, 106]], np.float32),  # 1024 M, 992 S, 9216 M
        np.zeros((0, 4), np.float32),  # negative
        np.array([[0, 0, 100, 100], [5, 5, 5, 20], [0, 0, 10, 40]], np.float32),  # L, degenerate, S (ar .25)
        np.array([[0, 0, 97, 96], [1, 1, 3, 2]], np.float32),  # 9312 L, S (ar 2)
    ]
    labels = [np.array([0, 0, 1]), np.array([], np.int64), np.array([2, 0, -1]), np.array([1, 1])]
    crowd = [np.array([0, 1, 0], bool), np.zeros(0, bool), np.zeros(3, bool), np.zeros(2, bool)]
    return AnnotationSet.from_lists(
        "/nonexistent",
        [f"{i}.jpg" for i in range(4)],
        [200] * 4,
        [150] * 4,
        boxes,
        labels,
        ["a", "b", "c"],
        iscrowd=crowd,
    )


def test_hand_worked_counts() -> None:
    s = compute_stats(_hand_set(), name="hand")
    assert s.num_images == 4 and s.num_boxes == 8
    assert s.boxes_per_class.tolist() == [3, 3, 1]
    assert s.images_per_class.tolist() == [2, 2, 1]
    assert s.unknown_boxes == 1 and s.crowd_boxes == 1 and s.degenerate_boxes == 1
    assert s.boxes_per_image.tolist() == [3, 0, 3, 2]
    assert s.boxes_per_image_histogram().tolist() == [1, 0, 1, 2]
    assert s.negatives == 1
    # degenerate box (area 0) counts as small
    assert s.size_counts == {"small": 4, "medium": 2, "large": 2}
    np.testing.assert_allclose(s.aspect_ratios[[0, 1, 5, 7]], [1.0, 31 / 32, 0.25, 2.0])
    d = s.to_dict()
    assert d["classes"]["b"] == {"boxes": 3, "images": 2}
    assert d["boxes_per_image"]["mean"] == pytest.approx(2.0)
    json.dumps(d)
    text = format_stats(s)
    for needle in ("a ", "(unknown)", "negatives (images without boxes): 1", "small (<32^2) 4", "max 3"):
        assert needle in text


@st.composite
def _random_set(draw: st.DrawFn) -> AnnotationSet:
    n_img = draw(st.integers(0, 6))
    c = draw(st.integers(1, 4))
    boxes, labels = [], []
    for _ in range(n_img):
        k = draw(st.integers(0, 5))
        xy = np.array(draw(st.lists(st.floats(0, 300, width=32), min_size=2 * k, max_size=2 * k)), np.float32)
        wh = np.array(draw(st.lists(st.floats(0, 200, width=32), min_size=2 * k, max_size=2 * k)), np.float32)
        xy, wh = xy.reshape(k, 2), wh.reshape(k, 2)
        boxes.append(np.concatenate([xy, xy + wh], axis=1))
        labels.append(np.array(draw(st.lists(st.integers(-1, c - 1), min_size=k, max_size=k)), np.int64))
    names = [f"c{i}" for i in range(c)]
    return AnnotationSet.from_lists(
        "/x", [f"{i}.jpg" for i in range(n_img)], [640] * n_img, [480] * n_img, boxes, labels, names
    )


@settings(max_examples=60, deadline=None)
@given(_random_set())
def test_counts_match_brute_force(aset: AnnotationSet) -> None:
    s = compute_stats(aset)
    c = aset.num_classes
    per_class = [0] * c
    img_class = [set() for _ in range(c)]
    per_image, sizes, ars, unknown = [], {"small": 0, "medium": 0, "large": 0}, [], 0
    for rec in aset:
        per_image.append(len(rec.boxes))
        for box, lab in zip(rec.boxes.tolist(), rec.labels.tolist()):
            if lab < 0:
                unknown += 1
            else:
                per_class[lab] += 1
                img_class[lab].add(rec.index)
            w, h = box[2] - box[0], box[3] - box[1]
            a = w * h if w > 0 and h > 0 else 0.0
            sizes["small" if a < 1024 else "large" if a > 9216 else "medium"] += 1
            ars.append(w / h if h > 0 else math.nan)
    assert s.boxes_per_class.tolist() == per_class
    assert s.images_per_class.tolist() == [len(x) for x in img_class]
    assert s.unknown_boxes == unknown
    assert s.boxes_per_image.tolist() == per_image
    assert s.negatives == sum(k == 0 for k in per_image)
    assert s.size_counts == sizes
    np.testing.assert_allclose(s.aspect_ratios, np.array(ars, np.float64), rtol=1e-6)
    hist = s.boxes_per_image_histogram()
    assert hist.sum() == len(aset) or len(aset) == 0
    format_stats(s)


def test_plot_stats_png(tmp_path: Path) -> None:
    out = plot_stats(compute_stats(_hand_set()), tmp_path / "sub" / "stats.png")
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (800, 1100, 3)
    assert img.std() > 10  # not blank


def test_draw_boxes() -> None:
    img = np.zeros((120, 160, 3), np.uint8)
    out = draw_boxes(img, np.array([[20.0, 40.0, 100.0, 110.0]]), [1], ["a", "b"], scores=[0.87])
    assert img.max() == 0  # input untouched
    assert out.shape == img.shape and out.dtype == np.uint8
    edge = out[75, 19:22].astype(int)  # left edge, middle row
    assert np.abs(edge - np.array(class_color(1))).sum(axis=1).min() < 60
    assert out[75, 60].max() == 0  # inside the box: unchanged
    assert out[10:39, 20:60].max() > 0  # label text above the box
    assert class_color(0) != class_color(1) and len({class_color(i) for i in range(40)}) == 40
    with pytest.raises(Exception, match="labels"):
        draw_boxes(img, np.zeros((2, 4)), [0], ["a"])


def test_image_grid_shape() -> None:
    ims = [np.full((10 + i, 20, 3), i, np.uint8) for i in range(5)]
    g = image_grid(ims, cols=2, pad=3)
    assert g.shape == (3 * 14 + 4 * 3, 2 * 20 + 3 * 3, 3)
    assert (
        g[3 + 14 + 3 : 3 + 14 + 3 + 12, 3 + 20 + 3 : 3 + 20 + 3 + 20] == 3
    ).all()  # image 3 at row 1, col 1


@pytest.fixture(scope="module")
def small_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from odkit.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("synth"), n=8, seed=1, size=160, val_fraction=0.25)


def _coco_set(json_path: Path) -> AnnotationSet:
    """Independent tiny COCO reader (keeps this test free of the formats module)."""
    d = json.loads(json_path.read_text())
    by: dict[int, list] = {}
    for a in d["annotations"]:
        by.setdefault(a["image_id"], []).append(a)
    files, w, h, boxes, labels = [], [], [], [], []
    for im in d["images"]:
        files.append(im["file_name"])
        w.append(im["width"])
        h.append(im["height"])
        an = by.get(im["id"], [])
        boxes.append(
            np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in an)]).reshape(-1, 4)
        )
        labels.append(np.array([a["category_id"] - 1 for a in an]))
    return AnnotationSet.from_lists(
        json_path.parent, files, w, h, boxes, labels, [c["name"] for c in d["categories"]]
    )


def test_dataset_grid_png(small_synth: Path, tmp_path: Path) -> None:
    aset = _coco_set(small_synth.parent / "train.json")
    out = dataset_grid(aset, tmp_path / "grid.png", n=5, seed=0, cols=3, max_side=100)
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (2 * 100 + 3 * 4, 3 * 100 + 4 * 4, 3)
    assert img.std() > 10
    assert dataset_grid(aset, tmp_path / "g2.png", n=100, cols=4, max_side=64).is_file()  # n > len(aset)


def _load_dataset():
    formats = pytest.importorskip("odkit.data.formats")
    if not hasattr(formats, "load_dataset"):
        pytest.skip("odkit.data.formats.load_dataset not available")
    return formats.load_dataset


def test_cli_stats_and_show(small_synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _load_dataset()
    from odkit.cli.main import main

    png = tmp_path / "stats.png"
    assert main(["data", "stats", str(small_synth), "--split", "train", "--out", str(png)]) == 0
    text = capsys.readouterr().out
    ref = compute_stats(_coco_set(small_synth.parent / "train.json"))
    for name, k in zip(ref.class_names, ref.boxes_per_class):
        assert any(line.split()[:2] == [name, str(k)] for line in text.splitlines())
    assert png.stat().st_size > 1000
    grid = tmp_path / "show.png"
    assert main(["data", "show", str(small_synth), "--split", "train", "--out", str(grid), "--n", "4"]) == 0
    assert str(grid) in capsys.readouterr().out
    img = cv2.imread(str(grid))
    assert img is not None and img.shape == (320 + 2 * 4, 4 * 320 + 5 * 4, 3)  # one row of 4


@pytest.mark.skipif(not BCCD.is_dir(), reason="BCCD data set not present")
def test_bccd_counts() -> None:
    load_dataset = _load_dataset()
    s = compute_stats(load_dataset(BCCD))
    counts = dict(zip(s.class_names, s.boxes_per_class.tolist()))
    assert counts == {"RBC": 4155, "WBC": 372, "Platelets": 361}
