"""NMS family against reference loops (greedy, per-class, soft, matrix, multiclass)."""

from __future__ import annotations

import contextlib
import importlib
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odkit.errors import ConfigError
from odkit.ops import (
    batched_nms,
    box_iou,
    diou_nms,
    matrix_nms,
    multiclass_nms,
    nms,
    soft_nms,
)

greedy = importlib.import_module("odkit.ops.nms_greedy")

# every kernel path: dense blocks of 4 boxes (many rounds) and of 181; per-label dense tables, or
# (tiny _SERIAL) per-label dense blocks with many-chunk slabs; the windows kernel (_SMALL_N = 0)
# with blocks of 4 and 256
PATHS = [
    {"_DENSE_BLOCK": 4},
    {"_DENSE_BLOCK": 181},
    {"_SERIAL": 16, "_DENSE_BLOCK": 4},
    {"_SERIAL": 16, "_SMALL_N": 0, "_BLOCK": 4},
    {"_SMALL_N": 0, "_BLOCK": 256},
]


@contextlib.contextmanager
def kernel_path(path):
    """Set kernel-selection constants of odkit.ops.nms_greedy inside the block, then restore them."""
    saved = {k: getattr(greedy, k) for k in path}
    for k, v in path.items():
        setattr(greedy, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(greedy, k, v)


def ref_greedy(boxes, scores, thr, labels=None, mode="iou"):
    """The classic loop: best remaining box is kept, every remaining box with IoU > thr dropped."""
    iou = box_iou(boxes, boxes, mode=mode).tolist()  # same float32 values as the op under test
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep, removed = [], set()
    for i in order:
        if i in removed:
            continue
        keep.append(i)
        for j in order:
            if j != i and j not in removed and iou[i][j] > thr and (labels is None or labels[i] == labels[j]):
                removed.add(j)
    return keep


@st.composite
def nms_case(draw):
    n = draw(st.integers(0, 60))
    grid = draw(st.sampled_from([4.0, 20.0, 100.0]))  # small grids force ties, duplicates, heavy overlap
    xy = draw(st.lists(st.tuples(st.integers(0, int(grid)), st.integers(0, int(grid))), min_size=n, max_size=n))
    wh = draw(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=n, max_size=n))
    boxes = torch.tensor([[x, y, x + w, y + h] for (x, y), (w, h) in zip(xy, wh)], dtype=torch.float32).reshape(-1, 4)
    scores = torch.tensor(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=torch.float32)
    labels = torch.tensor(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=torch.long)
    thr = draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 1.0, -0.5]))
    return boxes, scores, labels, thr


@settings(max_examples=100, deadline=None)
@given(nms_case())
def test_nms_equals_greedy_loop(case):
    boxes, scores, labels, thr = case
    expect = ref_greedy(boxes, scores, thr)
    expect_lab = ref_greedy(boxes, scores, thr, labels.tolist())
    expect_diou = ref_greedy(boxes, scores, thr, mode="diou")
    for path in PATHS:
        with kernel_path(path):
            assert nms(boxes, scores, thr).tolist() == expect, path
            assert batched_nms(boxes, scores, labels, thr).tolist() == expect_lab, path
            assert diou_nms(boxes, scores, thr).tolist() == expect_diou, path


def clustered(n, seed, per=10):
    g = np.random.default_rng(seed)
    nobj = max(1, n // per)
    c = g.uniform(0, 1000 * math.sqrt(n / 5000), (nobj, 2))
    s = np.exp(g.uniform(np.log(16), np.log(256), (nobj, 2)))
    o = g.integers(0, nobj, n)
    cc = c[o] + g.normal(0, 0.08, (n, 2)) * s[o]
    ss = s[o] * np.exp(g.normal(0, 0.08, (n, 2)))
    b = np.concatenate([cc - ss / 2, cc + ss / 2], 1).astype(np.float32)
    return torch.from_numpy(b), torch.from_numpy(g.uniform(0, 1, n).astype(np.float32))


def numpy_greedy(boxes, scores, thr):
    b = boxes.numpy()
    x1, y1, x2, y2 = b.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores.numpy(), kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        iw = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        ih = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, np.float32(1e-7))
        order = rest[iou <= np.float64(thr)]  # compare in float64, like the classic loop
    return keep


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_large_clustered(thr):
    boxes, scores = clustered(3000, seed=int(thr * 10))
    expect = numpy_greedy(boxes, scores, thr)
    assert 0.02 < len(expect) / 3000 < 0.6
    for path in ({}, {"_SMALL_N": 0}):  # dense blocks, windows
        with kernel_path(path):
            assert nms(boxes, scores, thr).tolist() == expect, path


def test_nms_edge_cases():
    e = torch.zeros(0, 4)
    assert nms(e, torch.zeros(0), 0.5).tolist() == []
    assert batched_nms(e, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).tolist() == []
    b = torch.tensor([[0.0, 0, 10, 10]] * 5)
    s = torch.tensor([0.5, 0.9, 0.9, 0.1, 0.9])
    assert nms(b, s, 0.5).tolist() == [1]  # all duplicates: the first of the tied best survives
    assert nms(b, s, 1.0).tolist() == [1, 2, 4, 0, 3]  # nothing has IoU > 1
    assert nms(b.half(), s.half(), 0.5).tolist() == [1]
    with pytest.raises(ConfigError):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)


