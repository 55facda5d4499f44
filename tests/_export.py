"""Export parity check shared by the model tests: ONNX (onnxruntime) and OpenVINO IR against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def export_and_compare(model, tmp_path, img: int, check: bool = True) -> dict[str, float]:
    """Export ``model`` at ``img`` px (dynamic batch), run a batch of 2 through onnxruntime and OpenVINO (f32)
    and (``check``) assert raw boxes within 0.01 px and scores within 1e-4 of ``forward_export``; returns
    the largest differences."""
    if check:
        pytest.importorskip("onnxruntime")
        pytest.importorskip("openvino")
    import onnxruntime as ort
    import openvino as ov

    from odkit.export.onnx import export_onnx
    from odkit.export.openvino import onnx_to_openvino

    x = torch.rand(2, 3, img, img, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        boxes, scores = model.eval().forward_export(x)
    path = export_onnx(model, tmp_path / "m.onnx", img_size=img, dynamic=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_boxes, got_scores = sess.run(None, {"images": x.numpy()})
    xml = onnx_to_openvino(path, tmp_path / "m.xml")
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    res = compiled({"images": x.numpy()})
    ov_boxes, ov_scores = (np.asarray(res[o]) for o in compiled.outputs)
    if check:
        for got_b, got_s in ((got_boxes, got_scores), (ov_boxes, ov_scores)):
            np.testing.assert_allclose(got_b, boxes.numpy(), atol=1e-2, rtol=0)
            np.testing.assert_allclose(got_s, scores.numpy(), atol=1e-4, rtol=0)
    b, s = boxes.numpy(), scores.numpy()
    return {"onnx_box": float(np.abs(got_boxes - b).max()), "onnx_score": float(np.abs(got_scores - s).max()),
            "openvino_box": float(np.abs(ov_boxes - b).max()), "openvino_score": float(np.abs(ov_scores - s).max())}


