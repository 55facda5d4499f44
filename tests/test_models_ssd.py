"""SSD300-VGG16 / SSDLite320-MobileNetV3: the resize mode (plain resize, separate x/y scales), the
head, max-IoU matching with hard negative mining, the SSD augmentation and the zoo entries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from odkit.data.transforms import fit_to_input, letterbox, stretch, unletterbox_boxes
from odkit.errors import ConfigError
from odkit.models.postprocess import resize_mode, undo_letterbox


# ------------------------------------------------------------------------------------- resize mode
@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(8, 120), w=st.integers(8, 120), oh=st.integers(8, 96), ow=st.integers(8, 96),
    seed=st.integers(0, 10_000),
)
def test_stretch_maps_boxes_and_meta_undoes_it(h: int, w: int, oh: int, ow: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    xy = np.sort(rng.uniform(0, 1, (5, 2, 2)), axis=1)
    boxes = np.stack([xy[:, 0, 0] * w, xy[:, 0, 1] * h, xy[:, 1, 0] * w, xy[:, 1, 1] * h], 1).astype(np.float32)
    out, b, meta = stretch(img, boxes, None, (oh, ow))
    assert out.shape == (oh, ow, 3) and meta["input_size"] == (oh, ow)
    # brute force: every corner scaled by its own axis ratio
    want = boxes.astype(np.float64) * np.array([ow / w, oh / h, ow / w, oh / h])
    np.testing.assert_allclose(b, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(unletterbox_boxes(b, meta), boxes, rtol=1e-5, atol=1e-3)
    back = undo_letterbox(torch.from_numpy(b), meta)
    np.testing.assert_allclose(back.numpy(), boxes, rtol=1e-5, atol=1e-3)


def test_stretch_composes_with_a_long_side_resize_meta() -> None:
    # the dataset resized a 200x600 image (h x w) to 100x300 (ratio 0.5), stretch then takes it to 300x300
    meta = {"orig_size": (200, 600), "ratio": 0.5, "pad": (0.0, 0.0)}
    img = np.zeros((100, 300, 3), np.uint8)
    box = np.array([[30.0, 20.0, 150.0, 80.0]], np.float32)  # in the 100x300 image
    _, b, m = fit_to_input(img, box, meta, 300, "stretch")
    assert m["ratio"] == pytest.approx((0.5, 1.5)) and m["orig_size"] == (200, 600)
    np.testing.assert_allclose(b, [[30.0, 60.0, 150.0, 240.0]], atol=1e-4)
    np.testing.assert_allclose(undo_letterbox(torch.from_numpy(b), m).numpy(), [[60.0, 40.0, 300.0, 160.0]], atol=1e-3)


def test_fit_to_input_letterbox_is_letterbox_and_bad_mode_raises() -> None:
    img = np.full((50, 80, 3), 7, np.uint8)
    box = np.array([[1.0, 2.0, 30.0, 40.0]], np.float32)
    a = fit_to_input(img, box, None, 64, "letterbox")
    b = letterbox(img, box, None, 64)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    with pytest.raises(ConfigError, match="resize mode"):
        fit_to_input(img, box, None, 64, "crop")


class _FixedBox(nn.Module):
    """Stands in for a detector: predicts one box in input pixels, undone through the metas."""

    def __init__(self, resize: str | None) -> None:
        super().__init__()
        self.config = {"name": "fake", "num_classes": 1} | ({"resize": resize} if resize else {})
        self.size_divisor = 1
        self.seen: list[tuple[int, ...]] = []

    def predict(self, x, metas, **kw):
        self.seen.append(tuple(x.shape))
        box = torch.tensor([[30.0, 60.0, 150.0, 240.0]])
        return [{"boxes": undo_letterbox(box, m), "scores": torch.ones(1), "labels": torch.zeros(1, dtype=torch.long)}
                for m in metas]


@pytest.mark.parametrize("resize, want", [("stretch", [60.0, 40.0, 300.0, 160.0]), (None, None)])
def test_predictor_resizes_as_the_model_says(resize: str | None, want: list[float] | None) -> None:
    from odkit.engine.predictor import Predictor

    model = _FixedBox(resize)
    assert resize_mode(model) == (resize or "letterbox")
    pred = Predictor(model, {"num_classes": 1, "img_size": 300})
    img = np.zeros((200, 600, 3), np.uint8)  # h 200, w 600
    out = pred.predict(img, img_size=300)[0]["boxes"][0].tolist()
    assert pred.model.seen == [(1, 3, 300, 300)]  # the prepared copy the Predictor runs
    if want is None:  # letterbox: r = 0.5, dy = 100: (30, 60-100 -> clipped) / 0.5
        want = [60.0, 0.0, 300.0, 200.0]
    np.testing.assert_allclose(out, want, atol=1e-3)


def test_zoo_stores_a_resize_override_and_refuses_a_bad_one() -> None:
    from odkit.models import zoo

    m = zoo.build("yolox-nano", num_classes=2, resize="stretch")
    assert m.config["resize"] == "stretch" and resize_mode(m) == "stretch"
    assert resize_mode(zoo.from_config(m.config)) == "stretch"
    assert "resize" not in zoo.build("yolox-nano", num_classes=2).config
    with pytest.raises(ConfigError, match="resize"):
        zoo.build("yolox-nano", num_classes=2, resize="pad")


# ------------------------------------------------------------------------------------- losses / matching
def test_hard_negative_mining_hand_worked() -> None:
    from odkit.losses.ssd import hard_negative_mining

    loss = torch.tensor([
        [0.5, 9.0, 2.0, 0.1, 3.0, 1.0, 2.5, 0.7],  # 1 positive (1), prior 6 ignored: keep 3 negatives
        [0.5, 9.0, 2.0, 0.1, 3.0, 1.0, 2.5, 0.7],  # no positive: no negative
        [0.5, 9.0, 2.0, 0.1, 3.0, 1.0, 2.5, 0.7],  # 2 positives (1, 4): 6 wanted, 5 negatives available
    ])
    pos = torch.zeros(3, 8, dtype=torch.bool)
    pos[0, 1] = True
    pos[2, [1, 4]] = True
    neg = ~pos
    neg[0, 6] = False  # ignored
    kept = hard_negative_mining(loss, pos, neg, 3.0)
    # image 0: negatives by loss 3.0 (4), 2.0 (2), 1.0 (5), 0.7 (7), ... -> the first three
    assert kept[0].nonzero().flatten().tolist() == [2, 4, 5]
    assert not kept[1].any()
    assert kept[2].nonzero().flatten().tolist() == [0, 2, 3, 5, 6, 7]
    # ratio 2: image 0 keeps priors 4 and 2; ties keep the lower index
    assert hard_negative_mining(loss, pos, neg, 2.0)[0].nonzero().flatten().tolist() == [2, 4]
    tie = hard_negative_mining(torch.ones(1, 8), pos[:1], neg[:1], 2.0)
    assert tie[0].nonzero().flatten().tolist() == [0, 2]


def test_ssd_loss_is_the_brute_force_sum() -> None:
    from odkit.losses.ssd import ssd_loss

    g = torch.Generator().manual_seed(0)
    logits, deltas = torch.randn(2, 10, 4, generator=g), torch.randn(2, 10, 4, generator=g)
    pos = torch.zeros(2, 10, dtype=torch.bool)
    pos[0, [1, 7]] = True
    pos[1, 3] = True
    targets = torch.where(pos, torch.tensor(2), torch.tensor(0))
    box_t = torch.randn(3, 4, generator=g)
    out = ssd_loss(logits, deltas, targets, box_t, pos, ~pos, torch.tensor(3.0), 3.0, 1.0)
    want_cls = 0.0
    for b in range(2):
        ce = [float(-torch.log_softmax(logits[b, a], 0)[targets[b, a]]) for a in range(10)]
        negs = sorted((a for a in range(10) if not pos[b, a]), key=lambda a: -ce[a])[: 3 * int(pos[b].sum())]
        want_cls += sum(ce[a] for a in range(10) if pos[b, a]) + sum(ce[a] for a in negs)
    d = (deltas[pos] - box_t).abs()
    want_box = float(torch.where(d < 1, 0.5 * d * d, d - 0.5).sum())
    assert float(out["loss_cls"]) == pytest.approx(want_cls / 3, rel=1e-5)
    assert float(out["loss_box"]) == pytest.approx(want_box / 3, rel=1e-5)


def test_ssd_match_hand_worked() -> None:
    from odkit.assign.base import GTBatch
    from odkit.models.heads.ssd_head import ssd_match

    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [100, 100, 110, 110], [5, 5, 15, 15], [50, 50, 60, 60]])
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 19, 19], [100, 100, 104, 104]]),
                "labels": torch.tensor([2, 0, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    gt = GTBatch.from_targets(targets, 3, "cpu", batch_size=2)
    res = ssd_match(anchors, gt, 0.5)
    # a0: IoU 1 with g0; a1: 0.9025 with g1; a2: 0.16 with g2 but it is g2's best prior; a3: 0.277 max -> bg
    assert res.gt_inds[0].tolist() == [0, 1, 2, -1, -1]
    assert res.labels[0].tolist() == [2, 0, 1, -1, -1]
    assert res.quality[0, :3].tolist() == pytest.approx([1.0, 0.9025, 0.16], abs=1e-5)
    assert res.gt_inds[1].tolist() == [-1] * 5


def test_default_boxes_equal_ssd_priors_for_the_same_sizes() -> None:
    from odkit.models.heads.ssd_head import DefaultBoxes
    from odkit.ops.priors import SSD300_CONFIG, ssd_priors

    c = SSD300_CONFIG
    scales = [s / 300 for s in c["min_sizes"]] + [c["max_sizes"][-1] / 300]
    boxes = DefaultBoxes(c["aspect_ratios"], scales=scales, steps=c["steps"])(
        [(f, f) for f in c["feature_maps"]], (300, 300))
    ref = ssd_priors(**c, clip=True, fmt="cxcywh").double() * 300
    ref_xyxy = torch.cat([ref[:, :2] - ref[:, 2:] / 2, ref[:, :2] + ref[:, 2:] / 2], 1)
    assert boxes.shape == (8732, 4)
    # ssd_priors clamps centres to the image as well (the 10x10 level's last column, step 32, sits at 304
    # px); torchvision's rule clips widths/heights only: compare centres inside the image
    ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
    inside = (ctr <= 300 + 1e-3).all(1)
    assert int((~inside).sum()) == (10 + 10 - 1) * 6  # last row and column of that level, 6 boxes each
    torch.testing.assert_close(boxes.double()[inside], ref_xyxy[inside], atol=1e-3, rtol=0)
