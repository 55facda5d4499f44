"""YOLOX models: published sizes, config round trip, losses, decoding back to original coordinates."""

from __future__ import annotations

import json
import math

import pytest
import torch

from odkit.cli.info import model_info
from odkit.errors import ConfigError, DataError
from odkit.models import available, build, from_config, undo_letterbox


@pytest.fixture(scope="module")
def nano3():
    torch.manual_seed(0)
    return build("yolox-nano", num_classes=3)


# published YOLOX table: params (M), GFLOPs (thop MACs x 2) at the given size, 80 classes
PUBLISHED = [("yolox-nano", 416, 0.91, 1.08), ("yolox-tiny", 416, 5.06, 6.45), ("yolox-s", 640, 9.0, 26.8)]


@pytest.mark.parametrize("name,img,params_m,gflops", PUBLISHED)
def test_matches_published_params_and_gflops(name, img, params_m, gflops):
    info = model_info(name, img, 80)
    assert info["params_M"] == pytest.approx(params_m, rel=0.05)
    assert info["gflops"] == pytest.approx(gflops, rel=0.05)


def test_info_cli_prints_figures(capsys):
    from odkit.cli.main import main

    assert main(["info", "--model", "yolox-nano", "--img", "416", "--num-classes", "80"]) == 0
    out = capsys.readouterr().out
    assert "0.912 M parameters" in out and "GFLOPs at 416x416" in out
    assert main(["info", "--model", "yolox-nano", "--img", "100"]) == 0  # rounded to 96, with a warning
    assert "GFLOPs at 96x96" in capsys.readouterr().out
    assert main(["info", "--model", "yolox-nano", "--img", "-32"]) == 2
    assert main(["info", "--model", "yolox-huge"]) == 2


def test_builders_and_config_roundtrip(nano3):
    assert {"yolox-nano", "yolox-tiny", "yolox-s"} <= set(available())
    m = build("yolox-nano", num_classes=2, class_names=["cat", "dog"], img_size=320).eval()
    cfg = json.loads(json.dumps(m.config))
    assert cfg == {"name": "yolox-nano", "num_classes": 2, "class_names": ["cat", "dog"], "img_size": 320}
    m2 = from_config(cfg).eval()
    m2.load_state_dict(m.state_dict())
    x = torch.rand(1, 3, 64, 96)
    b1, s1 = m(x)
    b2, s2 = m2(x)
    assert torch.equal(b1, b2) and torch.equal(s1, s2) and s1.shape == (1, 8 * 12 + 4 * 6 + 2 * 3, 2)
    assert nano3.config["img_size"] == 416 and build("yolox-s", num_classes=1).config["img_size"] == 640
    # depthwise nano, plain tiny
    assert nano3.backbone.dark2[0].__class__.__name__ == "DWConv"
    assert build("yolox-tiny", num_classes=1).backbone.dark2[0].__class__.__name__ == "ConvBNAct"
    with pytest.raises(ConfigError):
        build("yolox-huge")
    with pytest.raises(ConfigError):
        build("yolox-nano", num_classes=2, class_names=["a"])
    with pytest.raises(ConfigError):
        build("yolox-nano", num_classes=0)


def test_yolox_init_details(nano3):
    bns = [m for m in nano3.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 and m.momentum == 0.03 for m in bns)
    for conv in list(nano3.head.cls_preds) + list(nano3.head.obj_preds):
        assert torch.allclose(torch.sigmoid(conv.bias), torch.full_like(conv.bias, 0.01))
    chans = [o.shape[1] for o in nano3.backbone(torch.zeros(1, 3, 64, 64))]
    assert chans == [64, 128, 256]


