"""RoIAlign / RoIPool against naive per-sample loops; FPN level mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odkit.errors import ConfigError
from odkit.ops import roi_align, roi_pool
from odkit.ops.roi import map_roi_levels, multiscale_roi_align


def naive_roi_align(feat, rois, oh, ow, scale, sr, aligned):
    """Direct transcription of the reference RoIAlign: one bilinear sample at a time."""
    _, c, h, w = feat.shape
    f = feat.double()
    out = torch.zeros(len(rois), c, oh, ow, dtype=torch.float64)
    for k, r in enumerate(rois.tolist()):
        b = int(r[0])
        # the RoI geometry in the input's precision, as the kernels compute it (in float32 a height
        # of 2**-26 px rounds to 0 and gets no adaptive samples)
        f32 = np.float32 if feat.dtype == torch.float32 else np.float64
        off = f32(0.5 if aligned else 0.0)
        sw, sh = f32(r[1]) * f32(scale) - off, f32(r[2]) * f32(scale) - off
        rw, rh = f32(r[3]) * f32(scale) - off - sw, f32(r[4]) * f32(scale) - off - sh
        if not aligned:
            rw, rh = max(rw, f32(1.0)), max(rh, f32(1.0))
        gh = sr if sr > 0 else math.ceil(rh / f32(oh))
        gw = sr if sr > 0 else math.ceil(rw / f32(ow))
        sw, sh, rw, rh = float(sw), float(sh), float(rw), float(rh)
        bh, bw = rh / oh, rw / ow
        count = max(gh * gw, 1)
        for ph in range(oh):
            for pw in range(ow):
                acc = torch.zeros(c, dtype=torch.float64)
                for iy in range(gh):
                    y = sh + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sw + pw * bw + (ix + 0.5) * bw / gw
                        if y < -1.0 or y > h or x < -1.0 or x > w:
                            continue
                        y, x = max(y, 0.0), max(x, 0.0)
                        yl, xl = int(y), int(x)
                        if yl >= h - 1:
                            yl = yh = h - 1
                            y = float(yl)
                        else:
                            yh = yl + 1
                        if xl >= w - 1:
                            xl = xh = w - 1
                            x = float(xl)
                        else:
                            xh = xl + 1
                        ly, lx = y - yl, x - xl
                        acc += (1 - ly) * (1 - lx) * f[b, :, yl, xl] + (1 - ly) * lx * f[b, :, yl, xh]
                        acc += ly * (1 - lx) * f[b, :, yh, xl] + ly * lx * f[b, :, yh, xh]
                out[k, :, ph, pw] = acc / count
    return out


def _round(v):
    return math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)


def naive_roi_pool(feat, rois, oh, ow, scale):
    _, c, h, w = feat.shape
    out = torch.zeros(len(rois), c, oh, ow, dtype=feat.dtype)
    for k, r in enumerate(rois.tolist()):
        b = int(r[0])
        x1, y1, x2, y2 = (_round(v * scale) for v in r[1:])
        rw, rh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        for ph in range(oh):
            for pw in range(ow):
                hs = min(max(math.floor(ph * rh / oh) + y1, 0), h)
                he = min(max(math.ceil((ph + 1) * rh / oh) + y1, 0), h)
                ws = min(max(math.floor(pw * rw / ow) + x1, 0), w)
                we = min(max(math.ceil((pw + 1) * rw / ow) + x1, 0), w)
                if he > hs and we > ws:
                    out[k, :, ph, pw] = feat[b, :, hs:he, ws:we].amax(dim=(1, 2))
    return out


@st.composite
def roi_case(draw):
    h, w = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    scale = draw(st.sampled_from([1.0, 0.5, 0.25]))
    k = draw(st.integers(0, 5))
    rois = []
    for _ in range(k):
        x1 = draw(st.floats(-4, w / scale + 2, width=32))
        y1 = draw(st.floats(-4, h / scale + 2, width=32))
        rw = draw(st.one_of(st.just(0.0), st.floats(0, 2.5 * w / scale, width=32)))
        rh = draw(st.one_of(st.just(0.0), st.floats(0, 2.5 * h / scale, width=32)))
        rois.append([draw(st.integers(0, 1)), x1, y1, x1 + rw, y1 + rh])
    seed = draw(st.integers(0, 1000))
    feat = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(seed))
    out = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return feat, torch.tensor(rois, dtype=torch.float32).reshape(-1, 5), out, scale


@settings(max_examples=60, deadline=None)
@given(roi_case(), st.sampled_from([0, 1, 2, 3]), st.booleans())
def test_roi_align_matches_naive(case, sr, aligned):
    feat, rois, (oh, ow), scale = case
    got = roi_align(feat, rois, (oh, ow), scale, sr, aligned)
    ref = naive_roi_align(feat, rois, oh, ow, scale, sr, aligned)
    assert got.shape == (len(rois), 3, oh, ow)
    assert (got.double() - ref).abs().max().item() < 1e-5 if len(rois) else True


@settings(max_examples=60, deadline=None)
@given(roi_case())
def test_roi_pool_matches_naive(case):
    feat, rois, (oh, ow), scale = case
    assert torch.equal(roi_pool(feat, rois, (oh, ow), scale), naive_roi_pool(feat, rois, oh, ow, scale))


def test_roi_align_hand_value():
    # a linear ramp: bilinear sampling reproduces it exactly; the mean of a bin is its centre value
    feat = torch.arange(8.0).repeat(8, 1)[None, None]  # value = x
    rois = torch.tensor([[0, 1.0, 1.0, 5.0, 5.0]])
    out = roi_align(feat, rois, 2, 1.0, 2, aligned=True)
    assert torch.allclose(out[0, 0], torch.tensor([[1.5, 3.5], [1.5, 3.5]]))


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sr", [0, 2])
def test_roi_align_gradcheck(aligned, sr):
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.7, 4.2, 3.9], [1, 1.1, 0.2, 5.5, 4.6], [1, -1.5, 2.0, 2.0, 6.5]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, (2, 3), 1.0, sr, aligned), (feat,))


def test_roi_pool_gradient_flows():
    feat = torch.randn(1, 2, 6, 6, requires_grad=True)
    roi_pool(feat, torch.tensor([[0, 0.0, 0, 5, 5]]), 2).sum().backward()
    assert feat.grad.abs().sum() == 2 * 4  # one arg-max cell per bin and channel


def test_empty_rois_and_bad_input():
    feat = torch.randn(1, 4, 5, 5)
    assert roi_align(feat, torch.zeros(0, 5), 3).shape == (0, 4, 3, 3)
    assert roi_pool(feat, torch.zeros(0, 5), 3).shape == (0, 4, 3, 3)
    with pytest.raises(ConfigError):
        roi_align(feat, torch.tensor([[1, 0.0, 0, 2, 2]]), 2)  # batch index 1 of 1 image
    with pytest.raises(ConfigError):
        roi_align(feat, torch.zeros(3, 4), 2)


def test_map_roi_levels():
    sizes = torch.tensor([10.0, 111.0, 112.0, 223.0, 224.0, 447.0, 448.0, 2000.0])
    rois = torch.stack([torch.zeros(8), torch.zeros(8), torch.zeros(8), sizes, sizes], 1)
    # k = floor(4 + log2(s / 224)) clamped to [2, 5]
    expect = [min(max(math.floor(4 + math.log2(s / 224) + 1e-6), 2), 5) - 2 for s in sizes.tolist()]
    assert map_roi_levels(rois, 2, 5).tolist() == expect
    assert map_roi_levels(rois, 2, 5).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_multiscale_roi_align_uses_mapped_level():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, 3, 64 // s, 64 // s, generator=g) for s in (4, 8, 16, 32)]
    rois = torch.tensor([[0, 0.0, 0, 20, 20], [0, 4.0, 4, 60, 60], [0, 0, 0, 300, 300]])
    out = multiscale_roi_align(feats, rois, [4, 8, 16, 32], 2, sampling_ratio=2)
    lvl = map_roi_levels(rois, 2, 5)
    for i in range(3):
        s = 2 ** (int(lvl[i]) + 2)
        ref = roi_align(feats[int(lvl[i])], rois[i : i + 1], 2, 1.0 / s, 2)
        assert torch.allclose(out[i : i + 1], ref)


def test_roi_align_chunked_taps_match_naive(monkeypatch):
    """RoIs with different sample counts, built in many tap chunks (sorted by count), forward and backward."""
    import odkit.ops.roi_sampling as rs

    g = torch.Generator().manual_seed(1)
    feat = torch.randn(2, 3, 12, 14, generator=g, dtype=torch.float64)
    xy = torch.rand(12, 2, generator=g, dtype=torch.float64) * 20 - 2
    wh = torch.rand(12, 2, generator=g, dtype=torch.float64) * 30
    rois = torch.cat([torch.randint(0, 2, (12, 1), generator=g).double(), xy, xy + wh], 1)
    up = torch.randn(12, 3, 3, 3, generator=g, dtype=torch.float64)
    f1 = feat.clone().requires_grad_()
    roi_align(f1, rois, 3, 0.5, 0, True).backward(up)  # one chunk (its gradient: gradcheck above)
    monkeypatch.setattr(rs, "_TAP_BUDGET", 4 * 9 * 4)  # about one RoI per chunk
    f2 = feat.clone().requires_grad_()
    got = roi_align(f2, rois, 3, 0.5, 0, True)
    got.backward(up)
    assert (got - naive_roi_align(feat, rois, 3, 3, 0.5, 0, True)).abs().max().item() < 1e-10
    assert torch.allclose(f1.grad, f2.grad)


@pytest.mark.parametrize("scale_factor", [1.0, 1.3])
def test_multiscale_roi_align_fixed_shape_form_equals_eager_form(scale_factor):
    """Padded boxes [B, P, 4] (every level pooled, the box's own selected) give the [K, 5] result."""
    g = torch.Generator().manual_seed(2)
    feats = [torch.randn(2, 3, 128 // s, 96 // s, generator=g) for s in (4, 8, 16, 32)]
    xy = torch.rand(2, 6, 2, generator=g) * 80
    wh = torch.tensor([4.0, 30.0, 70.0, 120.0, 250.0, 500.0]).view(1, 6, 1).expand(2, 6, 2)
    boxes = torch.cat([xy, xy + wh * torch.rand(2, 6, 2, generator=g).add(0.5)], -1)  # every level used
    rois = torch.cat([torch.arange(2).repeat_interleave(6)[:, None].float(), boxes.reshape(-1, 4)], 1)
    assert set(map_roi_levels(rois, 2, 5).tolist()) == {0, 1, 2, 3}
    eager = multiscale_roi_align(feats, rois, [4, 8, 16, 32], 3, 2, scale_factor=scale_factor)
    fixed = multiscale_roi_align(feats, boxes, [4, 8, 16, 32], 3, 2, scale_factor=scale_factor)
    assert fixed.shape == (2, 6, 3, 3, 3)
    torch.testing.assert_close(fixed.reshape(12, 3, 3, 3), eager, atol=1e-5, rtol=1e-5)
    # the enlarged box is pooled from the level of the original box
    lvl = map_roi_levels(rois, 2, 5)
    c = (rois[:, 1:3] + rois[:, 3:]) / 2
    half = (rois[:, 3:] - rois[:, 1:3]) / 2 * scale_factor
    big = torch.cat([rois[:, :1], c - half, c + half], 1)
    for i in range(12):
        ref = roi_align(feats[int(lvl[i])], big[i : i + 1], 3, 1.0 / 2 ** (int(lvl[i]) + 2), 2)
        torch.testing.assert_close(eager[i : i + 1], ref)


@pytest.mark.parametrize("strides", [[4, 16], [8, 4], [4, 12], []])
def test_multiscale_roi_align_refuses_strides_that_are_not_consecutive_powers_of_two(strides):
    feats = [torch.zeros(1, 1, 4, 4) for _ in strides]
    with pytest.raises(ConfigError, match="strides|feature maps"):
        multiscale_roi_align(feats, torch.zeros(1, 5), strides, 2, 2)
