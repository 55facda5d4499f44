"""VGG, MobileNet v1/v2/v3, RepVGG backbones (and ShuffleNetV2's conv5 count), their torchvision
layout and ImageNet mappings, and a mobile backbone under a dense head (``fcos-mobilenetv2``).

References: torchvision 0.29's key names / shapes / parameter counts (``fixtures/torchvision_keys``)
and its ``features`` outputs for deterministic synthetic weights (``fixtures/tv_backbones``, written
by ``fixtures/tv_backbones/dump.py``); the published ImageNet parameter counts of the issue.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from odkit.errors import ConfigError
from odkit.models import zoo
from odkit.models.backbones import VGG, MobileNetV1, MobileNetV2, MobileNetV3, RepVGG
from odkit.models.backbones.registry import backbone_names, make_backbone
from odkit.models.backbones.shufflenetv2 import ShuffleNetV2
from odkit.nn.norm import FrozenBatchNorm2d
from odkit.weights import load_backbone, tables
from odkit.weights.importer import map_state_dict
from tests._tv_weights import synthetic_state_dict

FIX = Path(__file__).parent / "fixtures"
# torchvision name -> (odkit trunk factory, features indices stored in the outputs fixture)
TV = {
    "vgg16": (lambda idx: VGG(16, out_indices=idx), (16, 22, 30)),
    "mobilenet_v2": (lambda idx: MobileNetV2(out_indices=idx), (6, 13, 18)),
    "mobilenet_v3_large": (lambda idx: MobileNetV3("large", out_indices=idx), (6, 12, 16)),
    "mobilenet_v3_small": (lambda idx: MobileNetV3("small", out_indices=idx), (3, 8, 12)),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one intra-op thread


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def tv_listing(name: str) -> dict:
    return json.loads((FIX / "torchvision_keys" / f"{name}.json").read_text())


def classifier_params(keys: dict[str, list[int]]) -> int:
    return sum(int(np.prod(s)) for k, s in keys.items() if k.startswith("classifier."))


# ---------------------------------------------------------------------------------------------- counts


@pytest.mark.parametrize(("make", "published"), [
    (lambda: VGG(16), 14_714_688),                       # VGG16 features
    (lambda: MobileNetV2(), 2_223_872),                  # without classifier
    (lambda: MobileNetV3("large"), 2_971_952),           # without classifier
    (lambda: ShuffleNetV2(1.0, with_conv5=True), 1_253_604),  # incl. conv5, without fc
])
def test_parameter_counts_at_the_published_figures(make, published: int) -> None:
    count = n_params(make())
    assert abs(count - published) <= 0.005 * published
    assert count == published  # these layouts are torchvision's exactly


@pytest.mark.parametrize("name", list(TV))
def test_counts_equal_torchvision_minus_its_classifier(name: str) -> None:
    listing = tv_listing(name)
    trunk = TV[name][0](None if name != "vgg16" else (30,))
    assert n_params(trunk) == listing["num_parameters"] - classifier_params(listing["state_dict"])


def test_repvgg_a0_counts_train_and_deploy_with_fc() -> None:
    """The paper's RepVGG-A0 figures include the 1000-class fc: 9.11M training form, 8.31M deployed."""
    model = RepVGG("A0")
    fc = model.out_channels[-1] * 1000 + 1000
    train = n_params(model) + fc
    deploy = n_params(model.switch_to_deploy()) + fc
    assert abs(train - 9.11e6) <= 0.005 * 9.11e6 and abs(deploy - 8.31e6) <= 0.005 * 8.31e6
    assert (train, deploy) == (9_108_968, 8_309_384)


def test_mobilenet_v1_count() -> None:
    """Standard MobileNetV1 1.0: 4.2M with the 1000-class fc (1024 * 1000 + 1000); BN statistics are buffers."""
    count = n_params(MobileNetV1())
    assert count == 3_206_976 and abs(count + 1_025_000 - 4.2e6) <= 0.01 * 4.2e6


# ------------------------------------------------------------------------------ torchvision layout


@pytest.mark.parametrize("name", list(TV))
def test_state_dict_keys_and_shapes_equal_torchvision_features(name: str) -> None:
    keys = tv_listing(name)["state_dict"]
    trunk = TV[name][0](None if name != "vgg16" else (30,))
    ours = {k: list(v.shape) for k, v in trunk.state_dict().items()}
    assert ours == {k: v for k, v in keys.items() if not k.startswith("classifier.")}


