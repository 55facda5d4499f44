"""YOLOv1: the paper's parameter count, and the loss against a loop transcription of the paper's eq. 3.

The reference reads the fully connected output in darknet's ``[detection]`` layout (classes per cell,
then confidences, then ``x, y, sqrt w, sqrt h`` per predictor), gives each cell to the first gt whose
centre it holds, picks the responsible predictor by IoU of its box with the gt (least RMSE when all
IoUs are 0), and sums the paper's terms with lambda_coord 5 and lambda_noobj 0.5.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from odkit.models import zoo
from odkit.models.backbones.yolov1_net import YOLOv1Net
from odkit.models.families.yolov1 import PAPER_HEAD_CONVS
from odkit.models.heads.yolov1_head import YOLOv1Head
from tests._export import export_and_compare

S, NB, C, STRIDE = 4, 2, 3, 32
SIZE = S * STRIDE


def test_paper_parameter_count() -> None:
    # Figure 3 of the paper: (out, kernel) of the 24 convolutions (with bias), then fc 4096 and fc 7x7x30.
    convs = [(64, 7), (192, 3), (128, 1), (256, 3), (256, 1), (512, 3)] + [(256, 1), (512, 3)] * 4
    convs += [(512, 1), (1024, 3)] + [(512, 1), (1024, 3)] * 2 + [(1024, 3)] * 4
    assert len(convs) == 24
    total, cin = 0, 3
    for out, k in convs:
        total += out * cin * k * k + out
        cin = out
    total += 7 * 7 * 1024 * 4096 + 4096 + 4096 * 7 * 7 * 30 + 7 * 7 * 30
    assert total == 271_703_550
    with torch.device("meta"):  # the modules build_yolov1 puts together, without allocating 272 M weights
        model = nn.ModuleList([YOLOv1Net(), YOLOv1Head(20, 1024, 7, 2, 64, PAPER_HEAD_CONVS, None, 4096, 0.5, False)])
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 24


class Const(nn.Module):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value


def iou(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def rmse(p, gt) -> float:
    a = [(p[0] + p[2]) / 2, (p[1] + p[3]) / 2, p[2] - p[0], p[3] - p[1]]
    t = [(gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2, gt[2] - gt[0], gt[3] - gt[1]]
    return math.sqrt(sum((u - w) ** 2 for u, w in zip(a, t)))


class Layout:
    """darknet's [detection] output vector of one image."""

    def __init__(self, v: list[float]) -> None:
        self.v = v

    def cls(self, cell: int, c: int) -> float:
        return self.v[cell * C + c]

    def conf(self, cell: int, j: int) -> float:
        return self.v[S * S * C + cell * NB + j]

    def crd(self, cell: int, j: int) -> list[float]:
        start = S * S * (C + NB) + (cell * NB + j) * 4
        return self.v[start : start + 4]


