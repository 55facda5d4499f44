"""Box fusion ops: ensemble-boxes parity on a committed fixture (``benchmarks/fusion_parity.py``
writes it from ensemble-boxes' own outputs) and hand-worked cases of each method."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from odkit.errors import ConfigError
from odkit.ops import fusion

FIXTURE = Path(__file__).parent / "fixtures" / "fusion_parity.json"


def _sorted(b, s, lab):
    b, s, lab = np.asarray(b, np.float64).reshape(-1, 4), np.asarray(s, np.float64), np.asarray(lab, np.float64)
    o = np.lexsort((b[:, 1], b[:, 0], -np.round(s, 5), lab))
    return b[o], s[o], lab[o]


def test_fixture_parity_with_ensemble_boxes():
    cases = json.loads(FIXTURE.read_text())
    assert {c["method"] for c in cases} == {"wbf", "soft-nms", "nmw"}
    for c in cases:
        fn = {"wbf": fusion.weighted_boxes_fusion, "nmw": fusion.non_maximum_weighted,
              "soft-nms": fusion.soft_nms_fusion}[c["method"]]
        got = _sorted(*fn(c["boxes"], c["scores"], c["labels"], **c["params"]))
        exp = _sorted(c["expected"]["boxes"], c["expected"]["scores"], c["expected"]["labels"])
        assert len(got[1]) == len(exp[1]), c["method"]
        np.testing.assert_array_equal(got[2], exp[2])
        np.testing.assert_allclose(got[0], exp[0], atol=0.01)
        np.testing.assert_allclose(got[1], exp[1], atol=1e-5)


B = [[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60]]
S = [0.9, 0.8, 0.7]
L = [0, 0, 0]


def test_wbf_hand_worked():
    b, s, lab = fusion.weighted_boxes_fusion([B], [S], [L], iou_thr=0.55)
    # IoU([0,0,10,10], [1,1,10,10]) = 0.81: fused corner (0.9 * 0 + 0.8 * 1) / 1.7, score mean 0.85
    np.testing.assert_allclose(b[0].numpy(), [0.8 / 1.7, 0.8 / 1.7, 10, 10], rtol=1e-6)
    np.testing.assert_allclose(s.numpy(), [0.85, 0.7], rtol=1e-6)
    # two sources, each box once: a cluster seen by one of two models scores half
    b, s, _ = fusion.weighted_boxes_fusion([B[:1], B[1:2]], [S[:1], S[1:2]], [[0], [0]])
    np.testing.assert_allclose(s.numpy(), [0.85], rtol=1e-6)
    b, s, _ = fusion.weighted_boxes_fusion([B[:1], B[2:]], [S[:1], S[2:]], [[0], [0]])
    np.testing.assert_allclose(s.numpy(), [0.45, 0.35], rtol=1e-6)


def test_nmw_hand_worked():
    b, s, _ = fusion.non_maximum_weighted([B], [S], [L], iou_thr=0.55)
    w = 0.8 * 0.81  # score x IoU with the best box
    np.testing.assert_allclose(b[0].numpy(), [w / (0.9 + w), w / (0.9 + w), 10, 10], rtol=1e-6)
    np.testing.assert_allclose(s.numpy(), [0.9, 0.7], rtol=1e-6)


def test_soft_nms_hand_worked():
    # linear: the second box decays to 0.8 * (1 - 0.81) = 0.152 (kept above 0.1, dropped above 0.2)
    _, s, _ = fusion.soft_nms_fusion([B], [S], [L], method="linear", iou_thr=0.5, thresh=0.1, decayed_scores=True)
    np.testing.assert_allclose(s.numpy(), [0.9, 0.7, 0.8 * 0.19], rtol=1e-6)
    _, s, _ = fusion.soft_nms_fusion([B], [S], [L], method="linear", iou_thr=0.5, thresh=0.2)
    np.testing.assert_allclose(s.numpy(), [0.9, 0.7], rtol=1e-6)
    _, s, _ = fusion.soft_nms_fusion([B], [S], [L], method="gaussian", sigma=0.5, thresh=0.0, decayed_scores=True)
    np.testing.assert_allclose(sorted(s.numpy()), sorted([0.9, 0.7, 0.8 * np.exp(-0.81 ** 2 / 0.5)]), rtol=1e-6)


def test_greedy_nmm_ios_iou_and_regrowth():
    half = [[0, 0, 10, 10], [6, 0, 10, 10]]  # IoU 0.4, IoS 1
    b, s, _ = fusion.greedy_nmm(half, [0.9, 0.8], [0, 0], match="ios", threshold=0.5)
    assert b.tolist() == [[0, 0, 10, 10]] and s.tolist() == pytest.approx([0.9])
    b, _, _ = fusion.greedy_nmm(half, [0.9, 0.8], [0, 0], match="iou", threshold=0.5)
    assert len(b) == 2
    b, _, _ = fusion.greedy_nmm(half, [0.9, 0.8], [0, 1], match="ios", threshold=0.5)  # class-aware
    assert len(b) == 2
    # both match the keeper, but after merging the first the grown box no longer matches the second
    # (IoU 100 / 250; it matched the keeper with IoU 100 / 150): it is dropped, as SAHI does
    b, s, _ = fusion.greedy_nmm([[0, 10, 10, 20], [0, 10, 10, 30], [0, 5, 10, 20]], [0.9, 0.8, 0.7], [0, 0, 0],
                                match="iou", threshold=0.5)
    assert b.tolist() == [[0, 10, 10, 30]] and s.tolist() == pytest.approx([0.9])


def test_zero_threshold_matches_disjoint_boxes():
    b, s, _ = fusion.greedy_nmm(B, S, L, match="iou", threshold=0.0)
    assert b.tolist() == [[0, 0, 60, 60]] and s.tolist() == pytest.approx([0.9])
    assert fusion.match_nms(B, S, L, "ios", 0.0).tolist() == [0]


def test_match_nms_threshold_is_inclusive():
    boxes = [[0, 0, 10, 10], [5, 0, 10, 10]]  # IoU exactly 0.5
    assert fusion.match_nms(boxes, [0.9, 0.8], [0, 0], "iou", 0.5).tolist() == [0]
    assert fusion.match_nms(boxes, [0.9, 0.8], [0, 0], "iou", 0.51).tolist() == [0, 1]
    assert fusion.match_nms(boxes, [0.8, 0.9], [0, 1], "iou", 0.5).tolist() == [1, 0]
    assert fusion.match_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), "iou", 0.5).numel() == 0


def test_errors():
    with pytest.raises(ConfigError, match="match"):
        fusion.greedy_nmm(B, S, L, match="giou")
    with pytest.raises(ConfigError, match="weights"):
        fusion.weighted_boxes_fusion([B], [S], [L], weights=[1, 2])
    with pytest.raises(ConfigError, match="shape"):
        fusion.match_nms([[0, 0, 1]], [0.5], [0])
    b, s, lab = fusion.weighted_boxes_fusion([[]], [[]], [[]])
    assert b.shape == (0, 4) and s.shape == (0,) and lab.dtype == torch.int64
