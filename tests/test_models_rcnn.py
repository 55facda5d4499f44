"""Two-stage detectors: the loss dict, ONNX / OpenVINO export (fixed proposal count, dynamic batch,
outputs equal PyTorch's), the export path equal to the prediction path, Fast R-CNN on given
proposals, Double-Head's loss weights, and an overfit run on synthetic images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from odkit.errors import ConfigError
from odkit.models import zoo
from odkit.models.two_stage.roi_head import box_loss

# A CPU-sized configuration of the zoo member (same code, narrower trunk and box head).
TINY = {"backbone_args": {"width_mult": 0.35}, "roi_args": {"num_samples": 32, "representation": 64},
        "rpn_args": {"pre_nms_top_n": [100, 50], "post_nms_top_n": [60, 30]}}


def _tiny(name: str = "fasterrcnn-mobilenetv3-fpn", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    model = zoo.build(name, num_classes=3, **{**TINY, **kw})
    _calibrate_bn(model)
    with torch.no_grad():  # spread objectness (no ties in the proposal order) and class scores
        model.head.rpn.head.cls_logits.weight.normal_(0, 1.0)
        for m in model.head.roi_heads.modules():
            if isinstance(m, torch.nn.Linear) and m.out_features == model.head.roi_heads.num_logits:
                m.weight.normal_(0, 0.5)
    return model


def _calibrate_bn(model: torch.nn.Module) -> None:
    """BatchNorm running statistics of one batch (at init they are 0 / 1 and the eval-mode trunk's
    maps fade to ~1e-7, which makes every RoI look alike)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None
        m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model.features(torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(9)))
    for m in bns:
        m.momentum = 0.1
    model.eval()


def _targets() -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor([[10.0, 12.0, 70.0, 90.0], [80.0, 20.0, 120.0, 60.0]]), "labels": torch.tensor([0, 2])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]


