"""YOLOv3 / YOLOv3-tiny: parameter counts, anchors, decoding, the darknet loss by hand, learning on
synthetic images, ONNX and OpenVINO export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from odkit.errors import ConfigError
from odkit.models import zoo
from odkit.models.backbones.darknet import Darknet53, DarknetTiny
from odkit.models.families.yolov3 import fit_anchors, model_anchors
from odkit.models.heads.yolov3_head import YOLOv3Head
from odkit.ops.priors import YOLOV3_ANCHORS, parse_anchors
from tests._export import export_and_compare


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _nparams(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _convs(layers) -> int:
    """Parameters of ``(cin, cout, k)`` conv + BatchNorm layers (weights + BN scale and shift)."""
    return sum(k * k * cin * cout + 2 * cout for cin, cout, k in layers)


def test_darknet53_parameter_count():
    assert _nparams(Darknet53()) == 40_584_928  # the published count without the classifier


def test_tiny_trunk_parameter_count_from_the_cfg():
    # yolov3-tiny.cfg: 3x3 convs 3-16-32-64-128-256-512-1024 (max-pools have no parameters)
    chans = [3, 16, 32, 64, 128, 256, 512, 1024]
    assert _nparams(DarknetTiny()) == _convs([(a, b, 3) for a, b in zip(chans, chans[1:])])


def test_yolov3_80_classes_within_1_percent_of_61_95m():
    n = _nparams(zoo.build("yolov3", num_classes=80))
    assert abs(n - 61.95e6) / 61.95e6 < 0.01, n


def test_yolov3_tiny_count_from_the_cfg():
    # trunk + 1x1 1024->256, 3x3 256->512, 1x1 512->255 (+bias), 1x1 256->128, 3x3 384->256, 1x1 256->255
    # (+bias): 8,852,366
    trunk = _nparams(DarknetTiny())
    rest = _convs([(1024, 256, 1), (256, 512, 3), (256, 128, 1), (384, 256, 3)]) + (512 + 256 + 2) * 255
    assert _nparams(zoo.build("yolov3-tiny", num_classes=80)) == trunk + rest


def test_parse_anchors_accepts_the_odkit_anchors_line_and_sorts_by_area():
    assert parse_anchors("30,61, 10,13, 16,30, 33,23, 62,45, 59,119", 2) == [
        [10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119]]
    assert parse_anchors([[5, 5], [1, 2]], 1) == [[1, 2], [5, 5]]
    assert parse_anchors([1, 2, 5, 5], 2) == [[1, 2], [5, 5]]
    for bad, what in [("1,2,3", "pairs"), ("1,2, 3,4", "3 levels"), ("1,-2, 3,4, 5,6", "positive"),
                      ("a,b", "numbers")]:
        with pytest.raises(ConfigError, match=what):
            parse_anchors(bad, 3)


def test_anchors_are_stored_and_rebuilt_from_the_sidecar(tmp_path):
    from odkit.engine.predictor import build_from_meta
    from odkit.weights.format import load_weights, save_weights

    anchors = [[12, 14], [20, 30], [40, 44], [70, 90], [120, 100], [200, 220]]
    model = zoo.build("yolov3-tiny", num_classes=3, anchors=anchors)
    path = save_weights(tmp_path / "w.safetensors", model.state_dict(),
                        {"model": "yolov3-tiny", "num_classes": 3, "model_config": model.config})
    state, meta = load_weights(path)
    again = build_from_meta(meta)
    again.load_state_dict(state)
    gen = model.head.prior_generator
    assert again.head.anchors == anchors
    for a, b in zip(gen.base_anchors, again.head.prior_generator.base_anchors):
        assert torch.equal(a, b)
    assert gen.base_anchors[0][1].tolist() == [-10, -15, 10, 15]  # 20x30 on the finest level, centred


def test_model_anchors_auto_and_errors():
    rng = np.random.default_rng(0)
    wh = np.concatenate([rng.normal(20, 1, (50, 2)), rng.normal(100, 3, (50, 2)), [[1.0, 1.0]]])
    got = model_anchors("auto", "yolov3-tiny", wh)
    assert len(got) == 6 and got == sorted(got, key=lambda p: p[0] * p[1])
    assert 17 < got[0][0] < 23 and 90 < got[-1][0] < 110
    assert model_anchors("1,1, 2,2, 3,3, 4,4, 5,5, 6,6", "yolov3-tiny") == [[float(i)] * 2 for i in range(1, 7)]
    with pytest.raises(ConfigError, match="settable anchors"):
        model_anchors("auto", "yolox-nano", wh)
    with pytest.raises(ConfigError, match="fewer than"):
        fit_anchors(np.ones((3, 2)) * 10, 6)


def test_decoding_by_hand():
    head = YOLOv3Head(2, (8, 8, 8), (8, 8, 8), (8, 16, 32), YOLOV3_ANCHORS)
    pri = head.get_priors([(8, 8), (4, 4), (2, 2)], (64, 64), torch.device("cpu"))
    p = torch.zeros(252, 7)
    # prior 82: level 0, cell (3,3), anchor 16x30; tx = ty = 0 -> centre (28, 28); tw = log 2 -> w 32
    p[82, 2] = math.log(2.0)
    p[82, 4] = 2.0
    p[82, 5:] = torch.tensor([0.0, -1.0])
    box = head.boxes_of((p,), pri)[82]
    assert box.tolist() == pytest.approx([12.0, 13.0, 44.0, 43.0])
    # prior 223: level 1, cell (2,2) centre (40,40), anchor 62x45; sigmoid(tx) = 0.75 -> x = 40 + 0.25*16
    p[223, 0] = math.log(3.0)
    assert head.boxes_of((p,), pri)[223].tolist() == pytest.approx([44 - 31, 40 - 22.5, 44 + 31, 40 + 22.5])
    s = torch.sigmoid(torch.tensor(2.0))
    assert head.scores_of((p,))[82].tolist() == pytest.approx([float(s * 0.5), float(s * torch.sigmoid(torch.tensor(-1.0)))])


def test_darknet_loss_by_hand():
    """All outputs zero (every logit 0): BCE terms are log 2 each; one gt 16x32 at (28, 28)."""
    torch.manual_seed(0)
    head = YOLOv3Head(3, (4, 4, 4), (4, 4, 4), (8, 16, 32), YOLOV3_ANCHORS)
    for conv in head.preds:
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    feats = [torch.randn(2, 4, s, s) for s in (8, 4, 2)]
    targets = [{"boxes": torch.tensor([[20.0, 12, 36, 44]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    out = head.loss(feats, targets, (64, 64))
    ln2, s = math.log(2.0), 2.0 - 16 * 32 / 64**2
    # predicted boxes are the anchors at the cell centres; those with IoU > 0.7 to the gt are ignored
    from odkit.ops import box_iou

    pri = head.get_priors([(8, 8), (4, 4), (2, 2)], (64, 64), torch.device("cpu"))
    ignored = int((box_iou(pri.anchors, targets[0]["boxes"])[:, 0] > 0.7).sum()) - 1  # minus the positive
    assert out["loss_xy"].item() == pytest.approx(s * 2 * ln2 / 2, rel=1e-5)
    assert out["loss_wh"].item() == pytest.approx(s * 0.5 * (0.0 + math.log(32 / 30) ** 2) / 2, rel=1e-5)
    assert out["loss_cls"].item() == pytest.approx(3 * ln2 / 2, rel=1e-5)
    assert out["loss_obj"].item() == pytest.approx((2 * 252 - ignored) * ln2 / 2, rel=1e-5)
    assert out["num_fg"].item() == 1
    total = out["loss_xy"] + out["loss_wh"] + out["loss_cls"] + out["loss_obj"]
    assert out["loss"].item() == pytest.approx(total.item())


def _synth_batch(n: int = 2, size: int = 128):
    import cv2

    from odkit.data.synth import render_image

    images, targets = [], []
    for i in range(n):
        im = render_image(3, i, size=size)
        h, w = im.image.shape[:2]
        images.append(torch.from_numpy(cv2.resize(im.image, (size, size))).permute(2, 0, 1).float() / 255)
        scale = torch.tensor([size / w, size / h, size / w, size / h])
        targets.append({"boxes": torch.from_numpy(im.boxes).float() * scale, "labels": torch.from_numpy(im.labels)})
    return torch.stack(images), targets


def test_yolov3_tiny_loss_falls_on_synthetic_images():
    torch.manual_seed(0)
    images, targets = _synth_batch(2, 96)
    model = zoo.build("yolov3-tiny", num_classes=3).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    losses = []
    for _ in range(10):
        out = model(images, targets)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.4 * losses[0], losses


def test_yolov3_tiny_exports_to_onnx_and_openvino(tmp_path):
    torch.manual_seed(0)
    export_and_compare(zoo.build("yolov3-tiny", num_classes=3), tmp_path, 128)


@pytest.mark.slow
def test_yolov3_exports_to_onnx_and_openvino(tmp_path):
    torch.manual_seed(0)
    export_and_compare(zoo.build("yolov3", num_classes=3), tmp_path, 128)


def _synth_set(tmp_path):
    from odkit.data.formats import load_dataset
    from odkit.data.synth import synthesize

    synthesize(tmp_path / "synth", n=12, seed=0, size=96)
    return tmp_path / "synth" / "data.yaml", load_dataset(str(tmp_path / "synth" / "data.yaml"), split="train")


def test_training_anchors_auto_fits_the_letterboxed_training_boxes(tmp_path):
    from odkit.engine.anchors import training_anchors
    from odkit.ops.kmeans import kmeans_anchors

    _, aset = _synth_set(tmp_path)
    wh = []
    for i in range(len(aset)):  # boxes scaled as the letterbox to 64 px scales them
        s = 64 / max(int(aset.widths[i]), int(aset.heights[i]))
        for x1, y1, x2, y2 in aset.boxes[aset.offsets[i] : aset.offsets[i + 1]]:
            wh.append([(x2 - x1) * s, (y2 - y1) * s])
    wh = np.array(wh)
    want = kmeans_anchors(wh[(wh >= 2).all(1)], 6)
    got = training_anchors("auto", "yolov3-tiny", aset, 64)
    np.testing.assert_allclose(np.array(got), want, atol=0.051)
    assert training_anchors("1,2, 3,4, 5,6, 7,8, 9,10, 11,12", "yolov3-tiny", aset, 64)[0] == [1.0, 2.0]


@pytest.mark.slow
def test_train_yolov3_with_auto_anchors_stores_them(tmp_path):
    import json

    from odkit.cli.main import main

    data, aset = _synth_set(tmp_path)
    from odkit.engine.anchors import training_anchors

    want = training_anchors("auto", "yolov3", aset, 64)
    rc = main(["train", "--data", str(data), "--model", "yolov3", "--img", "64", "--epochs", "1", "--batch", "4",
               "--anchors", "auto", "--project", str(tmp_path / "runs"), "--workers", "0", "--no-plots"])
    assert rc in (0, None)
    meta = json.loads((tmp_path / "runs" / "train" / "weights" / "best.json").read_text())
    assert meta["model_config"]["anchors"] == want
    from odkit.engine.predictor import build_from_meta

    assert build_from_meta(meta).head.anchors == want


def test_darknet_stages_freeze_and_bad_indices():
    m = DarknetTiny(frozen_stages=1).train()
    assert not any(p.requires_grad for p in m.stem.parameters())
    assert not any(p.requires_grad for p in m.stage1.parameters())
    assert all(p.requires_grad for p in m.stage2.parameters())
    assert not m.stage1[1].bn.training and m.stage2[1].bn.training
    assert [t.shape[1:] for t in DarknetTiny((2, 3, 4))(torch.zeros(1, 3, 64, 64))] == [
        (128, 8, 8), (256, 4, 4), (1024, 2, 2)]
    with pytest.raises(ConfigError, match="out_indices"):
        Darknet53(out_indices=(4, 2))
