"""ONNX and OpenVINO exports of CenterNet (peak extraction in the graph) and EfficientDet (TF "same"
padding in the graph) reproduce PyTorch's detections (the tolerances of ``test_export_matrix``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("openvino")

sys.path.insert(0, str(Path(__file__).parent))
from test_export_matrix import _images, _reproduced, _size, _spread  # noqa: E402

from odkit.engine.api import load  # noqa: E402
from odkit.export import export, load_predictor  # noqa: E402
from odkit.models import zoo  # noqa: E402
from odkit.weights.format import save_weights  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one intra-op thread


@pytest.mark.slow  # about 10 s per model; the default suite has the ONNX peak test of test_models_centernet
@pytest.mark.parametrize("name", ["centernet-lite", "efficientdet-lite"])
def test_onnx_and_openvino_equal_pytorch(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = zoo.build(name, num_classes=3, class_names=["a", "b", "c"]).eval()
    _spread(model)
    if name.startswith("efficientdet"):  # its random BiFPN features are large: keep the spread scores below 1
        with torch.no_grad():
            model.head.class_net.predict.conv_pw.weight.mul_(0.02)
    size = _size(model)
    meta = {"model": name, "num_classes": 3, "class_names": ["a", "b", "c"], "img_size": size,
            "model_config": model.config, "epoch": 1}
    w = save_weights(tmp_path / "best.safetensors", model.state_dict(), meta)
    images = _images(size)
    predictor = load(w)
    probe = predictor.predict(images, conf=0.0, max_det=1000)
    conf = min(float(p["scores"][min(40, len(p["scores"]) - 1)]) for p in probe) - 1e-6
    ref = predictor.predict(images, conf=conf, max_det=100)
    assert sum(len(r["scores"]) for r in ref) >= 20
    for fmt, suffix in (("onnx", ".onnx"), ("openvino", ".xml")):
        out = export(w, fmt, dynamic=True, out=tmp_path / f"model{suffix}")
        got = load_predictor(out).predict(images, conf=max(conf - 1e-3, 0.0), max_det=200, batch=2)
        for i, (r, g) in enumerate(zip(ref, got)):
            rate = _reproduced(r, g, 0.05, 1e-3)
            assert rate >= 0.95, f"{name} {fmt} image {i}: {rate:.1%} of {len(r['scores'])} reproduced"
