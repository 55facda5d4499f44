"""Mask R-CNN: torchvision's parameter count and key names, the mask targets and loss against a loop
reference of torchvision's ``maskrcnn_loss`` (RoIAlign written out pixel by pixel), the paste of masks
into the image against torchvision's per-mask ``paste_mask_in_image`` loop and a hand-worked case,
the training step, the prediction dicts, and the ONNX graph (masks as per-detection outputs) equal to
PyTorch."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from odkit.errors import ConfigError, DataError
from odkit.models import zoo
from odkit.models.two_stage.roi_head import SampledRoIs
from odkit.ops.roi_masks import paste_masks_in_image, project_masks_on_boxes

sys.path.insert(0, str(Path(__file__).parent))

# torchvision 0.29.1: sum(p.numel() for p in maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
# num_classes=91).parameters()), counted in the reference environment (benchmarks/tv_mask_parity.py
# prints both counts); Faster R-CNN's 41,808,406 plus the mask branch's 2,646,107
TV_MASKRCNN_R50_PARAMS = 44_454_513

TINY = {"backbone_args": {"width_mult": 0.35}, "rpn_args": {"pre_nms_top_n": [100, 50], "post_nms_top_n": [60, 30]},
        "roi_args": {"num_samples": 32, "representation": 64, "mask_layers": [32, 32, 32, 32], "mask_dim": 32}}


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    model = zoo.build("maskrcnn-mobilenetv3-fpn", num_classes=3, **TINY)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:  # one batch's statistics, so that the eval-mode maps do not fade
        m.momentum = None
    model.train()
    with torch.no_grad():
        model.features(torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(9)))
        model.head.rpn.head.cls_logits.weight.normal_(0, 1.0)
        model.head.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.5)
    for m in bns:
        m.momentum = 0.1
    return model.eval()


def _targets() -> list[dict[str, torch.Tensor]]:
    masks = torch.zeros(2, 128, 128, dtype=torch.uint8)
    masks[0, 15:85, 12:66] = 1
    masks[0, 40:60, 30:50] = 0  # a hole
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    masks[1] = (((yy - 40) / 18) ** 2 + ((xx - 100) / 19) ** 2 <= 1).to(torch.uint8)  # an ellipse
    return [{"boxes": torch.tensor([[12.0, 15.0, 66.0, 85.0], [81.0, 22.0, 119.0, 58.0]]),
             "labels": torch.tensor([0, 2]), "masks": masks},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
             "masks": torch.zeros(0, 128, 128, dtype=torch.uint8)}]


# ----------------------------------------------------------------------------------- references


def _bilinear(img: np.ndarray, y: float, x: float) -> float:
    """torchvision's RoIAlign bilinear read (0 outside ``[-1, H] x [-1, W]``, clamped inside)."""
    h, w = img.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * img[y0, x0] + (1 - ly) * lx * img[y0, x1]
            + ly * (1 - lx) * img[y1, x0] + ly * lx * img[y1, x1])


def _crop_reference(mask: np.ndarray, box: np.ndarray, m: int) -> np.ndarray:
    """torchvision's ``project_masks_on_boxes`` for one RoI written out: RoIAlign with spatial scale
    1, ``aligned=False`` (RoI at least 1 px) and ``ceil(roi / m)`` samples per bin and axis."""
    x1, y1, x2, y2 = (float(v) for v in box)
    rw, rh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    bw, bh = rw / m, rh / m
    gw, gh = math.ceil(rw / m), math.ceil(rh / m)
    out = np.zeros((m, m))
    for py in range(m):
        for px in range(m):
            acc = sum(_bilinear(mask, y1 + py * bh + (iy + 0.5) * bh / gh, x1 + px * bw + (ix + 0.5) * bw / gw)
                      for iy in range(gh) for ix in range(gw))
            out[py, px] = acc / (gh * gw)
    return out


