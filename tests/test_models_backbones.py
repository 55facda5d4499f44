"""ResNet / ShuffleNetV2 backbones, FPN / SlimPAN necks, FrozenBatchNorm2d.

Parameter counts are checked against torchvision's ImageNet models minus the classifier, and state-dict
key names / shapes against fixtures dumped from torchvision 0.29 (``tests/fixtures/torchvision_keys``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.models.backbones.resnet import ResNet
from odkit.models.backbones.shufflenetv2 import ShuffleNetV2
from odkit.models.necks.fpn import FPN
from odkit.models.necks.slim_pan import SlimPAN
from odkit.nn.norm import FrozenBatchNorm2d

FIXTURES = Path(__file__).parent / "fixtures" / "torchvision_keys"


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def torchvision_keys(name: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / f"{name}.json").read_text())["state_dict"]


def keys_and_shapes(m: nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in m.state_dict().items()}


def strip(keys: dict[str, list[int]], prefix: str) -> dict[str, list[int]]:
    return {k[len(prefix) :]: v for k, v in keys.items() if k.startswith(prefix)}


def without_fc(keys: dict[str, list[int]]) -> dict[str, list[int]]:
    return {k: v for k, v in keys.items() if not k.startswith("fc.")}


@pytest.fixture(scope="module")
def r50() -> ResNet:
    torch.manual_seed(0)
    return ResNet(50).eval()


# ---------------------------------------------------------------------------------------------- counts


# torchvision totals minus fc: resnet18 11,689,512 - 513,000; resnet34 21,797,672 - 513,000;
# resnet50 25,557,032 - 2,049,000; resnet101 44,549,160 - 2,049,000
@pytest.mark.parametrize(
    "depth,count", [(18, 11_176_512), (34, 21_284_672), (50, 23_508_032), (101, 42_500_160)]
)
def test_resnet_parameter_counts_match_torchvision_without_fc(depth, count):
    assert n_params(ResNet(depth)) == count


# torchvision shufflenet_v2_x1_0: 2,278,604 incl. conv5 and fc (1024 x 1000 + 1000 = 1,025,000) -> 1,253,604;
# x0.5: 1,366,792 - 1,025,000 = 341,792. conv5 at x1.0 is 464 * 1024 + 2 * 1024 = 477,184.
@pytest.mark.parametrize("widen,count", [(1.0, 1_253_604), (0.5, 341_792)])
def test_shufflenet_parameter_counts_match_torchvision_without_fc(widen, count):
    assert n_params(ShuffleNetV2(widen, with_conv5=True)) == count
    assert n_params(ShuffleNetV2(1.0)) == 1_253_604 - 477_184


def test_fpn_parameter_count_matches_torchvision_retinanet():
    # laterals 1x1 (+bias): 256 * (512 + 1024 + 2048) + 3 * 256          =   918,272
    # outputs 3x3: 3 * (256 * 256 * 9 + 256)                                = 1,770,240
    # P6 (from P5, 256 -> 256) + P7: 2 * (256 * 256 * 9 + 256)             = 1,180,160
    # total                                                                   3,868,672
    # (= sum of torchvision retinanet_resnet50_fpn().backbone.fpn parameters, measured with 0.29.1)
    fpn = FPN([512, 1024, 2048], 256, extra_levels=2, extra_source="p5")
    assert n_params(fpn) == 3_868_672
    # RetinaNet v2 / original paper: P6 from C5 (2048 -> 256): + (2048 - 256) * 256 * 9
    assert n_params(FPN([512, 1024, 2048], extra_source="c5")) == 3_868_672 + 1792 * 256 * 9


# ------------------------------------------------------------------------------------- torchvision keys


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_state_dict_keys_and_shapes_equal_torchvision(depth):
    assert keys_and_shapes(ResNet(depth)) == without_fc(torchvision_keys(f"resnet{depth}"))


def test_frozen_bn_resnet_loads_torchvision_bn_state_dict():
    tv = without_fc(torchvision_keys("resnet18"))
    frozen = ResNet(18, norm="frozen_bn")
    assert keys_and_shapes(frozen) == {k: v for k, v in tv.items() if not k.endswith("num_batches_tracked")}
    source = ResNet(18)
    with torch.no_grad():
        for t in source.state_dict().values():
            if t.is_floating_point():
                t.uniform_(0.5, 1.5)
    frozen.load_state_dict(source.state_dict())  # strict; num_batches_tracked is dropped
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(source.eval()(x), frozen.eval()(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_shufflenet_state_dict_keys_and_shapes_equal_torchvision():
    tv = without_fc(torchvision_keys("shufflenet_v2_x1_0"))
    assert keys_and_shapes(ShuffleNetV2(1.0, with_conv5=True)) == tv
    assert keys_and_shapes(ShuffleNetV2(1.0)) == {k: v for k, v in tv.items() if not k.startswith("conv5.")}


@pytest.mark.parametrize("detector", ["retinanet_resnet50_fpn", "fcos_resnet50_fpn"])
def test_fpn_and_body_keys_map_from_torchvision_detectors_by_prefix(detector):
    tv = torchvision_keys(detector)
    assert keys_and_shapes(FPN([512, 1024, 2048], 256)) == strip(tv, "backbone.fpn.")
    assert keys_and_shapes(ResNet(50)) == strip(tv, "backbone.body.")


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("hw", [(64, 96), (416, 416)])
def test_resnet_fpn_output_shapes(r50, hw):
    h, w = hw
    assert r50.strides == [8, 16, 32] and r50.out_channels == [512, 1024, 2048] and r50.size_divisor == 32
    fpn = FPN(r50.out_channels, in_strides=r50.strides).eval()
    assert fpn.strides == [8, 16, 32, 64, 128] and fpn.out_channels == [256] * 5 and fpn.size_divisor == 32
    with torch.no_grad():
        feats = r50(torch.randn(1, 3, h, w))
        pyramid = fpn(feats)
    assert [tuple(f.shape) for f in feats] == [
        (1, c, h // s, w // s) for c, s in zip([512, 1024, 2048], [8, 16, 32])
    ]
    # P6 / P7: padded stride-2 convs -> ceil(previous / 2); 416 gives 13 -> 7 -> 4, 64x96 gives 2x3 -> 1x2 -> 1x1
    p5 = (h // 32, w // 32)
    p6 = (-(-p5[0] // 2), -(-p5[1] // 2))
    p7 = (-(-p6[0] // 2), -(-p6[1] // 2))
    expected = [(h // 8, w // 8), (h // 16, w // 16), p5, p6, p7]
    assert [tuple(p.shape) for p in pyramid] == [(1, 256, *s) for s in expected]


@pytest.mark.parametrize("hw", [(64, 96), (416, 416)])
def test_resnet18_out_indices_and_shapes(hw):
    h, w = hw
    net = ResNet(18, out_indices=(0, 1, 2, 3)).eval()
    assert net.out_channels == [64, 128, 256, 512] and net.strides == [4, 8, 16, 32]
    with torch.no_grad():
        feats = net(torch.randn(2, 3, h, w))
    assert [tuple(f.shape) for f in feats] == [
        (2, c, h // s, w // s) for c, s in zip(net.out_channels, net.strides)
    ]
    only_c4 = ResNet(18, out_indices=(2,))
    assert only_c4.out_channels == [256] and only_c4.strides == [16]


@pytest.mark.parametrize("hw", [(64, 96), (416, 416)])
def test_shufflenet_slim_pan_output_shapes(hw):
    h, w = hw
    net = ShuffleNetV2(1.0).eval()
    assert net.out_channels == [116, 232, 464] and net.strides == [8, 16, 32] and net.size_divisor == 32
    neck = SlimPAN(net.out_channels, 96, extra_levels=1, in_strides=net.strides).eval()
    assert neck.out_channels == [96] * 4 and neck.strides == [8, 16, 32, 64] and neck.size_divisor == 32
    with torch.no_grad():
        feats = net(torch.randn(1, 3, h, w))
        outs = neck(feats)
    sizes = [(h // s, w // s) for s in (8, 16, 32)]
    assert [tuple(f.shape) for f in feats] == [(1, c, *s) for c, s in zip([116, 232, 464], sizes)]
    p6 = (-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2))
    assert [tuple(o.shape) for o in outs] == [(1, 96, *s) for s in [*sizes, p6]]
    conv5 = ShuffleNetV2(0.5, out_indices=(1, 2), with_conv5=True).eval()
    assert conv5.out_channels == [96, 1024] and conv5.strides == [16, 32]
    with torch.no_grad():
        assert [o.shape[1] for o in conv5(torch.randn(1, 3, h, w))] == [96, 1024]


def test_necks_accept_inputs_not_divisible_by_the_largest_stride():
    # 100x70: stride-32 maps round up; lateral additions resize to the finer level's size
    net = ResNet(18).eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 100, 70))
        fpn_out = FPN(net.out_channels, 64).eval()(feats)
        pan_out = SlimPAN(net.out_channels, 32).eval()(feats)
    assert [tuple(f.shape[-2:]) for f in fpn_out[:3]] == [tuple(f.shape[-2:]) for f in feats]
    assert [tuple(f.shape[-2:]) for f in pan_out] == [tuple(f.shape[-2:]) for f in feats]


def test_fpn_extra_levels_and_sources():
    feats = [torch.randn(1, c, s, s) for c, s in zip([8, 16, 32], [16, 8, 4])]
    fpn = FPN([8, 16, 32], 8, extra_levels=1, extra_source="c5")
    assert fpn.strides == [8, 16, 32, 64] and fpn.extra_blocks is not None
    assert [n for n, _ in fpn.extra_blocks.named_children()] == ["p6"]
    assert fpn.extra_blocks.p6.in_channels == 32
    assert [tuple(o.shape) for o in fpn(feats)][-1] == (1, 8, 2, 2)
    plain = FPN([8, 16, 32], 8, extra_levels=0)
    assert plain.extra_blocks is None and len(plain(feats)) == 3 and plain.strides == [8, 16, 32]
    # P7 = conv(ReLU(P6)): P6 is returned unrectified
    p6, p7 = FPN([8, 16, 32], 8)(feats)[-2:]
    assert (p6 < 0).any()
    # torchvision init: kaiming_uniform_(a=1) -> bound sqrt(3 / fan_in); biases zero
    conv = fpn.layer_blocks[0][0]
    assert conv.weight.abs().max() <= (3 / (8 * 9)) ** 0.5 and (conv.bias == 0).all()


# ------------------------------------------------------------------------------------ freezing / norm


def bn_stats(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items() if "running_" in k or "num_batches" in k}


@pytest.mark.parametrize("frozen_stages", [0, 2])
def test_resnet_frozen_stages(frozen_stages):
    torch.manual_seed(0)
    net = ResNet(18, frozen_stages=frozen_stages)
    net.train()
    frozen_prefixes = ("conv1.", "bn1.") + tuple(f"layer{i}." for i in range(1, frozen_stages + 1))
    for name, p in net.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen_prefixes)), name
    assert not net.bn1.training and net.layer3.training
    if frozen_stages >= 2:
        assert not net.layer2[0].bn1.training
    before = bn_stats(net)
    net(torch.randn(2, 3, 64, 64))
    after = bn_stats(net)
    for k in before:
        same = torch.equal(before[k], after[k])
        assert same == k.startswith(frozen_prefixes), k
    net.eval()
    net.train()  # re-entering train mode keeps the frozen stages in eval
    assert not net.bn1.training


def test_resnet_norm_eval_keeps_all_bn_stats():
    net = ResNet(18, norm_eval=True).train()
    before = bn_stats(net)
    net(torch.randn(2, 3, 64, 64)).pop().sum().backward()
    assert all(torch.equal(before[k], v) for k, v in bn_stats(net).items())
    assert net.layer4[1].bn2.weight.grad is not None  # affine terms still train


def test_shufflenet_frozen_stages():
    net = ShuffleNetV2(0.5, frozen_stages=1).train()
    for name, p in net.named_parameters():
        assert p.requires_grad == (not name.startswith(("conv1.", "stage2."))), name
    before = bn_stats(net)
    net(torch.randn(2, 3, 64, 64))
    after = bn_stats(net)
    assert all(torch.equal(before[k], after[k]) == k.startswith(("conv1.", "stage2.")) for k in before)


def test_frozen_bn_equals_batchnorm_in_eval_mode():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.1, 3)
    bn.eval()
    frozen = FrozenBatchNorm2d(6)
    assert frozen.eps == bn.eps == 1e-5
    frozen.load_state_dict(bn.state_dict())  # strict, num_batches_tracked dropped
    assert sorted(dict(frozen.named_buffers())) == ["bias", "running_mean", "running_var", "weight"]
    assert list(frozen.parameters()) == []
    x = torch.randn(3, 6, 5, 7)
    torch.testing.assert_close(frozen(x), bn(x))
    torch.testing.assert_close(FrozenBatchNorm2d.from_batchnorm(bn)(x), bn(x))
    seq = FrozenBatchNorm2d.convert(nn.Sequential(nn.Conv2d(6, 6, 1), bn))
    assert isinstance(seq[1], FrozenBatchNorm2d)
    frozen.train()
    torch.testing.assert_close(frozen(x), bn(x))  # train mode changes nothing


def test_invalid_configs_raise():
    with pytest.raises(ConfigError):
        ResNet(26)
    with pytest.raises(ConfigError):
        ResNet(18, out_indices=(3, 1))
    with pytest.raises(ConfigError):
        ResNet(18, frozen_stages=5)
    with pytest.raises(ConfigError):
        ResNet(18, norm="ln")
    with pytest.raises(ConfigError):
        ResNet(18, norm=None)  # no ResNet without norms
    with pytest.raises(ConfigError):
        ShuffleNetV2(0.75)
    with pytest.raises(ConfigError):
        ShuffleNetV2(1.0, out_indices=(0, 1), with_conv5=True)
    with pytest.raises(ConfigError):
        FPN([256, 512], extra_source="p6")
    with pytest.raises(ConfigError):
        FPN([256, 512], in_strides=[8, 16, 32])
    with pytest.raises(ConfigError):
        SlimPAN([96, 192], upsample_mode="area")