def test_training_loss_dict(nano3):
    m = nano3.train()
    x = torch.rand(2, 3, 96, 128)
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0], [50.0, 40.0, 120.0, 90.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    out = m(x, targets)
    assert set(out) == {"loss", "loss_iou", "loss_obj", "loss_cls", "loss_l1", "num_fg"}
    assert all(torch.isfinite(v) for v in out.values()) and float(out["num_fg"]) >= 2
    assert float(out["loss_l1"]) == 0.0
    out["loss"].backward()
    assert m.head.reg_preds[0].weight.grad is not None
    m.head.use_l1 = True
    try:
        assert float(m(x, targets)["loss_l1"]) > 0
    finally:
        m.head.use_l1 = False
    with pytest.raises(DataError):
        m(x, [{"boxes": torch.tensor([[0.0, 0.0, 5.0, 5.0]]), "labels": torch.tensor([3])}, targets[1]])
    with pytest.raises(ConfigError):
        m(x)  # training mode without targets
    with pytest.raises(ConfigError):
        m(torch.rand(2, 3, 100, 128), targets)


def _letterbox_meta(orig_hw, in_hw):
    h, w = orig_hw
    r = min(in_hw[0] / h, in_hw[1] / w)
    dx, dy = (in_hw[1] - w * r) / 2, (in_hw[0] - h * r) / 2
    return {"orig_size": (h, w), "ratio": r, "pad": (dx, dy), "image_id": 0, "path": ""}


def _perfect_raw(head, in_hw, boxes_per_image, labels_per_image, num_classes):
    """Raw head maps ``(cls, reg, obj)`` per level whose decoding is exactly the given
    input-coordinate boxes (stride-8 level)."""
    b = len(boxes_per_image)
    raw = []
    for s in head.strides:
        r = torch.zeros(b, 5 + num_classes, in_hw[0] // s, in_hw[1] // s)
        r[:, 4:] = -12.0
        raw.append(r)
    for i, (boxes, labels) in enumerate(zip(boxes_per_image, labels_per_image)):
        for (x1, y1, x2, y2), lab in zip(boxes.tolist(), labels.tolist()):
            cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
            gx, gy = int(cx // 8), int(cy // 8)
            raw[0][i, :4, gy, gx] = torch.tensor([cx / 8 - gx, cy / 8 - gy, math.log(w / 8), math.log(h / 8)])
            raw[0][i, 4, gy, gx] = 12.0
            raw[0][i, 5 + lab, gy, gx] = 12.0
    return [(r[:, 5:], r[:, :4], r[:, 4:5]) for r in raw]


def test_predictions_map_back_to_original_coordinates():
    model = build("yolox-nano", num_classes=3).eval()
    in_hw = (160, 224)
    origs = [(120, 200), (300, 100)]  # landscape and portrait originals, both letterboxed into 160 x 224
    gt = [
        (torch.tensor([[10.0, 20.0, 80.0, 100.0], [150.0, 5.0, 199.0, 60.0]]), torch.tensor([0, 2])),
        (
            torch.tensor(
                [[5.0, 10.0, 95.0, 140.0], [20.5, 200.25, 60.75, 290.0], [70.0, 250.0, 99.0, 299.0]]
            ),
            torch.tensor([1, 1, 2]),
        ),
    ]
    metas = [_letterbox_meta(o, in_hw) for o in origs]
    in_boxes = []
    for (boxes, _), meta in zip(gt, metas):
        dx, dy = meta["pad"]
        in_boxes.append(boxes * meta["ratio"] + torch.tensor([dx, dy, dx, dy]))
    raw = _perfect_raw(model.head, in_hw, in_boxes, [lab for _, lab in gt], 3)
    model.head.forward = lambda feats: raw  # the network itself is not under test here
    images = torch.zeros(2, 3, *in_hw)
    preds = model.predict(images, metas, conf=0.5)
    for pred, (boxes, labels) in zip(preds, gt):
        assert len(pred["boxes"]) == len(boxes)
        order = torch.argsort(pred["boxes"][:, 0])
        ref = torch.argsort(boxes[:, 0])
        assert (pred["boxes"][order] - boxes[ref]).abs().max() < 0.5
        assert torch.equal(pred["labels"][order], labels[ref])
        assert pred["boxes"].dtype == torch.float32 and pred["labels"].dtype == torch.int64
        assert (pred["scores"] > 0.99).all()
    # without metas: input coordinates
    preds_in = model.predict(images, None, conf=0.5)
    for pred, boxes in zip(preds_in, in_boxes):
        order = torch.argsort(pred["boxes"][:, 0])
        assert (pred["boxes"][order] - boxes[torch.argsort(boxes[:, 0])]).abs().max() < 1e-3


def test_undo_letterbox_clips():
    meta = {"orig_size": (50, 100), "ratio": 2.0, "pad": (0.0, 10.0)}
    out = undo_letterbox(torch.tensor([[-10.0, 0.0, 220.0, 60.0], [20.0, 30.0, 40.0, 50.0]]), meta)
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 100.0, 25.0], [10.0, 10.0, 20.0, 20.0]]))
    with pytest.raises(ConfigError):
        undo_letterbox(torch.zeros(1, 4), {"ratio": 1.0})


class _Export(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.forward_export(images)


@pytest.mark.slow
def test_forward_export_has_no_data_dependent_control_flow(nano3):
    """torch.export with symbolic H and W (multiples of 32) must succeed and agree at another size."""
    from torch.export import Dim, export

    m = nano3.eval()
    dims = {
        "images": {
            0: Dim("batch", min=1, max=64),
            2: 32 * Dim("h32", min=1, max=64),
            3: 32 * Dim("w32", min=1, max=64),
        }
    }
    with torch.no_grad():
        ep = export(_Export(m), (torch.rand(2, 3, 64, 96),), dynamic_shapes=dims)
        x = torch.rand(2, 3, 96, 160)
        b_ref, s_ref = m.forward_export(x)
        b_ex, s_ex = ep.module()(x)
    assert b_ex.shape == (2, 12 * 20 + 6 * 10 + 3 * 5, 4) and s_ex.shape == (2, b_ex.shape[1], 3)
    assert torch.allclose(b_ex, b_ref, atol=1e-4) and torch.allclose(s_ex, s_ref, atol=1e-6)
