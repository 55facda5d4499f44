"""Every zoo model's head implements the DetectorHead contract, and a head that does not is refused
when the Detector is built."""

from __future__ import annotations

import pytest
from torch import nn

from odkit.models import zoo
from odkit.models.detector import Detector
from odkit.models.heads.protocol import DetectorHead

LIGHT = ["yolox-nano", "retinanet-lite", "fcos-lite", "atss-lite", "gfl-lite", "yolov3-tiny",
         "ssdlite320-mobilenetv3", "fasterrcnn-mobilenetv3-fpn"]


@pytest.mark.parametrize("name", LIGHT)
def test_zoo_heads_implement_the_protocol(name: str) -> None:
    head = zoo.build(name, num_classes=3).head
    assert isinstance(head, DetectorHead)
    assert head.num_classes == 3 and head.background_slot is False
    assert head.half_export is None  # every zoo head exports in float16


def test_a_head_without_the_contract_is_refused() -> None:
    class Bare(nn.Module):
        num_classes = 3

        def forward(self, feats):
            return feats

    with pytest.raises(TypeError, match="missing background_slot, half_export, loss, predict_raw"):
        Detector(nn.Identity(), nn.Identity(), Bare())
