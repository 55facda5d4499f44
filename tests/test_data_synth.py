"""Synthetic shapes data set: determinism, tight boxes, variety, COCO validity, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from odkit.data.synth import CLASS_NAMES, _mask_box, render_image, synthesize
from odkit.errors import ConfigError

SEED, SIZE, N = 3, 320, 60


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, n=N, seed=SEED, size=SIZE, val_fraction=0.25)
    return out


def _load(out: Path) -> tuple[list[dict], dict[int, list[dict]], list[dict]]:
    images, anns = [], {}
    for split in ("train", "val"):
        d = json.loads((out / f"{split}.json").read_text())
        images += d["images"]
        for a in d["annotations"]:
            anns.setdefault(a["image_id"], []).append(a)
        cats = d["categories"]
    return images, anns, cats


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_bytes(tmp_path: Path) -> None:
    a = synthesize(tmp_path / "a", n=12, seed=7, size=160).parent
    b = synthesize(tmp_path / "b", n=12, seed=7, size=160).parent
    c = synthesize(tmp_path / "c", n=12, seed=8, size=160).parent
    ta, tb, tc = _tree_bytes(a), _tree_bytes(b), _tree_bytes(c)
    assert len(ta) == 12 + 3
    assert ta == tb
    assert len(tc) == len(ta)
    assert ta["data.yaml"] == tc["data.yaml"]
    assert ta["train.json"] != tc["train.json"]
    name = next(k for k in ta if k.endswith(".jpg"))
    other = next(k for k in tc if k.endswith(Path(name).name))
    assert ta[name] != tc[other]


def test_layout_and_yaml(synth_dir: Path) -> None:
    spec = yaml.safe_load((synth_dir / "data.yaml").read_text())
    assert spec == {"format": "coco", "train": "train.json", "val": "val.json", "names": CLASS_NAMES}
    images, _, cats = _load(synth_dir)
    assert len(images) == N
    assert sorted(im["id"] for im in images) == list(range(1, N + 1))
    assert [c["id"] for c in cats] == [1, 2, 3]
    assert [c["name"] for c in cats] == CLASS_NAMES
    train = json.loads((synth_dir / "train.json").read_text())["images"]
    val = json.loads((synth_dir / "val.json").read_text())["images"]
    assert len(val) == round(0.25 * N)
    for split, ims in (("train", train), ("val", val)):
        for im in ims:
            assert im["file_name"].startswith(f"images/{split}/")
            img = cv2.imread(str(synth_dir / im["file_name"]))
            assert img is not None and img.shape[:2] == (im["height"], im["width"])


def test_boxes_tight_around_drawn_pixels(synth_dir: Path) -> None:
    """Re-render every image; the box of each shape's visible pixels equals the annotation."""
    images, anns, _ = _load(synth_dir)
    colours_per_class: dict[int, set] = {}
    for im in images:
        index = im["id"] - 1
        objs = sorted(anns.get(im["id"], []), key=lambda a: a["id"])
        s = render_image(SEED, index, SIZE, negative=not objs)
        assert s.image.shape[:2] == (im["height"], im["width"])
        # the rendering is what was written (JPEG q95 differs only slightly)
        disk = cv2.imread(str(synth_dir / im["file_name"]))[:, :, ::-1]
        blur = [cv2.GaussianBlur(x, (5, 5), 0).astype(np.float32) for x in (disk, s.image)]
        assert np.abs(blur[0] - blur[1]).mean() < 2.0
        assert len(s.masks) == len(objs)
        for k, a in enumerate(objs):
            visible = s.masks[k] & ~s.masks[k + 1 :].any(axis=0) if k + 1 < len(s.masks) else s.masks[k]
            assert visible.sum() >= 0.6 * s.masks[k].sum()
            ys, xs = np.nonzero(visible)
            ref = [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            np.testing.assert_allclose(a["bbox"], ref, atol=1.0)
            assert a["category_id"] - 1 == s.labels[k]
            assert a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3])
            assert a["iscrowd"] == 0
            # the mask is where this shape's colour was painted (shading + noise allowed)
            painted = s.image[visible].astype(np.float32)
            assert np.abs(painted.mean(axis=0) - s.colors[k]).max() < 25
            colours_per_class.setdefault(int(s.labels[k]), set()).add(tuple(s.colors[k]))
    assert sorted(colours_per_class) == [0, 1, 2]
    assert all(len(c) >= 3 for c in colours_per_class.values())


