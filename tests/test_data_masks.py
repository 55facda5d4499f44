"""Instance masks in the data layer: checks, geometry through the augmentations, loader targets."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odkit.cli.main import main
from odkit.data import AnnotationSet
from odkit.data.dataset import DetectionDataset
from odkit.data.formats import load_dataset
from odkit.data.loader import build_loader, collate_detection
from odkit.data.masks import polygons_from_mask, rasterize, to_rle, transform_segms
from odkit.data.synth import synthesize
from odkit.data.transforms import AugmentConfig, HorizontalFlip, TrainAugment, ValTransform, letterbox
from odkit.data.validate import check_dataset
from odkit.errors import ConfigError
from odkit.ops import rle as rle_ops


def _set(tmp_path, masks, boxes, w=40, h=30) -> AnnotationSet:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((h, w, 3), np.uint8))
    return AnnotationSet.from_lists(tmp_path, ["a.png"], [w], [h], [np.asarray(boxes, np.float32)],
                                    [np.zeros(len(boxes), np.int64)], ["x"], masks=[masks])


def test_each_mask_problem_is_found_and_named(tmp_path):
    sq = [np.array([5.0, 5, 15, 5, 15, 15, 5, 15])]
    masks = [
        sq,  # fine
        [np.array([1.0, 1, 9, 9])],  # two points: degenerate, and so empty
        [np.array([1.0, 1, 5, 5, 9, 9])],  # on one line
        [np.array([30.0, 20, 45, 20, 45, 35, 30, 35])],  # out of the image
        rle_ops.encode(np.ones((20, 20), np.uint8)),  # RLE of another size
        sq,  # box elsewhere: mask outside its box
        sq,  # box a little smaller: sticks out by 3 px
    ]
    boxes = [[5, 5, 15, 15], [1, 1, 9, 9], [1, 1, 9, 9], [30, 20, 40, 30], [0, 0, 20, 20], [25, 0, 35, 10],
             [5, 5, 12, 15]]
    rep = check_dataset(_set(tmp_path, masks, boxes), check_images=False)
    by = {}
    for p in rep.problems:
        by.setdefault(p.kind, []).append(p)
    assert [p.annotation for p in by["degenerate_polygon"]] == [1, 2]
    assert [p.annotation for p in by["empty_mask"]] == [1, 2]
    assert by["empty_mask"][0].severity == "error"
    (p,) = by["polygon_out_of_bounds"]
    assert p.annotation == 3 and "5 px beyond the 40x30 image" in p.message and p.severity == "warning"
    (p,) = by["rle_size_mismatch"]
    assert p.annotation == 4 and "20x20 pixels on the 40x30 image" in p.message
    out = {p.annotation: p for p in by["mask_outside_box"]}
    assert sorted(out) == [5, 6]
    assert out[5].severity == "error" and "no pixel inside" in out[5].message
    assert out[6].severity == "warning" and "by up to 3 px" in out[6].message
    assert rep.has_errors


def test_clean_masks_pass_data_check(tmp_path, capsys):
    y = synthesize(tmp_path / "s", n=6, seed=3, size=96, masks=True)
    rc = main(["data", "check", str(y)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "mask" not in out.split("repairs:")[0].replace("masks", "")


def test_synth_masks_are_exact_and_match_boxes(tmp_path):
    y = synthesize(tmp_path / "s", n=4, seed=2, size=96, masks=True)
    doc = json.loads((y.parent / "train.json").read_text())
    a = load_dataset(y, split="train")
    assert a.has_masks and all(isinstance(m, rle_ops.RLE) for m in a.masks)
    for r, ann in enumerate(doc["annotations"]):
        x, yy, w, h = rle_ops.to_bbox(a.masks[r])
        np.testing.assert_allclose(ann["bbox"], [x, yy, w, h])  # the box is the mask's own
        assert ann["area"] == rle_ops.area(a.masks[r])


@settings(max_examples=30, deadline=None)
@given(st.floats(0.3, 2.5), st.integers(-20, 20), st.integers(-20, 20), st.booleans())
def test_polygon_and_rle_geometry_agree(scale, dx, dy, flip):
    """A mask mapped as polygons and as an RLE (nearest-neighbour warp) covers the same pixels up to
    the outline (IoU > 0.85 for a shape of ~20 px), and a flip of an RLE is exact."""
    h, w = 48, 64
    poly = [np.array([10.0, 8, 40, 12, 34, 40, 14, 30])]
    rle = to_rle(poly, h, w)
    m = np.array([[scale, 0, dx], [0, scale, dy]], dtype=np.float64)
    if flip:
        m = np.array([[-1.0, 0, w], [0, 1, 0]]) @ np.vstack([m, [0, 0, 1]])
    out_hw = (h, w)
    a, b = transform_segms([poly, rle], m, out_hw)
    ra, rb = rasterize([a, b], *out_hw)
    union = (ra | rb).sum()
    if union and ra.sum() > 40:
        assert (ra & rb).sum() / union > 0.85
    if scale == 1.0 and dx == dy == 0 and flip:
        np.testing.assert_array_equal(rb, rasterize([rle], h, w)[:, :, ::-1])


def test_flip_of_rle_is_exact_and_letterbox_maps_polygons():
    h, w = 20, 30
    mk = np.zeros((h, w), np.uint8)
    mk[3:9, 2:7] = 1
    img = np.zeros((h, w, 3), np.uint8)
    meta = {"masks": [rle_ops.encode(mk), [np.array([2.0, 3, 7, 3, 7, 9, 2, 9])]]}
    boxes = np.array([[2, 3, 7, 9], [2, 3, 7, 9]], np.float32)
    _, b, _, m2 = HorizontalFlip(1.0)(img, boxes, np.zeros(2, np.int64), meta, np.random.default_rng(0))
    r = rasterize(m2["masks"], h, w)
    np.testing.assert_array_equal(r[0], mk[:, ::-1])
    np.testing.assert_array_equal(r[1], mk[:, ::-1])
    _, b2, m3 = letterbox(img, boxes, {"masks": meta["masks"]}, 60)
    np.testing.assert_allclose(m3["masks"][1][0], np.array([2.0, 3, 7, 3, 7, 9, 2, 9]) * 2 + [0, 10] * 4)
    r = rasterize(m3["masks"], 60, 60)
    for k in range(2):
        ys, xs = np.nonzero(r[k])
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], b2[k])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.2, 0.8))
def test_polygons_from_random_masks_give_the_same_pixels(seed, p):
    """Outlines of any mask (noise: one-pixel parts, diagonal contacts) rasterise to its pixels with
    the holes filled (the reference fills OpenCV's outer contours)."""
    mk = (np.random.default_rng(seed).random((17, 23)) < p).astype(np.uint8)
    contours, _ = cv2.findContours(mk, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(mk)
    cv2.drawContours(filled, contours, -1, 1, -1)
    np.testing.assert_array_equal(rasterize([polygons_from_mask(mk)], 17, 23)[0], filled)


def test_polygons_from_mask_round_trip():
    mk = np.zeros((30, 40), np.uint8)
    cv2.circle(mk, (20, 15), 9, 1, -1)
    mk[2, 2] = 1
    back = rasterize([polygons_from_mask(mk)], 30, 40)[0]
    np.testing.assert_array_equal(back, mk)


@pytest.fixture(scope="module")
def synth_masks(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("s") / "s", n=8, seed=5, size=96, masks=True)


def test_loader_targets_masks(synth_masks):
    a = load_dataset(synth_masks, split="train")
    ds = DetectionDataset(a, 128, transforms=ValTransform(128), masks=True)
    loader = build_loader(ds, batch_size=3, shuffle=False, seed=0)
    images, targets, metas = next(iter(loader))
    for t, m in zip(targets, metas):
        assert "masks" not in m
        mk = t["masks"]
        assert mk.dtype == torch.uint8 and mk.shape == (len(t["boxes"]), *images.shape[2:])
        assert set(mk.unique().tolist()) <= {0, 1}
        for box, one in zip(t["boxes"], mk):  # synth boxes are the masks' boxes, scaled with them
            ys, xs = torch.nonzero(one, as_tuple=True)
            got = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            assert (got - box).abs().max() <= 1.5
    # masks off: the same boxes, no masks, nothing else changed
    plain = DetectionDataset(a, 128, transforms=ValTransform(128))
    images2, targets2, metas2 = collate_detection([plain[i] for i in range(3)])
    assert torch.equal(images, images2) and all("masks" not in t for t in targets2)
    for t, t2 in zip(targets, targets2):
        assert torch.equal(t["boxes"], t2["boxes"]) and torch.equal(t["labels"], t2["labels"])
    assert metas2 == metas


def test_train_augment_carries_masks_and_ssd_augment_is_refused(synth_masks):
    a = load_dataset(synth_masks, split="train")
    aug = TrainAugment(AugmentConfig(mosaic_prob=0.0, mixup_prob=0.5))
    ds = DetectionDataset(a, 96, transforms=aug, masks=True, seed=1)
    _, targets, _ = collate_detection([ds[(i, 96, 0, True)] for i in range(len(ds))])
    assert sum(len(t["boxes"]) for t in targets) > 0
    for t in targets:
        assert t["masks"].shape[0] == len(t["boxes"])
        for box, one in zip(t["boxes"], t["masks"]):
            ys, xs = torch.nonzero(one, as_tuple=True)
            if len(xs):  # the mask lies inside its (affine, corner-bound) box
                assert xs.min() >= box[0] - 1.5 and xs.max() + 1 <= box[2] + 1.5
    from odkit.data.ssd_aug import SSDAugment

    with pytest.raises(ConfigError, match="do not carry masks"):
        DetectionDataset(a, 96, transforms=SSDAugment(), masks=True)
    boxes_only = load_dataset(synth_masks, split="train")
    boxes_only.masks = None
    with pytest.raises(ConfigError, match="no instance masks"):
        DetectionDataset(boxes_only, 96, masks=True)


def test_data_show_draws_masks(synth_masks, tmp_path):
    from odkit.data.preview import augmented_grid, dataset_grid

    a = load_dataset(synth_masks, split="train")
    with_masks = cv2.imread(str(dataset_grid(a, tmp_path / "m.png", n=2, seed=0)))
    a.masks = None
    without = cv2.imread(str(dataset_grid(a, tmp_path / "b.png", n=2, seed=0)))
    assert with_masks.shape == without.shape and (with_masks != without).any()
    a = load_dataset(synth_masks, split="train")
    out = augmented_grid(a, tmp_path / "aug.png", n=2, img_size=96, cfg=AugmentConfig(mosaic_prob=0.0))
    assert out.is_file()


def test_sliced_set_keeps_masks(synth_masks, tmp_path):
    from odkit.data.tiles import slice_set

    a = load_dataset(synth_masks, split="train")
    tiles, _ = slice_set(a, tmp_path / "t", size=64, overlap=0.25, min_visible=0.0)
    assert tiles.has_masks and len(tiles.masks) == tiles.num_annotations
    for i in range(len(tiles)):
        rec = tiles[i]
        drawn = rasterize(rec.masks, rec.height, rec.width)
        for box, one in zip(rec.boxes, drawn):  # each mask inside its clipped box
            ys, xs = np.nonzero(one)
            if len(xs):
                assert xs.min() >= box[0] - 1 and xs.max() + 1 <= box[2] + 1
                assert ys.min() >= box[1] - 1 and ys.max() + 1 <= box[3] + 1


def test_mosaic_carries_masks(synth_masks):
    """Mosaic (then affine, mixup, flip, letterbox): every box keeps a mask inside it, and the boxes
    are those of the box path (same draws)."""
    a = load_dataset(synth_masks, split="train")
    aug = TrainAugment(AugmentConfig(mosaic_prob=1.0, mixup_prob=0.5, degrees=0.0, shear=0.0))
    with_masks = DetectionDataset(a, 96, transforms=aug, masks=True, seed=4)
    plain = DetectionDataset(a, 96, transforms=aug, seed=4)
    n = 0
    for i in range(len(a)):
        img, boxes, labels, meta = with_masks[(i, 96, 0, True)]
        img2, boxes2, labels2, _ = plain[(i, 96, 0, True)]
        np.testing.assert_array_equal(img, img2)
        np.testing.assert_array_equal(boxes, boxes2)
        drawn = rasterize(meta["masks"], *img.shape[:2])
        assert len(drawn) == len(boxes)
        for box, one in zip(boxes, drawn):
            ys, xs = np.nonzero(one)
            if len(xs):
                n += 1
                assert xs.min() >= box[0] - 1.5 and xs.max() + 1 <= box[2] + 1.5
                assert ys.min() >= box[1] - 1.5 and ys.max() + 1 <= box[3] + 1.5
    assert n > 10