@pytest.mark.parametrize("name", ["fasterrcnn-mobilenetv3-fpn", "doublehead-r50-fpn"])
def test_loss_dict_and_backward(name: str) -> None:
    kw = {} if name.startswith("fasterrcnn") else {"backbone": "mobilenetv3", "roi_args": {
        "num_samples": 32, "representation": 64, "conv_channels": 64, "num_convs": 1}}
    model = _tiny(name, **kw).train()
    losses = model(torch.rand(2, 3, 128, 128), _targets())
    assert set(losses) == {"loss", "loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    parts = sum(v for k, v in losses.items() if k != "loss")
    assert torch.isclose(losses["loss"], parts) and all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert model.head.rpn.head.cls_logits.weight.grad is not None


def test_export_path_equals_prediction_path() -> None:
    """predict_raw (fixed shapes, batched RoIAlign, fixed-point NMS) + NMS == predict (eager path)."""
    from odkit.models.postprocess import postprocess

    model = _tiny()
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        boxes, scores = model.forward_export(x)
        preds = model.predict(x, conf=0.05, iou=0.5, max_det=100)
    assert boxes.shape[:3] == scores.shape and boxes.shape[1] == 30 and boxes.shape[-1] == 4
    ref = postprocess(boxes, scores, conf=0.05, iou=0.5, max_det=100, pre_topk=0)
    assert sum(len(p["scores"]) for p in preds) > 0
    for p, r in zip(preds, ref):
        assert len(p["scores"]) == len(r["scores"])
        torch.testing.assert_close(p["boxes"], r["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(p["scores"], r["scores"], atol=1e-5, rtol=0)
        assert torch.equal(p["labels"], r["labels"])


@pytest.mark.slow  # ~15 s of CPU (two ONNX exports, onnxruntime and OpenVINO runs)
def test_onnx_and_openvino_equal_pytorch_with_dynamic_batch(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from odkit.export.nms import ExportNMS
    from odkit.export.onnx import export_onnx

    model = _tiny()
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    path = export_onnx(model, tmp_path / "raw.onnx", img_size=128, dynamic=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (x, x[1:]):  # exported at batch 2, run at 2 and 1
        with torch.no_grad():
            boxes, scores = model.forward_export(batch)
        got_boxes, got_scores = sess.run(None, {"images": batch.numpy()})
        np.testing.assert_allclose(got_boxes, boxes.numpy(), atol=1e-2, rtol=0)
        np.testing.assert_allclose(got_scores, scores.numpy(), atol=1e-4, rtol=0)
    nms_path = export_onnx(model, tmp_path / "nms.onnx", img_size=128, dynamic=True, nms=True, conf=0.05,
                           iou=0.5, max_det=20, pre_topk=200)
    dets, num = ort.InferenceSession(str(nms_path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_dets, ref_num = ExportNMS(0.05, 0.5, 20, 200)(*model.forward_export(x))
    assert num.tolist() == ref_num.tolist() and int(ref_num.sum()) > 0
    for b in range(2):  # the same detections (rows of near-equal scores may come in another order)
        n = int(num[b])
        got, want = dets[b, :n], ref_dets[b, :n].numpy()
        diff = np.abs(got[:, None, :] - want[None, :, :]).max(-1)
        assert (diff.min(0) <= 1e-2).all() and (diff.min(1) <= 1e-2).all()
    ov = pytest.importorskip("openvino")
    compiled = ov.Core().compile_model(ov.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = compiled({"images": x.numpy()})
    with torch.no_grad():
        boxes, scores = model.forward_export(x)
    np.testing.assert_allclose(out[compiled.output("boxes")], boxes.numpy(), atol=1e-2, rtol=0)
    np.testing.assert_allclose(out[compiled.output("scores")], scores.numpy(), atol=1e-4, rtol=0)


def test_fast_rcnn_on_given_proposals() -> None:
    """predict(proposals=...) scores exactly the given boxes with the RoI head (no RPN)."""
    model = _tiny()
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    props = [torch.tensor([[10.0, 10.0, 60.0, 70.0], [30.0, 40.0, 110.0, 100.0]]), torch.tensor([[0.0, 0.0, 128.0, 128.0]])]
    with torch.no_grad():
        preds = model.predict(x, proposals=props, conf=0.0, iou=1.0, max_det=0)
        feats = model.features(x)
        rois = torch.cat([torch.tensor([[0.0], [0.0], [1.0]]), torch.cat(props)], 1)
        boxes, scores = model.head.roi_heads.predict_rois(feats, rois, (128, 128))
    assert [len(p["scores"]) for p in preds] == [2 * 3, 1 * 3]  # every (proposal, class) pair
    torch.testing.assert_close(preds[1]["scores"].sort().values, scores[2].sort().values)
    torch.testing.assert_close(preds[0]["boxes"].sort(0).values, boxes[:2].reshape(-1, 4).sort(0).values)
    with torch.no_grad():  # no proposals at all: no detections, no error
        empty = model.predict(x, proposals=[torch.zeros(0, 4), torch.zeros(0, 4)])
    assert [len(p["scores"]) for p in empty] == [0, 0]
    with pytest.raises(ConfigError):
        model.predict(x, proposals=props[:1])


def test_double_head_loss_weights() -> None:
    """loss = w_fc (l_fc CE_fc + (1 - l_fc) reg_fc) + w_conv ((1 - l_conv) CE_conv + l_conv reg_conv)."""
    head = zoo.build("doublehead-r50-fpn", num_classes=2, backbone="mobilenetv3",
                     roi_args={"representation": 16, "conv_channels": 16, "num_convs": 1}).head.roi_heads
    assert (head.w_fc, head.w_conv, head.l_fc, head.l_conv, head.reg_roi_scale_factor) == (2.0, 2.5, 0.7, 0.8, 1.3)
    g = torch.Generator().manual_seed(0)
    out = {"cls": torch.randn(4, 3, generator=g), "cls_conv": torch.randn(4, 3, generator=g),
           "deltas": torch.randn(4, 3, 4, generator=g), "deltas_fc": torch.randn(4, 3, 4, generator=g)}
    labels = torch.tensor([0, 1, 2, 0])
    targets = torch.randn(4, 4, generator=g)
    got = head.loss_terms(out, labels, targets)

    def reg(d: torch.Tensor) -> torch.Tensor:  # smooth L1 (beta 1) of the two foreground rows / 4 sampled
        rows = torch.stack([d[1, 1], d[2, 2]])
        diff = (rows - targets[1:3]).abs()
        return torch.where(diff < 1, 0.5 * diff**2, diff - 0.5).sum() / 4

    want_cls = 2.0 * 0.7 * F.cross_entropy(out["cls"], labels) + 2.5 * 0.2 * F.cross_entropy(out["cls_conv"], labels)
    want_box = 2.5 * 0.8 * reg(out["deltas"]) + 2.0 * 0.3 * reg(out["deltas_fc"])
    torch.testing.assert_close(got["loss_cls"], want_cls)
    torch.testing.assert_close(got["loss_box"], want_box)
    assert float(box_loss(out["deltas"], torch.zeros(4, dtype=torch.long), targets)) == 0.0
    p = head.class_probs(out)  # complementary fusion s_fc + s_conv (1 - s_fc)
    p_fc, p_conv = F.softmax(out["cls"], -1), F.softmax(out["cls_conv"], -1)
    torch.testing.assert_close(p, p_fc + p_conv * (1 - p_fc))


@pytest.mark.slow
def test_overfit_synthetic_images() -> None:
    """A few synthetic images: the loss falls and every object is found at IoU >= 0.5 (right class)."""
    from odkit.data.synth import render_image
    from odkit.ops import box_iou

    size = 160
    images, targets = [], []
    # scenes whose objects are all >= 20 px: this trunk has a single stride-32 feature map (image 1
    # of the sequence has a 17 px object, below what a stride-32 RoI of a 160 px input resolves)
    for i in (0, 2, 3):
        r = render_image(5, i, size=128)
        h, w = r.image.shape[:2]
        canvas = np.zeros((size, size, 3), np.uint8)
        canvas[: min(h, size), : min(w, size)] = r.image[:size, :size]
        boxes = torch.from_numpy(r.boxes).clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, min(w, size))
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, min(h, size))
        images.append(torch.from_numpy(canvas).permute(2, 0, 1).float() / 255)
        targets.append({"boxes": boxes, "labels": torch.from_numpy(r.labels)})
    x = torch.stack(images)
    torch.manual_seed(0)
    model = zoo.build("fasterrcnn-mobilenetv3-fpn", num_classes=3, backbone_args={"width_mult": 0.5},
                      roi_args={"num_samples": 64, "representation": 256},
                      rpn_args={"pre_nms_top_n": [300, 100], "post_nms_top_n": [100, 100]}).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    history = []
    for _ in range(150):
        loss = model(x, targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert np.mean(history[-5:]) < 0.5 * np.mean(history[:5])
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:  # BatchNorm statistics of the final weights (they moved fast): their exact average
        m.momentum = None
        m.reset_running_stats()
    with torch.no_grad():
        model.features(x)
    preds = model.predict(x, conf=0.3)
    for p, t in zip(preds, targets):
        iou = box_iou(t["boxes"], p["boxes"]) * (t["labels"][:, None] == p["labels"][None]).float()
        assert bool((iou.max(1).values >= 0.5).all()), (iou.max(1).values, t["labels"])
