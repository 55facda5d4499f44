"""RLE mask ops and polygon rasterisation against pycocotools (property tests) and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from odkit.ops import masks as K
from odkit.ops import rle as R

hyp = pytest.importorskip("hypothesis")
M = pytest.importorskip("pycocotools.mask")
st = hyp.strategies
given, settings = hyp.given, hyp.settings

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def _ref_counts(r: dict) -> np.ndarray:
    """pycocotools' counts of a compressed RLE (decoded by its own uncompressed round trip)."""
    return np.asarray(R.string_to_counts(r["counts"]))


# ------------------------------------------------------------------------------ hand-worked
def test_hand_worked_rle() -> None:
    mask = np.array([[0, 1, 0], [1, 1, 0]], dtype=np.uint8)  # column-major: 0 1 | 1 1 | 0 0
    r = R.encode(mask)
    assert r.counts.tolist() == [1, 3, 2]
    assert R.area(r) == 3
    assert R.to_bbox(r).tolist() == [0.0, 0.0, 2.0, 2.0]
    np.testing.assert_array_equal(R.decode(r), mask)
    full = R.encode(np.ones((2, 2), dtype=np.uint8))
    assert full.counts.tolist() == [0, 4]
    # Counts string: 1 -> '1', 3 -> '3', 2 -> '2'; the 4th value is a difference to the 2nd.
    assert R.counts_to_string(np.array([1, 3, 2])) == b"132"
    assert R.counts_to_string(np.array([0, 4, 1, 2])) == b"041N"  # 2 - 4 = -2 -> 0x1e + 48
    assert R.string_to_counts(b"041N").tolist() == [0, 4, 1, 2]
    assert R.counts_to_string(np.array([40])) == b"X1"  # 40 = 8 + 1 * 32: (8 | 0x20) + 48, then 1 + 48


def test_hand_worked_iou_and_crowd() -> None:
    a = np.zeros((4, 4), dtype=np.uint8)
    a[:2, :2] = 1  # 4 px
    b = np.zeros((4, 4), dtype=np.uint8)
    b[1:3, 1:3] = 1  # 4 px, 1 shared
    ra, rb = R.encode(a), R.encode(b)
    out = R.iou([ra], [rb, rb], [False, True])
    assert out[0, 0] == 1 / 7
    assert out[0, 1] == 1 / 4  # crowd: intersection over the detection's area
    far = np.zeros((4, 4), dtype=np.uint8)
    far[3, 3] = 1
    assert R.iou([ra], [R.encode(far)], [False])[0, 0] == 0.0
    other = R.encode(np.ones((5, 4), dtype=np.uint8))
    assert R.iou([ra], [other], [False])[0, 0] == -1.0  # sizes differ


def test_hand_worked_polygon() -> None:
    # A 4 x 3 rectangle with corners on pixel borders covers exactly those pixels.
    r = K.polygon_to_rle([1, 1, 5, 1, 5, 4, 1, 4], 6, 7)
    expect = np.zeros((6, 7), dtype=np.uint8)
    expect[1:4, 1:5] = 1
    np.testing.assert_array_equal(R.decode(r), expect)
    assert K.polygon_area([1, 1, 5, 1, 5, 4, 1, 4]) == 12.0