def test_variety(synth_dir: Path) -> None:
    images, anns, _ = _load(synth_dir)
    all_anns = [a for v in anns.values() for a in v]
    labels = np.array([a["category_id"] for a in all_anns])
    counts = np.bincount(labels, minlength=4)[1:]
    assert (counts >= 0.15 * len(all_anns)).all(), counts
    wh = np.array([a["bbox"][2:] for a in all_anns])
    area = wh[:, 0] * wh[:, 1]
    for frac in ((area < 32**2).mean(), ((area >= 32**2) & (area <= 96**2)).mean(), (area > 96**2).mean()):
        assert frac >= 0.1
    assert wh.min() >= 12  # learnable: nothing tiny
    per_image = np.array([len(anns.get(im["id"], [])) for im in images])
    assert per_image.max() <= 6 and per_image.mean() >= 2
    negatives = (per_image == 0).sum()
    assert 1 <= negatives <= 0.15 * len(images)
    w = np.array([im["width"] for im in images])
    h = np.array([im["height"] for im in images])
    assert (w >= 0.75 * SIZE - 1).all() and (w <= 1.25 * SIZE + 1).all()
    assert (h >= 0.75 * SIZE - 1).all() and (h <= 1.25 * SIZE + 1).all()
    assert (w != h).mean() > 0.8 and w.std() > 20
    # some objects overlap (box intersection inside an image)
    overlapping = 0
    for v in anns.values():
        b = np.array(
            [
                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                for a in v
            ]
        )
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                iw = min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0])
                ih = min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1])
                overlapping += iw > 0 and ih > 0
    assert overlapping >= 5


def test_pycocotools_loads(synth_dir: Path) -> None:
    from pycocotools.coco import COCO

    for split in ("train", "val"):
        coco = COCO(str(synth_dir / f"{split}.json"))
        assert sorted(coco.getCatIds()) == [1, 2, 3]
        n_ann = len(json.loads((synth_dir / f"{split}.json").read_text())["annotations"])
        assert len(coco.getAnnIds()) == n_ann > 0
        for img in coco.loadImgs(coco.getImgIds()):
            assert (synth_dir / img["file_name"]).is_file()


def test_arguments_and_overwrite(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--n"):
        synthesize(tmp_path / "x", n=0)
    with pytest.raises(ConfigError, match="--val-fraction"):
        synthesize(tmp_path / "x", n=4, val_fraction=1.0)
    with pytest.raises(ConfigError, match="--size"):
        synthesize(tmp_path / "x", n=4, size=10)
    out = tmp_path / "d"
    synthesize(out, n=4, size=96)
    with pytest.raises(ConfigError, match="not empty"):
        synthesize(out, n=4, size=96)
    before = _tree_bytes(out)
    synthesize(out, n=3, size=96, overwrite=True)
    after = _tree_bytes(out)
    assert len(after) == 3 + 3 and after != before


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from odkit.cli.main import main

    out = tmp_path / "cli"
    assert (
        main(["data", "synth", "--out", str(out), "--n", "5", "--size", "128", "--val-fraction", "0.4"]) == 0
    )
    assert "data.yaml" in capsys.readouterr().out
    assert len(json.loads((out / "val.json").read_text())["images"]) == 2
    assert main(["data", "synth", "--out", str(out), "--n", "5"]) == 2  # not empty, no --overwrite


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 19), st.integers(0, 14)), min_size=0, max_size=12))
def test_mask_box_matches_nonzero(points: list[tuple[int, int]]) -> None:
    mask = np.zeros((15, 20), bool)
    for x, y in points:
        mask[y, x] = True
    got = _mask_box(mask)
    if not points:
        assert got is None
        return
    ys, xs = np.nonzero(mask)
    assert got == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