def _paste_reference(masks: torch.Tensor, boxes: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """torchvision's ``paste_masks_in_image``: per mask pad by 1, expand the box by (M + 2) / M,
    truncate to int, ``F.interpolate`` to the box size and copy the part inside the image."""
    m = masks.shape[-1]
    scale = (m + 2) / m
    padded = F.pad(masks, (1, 1, 1, 1))
    c = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
    ib = torch.cat((c - half, c + half), 1).to(torch.int64)
    h, w = hw
    out = torch.zeros(len(masks), 1, h, w)
    for k, (mk, b) in enumerate(zip(padded, ib.tolist())):
        bw, bh = max(b[2] - b[0] + 1, 1), max(b[3] - b[1] + 1, 1)
        r = F.interpolate(mk[None], size=(bh, bw), mode="bilinear", align_corners=False)[0, 0]
        x0, x1, y0, y1 = max(b[0], 0), min(b[2] + 1, w), max(b[1], 0), min(b[3] + 1, h)
        if x1 > x0 and y1 > y0:
            out[k, 0, y0:y1, x0:x1] = r[y0 - b[1]:y1 - b[1], x0 - b[0]:x1 - b[0]]
    return out


# ----------------------------------------------------------------------------------- architecture


@pytest.fixture(scope="module")
def r50() -> torch.nn.Module:
    return zoo.build("maskrcnn-r50-fpn", num_classes=90, background_slot=True)


def test_parameter_count_equals_torchvision(r50: torch.nn.Module) -> None:
    assert sum(p.numel() for p in r50.parameters()) == TV_MASKRCNN_R50_PARAMS
    # the same network without the label offset: 90 classes plus the background column
    assert sum(p.numel() for p in zoo.build("maskrcnn-r50-fpn", num_classes=90).parameters()) == TV_MASKRCNN_R50_PARAMS


def test_torchvision_layout_maps_onto_the_model(r50: torch.nn.Module) -> None:
    """Every key of torchvision's ``maskrcnn_resnet50_fpn`` (the committed layout) maps onto the model with
    its shape, nothing missing; the published checkpoint's ``mask_fcn<i>`` names map as well."""
    import re

    from _tv_weights import layout

    from odkit.weights.importer import map_state_dict
    from odkit.weights.tables.torchvision import DETECTORS

    path = Path(__file__).parent / "fixtures" / "torchvision_keys" / "maskrcnn_resnet50_fpn.json"
    assert json.loads(path.read_text())["num_parameters"] == TV_MASKRCNN_R50_PARAMS
    shapes = layout(path)
    table = DETECTORS["maskrcnn-r50-fpn"]
    legacy = {re.sub(r"mask_head\.(\d)\.0\.", lambda m: f"mask_head.mask_fcn{int(m.group(1)) + 1}.", k): v
              for k, v in shapes.items()}
    for keys in (shapes, legacy):
        source = {k: torch.empty(v, device="meta") for k, v in keys.items()}
        target = {k: v.to("meta") for k, v in r50.state_dict().items()}
        _, parts = map_state_dict(source, target, table)
        assert not parts["missing"] and not parts["unexpected"] and not parts["mismatched"]
        assert len(parts["mapped"]) == len(keys)
    assert table.is_class_layer("head.roi_heads.mask_predictor.mask_fcn_logits.weight")


# ----------------------------------------------------------------------------------- targets and loss


def test_mask_targets_equal_the_roi_align_loop() -> None:
    masks = _targets()[0]["masks"]
    boxes = torch.tensor([[10.3, 14.2, 70.8, 88.1], [80.0, 20.0, 121.5, 61.0], [50.2, 50.7, 50.9, 51.1]])
    index = torch.tensor([0, 1, 0])
    got = project_masks_on_boxes(masks, boxes, index, 28)
    for k in range(3):
        ref = _crop_reference(masks[int(index[k])].double().numpy(), boxes[k].numpy(), 28)
        np.testing.assert_allclose(got[k].numpy(), ref, atol=1e-5)


def test_mask_loss_equals_the_loop_reference() -> None:
    model = _tiny()
    head = model.head.roi_heads
    targets = _targets()
    feats = model.features(torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3)))
    # RoIs of both images: positives of gt 0 / gt 1 (columns = class + 1) and two background RoIs
    rois = torch.tensor([[0, 10.0, 12.0, 70.0, 88.0], [0, 80.0, 20.0, 122.0, 60.0], [0, 14.5, 20.0, 60.0, 80.0],
                         [0, 0.0, 0.0, 30.0, 30.0], [1, 5.0, 5.0, 50.0, 50.0]])
    s = SampledRoIs(rois, torch.tensor([1, 3, 1, 0, 0]), torch.tensor([0, 1, 0, -1, -1]), torch.zeros(5, 4))
    got = head.sampled_loss(feats, s, targets)["loss_mask"]
    logits = head.mask_logits(feats, rois[:3]).double()
    total, count = 0.0, 0
    for k in range(3):
        t = _crop_reference(targets[0]["masks"][int(s.gt_index[k])].double().numpy(), rois[k, 1:].numpy(), 28)
        x = logits[k, int(s.labels[k])].detach().numpy()
        for xi, ti in zip(x.reshape(-1), t.reshape(-1)):  # BCE with logits, one pixel at a time
            p = 1.0 / (1.0 + math.exp(-xi))
            total += -(ti * math.log(p) + (1.0 - ti) * math.log(1.0 - p))
            count += 1
    assert float(got) == pytest.approx(total / count, rel=1e-5)


