"""Box formats and the IoU family against brute-force Python references."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odkit.errors import ConfigError
from odkit.ops import aligned_box_iou, box_area, box_convert, box_iou, clip_boxes

MODES = ["iou", "giou", "diou", "ciou", "iof"]


def ref_pair(a, b, mode, eps=1e-7):
    """Textbook IoU family for two xyxy boxes (python floats)."""
    w1, h1 = max(a[2] - a[0], 0.0), max(a[3] - a[1], 0.0)
    w2, h2 = max(b[2] - b[0], 0.0), max(b[3] - b[1], 0.0)
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    if mode == "iof":
        return inter / max(w1 * h1, eps)
    union = w1 * h1 + w2 * h2 - inter
    iou = inter / max(union, eps)
    if mode == "iou":
        return iou
    cw = max(a[2], b[2]) - min(a[0], b[0])
    ch = max(a[3], b[3]) - min(a[1], b[1])
    if mode == "giou":
        c = max(cw * ch, eps)
        return iou - (c - union) / c
    rho2 = ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2
    diou = iou - rho2 / (cw * cw + ch * ch + eps)
    if mode == "diou":
        return diou
    v = 4 / math.pi**2 * (math.atan(w2 / (h2 + eps)) - math.atan(w1 / (h1 + eps))) ** 2
    alpha = v / (1 - iou + v + eps)
    return min(max(diou - alpha * v, -1.0), 1.0)


coord = st.floats(-50, 150, allow_nan=False, width=32)


@st.composite
def box(draw, degenerate=True):
    x1, y1 = draw(coord), draw(coord)
    lo = 0.0 if degenerate else 0.5
    w = draw(st.floats(lo, 100, width=32))
    h = draw(st.floats(lo, 100, width=32))
    return [x1, y1, x1 + w, y1 + h]


boxes_st = st.lists(box(), min_size=0, max_size=8)


@settings(max_examples=80, deadline=None)
@given(boxes_st, boxes_st, st.sampled_from(MODES))
def test_pairwise_matches_reference(b1, b2, mode):
    t1 = torch.tensor(b1, dtype=torch.float64).reshape(-1, 4)
    t2 = torch.tensor(b2, dtype=torch.float64).reshape(-1, 4)
    got = box_iou(t1, t2, mode=mode)
    assert got.shape == (len(b1), len(b2))
    for i, a in enumerate(t1.tolist()):
        for j, b in enumerate(t2.tolist()):
            assert got[i, j].item() == pytest.approx(ref_pair(a, b, mode), abs=1e-9)
    lo = 0.0 if mode in ("iou", "iof") else -1.0
    assert ((got >= lo - 1e-12) & (got <= 1.0 + 1e-12)).all()
    # aligned form = diagonal of the pairwise form
    n = min(len(b1), len(b2))
    al = aligned_box_iou(t1[:n], t2[:n], mode=mode)
    assert torch.allclose(al, got.diagonal()[:n] if n else al, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(boxes_st, boxes_st, st.sampled_from(["iou", "giou", "diou", "ciou"]))
def test_symmetry_and_identity(b1, b2, mode):
    t1 = torch.tensor(b1).reshape(-1, 4)
    t2 = torch.tensor(b2).reshape(-1, 4)
    assert torch.allclose(box_iou(t1, t2, mode), box_iou(t2, t1, mode).t(), atol=1e-6)
    good = t1[box_area(t1) > 1e-2]
    if len(good):
        assert torch.allclose(aligned_box_iou(good, good, mode), torch.ones(len(good)), atol=1e-5)


def test_hand_worked_values():
    a = torch.tensor([[0.0, 0, 2, 2]])
    b = torch.tensor([[1.0, 1, 3, 3]])
    assert box_iou(a, b).item() == pytest.approx(1 / 7)
    assert box_iou(a, b, "iof").item() == pytest.approx(1 / 4)
    assert box_iou(a, b, "giou").item() == pytest.approx(1 / 7 - (9 - 7) / 9)
    assert box_iou(a, b, "diou").item() == pytest.approx(1 / 7 - 2 / 18)
    # disjoint boxes: GIoU < 0, IoU = 0
    c = torch.tensor([[10.0, 10, 12, 12]])
    assert box_iou(a, c).item() == 0.0
    assert box_iou(a, c, "giou").item() < 0


def test_degenerate_and_empty():
    z = torch.tensor([[1.0, 1, 1, 1], [5, 5, 3, 3]])  # zero-size and inverted
    for mode in MODES:
        out = box_iou(z, z, mode)
        assert torch.isfinite(out).all()
        assert box_iou(torch.zeros(0, 4), z, mode).shape == (0, 2)
        assert box_iou(z, torch.zeros(0, 4), mode).shape == (2, 0)
        assert aligned_box_iou(torch.zeros(0, 4), torch.zeros(0, 4), mode).shape == (0,)
    assert box_area(z).tolist() == [0.0, 0.0]


def test_half_precision_computed_in_float32():
    b1 = torch.tensor([[0.0, 0, 100, 100], [10, 10, 60, 80]])
    b2 = torch.tensor([[5.0, 5, 90, 110]])
    for dt in (torch.float16, torch.bfloat16):
        out = box_iou(b1.to(dt), b2.to(dt), "ciou")
        assert out.dtype == torch.float32
        assert torch.allclose(out, box_iou(b1.to(dt).float(), b2.to(dt).float(), "ciou"))
        assert aligned_box_iou(b1.to(dt), b1.to(dt)).dtype == torch.float32


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(mode):
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(3, 2, generator=g, dtype=torch.float64) * 10
    wh = torch.rand(3, 2, generator=g, dtype=torch.float64) * 10 + 1
    b1 = torch.cat([xy, xy + wh], 1).requires_grad_()
    xy = torch.rand(4, 2, generator=g, dtype=torch.float64) * 10
    wh = torch.rand(4, 2, generator=g, dtype=torch.float64) * 10 + 1
    b2 = torch.cat([xy, xy + wh], 1).requires_grad_()
    if mode == "ciou":  # alpha is a constant weight (no gradient) by definition
        f = lambda x, y: box_iou(x, y, "diou")  # noqa: E731
        assert torch.autograd.gradcheck(f, (b1, b2))
        out = box_iou(b1, b2, "ciou").sum()
        out.backward()
        assert torch.isfinite(b1.grad).all() and b1.grad.abs().sum() > 0
        return
    assert torch.autograd.gradcheck(lambda x, y: box_iou(x, y, mode), (b1, b2))
    assert torch.autograd.gradcheck(lambda x, y: aligned_box_iou(x, y[:3], mode), (b1, b2))


@settings(max_examples=50, deadline=None)
@given(st.lists(box(degenerate=False), min_size=1, max_size=6))
def test_formats_roundtrip(bl):
    b = torch.tensor(bl, dtype=torch.float64)
    for fmt in ("xyxy", "xywh", "cxcywh"):
        there = box_convert(b, "xyxy", fmt)
        assert torch.allclose(box_convert(there, fmt, "xyxy"), b, atol=1e-9)
    x1, y1, x2, y2 = bl[0]
    assert box_convert(b, "xyxy", "xywh")[0].tolist() == pytest.approx([x1, y1, x2 - x1, y2 - y1])
    assert box_convert(b, "xyxy", "cxcywh")[0].tolist() == pytest.approx(
        [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    )


def test_clip_and_errors():
    b = torch.tensor([[-5.0, -5, 50, 30], [10, 10, 200, 300]])
    assert clip_boxes(b, (40, 100)).tolist() == [[0, 0, 50, 30], [10, 10, 100, 40]]
    with pytest.raises(ConfigError):
        box_iou(b, b, mode="nope")
    with pytest.raises(ConfigError):
        box_convert(b, "xyxy", "yxyx")
    with pytest.raises(ConfigError):
        box_iou(torch.zeros(3, 5), b)