@pytest.mark.parametrize("name", list(TV))
def test_imagenet_table_maps_torchvision_completely_and_outputs_equal(name: str) -> None:
    """The torchvision table maps every ``features.*`` key (classifier dropped), and with the same
    synthetic weights the trunk's outputs equal torchvision's (fixture) at the stored indices."""
    make, indices = TV[name]
    trunk = make(indices).eval()
    keys = tv_listing(name)["state_dict"]
    sd = synthetic_state_dict({k: v for k, v in keys.items() if not k.startswith("classifier.")}, seed=0)
    # the classifier is only dropped: zero-memory stand-ins of its shapes (VGG16's has 120M values)
    sd.update({k: torch.zeros(()).expand(v) for k, v in keys.items() if k.startswith("classifier.")})
    table = tables.backbone_table("torchvision", type(trunk).__name__)
    assert table is not None
    _, parts = map_state_dict(sd, trunk.state_dict(), table)
    assert not parts["missing"] and not parts["unexpected"] and not parts["mismatched"]
    assert sorted(parts["dropped"]) == sorted(k for k in sd if k.startswith("classifier."))
    report = load_backbone(trunk, sd, "torchvision")
    assert report.ok
    ref = load_file(str(FIX / "tv_backbones" / "outputs.safetensors"))
    with torch.no_grad():
        outs = trunk(ref[f"{name}.input"])
    for i, out in zip(indices, outs):
        torch.testing.assert_close(out, ref[f"{name}.{i}"], atol=1e-4, rtol=1e-4)


def test_pretrained_backbone_file_loads_into_fcos_mobilenetv2(tmp_path) -> None:
    """``--pretrained-backbone x.pth --from torchvision`` path: the MobileNetV2 table is found by the
    backbone's class name and the model takes ImageNet's input format."""
    from odkit.engine.finetune import load_pretrained_backbone

    sd = synthetic_state_dict(tv_listing("mobilenet_v2")["state_dict"], seed=3)
    torch.save(sd, tmp_path / "mobilenet_v2.pth")
    model = zoo.build("fcos-mobilenetv2", num_classes=3)
    load_pretrained_backbone(model, tmp_path / "mobilenet_v2.pth", "torchvision")
    torch.testing.assert_close(model.backbone.features[7].conv[1][0].weight, sd["features.7.conv.1.0.weight"])
    assert model.config["pixel_std"] == [0.229, 0.224, 0.225]


# ------------------------------------------------------------------------------------ feature taking


def test_mobilenet_v3_expand_output_is_the_c4_expansion_conv() -> None:
    """SSDLite's C4: the 1x1 expansion conv of block 13 (672 ch at stride 16), then the last conv."""
    torch.manual_seed(0)
    m = MobileNetV3("large", reduced_tail=True, out_indices=("13.expand", 16)).eval()
    assert m.out_channels == [672, 480] and m.strides == [16, 32]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        c4, last = m(x)
        h = m.features[:13](x)
        torch.testing.assert_close(c4, m.features[13].block[0](h))
        torch.testing.assert_close(last, m.features[13:](h))
    assert c4.shape == (1, 672, 4, 4) and last.shape == (1, 480, 2, 2)


def test_mobilenet_v2_expand_and_defaults() -> None:
    m = MobileNetV2(out_indices=("14.expand", 18))
    assert m.out_channels == [576, 1280] and m.strides == [16, 32]
    d = MobileNetV2()
    assert d.out_channels == [32, 96, 1280] and d.strides == [8, 16, 32]


@pytest.mark.parametrize("bad", [(16, 6), ("1.expand",), ("3.expnd",), (17,), ()])
def test_mobilenet_v3_rejects_bad_out_indices(bad) -> None:
    with pytest.raises(ConfigError, match="out_indices"):
        MobileNetV3("large", out_indices=bad)