def test_training_step_has_the_mask_loss_and_refuses_missing_masks() -> None:
    model = _tiny().train()
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    losses = model(x, _targets())
    assert set(losses) == {"loss", "loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask"}
    assert float(losses["loss_mask"]) > 0
    losses["loss"].backward()
    assert model.head.roi_heads.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0
    empty = model(x, [_targets()[1]] * 2)  # no objects: no positive RoI, a zero mask loss in the graph
    assert float(empty["loss_mask"]) == 0.0
    empty["loss"].backward()
    no_masks = [{k: v for k, v in t.items() if k != "masks"} for t in _targets()]
    with pytest.raises(DataError, match="no 'masks'"):
        model(x, no_masks)
    bad = _targets()
    bad[0]["masks"] = bad[0]["masks"][:1]
    with pytest.raises(DataError, match="2 boxes but masks of shape"):
        model(x, bad)


# ----------------------------------------------------------------------------------- paste


def test_paste_hand_worked_case() -> None:
    # M = 2, padded to 4 x 4; the box expands by 2 about its centre to (9.25, 9.25, 12.25, 12.25) and is
    # truncated to (9, 9, 12, 12): a 4 x 4 span, so the padded mask lands unresized at (9, 9)
    mask = torch.tensor([[[[0.9, 0.2], [0.4, 0.7]]]])
    got = paste_masks_in_image(mask, torch.tensor([[10.0, 10.0, 11.5, 11.5]]), (16, 20))
    expected = torch.zeros(1, 1, 16, 20)
    expected[0, 0, 10:12, 10:12] = mask[0, 0]
    assert torch.equal(got, expected)
    # a box running off the image keeps only the part inside
    off = paste_masks_in_image(torch.ones(1, 1, 2, 2), torch.tensor([[-1.0, -1.0, 0.5, 0.5]]), (4, 4))
    assert off.shape == (1, 1, 4, 4) and off[0, 0, 2:].sum() == 0 and off[0, 0, :, 2:].sum() == 0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.integers(8, 70), st.integers(8, 70))
def test_paste_equals_torchvision_loop(seed: int, n: int, h: int, w: int) -> None:
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(n, 1, 28, 28, generator=g)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w + 20.0, h + 20.0]) - 10
    wh = torch.rand(n, 2, generator=g) * 60 * (torch.rand(n, 1, generator=g) > 0.2)  # some zero-size boxes
    boxes = torch.cat((xy, xy + wh), 1)
    got = paste_masks_in_image(masks, boxes, (h, w))
    torch.testing.assert_close(got, _paste_reference(masks, boxes, (h, w)), atol=2e-6, rtol=0)


# ----------------------------------------------------------------------------------- prediction and export


def test_predict_returns_masks_in_original_pixels() -> None:
    from odkit.engine.predictor import Predictor

    model = _tiny()
    rng = np.random.RandomState(0)
    images = [rng.randint(0, 255, (100, 150, 3), dtype=np.uint8), rng.randint(0, 255, (128, 90, 3), dtype=np.uint8)]
    preds = Predictor(model).predict(images, conf=0.05, img_size=128)
    for img, p in zip(images, preds):
        k = len(p["scores"])
        assert k > 0 and p["masks"].shape == (k, 1, *img.shape[:2]) and p["masks"].dtype == torch.float32
        assert float(p["masks"].min()) >= 0.0 and float(p["masks"].max()) <= 1.0
    # the same detections without masks: the box path is Faster R-CNN's
    with torch.no_grad():
        x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
        a = model.predict(x, conf=0.05)[0]
    assert a["masks"].shape[-2:] == (128, 128) and len(a["masks"]) == len(a["boxes"])


