"""In-graph NMS (odkit.export.nms.ExportNMS): equal to multiclass_nms and to a brute-force greedy loop,
per image independent of the batch, in eager PyTorch and exported to onnxruntime / OpenVINO."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from odkit.errors import ConfigError
from odkit.export.nms import ExportNMS
from odkit.ops import multiclass_nms


def brute_force(boxes, scores, conf, iou_thr, pre_topk, max_det):
    """Plain-Python reference: candidates (score > conf) by (score desc, n*C+c asc), top pre_topk,
    greedy class-wise NMS (suppress IoU > thr), first max_det."""
    n, c = scores.shape
    cand = [(float(scores[i, j]), i * c + j) for i in range(n) for j in range(c) if scores[i, j] > conf]
    cand.sort(key=lambda t: (-t[0], t[1]))
    cand = cand[:pre_topk]
    b = boxes.double().tolist()

    def iou(p, q):
        iw = max(min(p[2], q[2]) - max(p[0], q[0]), 0.0)
        ih = max(min(p[3], q[3]) - max(p[1], q[1]), 0.0)
        inter = iw * ih
        ua = max(p[2] - p[0], 0) * max(p[3] - p[1], 0) + max(q[2] - q[0], 0) * max(q[3] - q[1], 0) - inter
        return inter / max(ua, 1e-7)

    kept = []
    for s, f in cand:
        i, lab = divmod(f, c)
        if all(not (lk == lab and iou(b[ik], b[i]) > iou_thr) for _, ik, lk in kept):
            kept.append((s, i, lab))
    return kept[:max_det]


def random_case(gen: torch.Generator, b: int, n: int, c: int, ties: bool):
    xy = torch.rand(b, n, 2, generator=gen) * 100
    wh = torch.rand(b, n, 2, generator=gen) * 40 + 0.5
    boxes = torch.cat([xy, xy + wh], -1)
    scores = torch.rand(b, n, c, generator=gen)
    if ties:  # many equal scores, and exact duplicate boxes with equal scores
        scores = (scores * 8).round() / 8
        boxes[:, 1::7] = boxes[:, 0:1]
        scores[:, 1::7] = scores[:, 0:1]
    return boxes, scores


def check_image(dets, num, boxes, scores, conf, iou, pre_topk, max_det):
    rb, rs, rl = multiclass_nms(boxes, scores, conf, iou, pre_topk, max_det)
    k = int(num)
    assert k == len(rb)
    assert torch.equal(torch.as_tensor(dets[:k, :4]), rb)
    assert torch.equal(torch.as_tensor(dets[:k, 4]), rs)
    assert torch.equal(torch.as_tensor(dets[:k, 5]).long(), rl)
    pad = torch.as_tensor(dets[k:])
    assert pad.shape[0] == max_det - k
    assert torch.equal(pad, torch.tensor([0.0, 0, 0, 0, 0, -1]).expand_as(pad))


@pytest.mark.parametrize(
    "n,c,conf,iou,pre_topk,max_det,ties",
    [
        (300, 3, 0.05, 0.5, 1000, 100, False),  # all candidates, max_det cuts
        (300, 3, 0.05, 0.5, 1000, 100, True),
        (200, 4, 0.2, 0.3, 150, 40, True),  # pre_topk cuts
        (20, 2, 0.5, 0.6, 1000, 100, False),  # K = N*C < max_det: padding
        (50, 1, 0.0, 0.0, 1000, 100, False),  # iou 0: any overlap suppresses
        (40, 3, 0.999, 0.5, 1000, 10, False),  # almost nothing passes
    ],
)
def test_eager_equals_multiclass_nms_and_batch_one(n, c, conf, iou, pre_topk, max_det, ties):
    gen = torch.Generator().manual_seed(n * 7 + c)
    boxes, scores = random_case(gen, 3, n, c, ties)
    m = ExportNMS(conf, iou, max_det, pre_topk)
    dets, num = m(boxes, scores)
    assert dets.shape == (3, max_det, 6) and num.shape == (3,) and num.dtype == torch.int64
    for b in range(3):
        check_image(dets[b], num[b], boxes[b], scores[b], conf, iou, pre_topk, max_det)
        d1, n1 = m(boxes[b : b + 1], scores[b : b + 1])
        assert torch.equal(d1[0], dets[b]) and int(n1[0]) == int(num[b])


def test_against_brute_force_loop():
    gen = torch.Generator().manual_seed(3)
    for trial in range(5):
        boxes, scores = random_case(gen, 1, 60, 3, ties=trial % 2 == 1)
        dets, num = ExportNMS(0.1, 0.45, 30, 50)(boxes, scores)
        ref = brute_force(boxes[0], scores[0], 0.1, 0.45, 50, 30)
        assert int(num[0]) == len(ref) > 0
        for row, (s, i, lab) in zip(dets[0].tolist(), ref):
            assert row[4] == pytest.approx(s, abs=0) and int(row[5]) == lab
            assert row[:4] == boxes[0, i].tolist()


def test_hand_worked_chain():
    # A (0.9) overlaps B (0.8) heavily; B overlaps C (0.7) heavily but A does not overlap C:
    # greedy keeps A and C (B is gone before it could suppress C). D is another class on top of A.
    boxes = torch.tensor(
        [[[0, 0, 10, 10], [2, 0, 12, 10], [4, 0, 14, 10], [0, 0, 10, 10]]], dtype=torch.float32
    )
    scores = torch.zeros(1, 4, 2)
    scores[0, 0, 0], scores[0, 1, 0], scores[0, 2, 0], scores[0, 3, 1] = 0.9, 0.8, 0.7, 0.6
    dets, num = ExportNMS(0.1, 0.5, 5)(boxes, scores)
    assert int(num[0]) == 3
    assert dets[0, :3, 4].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert dets[0, :3, 5].tolist() == [0, 0, 1]
    assert dets[0, 1, :4].tolist() == [4, 0, 14, 10]


def test_iou_threshold_rounding_matches_float64_comparison():
    from odkit.ops.nms_fixed import iou_threshold_f32

    for thr in (0.3, 0.45, 0.5, 0.65, 0.7, 0.1, 0.0, 1.0):
        t = iou_threshold_f32(thr)
        f = torch.tensor(thr, dtype=torch.float32)
        below, above = torch.nextafter(f, torch.tensor(-1.0)), torch.nextafter(f, torch.tensor(2.0))
        for v in (below, f, above):  # the float32 values around thr
            assert bool(v > torch.tensor(t)) == (float(v) > thr), (thr, float(v))
    # IoU 30 / 100 is float32(0.3) > 0.3 in float64: suppressed, as in odkit.ops (a plain float32
    # comparison with float32(0.3) would keep it)
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 3.0]]])
    scores = torch.tensor([[[0.9], [0.8]]])
    f = float(torch.tensor(0.3, dtype=torch.float32))
    assert f > 0.3
    dets, num = ExportNMS(0.1, 0.3, 5)(boxes, scores)
    ref = multiclass_nms(boxes[0], scores[0], 0.1, 0.3, 1000, 5)
    assert int(num[0]) == len(ref[0]) == 1


def test_bad_arguments():
    with pytest.raises(ConfigError, match="--conf"):
        ExportNMS(conf=1.5)
    with pytest.raises(ConfigError, match="--max-det"):
        ExportNMS(max_det=0)
    with pytest.raises(ConfigError, match="--iou"):
        ExportNMS(iou=-0.1)


class _NMSGraph(nn.Module):
    def __init__(self, nms: ExportNMS):
        super().__init__()
        self.nms = nms

    def forward(self, boxes, scores):
        return self.nms(boxes, scores)


@pytest.fixture(scope="module")
def nms_onnx(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    import warnings

    path = tmp_path_factory.mktemp("nms") / "nms.onnx"
    gen = torch.Generator().manual_seed(11)
    boxes, scores = random_case(gen, 2, 250, 3, ties=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _NMSGraph(ExportNMS(0.1, 0.5, 60, 400)),
            (boxes, scores),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["boxes", "scores"],
            output_names=["dets", "num_dets"],
            dynamic_axes={k: {0: "batch"} for k in ("boxes", "scores", "dets", "num_dets")},
        )
    return path


def _runners(path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    yield "onnxruntime", lambda b, s: sess.run(None, {"boxes": b, "scores": s})
    try:
        import openvino as ov
    except ImportError:
        return
    compiled = ov.Core().compile_model(
        ov.convert_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )

    def run_ov(b, s):
        res = compiled({"boxes": b, "scores": s})
        return [np.asarray(res[o]) for o in compiled.outputs]

    yield "openvino", run_ov


def test_exported_graph_matches_multiclass_nms_batch_1_and_3(nms_onnx):
    gen = torch.Generator().manual_seed(5)
    boxes, scores = random_case(gen, 3, 250, 3, ties=True)  # same N as the export: fixed shapes
    for name, run in _runners(nms_onnx):
        dets, num = run(boxes.numpy(), scores.numpy())
        assert dets.shape == (3, 60, 6), name
        for b in range(3):
            check_image(dets[b], num[b], boxes[b], scores[b], 0.1, 0.5, 400, 60)
            d1, n1 = run(boxes[b : b + 1].numpy(), scores[b : b + 1].numpy())
            assert np.array_equal(d1[0], dets[b]) and n1[0] == num[b], name
