"""Every registry backbone x every norm: maps at strides 8 / 16 / 32 with the declared channels, the
norm layers the setting names, no trainable norm parameters with ``frozen_bn``, the common arguments
(``frozen_stages``, ``norm_eval``, ``out_indices``) alike everywhere, and each backbone under FCOS-lite.

The structure tests replace weight initialisation (nine tenths of building a large backbone) by zeros;
the numerical tests (frozen_bn = bn in eval mode) use the real initialisation.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.models import zoo
from odkit.models.backbones.registry import BACKBONES, backbone_names, make_backbone
from odkit.nn.norm import FrozenBatchNorm2d, gn_groups, make_norm

NORMS = ("bn", "frozen_bn", "gn")
# the members over ~12M parameters run with the slow tests (each class keeps a smaller member here)
SLOW = {"resnet34", "resnet50", "resnet101", "repvgg-a2", "repvgg-b0", "repvgg-b1", "cspdarknet-m", "cspdarknet-l",
        "cspdarknet-x", "darknet53"}
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in backbone_names()]
# one small member of each class
LIGHT = ("cspdarknet-nano", "darknet-tiny", "mobilenetv1", "mobilenetv2", "mobilenetv3-small", "shufflenetv2-x0.5",
         "repvgg-a0", "resnet18", "vgg16")
UNDER_FCOS = [n if n in LIGHT else pytest.param(n, marks=pytest.mark.slow) for n in backbone_names()]


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one intra-op thread


@pytest.fixture
def zero_init(monkeypatch: pytest.MonkeyPatch) -> None:
    """Convolution weights start at zero instead of random draws (structure tests only)."""

    def zero(t: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        with torch.no_grad():
            return t.zero_()

    monkeypatch.setattr(nn.Conv2d, "reset_parameters", lambda self: zero(self.weight))
    monkeypatch.setattr(nn.init, "kaiming_normal_", zero)


def _norms(m: nn.Module) -> list[nn.Module]:
    return [x for x in m.modules() if isinstance(x, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d, nn.GroupNorm))]


@pytest.mark.usefixtures("zero_init")
@pytest.mark.parametrize("name", NAMES)
def test_every_backbone_with_every_norm(name: str) -> None:
    eps: dict[str, set[float]] = {}
    for norm in NORMS:
        m = make_backbone(name, norm=norm).eval()
        with torch.no_grad():
            outs = m(torch.rand(1, 3, 64, 64))
        assert [tuple(o.shape) for o in outs] == [(1, c, 64 // s, 64 // s) for c, s in zip(m.out_channels, (8, 16, 32))]
        assert list(m.strides) == [8, 16, 32]
        norms = _norms(m)
        assert norms, norm
        kind = {"bn": nn.BatchNorm2d, "frozen_bn": FrozenBatchNorm2d, "gn": nn.GroupNorm}[norm]
        assert all(type(x) is kind for x in norms), (norm, {type(x).__name__ for x in norms})
        if norm == "gn":
            assert all(x.num_groups == gn_groups(x.num_channels) for x in norms)
        if norm == "frozen_bn":
            assert not any(p.requires_grad for x in norms for p in x.parameters())
            assert list(m.parameters()) and all(p.requires_grad for p in m.parameters())  # the convs train
        eps[norm] = {x.eps for x in norms}
    assert eps["frozen_bn"] == eps["bn"]  # a frozen copy of the BatchNorm "bn" builds


@pytest.mark.usefixtures("zero_init")
@pytest.mark.parametrize("name", NAMES)
def test_common_arguments_mean_the_same(name: str) -> None:
    """frozen_stages=1: the stem and the first stage have no gradients and stay in eval mode;
    norm_eval: every BatchNorm in eval after train(); out_indices=(-1,): the last output only."""
    m = make_backbone(name, frozen_stages=1, norm_eval=True).train()
    stages = m.stages()
    frozen = {id(p) for s in stages[:2] for p in s.parameters()}
    assert frozen and all(p.requires_grad == (id(p) not in frozen) for p in m.parameters())
    # (stages() may return views: look at the layers inside them)
    assert not any(x.training for s in stages[:2] for x in s.modules() if x is not s)
    assert any(x.training for x in stages[2].modules() if x is not stages[2])
    assert not any(x.training for x in m.modules() if isinstance(x, nn.BatchNorm2d))
    last = make_backbone(name, out_indices=(-1,))
    assert last.out_channels == m.out_channels[-1:] and last.strides == m.strides[-1:]


@pytest.mark.usefixtures("zero_init")
@pytest.mark.parametrize("name", LIGHT)
def test_common_arguments_are_checked_alike(name: str) -> None:
    n = len(make_backbone(name).stages())
    with pytest.raises(ConfigError, match=f"frozen_stages must be in -1..{n - 1}"):
        make_backbone(name, frozen_stages=n)
    for bad in ((2, 1), (1, 1), ()):
        with pytest.raises(ConfigError, match="out_indices"):
            make_backbone(name, out_indices=bad)


@pytest.mark.parametrize("name", [n for n in LIGHT if n != "vgg16"])
def test_frozen_bn_is_the_batchnorm_frozen(name: str) -> None:
    """A "bn" model with spread statistics, its state dict loaded into the "frozen_bn" model: the same
    outputs in eval mode, and the same again after a training step of the frozen model's norms (none)."""
    torch.manual_seed(0)
    bn = make_backbone(name)
    with torch.no_grad():
        for x in _norms(bn):
            x.weight.uniform_(0.5, 1.5)
            x.bias.normal_(0.0, 0.2)
            x.running_mean.normal_(0.0, 0.2)
            x.running_var.uniform_(0.5, 2.0)
    frozen = make_backbone(name, norm="frozen_bn")
    frozen.load_state_dict(bn.state_dict())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = bn.eval()(x)
        got_train = frozen.train()(x)  # frozen statistics: training mode changes nothing
        got = frozen.eval()(x)
    assert max(r.abs().max().item() for r in ref) > 0.1
    for g, t, r in zip(got, got_train, ref):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(t, g)


