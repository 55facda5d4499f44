"""YOLOv2: darknet's reorg, and the region loss against a loop transcription of ``region_layer.c``.

The reference computes darknet's ``l.delta`` (``forward_region_layer``: noobject term with the 0.6
ignore rule, the prior term while ``seen < 12800``, per truth the best anchor by shape at the truth's
cell, box deltas scaled by ``2 - w h``, rescored objectness, softmax class deltas) and the gradient
its GPU backward passes on (``delta * sigmoid'`` for x, y and objectness). The gradient of odkit's
loss, times the batch size, must be its negative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from odkit.models import zoo
from odkit.models.heads.yolov2_head import YOLOv2Head
from odkit.nn.reorg import darknet_reorg
from tests._export import export_and_compare

ANCHORS = ((0.6, 0.7), (1.9, 2.1), (3.3, 5.5), (7.9, 3.5), (9.8, 9.2))
C = 3
SIZE = 256  # 8 x 8 cells: normalised coordinates are exact in binary


def reorg_loop(x: np.ndarray, s: int) -> np.ndarray:
    b_, c, h, w = x.shape
    flat, out = x.reshape(-1), np.zeros(x.size)
    out_c = c // (s * s)
    for b in range(b_):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2, offset = k % out_c, k // out_c
                    w2, h2 = i * s + offset % s, j * s + offset // s
                    out[in_index] = flat[w2 + w * s * (h2 + h * s * (c2 + out_c * b))]
    return out.reshape(b_, c * s * s, h // s, w // s)


def test_reorg_is_darknets() -> None:
    x = torch.randn(2, 8, 6, 4, dtype=torch.float64)
    np.testing.assert_array_equal(darknet_reorg(x, 2).numpy(), reorg_loop(x.numpy(), 2))


def _iou(a, b) -> float:  # darknet box_iou on (x, y, w, h) centre boxes
    def overlap(x1, w1, x2, w2):
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)

    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = 0.0 if w < 0 or h < 0 else w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def region_deltas(raw: np.ndarray, truths: list[list[tuple]], seen: int, rescore: bool) -> np.ndarray:
    """d(loss)/d(raw) that darknet applies (the negative of its delta through the activations)."""
    b_, _, hh, ww = raw.shape
    n = len(ANCHORS)
    r = raw.reshape(b_, n, 5 + C, hh, ww)
    out = r.copy()
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    out[:, :, :2], out[:, :, 4] = sig(r[:, :, :2]), sig(r[:, :, 4])
    e = np.exp(r[:, :, 5:] - r[:, :, 5:].max(2, keepdims=True))
    out[:, :, 5:] = e / e.sum(2, keepdims=True)
    delta = np.zeros_like(out)

    def box(b, a, i, j):
        return ((i + out[b, a, 0, j, i]) / ww, (j + out[b, a, 1, j, i]) / hh,
                math.exp(out[b, a, 2, j, i]) * ANCHORS[a][0] / ww, math.exp(out[b, a, 3, j, i]) * ANCHORS[a][1] / hh)

    def delta_box(t, b, a, i, j, scale):
        iou = _iou(box(b, a, i, j), t)
        tgt = (t[0] * ww - i, t[1] * hh - j, math.log(t[2] * ww / ANCHORS[a][0]), math.log(t[3] * hh / ANCHORS[a][1]))
        for k in range(4):
            delta[b, a, k, j, i] = scale * (tgt[k] - out[b, a, k, j, i])
        return iou

    for b in range(b_):
        for j in range(hh):
            for i in range(ww):
                for a in range(n):
                    best = max([_iou(box(b, a, i, j), t[:4]) for t in truths[b]], default=0.0)
                    delta[b, a, 4, j, i] = 1.0 * (0 - out[b, a, 4, j, i])
                    if best > 0.6:
                        delta[b, a, 4, j, i] = 0
                    if seen < 12800:
                        delta_box(((i + .5) / ww, (j + .5) / hh, ANCHORS[a][0] / ww, ANCHORS[a][1] / hh), b, a, i, j, .01)
        for t in truths[b]:
            i, j = int(t[0] * ww), int(t[1] * hh)
            best_iou, best_n = 0.0, 0
            for a in range(n):
                iou = _iou((0, 0, ANCHORS[a][0] / ww, ANCHORS[a][1] / hh), (0, 0, t[2], t[3]))
                if iou > best_iou:
                    best_iou, best_n = iou, a
            iou = delta_box(t[:4], b, best_n, i, j, 1.0 * (2 - t[2] * t[3]))
            delta[b, best_n, 4, j, i] = 5.0 * ((iou if rescore else 1.0) - out[b, best_n, 4, j, i])
            for c in range(C):
                delta[b, best_n, 5 + c, j, i] = 1.0 * ((c == t[4]) - out[b, best_n, 5 + c, j, i])
    act = np.ones_like(out)
    act[:, :, :2] = out[:, :, :2] * (1 - out[:, :, :2])
    act[:, :, 4] = out[:, :, 4] * (1 - out[:, :, 4])
    return -(delta * act).reshape(raw.shape)


def _case(name: str) -> list[list[tuple]]:
    """Truths per image as (x, y, w, h) normalised + class; two images each."""
    return {
        "one object": [[(0.4, 0.55, 0.3, 0.2, 1)], []],
        "two in one cell": [[(0.3, 0.3, 0.1, 0.1, 0), (0.33, 0.31, 0.6, 0.5, 2), (0.32, 0.29, 0.11, 0.1, 1)],
                            [(0.7, 0.2, 0.2, 0.4, 1)]],
        "cell border": [[(0.25, 0.5, 0.2, 0.3, 2)], [(0.5, 0.875, 0.05, 0.06, 0)]],
        "no objects": [[], []],
    }[name]


@pytest.mark.parametrize("seen", [0, 20000])
@pytest.mark.parametrize("rescore", [True, False])
@pytest.mark.parametrize("case", ["one object", "two in one cell", "cell border", "no objects"])
def test_region_loss_matches_region_layer(case: str, rescore: bool, seen: int) -> None:
    truths = _case(case)
    head = YOLOv2Head(C, 8, 8, 32, ANCHORS, rescore=rescore).train()
    head.seen.fill_(seen)
    g = torch.Generator().manual_seed(3)
    raw = torch.randn(2, 5 * (5 + C), SIZE // 32, SIZE // 32, generator=g, dtype=torch.float64) * 0.5
    if truths[0]:  # a second anchor of the first truth's cell predicting close to it: the ignore rule
        x, y, w, h, _ = truths[0][0]
        i, j = int(x * 8), int(y * 8)
        a = 4 if w * h < 0.5 else 0
        v = raw.view(2, 5, 5 + C, 8, 8)
        v[0, a, 0, j, i], v[0, a, 1, j, i] = math.log((x * 8 - i) / (1 - x * 8 + i) + 1e-9), math.log(
            (y * 8 - j) / (1 - y * 8 + j) + 1e-9)
        v[0, a, 2, j, i], v[0, a, 3, j, i] = math.log(w * 8 / ANCHORS[a][0] * 1.05), math.log(h * 8 / ANCHORS[a][1])
    raw.requires_grad_(True)
    head.forward = lambda feats: [(raw,)]  # the loss of exactly these outputs
    targets = [{"boxes": torch.tensor([[(x - w / 2) * SIZE, (y - h / 2) * SIZE, (x + w / 2) * SIZE, (y + h / 2) * SIZE]
                                       for x, y, w, h, _ in t], dtype=torch.float64).reshape(-1, 4),
                "labels": torch.tensor([t[4] for t in t], dtype=torch.long)} for t in truths]
    loss = head.loss([torch.zeros(2, 8, 8, 8)], targets, (SIZE, SIZE))
    (loss["loss"] * 2).backward()
    want = region_deltas(raw.detach().numpy(), truths, seen + 2, rescore)
    np.testing.assert_allclose(raw.grad.numpy(), want, rtol=1e-4, atol=1e-6)  # priors are float32
    assert int(head.seen) == seen + 2
    assert (float(loss["loss_prior"].detach()) > 0) == (seen + 2 < 12800)


def test_yolov2_builds_and_predicts() -> None:
    model = zoo.build("yolov2-tiny", num_classes=3).eval()
    with torch.no_grad():
        boxes, scores = model.forward_export(torch.rand(1, 3, 128, 160))
    assert boxes.shape == (1, 4 * 5 * 5, 4) and scores.shape == (1, 100, 3)
    assert torch.all(scores.sum(-1) <= 1 + 1e-6)  # objectness x softmax


def _spread(model: torch.nn.Module) -> torch.nn.Module:
    torch.nn.init.normal_(model.head.pred.weight, std=0.05)  # outputs that vary across the image
    return model


def test_yolov2_tiny_exports_to_onnx_and_openvino(tmp_path) -> None:
    torch.manual_seed(0)
    export_and_compare(_spread(zoo.build("yolov2-tiny", num_classes=3)), tmp_path, 128)


@pytest.mark.slow
def test_yolov2_exports_to_onnx_and_openvino(tmp_path) -> None:
    torch.manual_seed(0)
    export_and_compare(_spread(zoo.build("yolov2", num_classes=3)), tmp_path, 128)


def test_anchors_auto_in_grid_cells_and_multiscale_range(tmp_path) -> None:
    from odkit.data.formats import load_dataset
    from odkit.data.synth import synthesize
    from odkit.engine.anchors import training_anchors
    from odkit.engine.config import TrainConfig
    from odkit.engine.data import multiscale_of
    from odkit.errors import ConfigError
    from odkit.models.families.yolov3 import fit_anchors

    synthesize(tmp_path / "synth", n=12, seed=0, size=96)
    aset = load_dataset(str(tmp_path / "synth" / "data.yaml"), split="train")
    wh = []
    for i in range(len(aset)):  # boxes scaled as the letterbox to 64 px scales them
        s = 64 / max(int(aset.widths[i]), int(aset.heights[i]))
        wh += [[(x2 - x1) * s, (y2 - y1) * s] for x1, y1, x2, y2 in aset.boxes[aset.offsets[i] : aset.offsets[i + 1]]]
    got = training_anchors("auto", "yolov2-tiny", aset, 64)
    np.testing.assert_allclose(np.array(got) * 32, np.array(fit_anchors(np.array(wh), 5)), atol=0.01)
    model = zoo.build("yolov2-tiny", num_classes=3, anchors=got)
    assert model.head.anchors == got and model.config["anchors"] == got
    cfg = TrainConfig(model="yolov2", multiscale_range=[320, 608])
    assert cfg.multiscale and multiscale_of(cfg).sizes.tolist() == list(range(320, 609, 32))
    with pytest.raises(ConfigError, match="multiscale-range"):
        TrainConfig(model="yolov2", multiscale_range=[320, 600])