def test_onnx_masks_equal_pytorch(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from odkit.engine.predictor import Predictor
    from odkit.export.onnx import export_onnx
    from odkit.export.runtime import load_predictor, read_sidecar

    model = _tiny()
    path = export_onnx(model, tmp_path / "m.onnx", img_size=128, dynamic=True, conf=0.05)  # NMS added for masks
    info = read_sidecar(path)
    assert info["nms"] and info["masks"] and info["outputs"] == ["dets", "num_dets", "masks"]
    exported = load_predictor(path)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    dets, num, masks = exported.run(x)
    assert masks.shape == (2, 100, 28, 28)
    rng = np.random.RandomState(1)
    images = [rng.randint(0, 255, (100, 150, 3), dtype=np.uint8), rng.randint(0, 255, (128, 90, 3), dtype=np.uint8)]
    ref = Predictor(model).predict(images, conf=0.05, img_size=128)
    got = exported.predict(images, conf=0.05, batch=2)
    for r, g in zip(ref, got):
        assert len(r["scores"]) > 0 and len(g["scores"]) == len(r["scores"])
        torch.testing.assert_close(g["boxes"], r["boxes"], atol=1e-2, rtol=0)
        assert torch.equal(g["labels"], r["labels"])
        torch.testing.assert_close(g["masks"], r["masks"], atol=1e-4, rtol=0)


def test_cli_predict_writes_segm_results_and_draws_masks(tmp_path, capsys) -> None:
    import json

    import cv2

    import odkit
    from odkit.cli.main import main
    from odkit.ops.rle import decode, from_coco
    from odkit.weights.format import save_weights

    model = _tiny()
    cfg = {**model.config, "class_names": ["a", "b", "c"], "img_size": 128}
    w = save_weights(tmp_path / "best.safetensors", model.state_dict(), {"epoch": 1, "model_config": cfg})
    src = tmp_path / "imgs"
    src.mkdir()
    rng = np.random.RandomState(5)
    images = [rng.randint(0, 255, (100, 150, 3), dtype=np.uint8), rng.randint(0, 255, (128, 90, 3), dtype=np.uint8)]
    for i, img in enumerate(images):
        cv2.imwrite(str(src / f"{i}.png"), img[:, :, ::-1])
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    try:  # the command sets the machine's thread count: restored for the tests after this one
        assert main(["predict", "--weights", str(w), "--source", str(src), "--out", str(out), "--conf", "0.05",
                     "--max-det", "20", "--save"]) == 0
    finally:
        torch.set_num_threads(threads)
    recs = json.loads((out / "predictions.json").read_text())
    ref = odkit.load(w).predict([src / "0.png", src / "1.png"], conf=0.05, max_det=20)
    if importlib.util.find_spec("onnxruntime") is not None:  # graph backends: masks run in PyTorch
        assert odkit.load(w, backend="auto").backend == "torch"
        with pytest.raises(ConfigError, match="predicts masks"):
            odkit.load(w, backend="onnxruntime")
    for i, p in enumerate(ref):
        mine = [r for r in recs if r["image_id"] == i]
        assert len(mine) == len(p["scores"]) > 0
        for r, m in zip(mine, p["masks"]):
            assert r["segmentation"]["size"] == list(images[i].shape[:2])
            assert np.array_equal(decode(from_coco(r["segmentation"])), (m[0] > 0.5).numpy())
        drawn = cv2.imread(str(out / f"{i}.png"))
        assert drawn is not None and drawn.shape == images[i].shape
    # the results file is a COCO segm result: odkit eval scores it against masks (here its own masks)
    gt = {"images": [{"id": i, "file_name": f"{i}.png", "height": im.shape[0], "width": im.shape[1]}
                     for i, im in enumerate(images)],
          "categories": [{"id": c, "name": n} for c, n in enumerate("abc")],
          "annotations": [{"id": k + 1, "image_id": r["image_id"], "category_id": r["category_id"], "bbox": r["bbox"],
                           "segmentation": r["segmentation"], "area": float(r["bbox"][2] * r["bbox"][3]),
                           "iscrowd": 0} for k, r in enumerate(recs)]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    capsys.readouterr()
    assert main(["eval", "--gt", str(tmp_path / "gt.json"), "--dt", str(out / "predictions.json"),
                 "--iou-type", "segm"]) == 0
    assert "Average Precision" in capsys.readouterr().out


def test_predict_set_masks_score_segm_ap_as_the_written_results(tmp_path) -> None:
    """``predict_set`` keeps the masks as RLEs; segm AP of them on a set with segmentations equals the
    AP of the COCO results ``write_coco_results`` writes, scored against the COCO json."""
    import json

    import cv2

    from odkit.data.formats import load_dataset
    from odkit.engine.evaluator import evaluate_predictions, predict_set, write_coco_results
    from odkit.eval.coco import evaluate_coco
    from odkit.ops.masks import segmentation_to_rle
    from odkit.ops.rle import RLE

    (tmp_path / "images").mkdir()
    rng = np.random.RandomState(0)
    images, anns = [], []
    for i in range(3):
        cv2.imwrite(str(tmp_path / "images" / f"{i}.png"), rng.randint(0, 255, (120, 140, 3), dtype=np.uint8))
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 120, "width": 140})
        for k, (x, y) in enumerate(((10, 20), (70, 50))):
            anns.append({"id": 10 * i + k + 1, "image_id": i + 1, "category_id": 1 + k, "bbox": [x, y, 50, 40],
                         "area": 1200.0, "iscrowd": 0,
                         "segmentation": [[x, y, x + 50, y, x + 25, y + 40]]})  # triangles
    gt = tmp_path / "annotations.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns,
                              "categories": [{"id": c + 1, "name": n} for c, n in enumerate("abc")]}))
    aset = load_dataset(gt)
    preds = predict_set(_tiny(), aset, 128, batch=2, conf=0.05, iou=0.5, max_det=20)
    assert all(len(p["masks"]) == len(p["scores"]) > 0 and isinstance(p["masks"][0], RLE) for p in preds)
    # the random model scores 0: put each image's true triangles first (score 1, their own masks)
    for i, p in enumerate(preds):
        mine = [a for a in anns if a["image_id"] == aset.image_ids[i]]
        p["boxes"] = np.concatenate([[[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in mine)],
                                     p["boxes"]]).astype(np.float32)
        p["scores"] = np.concatenate([np.ones(len(mine), np.float32), p["scores"]])
        p["labels"] = np.concatenate([[a["category_id"] - 1 for a in mine], p["labels"]]).astype(np.int64)
        p["masks"] = [segmentation_to_rle(a["segmentation"], 120, 140) for a in mine] + p["masks"]
    assert aset.masks is not None  # the data layer reads the json's polygons
    got = evaluate_predictions(aset, preds, iou_type="segm")
    assert got.metrics["AP"] == pytest.approx(1.0)
    write_coco_results(aset, preds, tmp_path / "res.json")
    ref = evaluate_coco(gt, tmp_path / "res.json", iou_type="segm")
    assert got.metrics == pytest.approx(ref.metrics, abs=1e-12)


