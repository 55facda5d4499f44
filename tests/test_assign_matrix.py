"""Every dense head x every assigner: the combination either trains (30 steps on a fixed synthetic
batch, the loss falling) or is refused when the model is built, with a ConfigError that says why.
No third outcome (an error at the first loss, a NaN, a loss that does not move)."""

from __future__ import annotations

import pytest
import torch

from odkit.assign.registry import NAMES, make_assigner
from odkit.errors import ConfigError
from odkit.models import build
from odkit.models.detector import Detector
from odkit.models.two_stage.rpn import RPN
from odkit.ops.priors import AnchorGenerator

HEADS = ("retinanet-lite", "fcos-lite", "atss-lite", "gfl-lite", "yolox-nano", "yolov3-tiny", "rpn")
SIZE = 64
# Anchor-free heads cannot use assigners that match anchor boxes; everything else must train.
REFUSED = {("fcos-lite", "maxiou"), ("fcos-lite", "yolo"), ("yolox-nano", "maxiou"), ("yolox-nano", "yolo")}


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one intra-op thread


def _model(head: str, assigner: str) -> Detector:
    torch.manual_seed(0)
    if head != "rpn":
        return build(head, num_classes=2, assigner=assigner)
    base = build("retinanet-lite", num_classes=2)  # its trunk and neck (strides 8-64, 96 channels)
    strides = base.neck.strides
    anchors = AnchorGenerator([[4.0 * s] for s in strides], (0.5, 1.0, 2.0), strides)
    rpn = RPN(base.neck.out_channels[0], anchors, num_samples=64,
              assigner=make_assigner(assigner, len(strides)))
    return Detector(base.backbone, base.neck, rpn)


def _batch() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, SIZE, SIZE, generator=g) * 0.2
    boxes = [torch.tensor([[5.0, 6.0, 30.0, 35.0], [35.0, 10.0, 60.0, 25.0]]),
             torch.tensor([[15.0, 20.0, 50.0, 59.0]])]
    labels = [torch.tensor([0, 1]), torch.tensor([1])]
    for i, bx in enumerate(boxes):  # bright boxes on a dark background
        for x1, y1, x2, y2 in bx.int().tolist():
            x[i, :, y1:y2, x1:x2] = 0.8 + 0.1 * labels[i][0]
    return x, [{"boxes": b, "labels": lab} for b, lab in zip(boxes, labels)]


@pytest.mark.parametrize("assigner", NAMES)
@pytest.mark.parametrize("head", HEADS)
def test_head_assigner_trains_or_is_refused_at_build(head: str, assigner: str) -> None:
    if (head, assigner) in REFUSED:
        with pytest.raises(ConfigError, match="anchor"):
            _model(head, assigner)
        return
    model = _model(head, assigner).train()
    x, targets = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = model(x, targets)["loss"]
        assert torch.isfinite(loss), f"{head} + {assigner}: loss {float(loss)}"
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    # Compared with the highest loss of the first 10 steps: GFL weights its box terms by the predicted
    # class score (0.01 at initialisation), so its loss starts near 0 and rises before it falls.
    peak, last = max(losses[:10]), sum(losses[-3:]) / 3
    assert last < 0.9 * peak, f"{head} + {assigner}: loss peak {peak:.4f} (first 10 steps) -> {last:.4f}"


def test_refusal_says_why() -> None:
    with pytest.raises(ConfigError, match="anchor-free.*fcos, atss or simota"):
        build("yolox-nano", num_classes=2, assigner="maxiou")
    with pytest.raises(ConfigError, match="unknown assigner"):
        build("fcos-lite", num_classes=2, assigner="hungarian")
