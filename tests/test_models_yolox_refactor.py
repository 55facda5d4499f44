"""YOLOX on the DenseHead base gives the same parameters and decoded outputs as the original head
(fixture written from the code before the head interface changed, same seed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from odkit.models import zoo

FIX = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["yolox-nano", "yolox-s"])
def test_yolox_same_parameters_and_outputs_as_before(name: str) -> None:
    params = json.loads((FIX / "yolox_reference_params.json").read_text())[name]
    outs = load_file(str(FIX / "yolox_reference_outputs.safetensors"))
    torch.manual_seed(0)
    model = zoo.build(name, num_classes=3).eval()
    state = model.state_dict()
    assert sorted(state) == sorted(params)
    for k, (shape, total, weighted) in params.items():
        v = state[k].double().reshape(-1)
        w = torch.linspace(0, 1, v.numel(), dtype=torch.float64)
        assert list(state[k].shape) == shape, k
        assert float(v.sum()) == pytest.approx(total, rel=1e-9, abs=1e-9), k
        assert float((v * w).sum()) == pytest.approx(weighted, rel=1e-9, abs=1e-9), k
    with torch.no_grad():
        boxes, scores = model.forward_export(outs[f"{name}.images"])
    torch.testing.assert_close(boxes, outs[f"{name}.boxes"], rtol=0, atol=1e-5)
    torch.testing.assert_close(scores, outs[f"{name}.scores"], rtol=0, atol=1e-6)
