"""ONNX export of the dense detectors (through the Detector, with and without in-graph NMS) gives
PyTorch's outputs in onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from odkit.export.nms import ExportNMS
from odkit.export.onnx import export_onnx
from odkit.models import zoo

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", ["retinanet-lite", "gfl-lite", pytest.param("fcos-lite", marks=pytest.mark.slow),
                                  pytest.param("atss-lite", marks=pytest.mark.slow)])
def test_onnx_equals_pytorch_with_and_without_nms(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = zoo.build(name, num_classes=3).eval()
    with torch.no_grad():  # spread the class scores so that NMS has work to do
        model.head.cls_logits.bias.normal_(-1.0, 1.0)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        boxes, scores = model.forward_export(x)
    raw_path = export_onnx(model, tmp_path / "raw.onnx", img_size=128, dynamic=True)
    got_boxes, got_scores = _session(raw_path).run(None, {"images": x.numpy()})
    np.testing.assert_allclose(got_boxes, boxes.numpy(), atol=1e-2, rtol=0)
    np.testing.assert_allclose(got_scores, scores.numpy(), atol=1e-4, rtol=0)

    conf, iou, max_det, topk = 0.05, 0.5, 50, 500
    nms_path = export_onnx(model, tmp_path / "nms.onnx", img_size=128, dynamic=True, nms=True, conf=conf,
                           iou=iou, max_det=max_det, pre_topk=topk)
    dets, num = _session(nms_path).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref_dets, ref_num = ExportNMS(conf, iou, max_det, topk)(boxes, scores)
    assert num.tolist() == ref_num.tolist() and int(ref_num.sum()) > 0
    for b in range(2):
        n = int(num[b])
        np.testing.assert_allclose(dets[b, :n, :4], ref_dets[b, :n, :4].numpy(), atol=1e-2, rtol=0)
        np.testing.assert_allclose(dets[b, :n, 4], ref_dets[b, :n, 4].numpy(), atol=1e-4, rtol=0)
        assert dets[b, :n, 5].tolist() == ref_dets[b, :n, 5].tolist()
