"""EfficientDet's parts against hand-worked references: anchors (effdet's numpy rule), the BiFPN node
graph (the paper's figure), TensorFlow "same" padding, the EfficientNet widths / depths (timm's
rounding) and the loss (focal gamma 1.5 + Huber, one anchor at a time)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from odkit.models import zoo
from odkit.models.backbones.efficientnet import EfficientNet
from odkit.models.heads.efficientdet_head import EfficientDetAnchors, decode_yx, encode_yx
from odkit.models.necks.bifpn import bifpn_nodes
from odkit.nn.same_pad import make_conv, make_max_pool


def test_anchors_equal_effdet_rule() -> None:
    size = 256
    gen = EfficientDetAnchors((8, 16, 32, 64, 128))
    sizes = [(size // s, size // s) for s in (8, 16, 32, 64, 128)]
    got = torch.cat(gen.grid_anchors(sizes)).numpy()
    ref = []
    for s in (8, 16, 32, 64, 128):  # effdet's Anchors._generate_boxes, yxyx turned into xyxy
        level = []
        for octave in range(3):
            for ax, ay in ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4)):
                base = 4.0 * s * 2 ** (octave / 3)
                xv, yv = np.meshgrid(np.arange(s / 2, size, s), np.arange(s / 2, size, s))
                xv, yv = xv.reshape(-1), yv.reshape(-1)
                level.append(np.stack([xv - base * ax / 2, yv - base * ay / 2, xv + base * ax / 2,
                                       yv + base * ay / 2], 1)[:, None])
        ref.append(np.concatenate(level, 1).reshape(-1, 4))
    np.testing.assert_allclose(got, np.concatenate(ref), atol=1e-4, rtol=0)


def test_bifpn_nodes_are_the_papers() -> None:
    # inputs P3..P7 are ids 0..4; top-down P6' = f(P6, P7), P5' = f(P5, P6'), P4', P3'' (ids 5..8);
    # bottom-up P4'' = f(P4, P4', P3''), P5'', P6'' likewise, P7'' = f(P7, P6'') (ids 9..12)
    assert bifpn_nodes(5) == [(3, (3, 4)), (2, (2, 5)), (1, (1, 6)), (0, (0, 7)),
                              (1, (1, 7, 8)), (2, (2, 6, 9)), (3, (3, 5, 10)), (4, (4, 11))]


@pytest.mark.parametrize("size", [7, 8, 13, 64])
def test_same_padding_is_tensorflows(size: int) -> None:
    x = torch.randn(1, 2, size, size)
    conv = make_conv(2, 3, 3, 2, "same")
    total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)  # TF: the odd pixel goes bottom / right
    ref = F.conv2d(F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2)), conv.weight, stride=2)
    got = conv(x)
    assert got.shape[-1] == math.ceil(size / 2)
    torch.testing.assert_close(got, ref)
    pool = make_max_pool(3, 2, "same")
    ref_pool = F.max_pool2d(F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2),
                                  value=float("-inf")), 3, 2)
    torch.testing.assert_close(pool(x), ref_pool)


@pytest.mark.parametrize(("variant", "channels", "blocks"), [("b0", [40, 112, 320], 16), ("b1", [40, 112, 320], 23),
                                                            ("b2", [48, 120, 352], 23)])
def test_efficientnet_widths_and_depths(variant: str, channels: list[int], blocks: int) -> None:
    bb = EfficientNet(variant)
    assert bb.out_channels == channels and bb.strides == [8, 16, 32]
    assert sum(len(s) for s in bb.blocks) == blocks
    assert bb.blocks[-1][-1].drop_rate == pytest.approx(0.2 * (blocks - 1) / blocks)


def test_box_codes_round_trip() -> None:
    anchors = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 8.0, 16.0]])
    boxes = torch.tensor([[12.0, 18.0, 60.0, 44.0], [1.0, 2.0, 5.0, 9.0]])
    codes = encode_yx(boxes, anchors)
    # (ty, tx, th, tw) of the first pair by hand: centres (31, 36) vs (30, 30), sizes 26 x 48 vs 20 x 40
    assert codes[0].tolist() == pytest.approx([(31 - 30) / 20, (36 - 30) / 40, math.log(26 / 20), math.log(48 / 40)])
    torch.testing.assert_close(decode_yx(codes, anchors), boxes)


def test_loss_equals_loop_reference() -> None:
    torch.manual_seed(0)
    model = zoo.build("efficientdet-lite", num_classes=2, fpn_channels=8, fpn_repeats=1, head_repeats=1)
    head = model.head.eval()  # BatchNorm statistics fixed (P7 is 1 x 1 here)
    feats = [torch.randn(1, 8, 128 // s, 128 // s) for s in (8, 16, 32, 64, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 40.0], [60.0, 60.0, 120.0, 126.0]]),
                "labels": torch.tensor([1, 0])}]
    with torch.no_grad():
        got = head.loss(feats, targets, (128, 128))
        cls, box = (t[0] for t in head.flatten(head(feats)))
    anchors = head.get_priors(head.level_sizes(head(feats)), (128, 128), cls.device).anchors
    from odkit.ops.boxes import box_iou

    iou = box_iou(anchors, targets[0]["boxes"])
    best, gt_of = iou.max(1)
    pos = best >= 0.5
    pos[iou.argmax(0)] = True  # each gt's best anchor (effdet's force_match_for_each_row)
    gt_of[iou.argmax(0)] = torch.arange(2)
    n = int(pos.sum())
    focal, huber = 0.0, 0.0
    for a in range(len(anchors)):
        for c in range(2):
            y = 1.0 if pos[a] and int(targets[0]["labels"][gt_of[a]]) == c else 0.0
            p = 1 / (1 + math.exp(-float(cls[a, c])))
            pt = p if y else 1 - p
            focal += -(0.25 if y else 0.75) * (1 - pt) ** 1.5 * math.log(pt)
        if pos[a]:
            t = encode_yx(targets[0]["boxes"][gt_of[a]], anchors[a])
            for d in (box[a] - t).abs().tolist():
                huber += 0.5 * d * d if d <= 0.1 else 0.1 * (d - 0.05)
    assert float(got["num_fg"]) == n
    assert float(got["loss_cls"]) == pytest.approx(focal / (n + 1), rel=1e-4)
    assert float(got["loss_box"]) == pytest.approx(huber / (4 * (n + 1)), rel=1e-4)
    assert float(got["loss"]) == pytest.approx(focal / (n + 1) + 50 * huber / (4 * (n + 1)), rel=1e-4)
