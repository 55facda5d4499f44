"""odkit's RetinaNet and FCOS reproduce torchvision's detections for the same weights.

The fixture holds a 320x320 picture and the detections torchvision 0.29 gave for it with
``retinanet_resnet50_fpn`` / ``fcos_resnet50_fpn`` (91 classes, ``min_size = max_size = 320``, default
postprocess settings) and deterministic synthetic weights (``_tv_weights.synthetic_state_dict``, seed 0),
written by ``benchmarks/tv_parity.py --size 320 --write-fixture``. Here the same weights are rebuilt
from the committed key layout, saved as a torchvision-style ``.pth``, imported with ``odkit weights
import --from torchvision`` and run through ``odkit.load(...).predict``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from _tv_weights import layout, synthetic_state_dict  # noqa: E402

FIX = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))


@pytest.mark.parametrize(("name", "tv_name"), [("retinanet-r50-fpn", "retinanet_resnet50_fpn"),
                                                ("fcos-r50-fpn", "fcos_resnet50_fpn")])
def test_detections_equal_torchvision(name: str, tv_name: str, tmp_path: Path) -> None:
    from tv_parity import match

    import odkit
    from odkit.weights import import_weights

    fx = load_file(str(FIX / "tv_parity" / "r50_320.safetensors"))
    sd = synthetic_state_dict(layout(FIX / "torchvision_keys" / f"{tv_name}.json"), seed=0)
    torch.save(sd, tmp_path / "tv.pth")
    report = import_weights(tmp_path / "tv.pth", source="torchvision", model=name, out=tmp_path / "w.safetensors")
    assert report.ok and not report.missing and not report.unexpected and not report.mismatched
    assert report.num_classes == 91
    got = odkit.load(tmp_path / "w.safetensors").predict(fx["image"].numpy(), img_size=320)[0]
    ref = {k: fx[f"{name}.{k}"] for k in ("boxes", "scores", "labels")}
    share, max_box, max_score, n = match(ref, got)
    assert n > 50
    assert share >= 0.99, (share, max_box, max_score)
    assert max_box <= 0.05 and max_score <= 1e-3
    assert abs(len(got["scores"]) - n) <= max(1, n // 100)