# ------------------------------------------------------------------------------ properties
@st.composite
def masks(draw, n: int = 3):
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    p = draw(st.sampled_from([0.0, 0.05, 0.5, 0.95, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    return (rng.random((n, h, w)) < p).astype(np.uint8)


@st.composite
def polygons(draw):
    h = draw(st.integers(1, 48))
    w = draw(st.integers(1, 48))
    polys = []
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.integers(3, 10))
        coord = st.floats(-0.3, 1.3, allow_nan=False)
        pts = [draw(coord) for _ in range(2 * k)]
        snap = draw(st.sampled_from([0, 2, 10]))  # half pixels / tenths hit the rounding edges
        poly = np.array(pts) * np.tile([w, h], k)
        if snap:
            poly = np.round(poly * snap) / snap
        polys.append(poly.tolist())
    return polys, h, w


@SETTINGS
@given(masks())
def test_encode_decode_area_bbox_strings(ms: np.ndarray) -> None:
    ref = M.encode(np.asfortranarray(ms.transpose(1, 2, 0)))
    ours = R.encode(ms)
    for m, r, o in zip(ms, ref, ours):
        np.testing.assert_array_equal(o.counts, _ref_counts(r))
        assert R.counts_to_string(o.counts) == r["counts"]
        np.testing.assert_array_equal(R.decode(o), m)
        assert R.area(o) == int(M.area(r))
        np.testing.assert_array_equal(R.to_bbox(o), M.toBbox(r))
        assert R.to_coco(R.from_coco(r)) == {"size": r["size"], "counts": r["counts"].decode()}
    for intersect in (False, True):
        assert R.counts_to_string(R.merge(ours, intersect).counts) == M.merge(ref, intersect=intersect)["counts"]


@SETTINGS
@given(polygons())
def test_polygons_equal_frpyobjects(case) -> None:
    polys, h, w = case
    ref = M.frPyObjects(polys, h, w)
    ours = K.polygons_to_rles(polys, h, w)
    for r, o in zip(ref, ours):
        np.testing.assert_array_equal(o.counts, _ref_counts(r))
        np.testing.assert_array_equal(R.decode(o), M.decode(r))
    merged = K.segmentation_to_rle(polys, h, w)
    assert R.counts_to_string(merged.counts) == M.merge(ref)["counts"]


@SETTINGS
@given(polygons(), st.integers(0, 2**31 - 1))
def test_holes_and_crowd_iou(case, seed: int) -> None:
    """Masks with holes (outer minus inner via RLE merges) and crowd RLE ground truth."""
    polys, h, w = case
    rng = np.random.default_rng(seed)
    outer = K.segmentation_to_rle(polys, h, w)
    inner = K.polygon_to_rle((np.array(polys[0]) * 0.5 + 0.25 * np.tile([w, h], len(polys[0]) // 2)).tolist(), h, w)
    # outer minus inner: the union of the outer mask with the inner one, intersected with "not inner".
    not_inner = R.encode(1 - R.decode(inner))
    holed = R.merge([R.merge([outer, inner]), not_inner], intersect=True)
    np.testing.assert_array_equal(R.decode(holed), R.decode(outer) & (1 - R.decode(inner)))
    ref_holed = M.merge(
        [M.merge([M.merge(M.frPyObjects(polys, h, w)), M.frPyObjects(
            [(np.array(polys[0]) * 0.5 + 0.25 * np.tile([w, h], len(polys[0]) // 2)).tolist()], h, w)[0]]),
         M.encode(np.asfortranarray((1 - R.decode(inner))[:, :, None]))[0]],
        intersect=True,
    )
    assert R.counts_to_string(holed.counts) == ref_holed["counts"]
    # Crowd ground truth as uncompressed RLE (what COCO stores for crowds).
    crowd_mask = (rng.random((h, w)) < 0.4).astype(np.uint8)
    crowd_unc = {"size": [h, w], "counts": R.encode(crowd_mask).counts.tolist()}
    ref_crowd = M.frPyObjects(crowd_unc, h, w)
    dts = [holed, outer, inner]
    ref_dts = [{"size": [h, w], "counts": R.counts_to_string(d.counts)} for d in dts]
    gts = [R.from_coco(crowd_unc), outer]
    crowd = [True, False]
    ref_gts = [ref_crowd, {"size": [h, w], "counts": R.counts_to_string(outer.counts)}]
    np.testing.assert_array_equal(R.iou(dts, gts, crowd), np.asarray(M.iou(ref_dts, ref_gts, [1, 0])))


def test_boxes_as_polygons() -> None:
    b = np.array([[1.5, 2.2, 5.1, 7.3], [-3.0, 4.0, 100.0, 2.5], [0.0, 0.0, 0.0, 0.0]])
    ref = M.frPyObjects(b, 17, 11)
    ours = K.boxes_to_rles(b, 17, 11)
    assert [R.counts_to_string(o.counts) for o in ours] == [r["counts"] for r in ref]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="size"):
        R.merge([R.encode(np.zeros((2, 2))), R.encode(np.zeros((3, 2)))])
    with pytest.raises(ValueError, match="more than its size"):
        R.decode(R.RLE((2, 2), [1, 5]))
    with pytest.raises(ValueError, match="characters"):
        R.string_to_counts("ab~")
    with pytest.raises(ValueError, match="polygon"):
        K.segmentation_to_rle([1, 2, 3], 4, 4)
