"""Anchors, SSD default boxes, grid points and box coders."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odkit.ops import (
    AnchorGenerator,
    DeltaXYWHCoder,
    DistanceCoder,
    YOLOCoder,
    grid_points,
    ssd300_priors,
)


def test_faster_rcnn_nine_anchors():
    gen = AnchorGenerator([[128, 256, 512]], [0.5, 1.0, 2.0], [16])
    assert gen.num_anchors_per_location() == [9]
    (a,) = gen.grid_anchors([(3, 4)])
    assert a.shape == (3 * 4 * 9, 4)
    w, h = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    # every anchor has area size^2 and h/w = ratio
    base = a[:9]
    for i, (r, s) in enumerate((r, s) for r in (0.5, 1.0, 2.0) for s in (128, 256, 512)):
        assert (w[i] * h[i]).item() == pytest.approx(s * s, rel=1e-5)
        assert (h[i] / w[i]).item() == pytest.approx(r, rel=1e-5)
    # location (y=1, x=2): centre (32, 16) with offset 0; row index (1 * 4 + 2) * 9
    loc = a[(1 * 4 + 2) * 9 : (1 * 4 + 2) * 9 + 9]
    assert torch.allclose((loc[:, :2] + loc[:, 2:]) / 2, torch.tensor([32.0, 16.0]).expand(9, 2))
    assert torch.allclose(loc - base, torch.tensor([32.0, 16, 32, 16]).expand(9, 4))


def test_fpn_levels_and_scales():
    gen = AnchorGenerator([32, 64, 128], [0.5, 1, 2], [8, 16, 32], scales=(1, 2 ** (1 / 3), 2 ** (2 / 3)), offset=0.5)
    assert gen.num_anchors_per_location() == [9, 9, 9]
    out = gen.grid_anchors([(4, 4), (2, 2), (1, 1)])
    assert [o.shape[0] for o in out] == [144, 36, 9]
    c = (out[2][:, :2] + out[2][:, 2:]) / 2
    assert torch.allclose(c, torch.tensor([16.0, 16.0]).expand(9, 2))  # cell centre with offset 0.5
    areas = ((out[0][:3, 2] - out[0][:3, 0]) * (out[0][:3, 3] - out[0][:3, 1])).tolist()
    assert areas == pytest.approx([32**2, (32 * 2 ** (1 / 3)) ** 2, (32 * 2 ** (2 / 3)) ** 2], rel=1e-5)


def test_ssd300_priors():
    p = ssd300_priors()
    assert p.shape == (8732, 4)
    assert p.min() >= 0 and p.max() <= 1
    # first location of conv4_3: centre (4/300), sizes 30 and sqrt(30*60), then ratio 2 pair
    assert p[0].tolist() == pytest.approx([4 / 300, 4 / 300, 0.1, 0.1], rel=1e-5)
    assert p[1, 2].item() == pytest.approx(math.sqrt(30 * 60) / 300, rel=1e-5)
    assert p[2, 2:].tolist() == pytest.approx([30 * math.sqrt(2) / 300, 30 / math.sqrt(2) / 300], rel=1e-5)
    last = p[-4:]  # the single 1x1 location of the last level
    assert torch.allclose(last[:, :2], torch.full((4, 2), 0.5))
    xy = ssd300_priors(fmt="xyxy")
    assert xy.shape == (8732, 4) and xy.max() <= 300
    assert xy[0].tolist() == pytest.approx([0, 0, 4 + 15, 4 + 15], abs=1e-4)  # clipped at the border
    assert ssd300_priors(clip=False, fmt="xyxy")[0].tolist() == pytest.approx([-11, -11, 19, 19], abs=1e-4)


def test_grid_points():
    p = grid_points((2, 3), 8, offset=0.5)
    assert p.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert grid_points((1, 2), 16, offset=0.0).tolist() == [[0, 0], [16, 0]]


box_st = st.tuples(
    st.floats(0, 500), st.floats(0, 500), st.floats(4, 150), st.floats(4, 150)  # ratios < exp(clip)
).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(box_st, box_st), min_size=1, max_size=6))
def test_delta_coder_roundtrip(pairs):
    pri = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
    gt = torch.tensor([g for _, g in pairs], dtype=torch.float64)
    for coder in (DeltaXYWHCoder(), DeltaXYWHCoder(stds=(0.1, 0.1, 0.2, 0.2)), DeltaXYWHCoder((0.1, 0, -0.1, 0), (1, 2, 3, 4))):
        d = coder.encode(pri, gt)
        assert torch.allclose(coder.decode(pri, d), gt, atol=1e-6)
        assert torch.allclose(coder.encode(pri, coder.decode(pri, d)), d, atol=1e-6)
    # hand check: dx = (gx - px) / pw
    px = (pri[:, 0] + pri[:, 2]) / 2
    gx = (gt[:, 0] + gt[:, 2]) / 2
    assert torch.allclose(DeltaXYWHCoder().encode(pri, gt)[:, 0], (gx - px) / (pri[:, 2] - pri[:, 0]))


def test_delta_coder_clip_and_max_shape():
    c = DeltaXYWHCoder()
    pri = torch.tensor([[0.0, 0, 10, 10]])
    out = c.decode(pri, torch.tensor([[0.0, 0, 100.0, 100.0]]))
    assert out[0, 2] - out[0, 0] == pytest.approx(10 * 1000 / 16, rel=1e-4)
    out = c.decode(pri, torch.tensor([[0.0, 0, 5.0, 5.0]]), max_shape=(20, 30))
    assert out.tolist() == [[0, 0, 30, 20]]


@settings(max_examples=60, deadline=None)
@given(st.lists(box_st, min_size=1, max_size=6), st.sampled_from([1.0, 8.0]))
def test_distance_coder_roundtrip(bl, stride):
    gt = torch.tensor(bl, dtype=torch.float64)
    pts = (gt[:, :2] + gt[:, 2:]) / 2 + 0.3  # inside the box
    coder = DistanceCoder()
    d = coder.encode(pts, gt, stride)
    assert (d > 0).all()
    assert torch.allclose(coder.decode(pts, d, stride), gt, atol=1e-6)
    assert torch.allclose(coder.encode(pts, coder.decode(pts, d, stride), stride), d, atol=1e-6)
    clipped = DistanceCoder(max_dis=16).encode(pts, gt, stride)
    assert clipped.max() <= 16 - 0.01 + 1e-9 and clipped.min() >= 0


def test_yolo_coders_roundtrip():
    g = torch.Generator().manual_seed(0)
    stride = 16.0
    cells = torch.randint(0, 20, (50, 2), generator=g).double()
    for style in ("v3", "yolox"):
        coder = YOLOCoder(style)
        raw = torch.randn(50, 4, generator=g, dtype=torch.float64)
        if style == "v3":
            centre = (cells + 0.5) * stride
            wh = torch.rand(50, 2, generator=g, dtype=torch.float64) * 100 + 10
            pri = torch.cat([centre - wh / 2, centre + wh / 2], 1)
        else:
            pri = cells
        boxes = coder.decode(pri, raw, stride)
        assert torch.allclose(coder.encode(pri, boxes, stride), raw, atol=1e-6)
        assert torch.allclose(coder.decode(pri, coder.encode(pri, boxes, stride), stride), boxes, atol=1e-6)
    # YOLOX: raw zeros -> a stride-sized box centred at the cell corner (x + 0) * stride
    out = YOLOCoder("yolox").decode(torch.tensor([[2.0, 3.0]]), torch.zeros(1, 4), stride)
    assert out.tolist() == [[24.0, 40.0, 40.0, 56.0]]
    # v3: raw zeros -> the anchor itself
    anc = torch.tensor([[0.0, 0, 16, 32]])
    assert YOLOCoder("v3").decode(anc, torch.zeros(1, 4), stride).tolist() == anc.tolist()