def test_gn_groups_rule() -> None:
    """32 groups when the channels allow, else the largest power of two dividing them."""
    assert [gn_groups(c) for c in (256, 96, 48, 24, 40, 58, 116, 3, 1)] == [32, 32, 16, 8, 8, 2, 4, 1, 1]
    gn = make_norm("gn", 48)
    assert isinstance(gn, nn.GroupNorm) and (gn.num_groups, gn.num_channels, gn.eps) == (16, 48, 1e-5)
    bn = make_norm("bn", 8, eps=1e-3, momentum=0.03)
    assert isinstance(bn, nn.BatchNorm2d) and (bn.eps, bn.momentum) == (1e-3, 0.03)
    custom = make_norm(lambda c: nn.InstanceNorm2d(c, affine=True), 8)
    assert isinstance(custom, nn.InstanceNorm2d)


def test_norm_none_only_for_vgg_and_old_keywords_name_the_new_one() -> None:
    plain = make_backbone("vgg16", norm=None)
    assert not _norms(plain) and plain.layer_index("conv4_3") == 21  # torchvision's vgg16
    assert make_backbone("vgg16", norm="bn").layer_index("conv4_3") == 30  # vgg16_bn
    with pytest.raises(ConfigError, match="norm=None"):
        make_backbone("resnet18", norm=None)
    with pytest.raises(ConfigError, match="unknown norm"):
        make_backbone("shufflenetv2", norm="syncbn")
    for name, old, value in (("mobilenetv2", "norm_layer", "bn"), ("vgg16", "batch_norm", True),
                             ("cspdarknet-nano", "out_features", ("dark3",))):
        with pytest.raises(ConfigError, match=f"'{old}' is now"):
            make_backbone(name, **{old: value})
    with pytest.raises(ConfigError, match="'norm_layer' is now 'norm'"):
        zoo.build("fasterrcnn-mobilenetv3-fpn", num_classes=2, backbone_args={"norm_layer": "frozen_bn"})
    with pytest.raises(ConfigError, match="takes no argument 'widen'"):
        make_backbone("resnet18", widen=2.0)


def test_registry_lists_every_backbone_class() -> None:
    from odkit.models import backbones
    from odkit.models.backbones.darknet import Darknet53, DarknetTiny
    from odkit.models.backbones.resnet import ResNet
    from odkit.models.backbones.shufflenetv2 import ShuffleNetV2

    classes = {getattr(backbones, n) for n in backbones.__all__} | {Darknet53, DarknetTiny, ResNet, ShuffleNetV2}
    assert classes == {cls for cls, _ in BACKBONES.values()}
    assert {f"cspdarknet-{s}" for s in ("nano", "tiny", "s", "m", "l", "x")} <= set(backbone_names())


@pytest.mark.usefixtures("zero_init")
@pytest.mark.parametrize("name", UNDER_FCOS)
def test_backbone_under_fcos_lite_with_frozen_bn(name: str) -> None:
    model = zoo.build("fcos-lite", num_classes=2, backbone=name, backbone_args={"norm": "frozen_bn"})
    assert model.config["backbone_args"] == {"norm": "frozen_bn"}
    assert not any(isinstance(x, nn.BatchNorm2d) for x in model.backbone.modules())
    with torch.no_grad():
        boxes, scores = model.eval().forward_export(torch.rand(1, 3, 64, 64))
    # SlimPAN P3-P6 over a 64 px input: 8x8 + 4x4 + 2x2 + 1x1 points
    assert boxes.shape == (1, 85, 4) and scores.shape == (1, 85, 2)
