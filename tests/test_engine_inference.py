"""The prepared inference model (BatchNorm folding, deploy hooks, channels_last, compile fallback)
and the Predictor that uses it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from odkit.data.transforms import letterbox
from odkit.engine.predictor import Predictor
from odkit.models import zoo
from odkit.models.fuse import ConvAct, compile_or_eager, fold_batchnorm, fold_conv_bn, prepare_inference_model
from odkit.nn import ConvBNAct
from odkit.nn.norm import FrozenBatchNorm2d


def _randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine terms in every norm layer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.1)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)


@pytest.mark.parametrize("norm", ["bn", "frozen"])
@pytest.mark.parametrize("groups,bias", [(1, False), (4, True), (8, False)])
def test_fold_conv_bn_equals_conv_then_norm(norm: str, groups: int, bias: bool) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=groups, bias=bias)
    bn = nn.BatchNorm2d(8, eps=1e-3) if norm == "bn" else FrozenBatchNorm2d(8, eps=1e-5)
    _randomise_norms(bn)
    bn.eval()
    x = torch.randn(2, 8, 15, 17)
    ref = bn(conv(x))
    fused = fold_conv_bn(conv, bn)
    assert fused.bias is not None and fused.stride == (2, 2) and fused.groups == groups
    torch.testing.assert_close(fused(x), ref, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_where_it_is_provably_the_same() -> None:
    class Custom(nn.Sequential):  # a Sequential with its own forward: order not guaranteed
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self[1](x) + self[0](x)

    class Paired(nn.Module):
        fuse_pairs = (("conv1", "bn1"),)

        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
            self.conv2, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)  # not named: kept

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))

    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
        ConvBNAct(4, 4, 3),
        Paired(),
        Custom(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)),
        nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU(), nn.BatchNorm2d(4)),  # not adjacent: kept
    )
    _randomise_norms(model)
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    ref = model(x)
    assert fold_batchnorm(model) == 3
    torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-4)
    kinds = [type(m).__name__ for m in model.modules()]
    assert kinds.count("BatchNorm2d") == 3  # Paired.bn2, the Custom one, the non-adjacent one
    assert isinstance(model[1].bn, nn.Identity) and isinstance(model[2].bn1, nn.Identity)


def test_training_mode_norms_are_not_folded() -> None:
    seq = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).train()
    assert fold_batchnorm(seq) == 0


@pytest.mark.parametrize("fuse_activations", [False, True])
def test_prepared_yolox_matches_and_leaves_the_model_alone(fuse_activations: bool) -> None:
    torch.manual_seed(0)
    model = zoo.build("yolox-nano", num_classes=3, img_size=128)
    _randomise_norms(model)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = prepare_inference_model(model, fuse_activations=fuse_activations)
    if fuse_activations:
        assert sum(isinstance(m, ConvAct) for m in net.modules()) > 50
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert next(net.backbone.stem.parameters()).is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 128, 128)
    model.eval()
    with torch.no_grad():
        rb, rs = model(x)
        fb, fs = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fs, rs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fb, rb, rtol=1e-4, atol=1e-3)


def test_switch_to_deploy_hook_is_called() -> None:
    class Rep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 1)
            self.deployed = False

        def switch_to_deploy(self) -> None:  # 3x3 + 1x1 branches -> one 3x3 conv
            with torch.no_grad():
                self.a.weight[:, :, 1, 1] += self.b.weight[:, :, 0, 0]
                self.a.bias += self.b.bias
            self.deployed = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) if self.deployed else self.a(x) + self.b(x)

    m = nn.Sequential(Rep())
    x = torch.randn(1, 3, 8, 8)
    ref = m(x)
    net = prepare_inference_model(m)
    assert net[0].deployed and not m[0].deployed
    torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)


def _reference_predict(model: nn.Module, img: np.ndarray, size: int, **kw) -> dict[str, torch.Tensor]:
    out, _, meta = letterbox(img, np.zeros((0, 4), np.float32), {"image_id": 0, "path": ""}, size)
    x = torch.from_numpy(out[None]).permute(0, 3, 1, 2).float().div_(255.0)
    return model.eval().predict(x, [meta], **kw)[0]


def _assert_same_detections(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    """Every reference detection has a counterpart (same label, score and box to rounding); order
    may differ between near-equal scores."""
    assert len(got["boxes"]) == len(ref["boxes"])
    for b, s, lab in zip(ref["boxes"], ref["scores"], ref["labels"]):
        close = ((got["labels"] == lab) & ((got["scores"] - s).abs() < 1e-4)
                 & ((got["boxes"] - b).abs().amax(1) < 1e-2))
        assert bool(close.any()), (b, s, lab)


def test_predictor_equals_the_unprepared_path_and_reuses_buffers() -> None:
    torch.manual_seed(0)
    model = zoo.build("yolox-nano", num_classes=3, img_size=160)
    _randomise_norms(model, seed=1)
    with torch.no_grad():  # spread-out scores, some above the threshold
        for conv in list(model.head.obj_preds) + list(model.head.cls_preds):
            conv.bias.zero_()
            conv.weight.normal_(0, 0.3)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((120, 160), (200, 130), (160, 160))]
    pred = Predictor(model, {"num_classes": 3, "img_size": 160})
    assert model.training  # the given model is not switched to eval mode
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    kw = {"conf": 0.6, "max_det": 300}
    got_batch = pred.predict(imgs, batch=2, **kw)
    buf = pred._u8
    got_single = [pred.predict(im, **kw)[0] for im in imgs]
    assert pred._u8 is buf  # a smaller batch reuses the buffer
    for im, gb, gs in zip(imgs, got_batch, got_single):
        ref = _reference_predict(model, im, 160, conf=0.6, max_det=300)
        assert len(ref["boxes"]) > 0
        _assert_same_detections(gb, ref)
        _assert_same_detections(gs, ref)


def test_compile_failure_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("no C compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = zoo.build("yolox-nano", num_classes=2, img_size=128).eval()
    net = prepare_inference_model(model, compile=True)
    assert net.compiled
    x = torch.rand(1, 3, 128, 128)
    with caplog.at_level(logging.WARNING, logger="odkit.models.fuse"):
        net = compile_or_eager(net, lambda m: m(x))
    assert not net.compiled and "no C compiler" in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(net(x)[1], model(x)[1], rtol=1e-4, atol=1e-5)


def test_export_of_a_predictors_model_uses_plain_convolutions(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from odkit.export.onnx import export_onnx

    model = zoo.build("yolox-nano", num_classes=3, img_size=128).eval()
    pred = Predictor(model, {"num_classes": 3, "img_size": 128}, fuse_activations=True)
    fused = [m for m in pred.model.modules() if isinstance(m, ConvAct)]
    assert fused and all(m.use_fused for m in fused)
    path = export_onnx(pred.model, tmp_path / "m.onnx", 128)
    assert all(m.use_fused for m in fused)  # the Predictor's own copy is left as it was
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    _, scores = sess.run(None, {sess.get_inputs()[0].name: x})
    with torch.no_grad():
        _, ref = model(torch.from_numpy(x))
    np.testing.assert_allclose(scores, ref.numpy(), rtol=1e-4, atol=1e-5)
