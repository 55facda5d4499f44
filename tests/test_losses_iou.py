"""IoU-family losses and the YOLOX loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from odkit.assign import AssignResult
from odkit.errors import ConfigError
from odkit.losses import iou_loss, yolox_loss
from odkit.losses.yolox import yolox_l1_targets
from odkit.ops import YOLOCoder


def test_iou_loss_modes_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    iou = 1 / 7  # intersection 1, union 7
    giou = iou - (9 - 7) / 9
    assert float(iou_loss(a, b, "iou")) == pytest.approx(1 - iou**2, abs=1e-6)
    assert float(iou_loss(a, b, "linear_iou")) == pytest.approx(1 - iou, abs=1e-6)
    assert float(iou_loss(a, b, "giou")) == pytest.approx(1 - giou, abs=1e-6)
    assert float(iou_loss(a, a, "iou")) == pytest.approx(0.0, abs=1e-6)
    two = torch.cat((a, a))
    assert float(iou_loss(two, torch.cat((b, a)), "iou", reduction="sum")) == pytest.approx(
        1 - iou**2, abs=1e-6
    )
    with pytest.raises(ConfigError):
        iou_loss(a, b, "nope")


def test_iou_loss_has_gradient():
    p = torch.tensor([[0.0, 0.0, 2.0, 2.0]], requires_grad=True)
    iou_loss(p, torch.tensor([[1.0, 1.0, 3.0, 3.0]]), "giou").sum().backward()
    assert p.grad is not None and p.grad.abs().sum() > 0


def test_l1_targets_invert_decode():
    gt = torch.tensor([[10.0, 20.0, 50.0, 44.0], [3.0, 4.0, 9.0, 30.0]])
    grid = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
    strides = torch.tensor([8.0, 16.0])
    t = yolox_l1_targets(gt, grid, strides)
    assert torch.allclose(YOLOCoder("yolox").decode(grid, t, strides), gt, atol=1e-4)


def test_yolox_loss_matches_hand_computation():
    # one image, 3 priors, 2 classes: prior 0 foreground (gt 0, IoU quality 0.6), prior 1 background,
    # prior 2 ignored (takes no part in any loss).
    def bce(x: float, t: float) -> float:
        q = 1 / (1 + math.exp(-x))
        return -(t * math.log(q) + (1 - t) * math.log(1 - q))

    gt = torch.tensor([[[0.0, 0.0, 2.0, 2.0]]])
    pred_boxes = torch.tensor(
        [[[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0]]], requires_grad=True
    )
    raw_reg = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]]])
    obj = torch.tensor([[0.5, -1.0, 3.0]], requires_grad=True)
    cls = torch.tensor([[[0.2, -0.3], [1.0, 1.0], [2.0, 2.0]]], requires_grad=True)
    assign = AssignResult(
        gt_inds=torch.tensor([[0, -1, -2]]),
        labels=torch.tensor([[1, -1, -1]]),
        quality=torch.tensor([[0.6, 0.0, 0.0]]),
        num_gts=torch.tensor([1]),
    )
    grid = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    strides = torch.tensor([2.0, 2.0, 2.0])
    out = yolox_loss(raw_reg, pred_boxes, obj, cls, assign, gt, grid, strides, use_l1=True)
    iou = 1 / 7
    assert float(out["loss_iou"].detach()) == pytest.approx(5.0 * (1 - iou**2), abs=1e-5)
    assert float(out["loss_obj"].detach()) == pytest.approx(bce(0.5, 1) + bce(-1.0, 0), abs=1e-5)
    assert float(out["loss_cls"].detach()) == pytest.approx(bce(0.2, 0) + bce(-0.3, 0.6), abs=1e-5)
    # l1 target of gt (cx 1, cy 1, w 2, h 2) at grid (0, 0), stride 2: (0.5, 0.5, log 1, log 1)
    assert float(out["loss_l1"].detach()) == pytest.approx(0.4 + 0.3 + 0.3 + 0.4, abs=1e-5)
    assert float(out["num_fg"]) == 1.0
    total = out["loss_iou"] + out["loss_obj"] + out["loss_cls"] + out["loss_l1"]
    assert float(out["loss"].detach()) == pytest.approx(float(total.detach()), abs=1e-6)
    out["loss"].backward()
    assert obj.grad[0, 2] == 0 and cls.grad[0, 1:].abs().sum() == 0 and pred_boxes.grad[0, 0].abs().sum() > 0
    off = yolox_loss(raw_reg, pred_boxes, obj, cls, assign, gt, grid, strides, use_l1=False)
    assert float(off["loss_l1"]) == 0.0


def test_yolox_loss_without_foreground_is_finite():
    a = 4
    assign = AssignResult(
        torch.full((2, a), -1), torch.full((2, a), -1), torch.zeros(2, a), torch.zeros(2, dtype=torch.long)
    )
    obj = torch.zeros(2, a, requires_grad=True)
    out = yolox_loss(
        torch.zeros(2, a, 4),
        torch.zeros(2, a, 4),
        obj,
        torch.zeros(2, a, 3),
        assign,
        torch.zeros(2, 0, 4),
        torch.zeros(a, 2),
        torch.ones(a),
        use_l1=True,
    )
    # normalised by max(num_fg, 1) = 1: obj loss = 8 * BCE(0, 0) = 8 ln 2
    assert float(out["loss"].detach()) == pytest.approx(8 * math.log(2), abs=1e-5)
    assert float(out["num_fg"]) == 0
    out["loss"].backward()
    assert torch.isfinite(obj.grad).all()