@pytest.mark.parametrize("n_labels", [3, 80])
def test_batched_nms_is_per_class_nms_merged(n_labels):
    boxes, scores = clustered(2000, seed=3)
    labels = torch.from_numpy(np.random.default_rng(3).integers(0, n_labels, 2000))
    parts = []
    for c in labels.unique():
        idx = (labels == c).nonzero().squeeze(1)
        parts.append(idx[torch.tensor(numpy_greedy(boxes[idx], scores[idx], 0.5), dtype=torch.long)])
    allk = torch.cat(parts).sort()[0]
    expect = allk[torch.sort(scores[allk], descending=True, stable=True)[1]].tolist()
    for path in ({}, {"_SERIAL": 1024}, {"_SERIAL": 1024, "_SMALL_N": 0}):  # dense tables, blocks, windows
        with kernel_path(path):
            assert batched_nms(boxes, scores, labels, 0.5).tolist() == expect, path


def ref_soft(boxes, scores, thr, sigma, method, min_score):
    iou = box_iou(boxes, boxes).tolist()
    s = {i: float(v) for i, v in enumerate(scores.tolist()) if v >= min_score}
    keep, ks = [], []
    while s:
        i = min(s, key=lambda j: (-s[j], j))
        keep.append(i)
        ks.append(s.pop(i))
        for j in list(s):
            o = iou[i][j]
            if method == "linear":
                s[j] *= (1 - o) if o > thr else 1.0
            else:
                s[j] *= math.exp(-o * o / sigma)
            if s[j] < min_score:
                del s[j]
    return keep, ks


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms(method):
    boxes, scores = clustered(200, seed=5)
    keep, ks = soft_nms(boxes, scores, 0.3, 0.5, method, 0.05)
    rk, rs = ref_soft(boxes, scores, 0.3, 0.5, method, 0.05)
    assert keep.tolist() == rk
    assert np.allclose(ks.numpy(), rs, atol=1e-5)
    assert (ks[1:] <= ks[:-1] + 1e-6).all()


def ref_matrix(boxes, scores, labels, kernel, sigma):
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    iou = box_iou(boxes, boxes).double()
    comp = [0.0] * n
    for a, i in enumerate(order):
        comp[i] = max([iou[j, i].item() for j in order[:a] if labels is None or labels[j] == labels[i]], default=0.0)
    out = {}
    for a, i in enumerate(order):
        d = 1.0
        for j in order[:a]:
            if labels is not None and labels[j] != labels[i]:
                continue
            o = iou[j, i].item()
            d = min(d, math.exp(-sigma * (o * o - comp[j] ** 2)) if kernel == "gaussian" else (1 - o) / (1 - comp[j]))
        out[i] = float(scores[i]) * d
    return out


@pytest.mark.parametrize("kernel", ["gaussian", "linear"])
def test_matrix_nms(kernel):
    boxes, scores = clustered(120, seed=9)
    labels = torch.from_numpy(np.random.default_rng(1).integers(0, 3, 120))
    for lab in (None, labels):
        keep, ds = matrix_nms(boxes, scores, lab, kernel=kernel, sigma=2.0, score_threshold=0.05, block=32)
        ref = ref_matrix(boxes, scores, None if lab is None else lab.tolist(), kernel, 2.0)
        expect = sorted((i for i in ref if ref[i] > 0.05), key=lambda i: (-ref[i], i))
        assert set(keep.tolist()) == set(expect)
        assert np.allclose(ds.numpy(), [ref[i] for i in keep.tolist()], atol=1e-5)
        assert (ds[1:] <= ds[:-1]).all()


def ref_multiclass(boxes, scores, score_thr, iou_thr, pre_topk, max_per_img):
    n, c = scores.shape
    cands = [(float(scores[i, j]), i * c + j) for i in range(n) for j in range(c) if scores[i, j] > score_thr]
    cands.sort(key=lambda t: (-t[0], t[1]))
    cands = sorted(cands[:pre_topk], key=lambda t: t[1])
    flat = torch.tensor([k for _, k in cands], dtype=torch.long)
    rows, labs = flat // c, flat % c
    bx = boxes[rows] if boxes.dim() == 2 else boxes[rows, labs]
    sc = scores[rows, labs]
    keep = ref_greedy(bx, sc, iou_thr, labs.tolist())[:max_per_img]
    return bx[keep], sc[keep], labs[keep]


@pytest.mark.parametrize("per_class_boxes", [False, True])
def test_multiclass_nms(per_class_boxes):
    g = torch.Generator().manual_seed(0)
    n, c = 150, 4
    base, _ = clustered(n, seed=2)
    boxes = base[:, None, :] + torch.randn(n, c, 4, generator=g) if per_class_boxes else base
    scores = torch.rand(n, c, generator=g)
    scores[:10] = 0.5  # ties across rows and classes
    got = multiclass_nms(boxes, scores, 0.2, 0.5, pre_topk=300, max_per_img=40)
    ref = ref_multiclass(boxes, scores, 0.2, 0.5, 300, 40)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)
    assert got[2].dtype == torch.long and got[0].shape[1] == 4
    agn = multiclass_nms(boxes, scores, 0.2, 0.5, class_agnostic=True, return_inds=True)
    assert len(agn) == 4 and len(agn[0]) <= 100
    empty = multiclass_nms(boxes, scores, 2.0, 0.5)
    assert [t.shape[0] for t in empty] == [0, 0, 0]
