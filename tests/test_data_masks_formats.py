"""Instance masks through the layouts: COCO polygons / RLE -> LabelMe, CVAT, YOLO-seg -> COCO.

Pixels are compared against pycocotools-equal rasters of the source (``odkit.ops.masks``); layouts
that keep polygons give them back to 1e-6 pixels, and every mask comes back with pixel IoU >= 0.99
(exactly equal for polygons and for the RLE masks LabelMe / CVAT store as masks).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from odkit.data.formats import load_dataset, save_dataset
from odkit.data.masks import is_polygons, rasterize
from odkit.ops import rle as rle_ops

W, H = 120, 90


def _disc(cx: float, cy: float, r: float) -> np.ndarray:
    ys, xs = np.mgrid[0:H, 0:W]
    return (((xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2) <= r * r).astype(np.uint8)


def build_coco(root: Path) -> Path:
    """Two images: polygons (one instance of two polygons), a compressed RLE, a crowd RLE with
    uncompressed counts, and a plain box."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in (1, 2):
        cv2.imwrite(str(root / f"im{k}.png"), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    tri = [10.25, 10.5, 50.75, 12.0, 30.5, 40.25]
    quad = [60.0, 50.0, 100.5, 52.25, 98.0, 80.75, 62.5, 78.0]
    two = [[5.5, 60.0, 25.0, 60.5, 15.25, 85.0], [30.0, 70.0, 45.5, 70.0, 45.5, 86.0, 30.0, 86.0]]
    disc = rle_ops.encode(_disc(80, 30, 14.5))
    crowd = rle_ops.encode(_disc(40, 45, 20) | _disc(90, 60, 8))
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10.25, 10.5, 40.5, 29.75], "segmentation": [tri],
         "iscrowd": 0, "area": 500.0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [60.0, 50.0, 40.5, 30.75], "segmentation": [quad],
         "iscrowd": 0, "area": 1000.0},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [5.5, 60.0, 40.0, 26.0], "segmentation": two,
         "iscrowd": 0, "area": 400.0},
        {"id": 4, "image_id": 2, "category_id": 2, "bbox": [65.0, 15.0, 30.0, 30.0],
         "segmentation": rle_ops.to_coco(disc), "iscrowd": 0, "area": float(rle_ops.area(disc))},
        {"id": 5, "image_id": 2, "category_id": 1, "bbox": [20.0, 25.0, 78.0, 43.0],
         "segmentation": rle_ops.to_coco(crowd, compressed=False), "iscrowd": 1, "area": float(rle_ops.area(crowd))},
        {"id": 6, "image_id": 2, "category_id": 2, "bbox": [2.0, 70.0, 10.0, 10.0], "iscrowd": 0, "area": 100.0},
    ]
    doc = {
        "images": [{"id": k, "file_name": f"im{k}.png", "width": W, "height": H} for k in (1, 2)],
        "annotations": anns,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    (root / "ann.json").write_text(json.dumps(doc))
    return root / "ann.json"


def _pixel_ious(a, b) -> np.ndarray:
    out = []
    for i in range(len(a)):
        ra, rb = a[i], b[i]
        assert (ra.masks is None) == (rb.masks is None)
        for ma, mb in zip(ra.masks, rb.masks):
            assert (ma is None) == (mb is None)
            if ma is None:
                continue
            pa, pb = rasterize([ma], H, W)[0], rasterize([mb], H, W)[0]
            out.append((pa & pb).sum() / max((pa | pb).sum(), 1))
    return np.array(out)


def test_coco_reads_polygons_and_both_rles(tmp_path):
    a = load_dataset(build_coco(tmp_path / "c"))
    assert a.has_masks and len(a.masks) == 6
    assert is_polygons(a.masks[0]) and len(a.masks[2]) == 2
    assert isinstance(a.masks[3], rle_ops.RLE) and isinstance(a.masks[4], rle_ops.RLE)
    assert a.masks[5] is None
    assert rle_ops.area(a.masks[4]) == int((_disc(40, 45, 20) | _disc(90, 60, 8)).sum())


def test_coco_writes_masks_back_unchanged(tmp_path):
    a = load_dataset(build_coco(tmp_path / "c"))
    save_dataset(a, tmp_path / "o" / "ann.json", "coco")
    doc = json.loads((tmp_path / "o" / "ann.json").read_text())
    segs = [x.get("segmentation") for x in doc["annotations"]]
    src = json.loads((tmp_path / "c" / "ann.json").read_text())["annotations"]
    assert segs[:3] == [x["segmentation"] for x in src[:3]]  # polygons stay polygons
    assert isinstance(segs[3]["counts"], str) and isinstance(segs[4]["counts"], list)  # crowd: uncompressed
    assert segs[4] == src[4]["segmentation"] and segs[5] is None
    b = load_dataset(tmp_path / "o" / "ann.json")
    assert (_pixel_ious(a, b) == 1.0).all()


@pytest.mark.parametrize("layout", ["labelme", "cvat", "yolo"])
def test_round_trip_keeps_every_mask(tmp_path, layout):
    a = load_dataset(build_coco(tmp_path / "c"))
    save_dataset(a, tmp_path / layout, layout)
    b = load_dataset(tmp_path / layout)
    assert b.source == layout
    save_dataset(b, tmp_path / "back" / "ann.json", "coco")
    c = load_dataset(tmp_path / "back" / "ann.json")
    for other in (b, c):
        ious = _pixel_ious(a, other)
        assert len(ious) == 5 and ious.min() >= 0.99, ious
        # polygons stay polygons, to 1e-6 pixels (YOLO joins the two polygons of instance 3 into one)
        for r in (0, 1) if layout == "yolo" else (0, 1, 2):
            assert is_polygons(other.masks[r]) and len(other.masks[r]) == len(a.masks[r])
            for p, q in zip(a.masks[r], other.masks[r]):
                np.testing.assert_allclose(p, q, atol=1e-6)
        assert (ious[:3] == 1.0).all()  # every polygon mask, the joined one too, pixel for pixel
        if layout != "yolo":  # LabelMe and CVAT store RLE masks as masks: exact
            assert (ious == 1.0).all()
    print(f"{layout}: pixel IoU after the round trip min {ious.min():.4f} mean {ious.mean():.4f}")


def test_labelme_mask_shape_matches_labelme_convention(tmp_path):
    """A LabelMe ``mask`` shape covers ``mask[y1 : y2 + 1, x1 : x2 + 1]`` of its two points."""
    import base64

    crop = np.zeros((3, 4), np.uint8)
    crop[1, 1:3] = 255
    png = base64.b64encode(cv2.imencode(".png", crop)[1].tobytes()).decode()
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((10, 12, 3), np.uint8))
    doc = {"shapes": [{"label": "x", "points": [[5, 2], [8, 4]], "shape_type": "mask", "mask": png}],
           "imagePath": "a.png", "imageHeight": 10, "imageWidth": 12}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    a = load_dataset(tmp_path, format="labelme")
    m = rle_ops.decode(a.masks[0])
    assert m.sum() == 2 and m[3, 6] == 1 and m[3, 7] == 1
    np.testing.assert_allclose(a.boxes[0], [6, 3, 8, 4])