def reference_loss(out: torch.Tensor, gts: list[list[tuple]]) -> float:
    total = 0.0
    for b, boxes in enumerate(gts):
        lay = Layout(out[b].tolist())
        cls, conf, crd = lay.cls, lay.conf, lay.crd
        owner: dict[int, int] = {}
        for g, (x1, y1, x2, y2, _) in enumerate(boxes):
            cell = int((y1 + y2) / 2 // STRIDE) * S + int((x1 + x2) / 2 // STRIDE)
            owner.setdefault(cell, g)
        responsible = {}
        for cell, g in owner.items():
            row, col = divmod(cell, S)
            gt = boxes[g][:4]
            preds = []
            for j in range(NB):
                x, y, sw, sh = crd(cell, j)
                cx, cy, w, h = (col + x) * STRIDE, (row + y) * STRIDE, sw * sw * SIZE, sh * sh * SIZE
                preds.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
            ious = [iou(p, gt) for p in preds]
            if max(ious) > 0:
                j = max(range(NB), key=lambda k: (ious[k], -k))
            else:
                errs = [rmse(p, gt) for p in preds]
                j = min(range(NB), key=lambda k: (errs[k], k))
            responsible[cell] = j
            x, y, sw, sh = crd(cell, j)
            tx, ty = (gt[0] + gt[2]) / 2 / STRIDE - col, (gt[1] + gt[3]) / 2 / STRIDE - row
            tw, th = math.sqrt((gt[2] - gt[0]) / SIZE), math.sqrt((gt[3] - gt[1]) / SIZE)
            total += 5.0 * ((x - tx) ** 2 + (y - ty) ** 2) + 5.0 * ((sw - tw) ** 2 + (sh - th) ** 2)
            total += (conf(cell, j) - ious[j]) ** 2
            total += sum((cls(cell, c) - (c == boxes[g][4])) ** 2 for c in range(C))
        for cell in range(S * S):
            for j in range(NB):
                if responsible.get(cell) != j:
                    total += 0.5 * conf(cell, j) ** 2
    return total / len(gts)


CASES = {
    "one object": [[(10.0, 20.0, 60.0, 50.0, 1)], []],
    "two objects in one cell": [[(40.0, 40.0, 80.0, 90.0, 2), (45.0, 50.0, 70.0, 60.0, 0), (100.0, 5.0, 120.0, 30.0, 1)],
                                [(0.0, 0.0, 128.0, 128.0, 0)]],
    "object on a cell border": [[(44.0, 10.0, 84.0, 86.0, 0)], [(16.0, 48.0, 48.0, 80.0, 2)]],  # centres 64 / 32
    "no objects": [[], []],
    "every predicted box misses": [[(112.0, 112.0, 127.0, 127.0, 1)], []],  # least RMSE: predictor 1
}


@pytest.mark.parametrize("case", list(CASES))
def test_loss_matches_paper(case: str) -> None:
    gts = CASES[case]
    head = YOLOv1Head(C, 4, S, NB, STRIDE, (), None, 8, 0.0, False).double().train()
    g = torch.Generator().manual_seed(5)
    n = S * S * (C + NB * 5)
    out = torch.rand(2, n, generator=g, dtype=torch.float64)
    coords = out[:, S * S * (C + NB) :].view(2, S * S * NB, 4)
    coords[..., 2:] = coords[..., 2:] * 0.5 + 0.1  # sqrt w, sqrt h
    if case == "every predicted box misses":  # tiny boxes in the far corner of the gt's cell
        cell = 3 * S + 3
        coords[0, cell * NB : cell * NB + NB] = torch.tensor([[0.01, 0.01, 0.02, 0.02], [0.02, 0.01, 0.03, 0.02]],
                                                             dtype=torch.float64)
    out.requires_grad_(True)
    head.fc2 = Const(out)
    targets = [{"boxes": torch.tensor([t[:4] for t in b], dtype=torch.float64).reshape(-1, 4),
                "labels": torch.tensor([t[4] for t in b], dtype=torch.long)} for b in gts]
    loss = head.loss([torch.zeros(2, 4, S, S, dtype=torch.float64)], targets, (SIZE, SIZE))
    want = reference_loss(out.detach(), gts)
    assert float(loss["loss"].detach()) == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert int(loss["num_fg"]) == sum(len({(int((b[1] + b[3]) / 2 // STRIDE), int((b[0] + b[2]) / 2 // STRIDE))
                                          for b in img}) for img in gts)


def test_decoding_and_other_sizes_refused() -> None:
    model = zoo.build("yolov1-lite", num_classes=3).eval()
    with torch.no_grad():
        boxes, scores = model.forward_export(torch.rand(1, 3, 448, 448))
    assert boxes.shape == (1, 14 * 14 * 2, 4) and scores.shape == (1, 392, 3)
    assert float(scores.min()) >= 0 and float(scores.max()) <= 1
    from odkit.errors import ConfigError

    with pytest.raises(ConfigError, match="14x14"):
        model.forward_export(torch.rand(1, 3, 416, 416))


def _spread(model: torch.nn.Module) -> torch.nn.Module:
    torch.nn.init.normal_(model.head.fc2.weight, std=0.02)  # boxes and scores that vary across the image
    torch.nn.init.constant_(model.head.fc2.bias, 0.3)
    return model


def test_yolov1_lite_exports_to_onnx_and_openvino(tmp_path) -> None:
    torch.manual_seed(0)
    export_and_compare(_spread(zoo.build("yolov1-lite", num_classes=3)), tmp_path, 448)


@pytest.mark.slow
def test_yolov1_exports_to_onnx_and_openvino(tmp_path) -> None:
    torch.manual_seed(0)
    export_and_compare(_spread(zoo.build("yolov1", num_classes=20)), tmp_path, 448)
