"""odkit's Faster R-CNN (ResNet-50-FPN, MobileNetV3-Large-FPN) reproduces torchvision's detections
for the same weights.

The fixture holds a 320x320 picture and the detections torchvision 0.29 gave for it with
``fasterrcnn_resnet50_fpn`` / ``fasterrcnn_mobilenet_v3_large_fpn`` (91 classes, ``min_size = max_size
= 320``, default postprocess settings) and deterministic synthetic weights (seed 0, class layer scaled
as ``benchmarks/tv_parity_rcnn.py`` does), written by ``benchmarks/tv_parity_rcnn.py --size 320
--write-fixture``. Here the same weights are rebuilt from the committed key layout, saved as a
torchvision-style ``.pth``, imported with ``odkit weights import --from torchvision`` and run through
``odkit.load(...).predict``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIX = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))


@pytest.mark.parametrize(("name", "tv_name"), [
    pytest.param("fasterrcnn-r50-fpn", "fasterrcnn_resnet50_fpn", marks=pytest.mark.slow),  # ~15 s of CPU
    ("fasterrcnn-mobilenetv3-fpn", "fasterrcnn_mobilenet_v3_large_fpn"),
])
def test_detections_equal_torchvision(name: str, tv_name: str, tmp_path: Path) -> None:
    from tv_parity import match
    from tv_parity_rcnn import reference_state_dict

    import odkit
    from odkit.weights import import_weights

    fx = load_file(str(FIX / "tv_parity_rcnn" / "rcnn_320.safetensors"))
    torch.save(reference_state_dict(tv_name, seed=0), tmp_path / "tv.pth")
    report = import_weights(tmp_path / "tv.pth", source="torchvision", model=name, out=tmp_path / "w.safetensors")
    assert report.ok and not report.missing and not report.unexpected and not report.mismatched
    assert report.num_classes == 90 and report.model.num_labels == 91  # labels 1..90 as torchvision's
    model = odkit.load(tmp_path / "w.safetensors")
    assert model.model.config["background_slot"] and not model.model.config["aligned"]
    got = model.predict(fx["image"].numpy(), img_size=320)[0]
    ref = {k: fx[f"{name}.{k}"] for k in ("boxes", "scores", "labels")}
    share, max_box, max_score, n = match(ref, got)
    assert n >= 50
    assert share >= 0.99, (share, max_box, max_score)
    assert max_box <= 0.05 and max_score <= 1e-3
    assert abs(len(got["scores"]) - n) <= max(1, n // 100)


def test_torchvision_parameter_counts() -> None:
    """The torchvision-layout builds have torchvision's parameter counts (BatchNorm trainable)."""
    import json

    from odkit.models import zoo

    for name, tv_name in (("fasterrcnn-r50-fpn", "fasterrcnn_resnet50_fpn"),
                          ("fasterrcnn-mobilenetv3-fpn", "fasterrcnn_mobilenet_v3_large_fpn")):
        expected = json.loads((FIX / "torchvision_keys" / f"{tv_name}.json").read_text())["num_parameters"]
        # 90 object classes plus the background column: the same network whatever the label numbering
        for extra in ({"background_slot": True}, {}):
            model = zoo.build(name, num_classes=90, **extra)
            assert sum(p.numel() for p in model.parameters()) == expected
