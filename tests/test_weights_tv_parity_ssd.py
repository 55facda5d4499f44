"""odkit's SSD300-VGG16 and SSDLite320-MobileNetV3 reproduce torchvision's detections for the same weights.

The fixtures (``tests/fixtures/tv_parity_ssd/``, written by ``benchmarks/tv_parity_ssd.py
--write-fixtures`` with torchvision 0.29) hold each reference model's state-dict key layout and, for a
300x300 / 320x320 picture, the detections torchvision gave with its default postprocess settings and
deterministic synthetic weights (``tv_parity_ssd.ssd_synthetic_weights``, seed 0). Here the same
weights are rebuilt from the layout, saved as a torchvision-style ``.pth``, imported with ``odkit
weights import --from torchvision`` and run through ``odkit.load(...).predict``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

FIX = Path(__file__).parent / "fixtures" / "tv_parity_ssd"

CASES = [
    pytest.param("ssdlite320-mobilenetv3", "ssdlite320_mobilenet_v3_large", 320, 3_440_060, id="ssdlite320"),
    pytest.param("ssd300-vgg16", "ssd300_vgg16", 300, 35_641_826, id="ssd300", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("name", "tv_name", "size", "params"), CASES)
def test_detections_equal_torchvision(name: str, tv_name: str, size: int, params: int, tmp_path: Path) -> None:
    from tv_parity import match
    from tv_parity_ssd import ssd_synthetic_weights

    import odkit
    from odkit.weights import import_weights

    doc = json.loads((FIX / f"{tv_name}_keys.json").read_text())
    assert doc["num_parameters"] == params  # torchvision's count with 91 classes
    torch.save(ssd_synthetic_weights(doc["state_dict"], seed=0), tmp_path / "tv.pth")
    report = import_weights(tmp_path / "tv.pth", source="torchvision", model=name, out=tmp_path / "w.safetensors")
    assert report.ok and not report.missing and not report.unexpected and not report.mismatched
    assert report.num_classes == 90  # object classes; the background logit is torchvision's 91st slot
    assert report.model.num_labels == 91 and report.model.config["background_slot"] is True
    assert sum(p.numel() for p in report.model.parameters()) == params
    fx = load_file(str(FIX / f"{tv_name}_dets.safetensors"))
    got = odkit.load(tmp_path / "w.safetensors").predict(fx["image"].numpy(), img_size=size)[0]
    share, max_box, max_score, n = match({k: fx[k] for k in ("boxes", "scores", "labels")}, got)
    assert n >= 200
    assert share >= 0.99, (share, max_box, max_score)
    assert max_box <= 0.05 and max_score <= 1e-3
    assert abs(len(got["scores"]) - n) <= max(1, n // 100)
    assert int(got["labels"].min()) >= 1  # class 0 is torchvision's background slot


def test_imported_ssd_keeps_torchvision_input_format_in_its_config(tmp_path: Path) -> None:
    from tv_parity_ssd import ssd_synthetic_weights

    import odkit
    from odkit.weights import import_weights

    doc = json.loads((FIX / "ssdlite320_mobilenet_v3_large_keys.json").read_text())
    torch.save(ssd_synthetic_weights(doc["state_dict"], seed=0), tmp_path / "tv.pth")
    import_weights(tmp_path / "tv.pth", source="torchvision", model="ssdlite320-mobilenetv3",
                   out=tmp_path / "w.safetensors")
    model = odkit.load(tmp_path / "w.safetensors").model
    cfg = model.config
    assert cfg["background_slot"] is True and cfg["pixel_mean"] == [0.5, 0.5, 0.5] and cfg["resize"] == "stretch"
    assert torch.allclose(model.pixel_std.view(-1), torch.full((3,), 0.5))


@pytest.mark.parametrize("classes", [3, 90])
def test_finetuning_imported_ssd_numbers_labels_from_zero(classes: int, tmp_path: Path) -> None:
    """Fine-tuning torchvision SSDLite weights on a data set: the run's model counts the data's object
    classes and numbers them from 0 (the background-slot numbering is the source's, not the data's);
    the class layers are re-initialised for other classes and loaded as they are for 90 (the layout,
    background logit first, is the same)."""
    from tv_parity_ssd import ssd_synthetic_weights

    from odkit.engine import finetune
    from odkit.models import zoo

    doc = json.loads((FIX / "ssdlite320_mobilenet_v3_large_keys.json").read_text())
    torch.save(ssd_synthetic_weights(doc["state_dict"], seed=0), tmp_path / "tv.pth")
    src = finetune.read_source(tmp_path / "tv.pth", "torchvision", "ssdlite320-mobilenetv3")
    assert src.num_classes == 90 and "background_slot" not in src.overrides
    names = [f"c{i}" for i in range(classes)]
    model = zoo.build("ssdlite320-mobilenetv3", num_classes=classes, class_names=names, **src.overrides)
    assert model.num_labels == classes
    report = finetune.init_from_weights(model, src)
    cls_key = "head.cls_logits.0.1.weight"
    assert (cls_key in report.reinitialised) == (classes != 90)
    if classes == 90:
        assert torch.equal(model.state_dict()[cls_key], src.state[cls_key])
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 120.0, 200.0]]), "labels": torch.tensor([0])}] * 2
    loss = model.train()(torch.rand(2, 3, 320, 320), targets)  # batch 2: the 1x1 maps' BatchNorm
    assert torch.isfinite(loss["loss"])
