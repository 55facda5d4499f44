"""odkit's EfficientDet reproduces effdet's detections for the same weights, without effdet installed.

The fixture (``benchmarks/effdet_parity.py --write-fixture``, effdet 0.4.1 / timm 1.0.31) holds a tiny
``tf_efficientdet_d0`` configuration (B0 backbone, 16-channel BiFPN of one cell, one head repeat,
4 classes, 256 px): its key layout, the BatchNorm statistics of its calibration pass, two pictures
and effdet's ``DetBenchPredict`` detections of them as one batch. The other weights are rebuilt
deterministically here (``_tv_weights``), mapped with the ``--from effdet`` table into the same
configuration of odkit's ``efficientdet-d0`` and run through ``Detector.predict``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))

FIX = Path(__file__).parent / "fixtures" / "effdet_parity" / "tiny_d0_256.safetensors"


def _tiny_import() -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict[str, str]]:
    from effdet_parity import TINY_CLASSES, synthetic_weights

    from odkit.models import zoo
    from odkit.weights import tables
    from odkit.weights.importer import map_state_dict

    fx = load_file(str(FIX))
    with safe_open(str(FIX), "pt") as f:
        meta = f.metadata()
    sd = synthetic_weights(json.loads(meta["shapes"]), int(meta["seed"]))
    sd.update({k[3:]: v for k, v in fx.items() if k.startswith("bn.")})
    model = zoo.build("efficientdet-d0", num_classes=TINY_CLASSES, fpn_channels=16, fpn_repeats=1, head_repeats=1)
    tensors, parts = map_state_dict(sd, model.state_dict(), tables.detector_table("effdet", "efficientdet-d0"))
    assert not parts["missing"] and not parts["unexpected"] and not parts["mismatched"], parts
    state = model.state_dict()
    state.update(tensors)
    model.load_state_dict(state)
    return model.eval(), fx, meta


def test_tiny_efficientdet_equals_effdet() -> None:
    from tv_parity import match

    model, fx, meta = _tiny_import()
    assert sum(p.numel() for p in model.parameters()) == int(meta["params"])
    images = torch.stack([fx["image0"], fx["image1"]]).permute(0, 3, 1, 2).float() / 255.0
    got = model.predict(images)
    for i, det in enumerate(got):
        ref = {k: fx[f"{i}.{k}"] for k in ("boxes", "scores", "labels")}
        share, max_box, max_score, n = match(ref, det)
        assert n == 100 and len(det["scores"]) == n
        assert share >= 0.99, (i, share, max_box, max_score)
        assert max_box <= 0.05 and max_score <= 1e-3


def test_timm_backbone_only_import(tmp_path: Path) -> None:
    """A timm ImageNet state dict (backbone keys, classifier and head conv) loads into the backbone only."""
    from odkit.models import zoo
    from odkit.weights import import_weights

    bb = zoo.build("efficientdet-lite", num_classes=3).backbone
    sd = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in bb.state_dict().items()}
    sd["conv_head.weight"] = torch.zeros(1280, 320, 1, 1)
    sd["classifier.weight"] = torch.zeros(1000, 1280)
    torch.save(sd, tmp_path / "timm_b0.pth")
    report = import_weights(tmp_path / "timm_b0.pth", "effdet", "efficientdet-d0", num_classes=3)
    assert report.ok and report.scope == "backbone" and not report.unexpected
    assert "conv_head.weight" in report.dropped and "classifier.weight" in report.dropped
    got = report.model.backbone.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items() if k in got)
