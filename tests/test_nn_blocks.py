"""odkit.nn blocks: Focus slicing, SPP == SPPF, BN settings, shortcuts, multipliers."""

from __future__ import annotations

import torch
from torch import nn

from odkit.nn import SPP, SPPF, Bottleneck, ConvBNAct, CSPLayer, DWConv, Focus, scale_depth, scale_width


def test_focus_space_to_depth_matches_pixel_loop():
    torch.manual_seed(0)
    focus = Focus(2, 5)
    captured = {}
    focus.conv.register_forward_hook(lambda m, i, o: captured.update(x=i[0]))
    x = torch.randn(1, 2, 6, 8)
    out = focus(x)
    assert out.shape == (1, 5, 3, 4)
    s2d = captured["x"]
    assert s2d.shape == (1, 8, 3, 4)
    # phase order: (even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col)
    phases = [(0, 0), (1, 0), (0, 1), (1, 1)]
    for p, (dy, dx) in enumerate(phases):
        for c in range(2):
            for i in range(3):
                for j in range(4):
                    assert s2d[0, p * 2 + c, i, j] == x[0, c, 2 * i + dy, 2 * j + dx]


def test_sppf_equals_spp_with_same_weights():
    torch.manual_seed(0)
    spp, sppf = SPP(8, 6).eval(), SPPF(8, 6).eval()
    sppf.conv1.load_state_dict(spp.conv1.state_dict())
    sppf.conv2.load_state_dict(spp.conv2.state_dict())
    x = torch.randn(2, 8, 13, 11)
    assert torch.allclose(spp(x), sppf(x), atol=1e-6)
    assert spp(x).shape == (2, 6, 13, 11)
    assert [p.kernel_size for p in spp.pools] == [5, 9, 13]


def test_conv_bn_act_settings_and_shapes():
    m = ConvBNAct(3, 8, 3, 2)
    assert m.bn.eps == 1e-3 and m.bn.momentum == 0.03
    assert m.conv.bias is None and isinstance(m.act, nn.SiLU)
    assert m(torch.zeros(1, 3, 16, 10)).shape == (1, 8, 8, 5)
    dw = DWConv(4, 8, 3, 2)
    assert dw.dconv.conv.groups == 4 and dw.pconv.conv.kernel_size == (1, 1)
    assert dw(torch.zeros(1, 4, 16, 16)).shape == (1, 8, 8, 8)
    assert isinstance(ConvBNAct(3, 3, act="relu").act, nn.ReLU)


def test_bottleneck_shortcut_and_csp_shapes():
    torch.manual_seed(0)
    b = Bottleneck(8, 8, shortcut=True).eval()
    nn.init.zeros_(b.conv2.bn.weight)
    nn.init.zeros_(b.conv2.bn.bias)  # the residual branch outputs silu(0) = 0 -> identity
    x = torch.randn(1, 8, 5, 5)
    assert torch.allclose(b(x), x)
    assert not Bottleneck(8, 16).use_add and not Bottleneck(8, 8, shortcut=False).use_add
    csp = CSPLayer(16, 24, n=3, depthwise=True)
    assert len(csp.m) == 3 and csp(torch.zeros(2, 16, 8, 8)).shape == (2, 24, 8, 8)


def test_multipliers_follow_yolox_rounding():
    assert scale_width(64, 0.25) == 16 and scale_width(64, 0.375) == 24 and scale_width(256, 0.5) == 128
    assert scale_depth(3, 0.33) == 1 and scale_depth(3, 0.67) == 2 and scale_depth(3, 1.33) == 4
    assert scale_depth(3, 0.1) == 1