def test_merging_wrappers_keep_boxes_only(caplog) -> None:
    import argparse

    from odkit.cli.predict_opts import wrap_predictor
    from odkit.engine.predictor import Predictor

    pred = Predictor(_tiny())
    args = argparse.Namespace(slice=None, tta=True, merge=None, match=None, match_thr=None)
    wrapped = wrap_predictor([pred], args)
    image = np.random.RandomState(2).randint(0, 255, (100, 150, 3), dtype=np.uint8)
    out = wrapped.predict([image], conf=0.05, img_size=128)[0]
    assert "masks" not in out and len(out["boxes"]) > 0
    assert "masks are not merged" in caplog.text


@pytest.mark.slow
def test_overfits_two_images() -> None:
    """60 AdamW steps on two images (about 4 s of CPU): the mask loss falls and the predicted masks
    cover their objects (the rectangle with a hole, the ellipse)."""
    model = _tiny().train()
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    targets = _targets()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    first = None
    for _ in range(60):
        losses = model(x, targets)
        first = float(losses["loss_mask"]) if first is None else first
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
    assert float(losses["loss_mask"]) < 0.25 * first
    pred = model.eval().predict(x[:1], conf=0.3)[0]
    gt = targets[0]["masks"].bool()
    for k, label in enumerate((0, 2)):
        j = int((pred["labels"] == label).nonzero()[0])
        mask = pred["masks"][j, 0] > 0.5
        assert float((mask & gt[k]).sum() / (mask | gt[k]).sum()) > 0.8
