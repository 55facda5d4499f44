"""Dense one-stage detectors (RetinaNet, FCOS, ATSS, GFL): parameter counts of the reference
configurations, the head contract, filter-then-decode equal to dense decoding, assigner swapping."""

from __future__ import annotations

import pytest
import torch

from odkit.assign import ATSSAssigner, FCOSAssigner, MaxIoUAssigner
from odkit.models import zoo

LITE = ["retinanet-lite", "fcos-lite", "atss-lite", "gfl-lite"]


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0], [70.0, 70.0, 120.0, 110.0], [3.0, 3.0, 6.0, 7.0]]),
         "labels": torch.tensor([0, 2, 1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
        {"boxes": torch.tensor([[0.0, 0.0, 128.0, 128.0], [30.0, 30.0, 50.0, 50.0]]), "labels": torch.tensor([1, 1]),
         "iscrowd": torch.tensor([0, 1])},
    ]


@pytest.mark.parametrize(("name", "count"), [("retinanet-r50-fpn", 34_068_119), ("fcos-r50-fpn", 32_322_720)])
def test_reference_parameter_counts(name: str, count: int) -> None:
    """torchvision's retinanet_resnet50_fpn / fcos_resnet50_fpn (91 classes, trainable BN)."""
    model = zoo.build(name, num_classes=91)
    assert sum(p.numel() for p in model.parameters()) == count
    assert model.size_divisor == 32
    assert model.head.strides == [8, 16, 32, 64, 128]


@pytest.mark.parametrize("name", LITE)
def test_loss_backward_and_outputs(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.build(name, num_classes=3)
    x = torch.rand(3, 3, 128, 160)
    losses = model(x, _targets())
    assert torch.isfinite(losses["loss"]) and float(losses["loss"]) > 0
    assert float(losses["num_fg"]) > 0
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    boxes, scores = model.forward_export(x)
    n = sum(h * w for h, w in [(16, 20), (8, 10), (4, 5), (2, 3)]) * model.head.num_anchors
    assert boxes.shape == (3, n, 4) and scores.shape == (3, n, 3)
    assert scores.min() >= 0 and scores.max() <= 1
    preds = model.predict(x, conf=0.0)
    assert len(preds) == 3 and all(p["boxes"].shape[1] == 4 for p in preds)


@pytest.mark.parametrize("name", LITE)
def test_batch_without_any_gt_trains(name: str) -> None:
    model = zoo.build(name, num_classes=2)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    losses = model(torch.rand(2, 3, 64, 64), empty)
    assert torch.isfinite(losses["loss"]) and float(losses["num_fg"]) == 0
    losses["loss"].backward()


@pytest.mark.parametrize("name", LITE)
def test_filter_then_decode_equals_dense_decoding(name: str) -> None:
    """Per-level threshold + top-k + decoding of the survivors gives the same (box, score, class)
    triples as decoding every prior and filtering level by level afterwards."""
    torch.manual_seed(1)
    model = zoo.build(name, num_classes=4).eval()
    x = torch.rand(2, 3, 96, 128)
    feats = model.features(x)
    thr, topk = 0.005, 50
    with torch.no_grad():
        cands = model.head.predict_candidates(feats, (96, 128), thr, topk)
        boxes, scores = model.head.predict_raw(feats, (96, 128))
    counts = [int(o[0].shape[-2] * o[0].shape[-1]) * model.head.num_anchors for o in model.head(feats)]
    for b in range(2):
        ref_boxes, ref_scores, ref_labels = [], [], []
        start = 0
        for n in counts:
            s = scores[b, start:start + n]
            flat = s.reshape(-1)
            keep = [(float(flat[i]), i) for i in range(flat.numel()) if float(flat[i]) > thr]
            keep.sort(key=lambda t: -t[0])
            for v, i in keep[:topk]:
                ref_scores.append(v)
                ref_labels.append(i % 4)
                box = boxes[b, start + i // 4].clone()
                box[0::2] = box[0::2].clamp(0, 128)
                box[1::2] = box[1::2].clamp(0, 96)
                ref_boxes.append(box)
            start += n
        got_b, got_s, got_l = cands[b]
        assert got_s.numel() == len(ref_scores)
        torch.testing.assert_close(got_s, torch.tensor(ref_scores), rtol=0, atol=1e-6)
        assert got_l.tolist() == ref_labels
        if ref_boxes:
            torch.testing.assert_close(got_b, torch.stack(ref_boxes), rtol=0, atol=1e-4)


def test_assigner_is_a_builder_argument() -> None:
    assert isinstance(zoo.build("retinanet-lite", num_classes=2).head.assigner, MaxIoUAssigner)
    assert isinstance(zoo.build("fcos-lite", num_classes=2).head.assigner, FCOSAssigner)
    model = zoo.build("retinanet-lite", num_classes=3, assigner="atss")
    assert isinstance(model.head.assigner, ATSSAssigner)
    assert model.config["assigner"] == "atss"
    rebuilt = zoo.from_config(model.config)
    assert isinstance(rebuilt.head.assigner, ATSSAssigner)
    losses = model(torch.rand(1, 3, 96, 96), _targets()[:1])
    assert float(losses["num_fg"]) > 0 and torch.isfinite(losses["loss"])


def test_lite_members_are_light() -> None:
    from odkit.cli.info import model_info

    for name in LITE:
        assert model_info(name, 416, num_classes=3)["gflops"] < 3.0, name


def test_recipes_and_prediction_defaults() -> None:
    assert zoo.recipe("retinanet-r50-fpn")["schedule"] == "step"
    assert zoo.recipe("fcos-lite")["img_size"] == 416
    model = zoo.build("fcos-r50-fpn", num_classes=91)
    assert model.postprocess_defaults == {"conf": 0.2, "pre_topk": 1000, "iou": 0.6, "max_det": 100}
    model = zoo.build("retinanet-r50-fpn", num_classes=91, conf=0.3)
    assert model.postprocess_defaults["conf"] == 0.3 and model.postprocess_defaults["iou"] == 0.5


def test_backbone_options_are_builder_arguments() -> None:
    model = zoo.build("retinanet-lite", num_classes=2, backbone_args={"frozen_stages": 1})
    frozen = [n for n, p in model.backbone.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("conv1.", "stage2.")) for n in frozen)
    rebuilt = zoo.from_config(model.config)
    assert [n for n, p in rebuilt.backbone.named_parameters() if not p.requires_grad] == frozen
