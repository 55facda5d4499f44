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