def test_cvat_mask_rle_is_row_major_over_its_box(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((10, 12, 3), np.uint8))
    xml = ('<annotations><version>1.1</version><image id="0" name="a.png" width="12" height="10">'
           '<mask label="x" rle="1, 2, 3, 1, 1" left="3" top="4" width="4" height="2" z_order="0"/>'
           '<polygon label="x" points="1,1;5,1;3,4" group_id="7"/><polygon label="x" points="8,8;9,8;9,9" group_id="7"/>'
           '</image></annotations>')
    (tmp_path / "annotations.xml").write_text(xml)
    a = load_dataset(tmp_path, format="cvat")
    m = rle_ops.decode(a.masks[0])
    want = np.zeros((10, 12), np.uint8)
    want[4, 4:6] = 1
    want[5, 5] = 1
    np.testing.assert_array_equal(m, want)
    assert len(a.masks) == 2 and len(a.masks[1]) == 2  # one group -> one instance
    np.testing.assert_allclose(a.boxes[1], [1, 1, 9, 9])


def test_box_only_segmentations_are_no_masks(tmp_path):
    p = build_coco(tmp_path / "c")
    doc = json.loads(p.read_text())
    for k, a in enumerate(doc["annotations"]):
        a["segmentation"] = [] if k % 2 else [[]]
    p.write_text(json.dumps(doc))
    assert load_dataset(p).masks is None
