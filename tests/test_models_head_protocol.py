"""Every zoo model's head implements the DetectorHead contract, and a head that does not is refused
when the Detector is built."""

from __future__ import annotations

import pytest
import torch
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


@pytest.mark.parametrize("name", ["ssdlite320-mobilenetv3", "fasterrcnn-mobilenetv3-fpn"])
def test_background_slot_is_a_label_numbering(name):
    """num_classes counts object classes with or without the background slot; the slot numbers the
    labels from 1 (label 0, the background, is refused in targets and never predicted)."""
    from odkit.errors import DataError

    plain, slot = zoo.build(name, num_classes=3), zoo.build(name, num_classes=3, background_slot=True)
    assert plain.num_classes == slot.num_classes == 3 and (plain.num_labels, slot.num_labels) == (3, 4)
    slot.load_state_dict(plain.state_dict())  # one network, two numberings
    images = torch.rand(2, 3, 160, 160)
    box = torch.tensor([[20.0, 30.0, 120.0, 140.0]])
    torch.manual_seed(0)
    a = plain.train()(images, [{"boxes": box, "labels": torch.tensor([c])} for c in (0, 2)])
    torch.manual_seed(0)
    b = slot.train()(images, [{"boxes": box, "labels": torch.tensor([c + 1])} for c in (0, 2)])
    assert torch.allclose(a["loss"], b["loss"])
    plain.eval(), slot.eval()
    _, sp = plain(images)
    _, ss = slot(images)
    assert ss.shape[-1] == 4 and torch.equal(ss[..., 0], torch.zeros_like(ss[..., 0]))
    assert torch.allclose(ss[..., 1:], sp)
    with pytest.raises(DataError, match="background slot"):
        slot.train()(images, [{"boxes": box, "labels": torch.tensor([0])}] * 2)