def test_mobilenet_v3_dilated_keeps_stride_16() -> None:
    m = MobileNetV3("large", dilated=True, out_indices=(12, 16))
    assert m.strides == [16, 16]
    with torch.no_grad():
        outs = m.eval()(torch.zeros(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [4, 4]


def test_mobilenet_v3_frozen_stages_match_torchvision_trainable_layers() -> None:
    """torchvision's stage_indices for Large are [0, 2, 4, 7, 13, 16]; trainable_layers=3 freezes
    features[:7], i.e. frozen_stages = 6 - 1 - 3 = 2."""
    m = MobileNetV3("large", frozen_stages=2)
    assert m.stage_starts == [0, 2, 4, 7, 13, 16]
    frozen = {int(k.split(".")[1]) for k, p in m.named_parameters() if not p.requires_grad}
    trainable = {int(k.split(".")[1]) for k, p in m.named_parameters() if p.requires_grad}
    assert frozen == set(range(7)) and trainable == set(range(7, 17))
    m.train()
    assert not m.features[6].training and m.features[7].training


def test_mobilenet_v3_norms() -> None:
    bn = MobileNetV3("large").features[0][1]
    assert isinstance(bn, nn.BatchNorm2d) and (bn.eps, bn.momentum) == (0.001, 0.01)
    # frozen_bn takes the eps of "bn" (0.001 here) unless norm_eps says otherwise (torchvision's 1e-5)
    for kw, eps in (({}, 0.001), ({"norm_eps": 1e-5}, 1e-5)):
        frozen = MobileNetV3("large", norm="frozen_bn", **kw)
        norms = [m for m in frozen.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
        assert norms and all(isinstance(m, FrozenBatchNorm2d) and m.eps == eps for m in norms)
        assert n_params(frozen) == 2_971_952 - 2 * sum(m.num_features for m in norms)
    with pytest.raises(ConfigError, match="norm"):
        MobileNetV3(norm="ln")
    with pytest.raises(ConfigError, match="'norm_layer' is now 'norm'"):
        make_backbone("mobilenetv3-large", norm_layer="frozen_bn")


def test_mobilenet_v3_width_mult_and_reduced_tail_channels() -> None:
    """torchvision's _make_divisible rounding: Large x0.75 ends at 720 (6 x 120); reduced tail at 480."""
    assert MobileNetV3("large", width_mult=0.75).out_channels == [32, 88, 720]
    assert MobileNetV3("large", reduced_tail=True).out_channels == [40, 112, 480]


def test_vgg_layer_indices_and_ssd_style_conv4_3() -> None:
    """conv4_3's ReLU is features[22]; with pool3 in ceil mode a 300 px input gives 38 x 38 (SSD300)."""
    v = VGG(16, out_indices=(22,))
    assert v.layer_index("conv4_3") == 21 and v.layer_index("pool5") == 30 and v.strides == [8]
    assert isinstance(v.features[22], nn.ReLU) and isinstance(v.features[16], nn.MaxPool2d)
    v.features[16].ceil_mode = True
    with torch.no_grad():
        (out,) = v.eval()(torch.zeros(1, 3, 300, 300))
    assert out.shape == (1, 512, 38, 38)
    assert VGG(16, norm="bn").layer_index("conv4_3") == 30


@pytest.mark.parametrize(("make", "frozen_prefixes", "trainable_prefix"), [
    (lambda: VGG(16, frozen_stages=1), ("features.0.", "features.2.", "features.5.", "features.7."), "features.10."),
    (lambda: RepVGG("A0", frozen_stages=1), ("stage0.", "stage1."), "stage2."),
    (lambda: MobileNetV1(frozen_stages=0), ("features.0.", "features.1."), "features.2."),
])
def test_frozen_stages(make, frozen_prefixes, trainable_prefix) -> None:
    model = make()
    frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(k.startswith(frozen_prefixes) for k in frozen)
    assert all(any(k.startswith(f) for k in frozen) for f in frozen_prefixes)
    assert all(p.requires_grad for k, p in model.named_parameters() if k.startswith(trainable_prefix))


def test_mobilenet_v1_has_no_expansion_output() -> None:
    with pytest.raises(ConfigError, match="no expansion conv"):
        MobileNetV1(out_indices=("5.expand",))


# --------------------------------------------------------------------------------------------- RepVGG


def _calibrated_repvgg(seed: int = 0, dtype: torch.dtype = torch.float32) -> RepVGG:
    """A0 with BatchNorm statistics from two training-mode passes on 64 x 64 inputs and scales
    U(0.3, 0.7): outputs up to ~10-20 on such inputs (every block sums three normalised branches)."""
    torch.manual_seed(seed)
    model = RepVGG("A0").to(dtype)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            nn.init.uniform_(m.weight, 0.3, 0.7)
            nn.init.normal_(m.bias, 0.0, 0.1)
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 64, 64, dtype=dtype))
    return model.eval()


def test_repvgg_switch_to_deploy_gives_the_same_outputs() -> None:
    model = _calibrated_repvgg()
    x = torch.randn(1, 3, 64, 64)  # the calibration size: BN statistics fit the activations
    with torch.no_grad():
        ref = model(x)
        model.switch_to_deploy()
        got = model(x)
    assert all((g - r).abs().max() < 1e-4 for g, r in zip(got, ref))
    assert max(r.abs().max() for r in ref) > 1.0  # the comparison is not trivially small
    names = {type(m).__name__ for m in model.modules()}
    assert "BatchNorm2d" not in names
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 22 and all(c.kernel_size == (3, 3) and c.bias is not None for c in convs)
    # the fused weights load into a model built in deploy form
    deployed = RepVGG("A0", deploy=True).eval()
    deployed.load_state_dict(model.state_dict())
    with torch.no_grad():
        for g, r in zip(deployed(x), got):
            torch.testing.assert_close(g, r)


def test_repvgg_fusion_is_exact_in_float64() -> None:
    """Fusion is algebraically exact: in float64 the difference is rounding only."""
    model = _calibrated_repvgg(2, torch.float64)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        got = model.switch_to_deploy()(x)
    assert all((g - r).abs().max() < 1e-9 for g, r in zip(got, ref))


def test_repvgg_fused_model_exports_to_onnx(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = _calibrated_repvgg(1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)  # training form
    model.switch_to_deploy()
    path = tmp_path / "repvgg_a0.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["images"], opset_version=17, dynamo=False)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops == {"Conv", "Relu"}
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=0)


def test_repvgg_detector_is_fused_for_inference() -> None:
    """The prepared inference copy (used by export and prediction) switches RepVGG to deploy form."""
    from odkit.models.fuse import prepare_inference_model

    torch.manual_seed(0)
    model = zoo.build("retinanet-lite", num_classes=2, backbone="repvgg-a0").eval()
    net = prepare_inference_model(model, channels_last=False, device="cpu")
    assert net.backbone.deploy and all(b.deploy for b in net.backbone.stage2)
    assert not model.backbone.deploy  # the model itself is untouched
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref, got = model.forward_export(x), net.forward_export(x)
    torch.testing.assert_close(got[0], ref[0], atol=1e-3, rtol=0)
    torch.testing.assert_close(got[1], ref[1], atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------- under a dense head


def test_registry_backbones_give_strides_8_16_32() -> None:
    for name in ("mobilenetv1", "mobilenetv2", "mobilenetv3-large", "mobilenetv3-small", "vgg16", "repvgg-a0"):
        assert make_backbone(name).strides == [8, 16, 32], name
    assert "resnet50" in backbone_names() and "shufflenetv2" in backbone_names()
    with pytest.raises(ConfigError, match="unknown backbone"):
        make_backbone("mobilenetv4")


def test_backbone_is_a_builder_argument() -> None:
    m = zoo.build("fcos-lite", num_classes=3, backbone="mobilenetv3-large", backbone_args={"frozen_stages": 1})
    assert isinstance(m.backbone, MobileNetV3) and m.config["backbone"] == "mobilenetv3-large"
    frozen = {k.split(".")[1] for k, p in m.backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"0", "1", "2", "3"}  # stages features[0:2], features[2:4]
    rebuilt = zoo.from_config(m.config)
    assert isinstance(rebuilt.backbone, MobileNetV3)
    assert isinstance(zoo.build("fcos-mobilenetv2", num_classes=3).backbone, MobileNetV2)


def test_fcos_mobilenetv2_trains() -> None:
    """A few AdamW steps on one fixed batch lower the loss."""
    torch.manual_seed(0)
    model = zoo.build("fcos-mobilenetv2", num_classes=3)
    x = torch.rand(2, 3, 64, 64)
    targets = [
        {"boxes": torch.tensor([[6.0, 10.0, 40.0, 60.0], [30.0, 26.0, 60.0, 50.0]]), "labels": torch.tensor([0, 2])},
        {"boxes": torch.tensor([[4.0, 4.0, 28.0, 30.0]]), "labels": torch.tensor([1])},
    ]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = model(x, targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses


def test_fcos_mobilenetv2_exports_to_onnx(tmp_path) -> None:
    """The ONNX export (raw boxes and scores) equals PyTorch in onnxruntime and OpenVINO."""
    ort = pytest.importorskip("onnxruntime")
    from odkit.export.onnx import export_onnx

    torch.manual_seed(0)
    model = zoo.build("fcos-mobilenetv2", num_classes=3).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        boxes, scores = model.forward_export(x)
    path = export_onnx(model, tmp_path / "fcos_mnv2.onnx", img_size=64, dynamic=True)
    got_boxes, got_scores = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"images": x.numpy()})
    np.testing.assert_allclose(got_boxes, boxes.numpy(), atol=1e-2, rtol=0)
    np.testing.assert_allclose(got_scores, scores.numpy(), atol=1e-4, rtol=0)
    try:
        import openvino as ov
    except ImportError:
        return
    compiled = ov.Core().compile_model(ov.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled({"images": x.numpy()})
    ov_boxes, ov_scores = (np.asarray(res[o]) for o in compiled.outputs)
    np.testing.assert_allclose(ov_boxes, boxes.numpy(), atol=1e-2, rtol=0)
    np.testing.assert_allclose(ov_scores, scores.numpy(), atol=1e-4, rtol=0)
