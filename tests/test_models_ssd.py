"""SSD300-VGG16 / SSDLite320-MobileNetV3: the resize mode (plain resize, separate x/y scales), the
head, max-IoU matching with hard negative mining, the SSD augmentation and the zoo entries."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

from odkit.data.transforms import fit_to_input, letterbox, stretch, unletterbox_boxes  # noqa: E402
from odkit.errors import ConfigError  # noqa: E402
from odkit.models.postprocess import resize_mode, undo_letterbox  # noqa: E402


# ------------------------------------------------------------------------------------- resize mode
@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(8, 120), w=st.integers(8, 120), oh=st.integers(8, 96), ow=st.integers(8, 96),
    seed=st.integers(0, 10_000),
)
def test_stretch_maps_boxes_and_meta_undoes_it(h: int, w: int, oh: int, ow: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    xy = np.sort(rng.uniform(0, 1, (5, 2, 2)), axis=1)
    boxes = np.stack([xy[:, 0, 0] * w, xy[:, 0, 1] * h, xy[:, 1, 0] * w, xy[:, 1, 1] * h], 1).astype(np.float32)
    out, b, meta = stretch(img, boxes, None, (oh, ow))
    assert out.shape == (oh, ow, 3) and meta["input_size"] == (oh, ow)
    # brute force: every corner scaled by its own axis ratio
    want = boxes.astype(np.float64) * np.array([ow / w, oh / h, ow / w, oh / h])
    np.testing.assert_allclose(b, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(unletterbox_boxes(b, meta), boxes, rtol=1e-5, atol=1e-3)
    back = undo_letterbox(torch.from_numpy(b), meta)
    np.testing.assert_allclose(back.numpy(), boxes, rtol=1e-5, atol=1e-3)


def test_stretch_composes_with_a_long_side_resize_meta() -> None:
    # the dataset resized a 200x600 image (h x w) to 100x300 (ratio 0.5), stretch then takes it to 300x300
    meta = {"orig_size": (200, 600), "ratio": 0.5, "pad": (0.0, 0.0)}
    img = np.zeros((100, 300, 3), np.uint8)
    box = np.array([[30.0, 20.0, 150.0, 80.0]], np.float32)  # in the 100x300 image
    _, b, m = fit_to_input(img, box, meta, 300, "stretch")
    assert m["ratio"] == pytest.approx((0.5, 1.5)) and m["orig_size"] == (200, 600)
    np.testing.assert_allclose(b, [[30.0, 60.0, 150.0, 240.0]], atol=1e-4)
    np.testing.assert_allclose(undo_letterbox(torch.from_numpy(b), m).numpy(), [[60.0, 40.0, 300.0, 160.0]], atol=1e-3)


def test_fit_to_input_letterbox_is_letterbox_and_bad_mode_raises() -> None:
    img = np.full((50, 80, 3), 7, np.uint8)
    box = np.array([[1.0, 2.0, 30.0, 40.0]], np.float32)
    a = fit_to_input(img, box, None, 64, "letterbox")
    b = letterbox(img, box, None, 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    with pytest.raises(ConfigError, match="resize mode"):
        fit_to_input(img, box, None, 64, "crop")


class _FixedBox(nn.Module):
    """Stands in for a detector: predicts one box in input pixels, undone through the metas."""

    def __init__(self, resize: str | None) -> None:
        super().__init__()
        self.config = {"name": "fake", "num_classes": 1} | ({"resize": resize} if resize else {})
        self.size_divisor = 1
        self.seen: list[tuple[int, ...]] = []

    def predict(self, x, metas=None, **kw):
        self.seen.append(tuple(x.shape))
        box = torch.tensor([[30.0, 60.0, 150.0, 240.0]])
        return [{"boxes": undo_letterbox(box, m), "scores": torch.ones(1), "labels": torch.zeros(1, dtype=torch.long)}
                for m in metas]


@pytest.mark.parametrize("resize, want", [("stretch", [60.0, 40.0, 300.0, 160.0]), (None, None)])
def test_predictor_resizes_as_the_model_says(resize: str | None, want: list[float] | None) -> None:
    from odkit.engine.predictor import Predictor

    model = _FixedBox(resize)
    assert resize_mode(model) == (resize or "letterbox")
    pred = Predictor(model, {"num_classes": 1, "img_size": 300})
    img = np.zeros((200, 600, 3), np.uint8)  # h 200, w 600
    out = pred.predict(img, img_size=300)[0]["boxes"][0].tolist()
    assert pred.model.seen == [(1, 3, 300, 300)]  # the prepared copy the Predictor runs
    if want is None:  # letterbox: r = 0.5, dy = 100: (30, 60-100 -> clipped) / 0.5
        want = [60.0, 0.0, 300.0, 200.0]
    np.testing.assert_allclose(out, want, atol=1e-3)


def test_val_predictions_undo_the_models_resize(tmp_path) -> None:
    from odkit.data.formats import load_dataset
    from odkit.data.synth import synthesize
    from odkit.engine.evaluator import predict_set

    aset = load_dataset(str(synthesize(tmp_path / "s", n=3, seed=1, size=96, val_fraction=0.0)))
    for resize in ("stretch", None):
        model = _FixedBox(resize)
        preds = predict_set(model, aset, img_size=300, batch=2)
        for i, p in enumerate(preds):
            h, w = int(aset.heights[i]), int(aset.widths[i])
            want = undo_letterbox(torch.tensor([[30.0, 60.0, 150.0, 240.0]]),
                                  fit_to_input(np.zeros((h, w, 3), np.uint8), np.zeros((0, 4)), None, 300,
                                               resize or "letterbox")[2])
            np.testing.assert_allclose(p["boxes"], want.numpy(), atol=0.5)  # val images are pre-resized
        if resize:
            assert [round(float(p["boxes"][0, 2]) / 150 * 300) for p in preds] == [int(w) for w in aset.widths]


def test_zoo_stores_a_resize_override_and_refuses_a_bad_one() -> None:
    from odkit.models import zoo

    m = zoo.build("yolox-nano", num_classes=2, resize="stretch")
    assert m.config["resize"] == "stretch" and resize_mode(m) == "stretch"
    assert resize_mode(zoo.from_config(m.config)) == "stretch"
    assert "resize" not in zoo.build("yolox-nano", num_classes=2).config
    with pytest.raises(ConfigError, match="resize"):
        zoo.build("yolox-nano", num_classes=2, resize="pad")


# ------------------------------------------------------------------------------------- losses / matching
def test_hard_negative_mining_hand_worked() -> None:
    from odkit.losses.ssd import hard_negative_mining

    loss = torch.tensor([
        [0.5, 9.0, 2.0, 0.1, 3.0, 1.0, 2.5, 0.7],  # 1 positive (1), prior 6 ignored: keep 3 negatives
        [0.5, 9.0, 2.0, 0.1, 3.0, 1.0, 2.5, 0.7],  # no positive: no negative
        [0.5, 9.0, 2.0, 0.1, 3.0, 1.0, 2.5, 0.7],  # 2 positives (1, 4): 6 wanted, 5 negatives available
    ])
    pos = torch.zeros(3, 8, dtype=torch.bool)
    pos[0, 1] = True
    pos[2, [1, 4]] = True
    neg = ~pos
    neg[0, 6] = False  # ignored
    kept = hard_negative_mining(loss, pos, neg, 3.0)
    # image 0: negatives by loss 3.0 (4), 2.0 (2), 1.0 (5), 0.7 (7), ... -> the first three
    assert kept[0].nonzero().flatten().tolist() == [2, 4, 5]
    assert not kept[1].any()
    assert kept[2].nonzero().flatten().tolist() == [0, 2, 3, 5, 6, 7]
    # ratio 2: image 0 keeps priors 4 and 2; ties keep the lower index
    assert hard_negative_mining(loss, pos, neg, 2.0)[0].nonzero().flatten().tolist() == [2, 4]
    tie = hard_negative_mining(torch.ones(1, 8), pos[:1], neg[:1], 2.0)
    assert tie[0].nonzero().flatten().tolist() == [0, 2]


def test_ssd_loss_is_the_brute_force_sum() -> None:
    from odkit.losses.ssd import ssd_loss

    g = torch.Generator().manual_seed(0)
    logits, deltas = torch.randn(2, 10, 4, generator=g), torch.randn(2, 10, 4, generator=g)
    pos = torch.zeros(2, 10, dtype=torch.bool)
    pos[0, [1, 7]] = True
    pos[1, 3] = True
    targets = torch.where(pos, torch.tensor(2), torch.tensor(0))
    box_t = torch.randn(3, 4, generator=g)
    out = ssd_loss(logits, deltas, targets, box_t, pos, ~pos, torch.tensor(3.0), 3.0, 1.0)
    want_cls = 0.0
    for b in range(2):
        ce = [float(-torch.log_softmax(logits[b, a], 0)[targets[b, a]]) for a in range(10)]
        negs = sorted((a for a in range(10) if not pos[b, a]), key=lambda a: -ce[a])[: 3 * int(pos[b].sum())]
        want_cls += sum(ce[a] for a in range(10) if pos[b, a]) + sum(ce[a] for a in negs)
    d = (deltas[pos] - box_t).abs()
    want_box = float(torch.where(d < 1, 0.5 * d * d, d - 0.5).sum())
    assert float(out["loss_cls"]) == pytest.approx(want_cls / 3, rel=1e-5)
    assert float(out["loss_box"]) == pytest.approx(want_box / 3, rel=1e-5)


def test_ssd_match_hand_worked() -> None:
    from odkit.assign.base import GTBatch
    from odkit.assign.ssd import ssd_match

    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [100, 100, 110, 110], [5, 5, 15, 15], [50, 50, 60, 60]])
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 19, 19], [100, 100, 104, 104]]),
                "labels": torch.tensor([2, 0, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    gt = GTBatch.from_targets(targets, 3, "cpu", batch_size=2)
    res = ssd_match(anchors, gt, 0.5)
    # a0: IoU 1 with g0; a1: 0.9025 with g1; a2: 0.16 with g2 but it is g2's best prior; a3: 0.277 max -> bg
    assert res.gt_inds[0].tolist() == [0, 1, 2, -1, -1]
    assert res.labels[0].tolist() == [2, 0, 1, -1, -1]
    assert res.quality[0, :3].tolist() == pytest.approx([1.0, 0.9025, 0.16], abs=1e-5)
    assert res.gt_inds[1].tolist() == [-1] * 5


def test_default_boxes_equal_ssd_priors_for_the_same_sizes() -> None:
    from odkit.ops.priors import SSD300_CONFIG, DefaultBoxes, ssd_priors

    c = SSD300_CONFIG
    scales = [s / 300 for s in c["min_sizes"]] + [c["max_sizes"][-1] / 300]
    boxes = DefaultBoxes(c["aspect_ratios"], scales=scales, steps=c["steps"])(
        [(f, f) for f in c["feature_maps"]], (300, 300))
    ref = ssd_priors(**c, clip=True, fmt="cxcywh").double() * 300
    ref_xyxy = torch.cat([ref[:, :2] - ref[:, 2:] / 2, ref[:, :2] + ref[:, 2:] / 2], 1)
    assert boxes.shape == (8732, 4)
    # ssd_priors clamps centres to the image as well (the 10x10 level's last column, step 32, sits at 304
    # px); torchvision's rule clips widths/heights only: compare centres inside the image
    ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = (ctr <= 300 + 1e-3).all(1)
    assert int((~inside).sum()) == (10 + 10 - 1) * 6  # last row and column of that level, 6 boxes each
    torch.testing.assert_close(boxes.double()[inside], ref_xyxy[inside], atol=1e-3, rtol=0)


# ------------------------------------------------------------------------------------- augmentation
def _scene(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 90x120 image with 3 flat-coloured boxes (on integer pixels) and their labels."""
    rng = np.random.default_rng(seed)
    img = np.full((90, 120, 3), 40, np.uint8)
    boxes = np.array([[10, 10, 40, 50], [60, 20, 110, 70], [20, 60, 50, 85]], np.float32)
    for b in boxes.astype(int):
        img[b[1]:b[3], b[0]:b[2]] = rng.integers(80, 255, 3)
    return img, boxes, np.array([0, 1, 2], np.int64)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_zoom_out_and_crop_keep_box_contents(seed: int) -> None:
    from odkit.data.ssd_aug import SSDAugmentConfig, min_iou_crop, zoom_out

    img, boxes, labels = _scene(seed)
    rng = np.random.default_rng(seed)
    big, b2 = zoom_out(img, boxes, rng, 4.0, (123, 117, 104))
    assert big.shape[0] >= 90 and big.shape[1] >= 120
    for b0, b1 in zip(boxes.astype(int), b2.astype(int)):  # integer offsets: the pixels move with the box
        assert np.array_equal(img[b0[1]:b0[3], b0[0]:b0[2]], big[b1[1]:b1[3], b1[0]:b1[2]])
    crop, b3, l3 = min_iou_crop(big, b2, labels, rng, SSDAugmentConfig())
    assert len(b3) == len(l3) >= 1
    h, w = crop.shape[:2]
    assert (b3[:, 0::2] >= 0).all() and (b3[:, 0::2] <= w).all() and (b3[:, 1::2] >= 0).all() and (b3[:, 1::2] <= h).all()
    for b, lab in zip(b3.astype(int), l3):  # a kept box still shows its own colour at its centre
        cy, cx = (b[1] + b[3]) // 2, (b[0] + b[2]) // 2
        src = boxes[lab].astype(int)
        assert np.array_equal(crop[cy, cx], img[(src[1] + src[3]) // 2, (src[0] + src[2]) // 2]) or b[2] - b[0] < 2


def test_ssd_augment_output_and_photometric_keep_boxes() -> None:
    from odkit.data.ssd_aug import SSDAugment, SSDAugmentConfig, photometric_distort

    img, boxes, labels = _scene(0)
    rng = np.random.default_rng(0)
    out = photometric_distort(img, rng, SSDAugmentConfig(photometric_prob=1.0))
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)
    aug = SSDAugment(SSDAugmentConfig(), resize="stretch")
    for s in range(10):
        im, b, lab, meta = aug.apply(img, boxes, labels, {"orig_size": (90, 120)}, 96, np.random.default_rng(s))
        assert im.shape == (96, 96, 3) and len(b) == len(lab)
        assert (b >= 0).all() and (b <= 96).all() and ((b[:, 2:] - b[:, :2]) >= 1).all()
    # no strong augmentation: only flip + plain resize, boxes scaled per axis
    im, b, lab, meta = aug.apply(img, boxes, labels, {}, 96, np.random.default_rng(1), strong=False)
    want = boxes * np.array([96 / 120, 96 / 90, 96 / 120, 96 / 90], np.float32)
    if meta.get("flipped"):
        want[:, [0, 2]] = 96 - want[:, [2, 0]]
    np.testing.assert_allclose(b, want, atol=1e-3)
    with pytest.raises(ConfigError, match="expand_max"):
        SSDAugmentConfig(expand_max=0.5)


def test_training_pipeline_follows_the_recipe() -> None:
    from odkit.data.ssd_aug import SSDAugment
    from odkit.data.transforms import TrainAugment
    from odkit.engine.config import TrainConfig
    from odkit.engine.data import train_transform
    from odkit.engine.recipe import model_recipe

    rec = model_recipe("ssdlite320-mobilenetv3", 16)
    assert rec["augment"] == "ssd" and rec["mosaic"] == 0.0 and rec["img_size"] == 320
    t = train_transform(TrainConfig(model="ssd300-vgg16", img_size=300, augment="ssd"))
    assert isinstance(t, SSDAugment) and t.resize == "stretch"
    t = train_transform(TrainConfig(model="yolox-nano", img_size=320))
    assert isinstance(t, TrainAugment) and t.resize == "letterbox"
    with pytest.raises(ConfigError, match="multiple of 32"):
        TrainConfig(model="yolox-nano", img_size=300)
    with pytest.raises(ConfigError, match="augment"):
        TrainConfig(model="yolox-nano", augment="mosaic9")
    with pytest.raises(ConfigError, match="unknown SSD augmentation settings: degrees"):
        train_transform(TrainConfig(model="ssd300-vgg16", img_size=300, augment="ssd", aug={"degrees": 0}))


# ------------------------------------------------------------------------------------- models / export
@pytest.fixture(scope="module")
def ssdlite() -> nn.Module:
    from odkit.models import zoo

    torch.manual_seed(0)
    model = zoo.build("ssdlite320-mobilenetv3", num_classes=3)
    for m in model.modules():  # BatchNorm statistics of one batch, so that features do not vanish in eval
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.features(torch.rand(4, 3, 320, 320, generator=torch.Generator().manual_seed(0)))
    model.eval()
    with torch.no_grad():  # spread scores and boxes so that thresholds and NMS have work to do (no ties)
        for m in model.head.cls_logits:
            m[1].weight.normal_(0.0, 0.05)
            m[1].bias.normal_(0.0, 1.0)
        for m in model.head.bbox_reg:
            m[1].weight.normal_(0.0, 0.1)
    return model


def test_zoo_entries() -> None:
    from odkit.models import zoo

    s, lite = zoo.spec("ssd300-vgg16"), zoo.spec("ssdlite320-mobilenetv3")
    assert (s.img_size, s.resize, s.size_divisor) == (300, "stretch", 1)
    assert (lite.img_size, lite.resize, lite.size_divisor) == (320, "stretch", 32)
    assert s.postprocess == {"conf": 0.01, "iou": 0.45, "max_det": 200, "pre_topk": 400}
    assert lite.postprocess == {"conf": 0.001, "iou": 0.55, "max_det": 300, "pre_topk": 300}
    # 90 object classes + background = torchvision's num_classes=91: its parameter count
    assert sum(p.numel() for p in zoo.build("ssd300-vgg16", num_classes=90).parameters()) == 35_641_826


def test_ssdlite_layout_and_counts(ssdlite: nn.Module) -> None:
    # 90 object classes + background = torchvision's 91 logits: its parameter count
    from odkit.models import zoo

    assert sum(p.numel() for p in zoo.build("ssdlite320-mobilenetv3", num_classes=90).parameters()) == 3_440_060
    assert ssdlite.config["resize"] == "stretch" and ssdlite.size_divisor == 32
    x = torch.rand(1, 3, 320, 320)
    feats = ssdlite.features(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(672, 20, 20), (480, 10, 10), (512, 5, 5), (256, 3, 3),
                                                   (256, 2, 2), (128, 1, 1)]
    with torch.no_grad():
        boxes, scores = ssdlite(x)
    assert boxes.shape == (1, 3234, 4) and scores.shape == (1, 3234, 3)
    assert (boxes >= 0).all() and (boxes <= 320).all()


def test_predict_candidates_are_per_class_topk(ssdlite: nn.Module) -> None:
    x = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        boxes, scores = ssdlite(x)
        cand = ssdlite.head.predict_candidates(ssdlite.features(x), (320, 320), 0.2, 50)[0]
    for c in range(3):  # brute force: per class the 50 best of the scores above 0.2
        s = scores[0, :, c]
        want = s[s > 0.2].sort(descending=True).values[:50]
        got = cand[1][cand[2] == c].sort(descending=True).values
        torch.testing.assert_close(got, want)
    k = cand[1].argmax()
    assert bool((boxes[0] == cand[0][k]).all(1).any())


def test_predict_maps_stretched_boxes_back(ssdlite: nn.Module) -> None:
    from tv_parity import match

    from odkit.engine.predictor import Predictor

    img = (np.random.default_rng(0).random((150, 400, 3)) * 255).astype(np.uint8)  # h 150, w 400
    pred = Predictor(ssdlite, {"num_classes": 3, "img_size": 320})
    got = pred.predict(img, conf=0.3, max_det=50)[0]
    x = torch.from_numpy(stretch(img, np.zeros((0, 4), np.float32), None, 320)[0]).permute(2, 0, 1)[None].float() / 255
    ref = ssdlite.predict(x, conf=0.3, max_det=50)[0]
    assert len(got["boxes"]) == len(ref["boxes"]) > 10
    ref["boxes"] = ref["boxes"] / torch.tensor([320 / 400, 320 / 150, 320 / 400, 320 / 150])
    share, max_box, _, _ = match(ref, got, box_tol=1e-3, score_tol=1e-5)
    assert share == 1.0, (share, max_box)
    assert float(got["boxes"][:, 2].max()) <= 400 and float(got["boxes"][:, 3].max()) <= 150


@pytest.mark.parametrize("fmt", ["onnx", pytest.param("openvino", marks=pytest.mark.slow)])
def test_export_equals_pytorch(ssdlite: nn.Module, fmt: str, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if fmt == "openvino":
        pytest.importorskip("openvino")
    from tv_parity import match

    from odkit.engine.predictor import Predictor
    from odkit.export.runtime import load_predictor

    n = torch.get_num_threads()
    try:
        if fmt == "onnx":
            from odkit.export.onnx import export_onnx

            path = export_onnx(ssdlite, tmp_path / "m.onnx", img_size=320)
        else:
            from odkit.export.openvino import export_openvino

            path = export_openvino(ssdlite, tmp_path / "m.xml", img_size=320)
        img = (np.random.default_rng(1).random((200, 260, 3)) * 255).astype(np.uint8)
        x = torch.from_numpy(stretch(img, np.zeros((0, 4), np.float32), None, 320)[0]).permute(2, 0, 1)[None]
        exported = load_predictor(path)
        raw_boxes, raw_scores = exported.run(x.float() / 255)
        with torch.no_grad():
            boxes, scores = ssdlite(x.float() / 255)
        np.testing.assert_allclose(raw_boxes, boxes.numpy(), atol=1e-2, rtol=0)
        np.testing.assert_allclose(raw_scores, scores.numpy(), atol=1e-4, rtol=0)
        # a threshold that leaves ~150 (box, class) candidates: both candidate rules (SSD's per-class top-k
        # in PyTorch, the exported runtime's global top-k) then keep all of them
        conf = float(scores.flatten().sort(descending=True).values[150])
        got = exported.predict(img, conf=conf, iou=0.5, max_det=50)[0]
        ref = Predictor(ssdlite, {"num_classes": 3, "img_size": 320}).predict(img, conf=conf, iou=0.5, max_det=50)[0]
        assert len(got["boxes"]) == len(ref["boxes"]) > 0
        # equal scores (symmetric default boxes of an untrained model) may come in another order: pair them
        share, max_box, max_score, _ = match(ref, got, box_tol=1e-2, score_tol=1e-4)
        assert share == 1.0, (share, max_box, max_score)
    finally:
        torch.set_num_threads(n)


@pytest.mark.slow
def test_ssd300_export_equals_pytorch(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from odkit.export.onnx import export_onnx
    from odkit.export.openvino import export_openvino
    from odkit.export.runtime import load_predictor
    from odkit.models import zoo

    n = torch.get_num_threads()
    try:
        torch.manual_seed(0)
        model = zoo.build("ssd300-vgg16", num_classes=3).eval()
        x = torch.rand(1, 3, 300, 300, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            boxes, scores = model(x)
        for path in (export_onnx(model, tmp_path / "m.onnx", img_size=300),
                     export_openvino(model, tmp_path / "m.xml", img_size=300)):
            got_boxes, got_scores = load_predictor(path).run(x)
            np.testing.assert_allclose(got_boxes, boxes.numpy(), atol=1e-2, rtol=0)
            np.testing.assert_allclose(got_scores, scores.numpy(), atol=1e-4, rtol=0)
    finally:
        torch.set_num_threads(n)
