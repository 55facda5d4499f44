"""CenterNet's targets, loss and peak decoding against loop references written after CenterNet's own
code (numpy, one object and one cell at a time), and its ONNX export against PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from odkit.assign.heatmap import center_targets, gaussian_radius
from odkit.losses.heatmap import penalty_reduced_focal_loss
from odkit.models.heads.centernet_head import CenterNetHead
from odkit.ops.peaks import heatmap_peaks


def ref_radius(h: float, w: float, o: float = 0.7) -> float:
    """CenterNet's ``gaussian_radius`` as written in its utils/image.py."""
    a1, b1, c1 = 1, h + w, w * h * (1 - o) / (1 + o)
    r1 = (b1 + np.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2, c2 = 4, 2 * (h + w), (1 - o) * w * h
    r2 = (b2 + np.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3, c3 = 4 * o, -2 * o * (h + w), (o - 1) * w * h
    r3 = (b3 + np.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def ref_draw(heat: np.ndarray, cx: int, cy: int, r: int) -> None:
    """CenterNet's ``draw_umich_gaussian``, one cell at a time."""
    sigma = (2 * r + 1) / 6
    g = {(dy, dx): math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
         for dy in range(-r, r + 1) for dx in range(-r, r + 1)}
    peak = max(g.values())
    for (dy, dx), v in g.items():
        y, x = cy + dy, cx + dx
        if v < np.finfo(np.float64).eps * peak or not (0 <= y < heat.shape[0] and 0 <= x < heat.shape[1]):
            continue
        heat[y, x] = max(heat[y, x], v)


def ref_targets(targets, num_classes: int, oh: int, ow: int, stride: float):
    heat = np.zeros((len(targets), num_classes, oh, ow))
    rows = []
    for b, t in enumerate(targets):
        for box, lab in zip(t["boxes"].double().numpy() / stride, t["labels"].numpy()):
            box = box.copy()
            box[[0, 2]] = np.clip(box[[0, 2]], 0, ow - 1)
            box[[1, 3]] = np.clip(box[[1, 3]], 0, oh - 1)
            h, w = box[3] - box[1], box[2] - box[0]
            if h > 0 and w > 0:
                r = max(0, int(ref_radius(math.ceil(h), math.ceil(w))))
                ct = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
                ci = ct.astype(np.int32)
                ref_draw(heat[b, lab], int(ci[0]), int(ci[1]), r)
                rows.append((b, ci[1], ci[0], w, h, ct[0] - ci[0], ct[1] - ci[1]))
    return heat, rows


# one batch: a small object (under one cell), two overlapping objects of one class, an object over
# the border (clipped), and an image without objects
TARGETS = [
    {"boxes": torch.tensor([[5.0, 6.0, 8.5, 9.0], [10.0, 12.0, 50.0, 44.0], [14.0, 10.0, 46.0, 40.0],
                            [52.0, -6.0, 70.0, 20.0]]), "labels": torch.tensor([1, 0, 0, 2])},
    {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)},
]


@pytest.mark.parametrize("hw", [(1, 1), (2.5, 7.3), (10, 10), (37.2, 3.1), (120, 64)])
def test_gaussian_radius_is_centernets(hw) -> None:
    assert gaussian_radius(*hw) == pytest.approx(ref_radius(*hw), rel=1e-12)


def test_targets_equal_loop_reference() -> None:
    t = center_targets(TARGETS, 3, (16, 16), 4.0)
    heat, rows = ref_targets(TARGETS, 3, 16, 16, 4.0)
    np.testing.assert_allclose(t.heatmap.numpy(), heat, atol=1e-6, rtol=0)
    assert len(rows) == 4 and t.b.numel() == 4
    assert t.b.tolist() == [r[0] for r in rows] and t.y.tolist() == [r[1] for r in rows]
    assert t.x.tolist() == [r[2] for r in rows]
    np.testing.assert_allclose(t.wh.numpy(), [[r[3], r[4]] for r in rows], atol=1e-6)
    np.testing.assert_allclose(t.offset.numpy(), [[r[5], r[6]] for r in rows], atol=1e-6)
    assert float(t.heatmap[1].abs().sum()) == 0.0  # the image without objects
    assert int(t.heatmap.eq(1).sum()) == 4  # one exact peak per object (the overlapping pair: two cells)


def ref_focal(logits: np.ndarray, gt: np.ndarray) -> float:
    pos_sum, neg_sum, num_pos = 0.0, 0.0, 0
    for idx in np.ndindex(*logits.shape):
        p = min(max(1 / (1 + math.exp(-logits[idx])), 1e-4), 1 - 1e-4)
        if gt[idx] == 1:
            pos_sum += math.log(p) * (1 - p) ** 2
            num_pos += 1
        else:
            neg_sum += math.log(1 - p) * p ** 2 * (1 - gt[idx]) ** 4
    return -(pos_sum + neg_sum) / num_pos if num_pos else -neg_sum


def test_loss_equals_loop_reference() -> None:
    torch.manual_seed(0)
    head = CenterNetHead(3, in_channels=4, feat_channels=4)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.5)
    feats = [torch.randn(2, 4, 16, 16)]
    with torch.no_grad():
        got = head.loss(feats, TARGETS, (64, 64))
    with torch.no_grad():
        hm, wh, off = (t.double().numpy() for t in head(feats))
    heat, rows = ref_targets(TARGETS, 3, 16, 16, 4.0)
    l_hm = ref_focal(hm, heat)
    l_wh = sum(abs(wh[b, 0, y, x] - w) + abs(wh[b, 1, y, x] - h) for b, y, x, w, h, _, _ in rows) / (2 * len(rows) + 1e-4)
    l_off = sum(abs(off[b, 0, y, x] - ox) + abs(off[b, 1, y, x] - oy) for b, y, x, _, _, ox, oy in rows) / (
        2 * len(rows) + 1e-4)
    assert float(got["loss_hm"]) == pytest.approx(l_hm, rel=1e-5)
    assert float(got["loss_wh"]) == pytest.approx(l_wh, rel=1e-5)
    assert float(got["loss_offset"]) == pytest.approx(l_off, rel=1e-5)
    assert float(got["loss"]) == pytest.approx(l_hm + 0.1 * l_wh + l_off, rel=1e-5)
    # no objects at all: the negatives alone, no regression terms
    with torch.no_grad():
        empty = head.loss(feats, [TARGETS[1], TARGETS[1]], (64, 64))
    assert float(empty["loss_hm"]) == pytest.approx(ref_focal(hm, np.zeros_like(hm)), rel=1e-5)
    assert float(empty["loss_wh"]) == 0.0 and float(empty["loss_offset"]) == 0.0


def test_focal_loss_gradient_finite_at_saturation() -> None:
    logits = torch.tensor([[[[30.0, -30.0]]]], requires_grad=True)
    loss = penalty_reduced_focal_loss(logits, torch.tensor([[[[1.0, 0.5]]]]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_peaks_equal_brute_force() -> None:
    g = torch.Generator().manual_seed(3)
    heat = torch.rand(2, 3, 9, 11, generator=g).round(decimals=1)  # plateaus: equal neighbours are peaks too
    scores, cls, ys, xs = heatmap_peaks(heat, 20)
    for b in range(2):
        peaks = []
        for c, y, x in np.ndindex(3, 9, 11):
            nb = heat[b, c, max(0, y - 1):y + 2, max(0, x - 1):x + 2]
            if heat[b, c, y, x] == nb.max():
                peaks.append(float(heat[b, c, y, x]))
        want = sorted(peaks + [0.0] * (3 * 9 * 11 - len(peaks)), reverse=True)[:20]
        assert scores[b].tolist() == pytest.approx(want)
        got = heat[b, cls[b], ys[b], xs[b]]
        assert torch.equal(got, scores[b])  # every kept (class, cell) holds its score


def test_decode_boxes_by_hand() -> None:
    head = CenterNetHead(2, in_channels=1, topk=1)
    hm = torch.full((1, 2, 8, 8), -10.0)
    hm[0, 1, 3, 5] = 2.0
    wh = torch.zeros(1, 2, 8, 8)
    wh[0, :, 3, 5] = torch.tensor([4.0, 2.0])
    off = torch.zeros(1, 2, 8, 8)
    off[0, :, 3, 5] = torch.tensor([0.25, 0.5])
    boxes, scores, cls = head.decode((hm, wh, off), 1, (32, 32))
    # centre (5.25, 3.5) cells, size 4 x 2 cells, stride 4
    assert boxes[0, 0].tolist() == pytest.approx([(5.25 - 2) * 4, (3.5 - 1) * 4, (5.25 + 2) * 4, (3.5 + 1) * 4])
    assert int(cls[0, 0]) == 1 and float(scores[0, 0]) == pytest.approx(1 / (1 + math.exp(-2.0)))


def test_onnx_peak_decoding_equals_pytorch(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import onnx
    import onnxruntime as ort

    from odkit.export.onnx import export_onnx
    from odkit.models import zoo

    n = torch.get_num_threads()
    torch.manual_seed(0)
    model = zoo.build("centernet-lite", num_classes=3).eval()
    with torch.no_grad():
        model.head.heatmap_head[-1].bias.normal_(-1.0, 1.0)
        model.head.wh_head[-1].bias.fill_(6.0)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        boxes, scores = model.forward_export(x)
    path = export_onnx(model, tmp_path / "ct.onnx", img_size=128, dynamic=True)
    torch.set_num_threads(n)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"MaxPool", "TopK"} <= ops  # the peak extraction is in the graph
    got_boxes, got_scores = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"images": x.numpy()})
    np.testing.assert_allclose(got_scores, scores.numpy(), atol=1e-5, rtol=0)
    # the same peaks: (class scores, box) rows equal as sets (peaks of equal score may come in either
    # order from TopK; rows of score 0 after the last peak are any cells)
    for b in range(2):
        rows = [np.concatenate([s_, bx], axis=1) for s_, bx in ((got_scores[b], got_boxes[b]), (scores[b].numpy(),
                                                                                         boxes[b].numpy()))]
        rows = [r[r[:, :3].max(1) > 0] for r in rows]
        rows = [r[np.lexsort(np.round(r, 3).T[::-1])] for r in rows]
        assert len(rows[0]) == len(rows[1]) >= 20
        np.testing.assert_allclose(rows[0], rows[1], atol=1e-3, rtol=0)
