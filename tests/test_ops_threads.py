"""No public op of odkit.ops touches the process-wide thread settings.

Every name in ``odkit.ops.__all__`` must have an example call below (a new op fails
``test_every_public_op_has_a_call`` until it gets one); each call runs with ``torch.set_num_threads``
and ``torch.set_num_interop_threads`` replaced by spies, on inputs large enough to reach every
kernel path (dense and windowed NMS, per-label NMS, RoIAlign forward and backward).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

import odkit.ops as ops


def _boxes(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    side = 1000.0 * math.sqrt(n / 5000)
    c = torch.rand(max(n // 10, 1), 2, generator=g) * side
    s = torch.exp(torch.rand(max(n // 10, 1), 2, generator=g) * math.log(16)) * 16
    o = torch.randint(0, c.shape[0], (n,), generator=g)
    cc = c[o] + torch.randn(n, 2, generator=g) * 0.08 * s[o]
    ss = s[o] * torch.exp(torch.randn(n, 2, generator=g) * 0.08)
    return torch.cat([cc - ss / 2, cc + ss / 2], 1), torch.rand(n, generator=g)


def _rois(k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g) * 200
    wh = torch.rand(k, 2, generator=g) * 120 + 1
    return torch.cat([torch.randint(0, 2, (k, 1), generator=g).float(), xy, xy + wh], 1)


def _roi_align_backward() -> None:
    feats = torch.randn(2, 16, 20, 24, requires_grad=True)
    ops.roi_align(feats, _rois(64), 7, 1 / 8, 0).sum().backward()
    ops.roi_align(feats, _rois(64, 1), 7, 1 / 8, 2).sum().backward()


def _nms_paths() -> None:
    for n in (100, 1000, 5000):  # one dense block, dense blocks, windowed kernel
        b, s = _boxes(n)
        ops.nms(b, s, 0.5)
        ops.diou_nms(b, s, 0.5)


def _batched() -> None:
    b, s = _boxes(3000, 1)
    for n_labels in (2, 80):  # large labels alone, small labels in shared dense tables
        ops.batched_nms(b, s, torch.randint(0, n_labels, (3000,)), 0.5)


def _coders() -> None:
    b, _ = _boxes(50)
    ref = b + 2.0
    dxy = ops.DeltaXYWHCoder()
    dxy.decode(ref, dxy.encode(ref, b))
    yolo = ops.YOLOCoder()
    yolo.decode(ref, yolo.encode(ref, b, 8.0), 8.0)
    pts = (b[:, :2] + b[:, 2:]) / 2
    dc = ops.DistanceCoder()
    dc.decode(pts, dc.encode(pts, b))


def _anchors() -> None:
    gen = ops.AnchorGenerator(sizes=(32, 64), strides=(8, 16))
    gen.grid_anchors([(10, 12), (5, 6)])
    assert gen.num_levels == 2 and gen.num_anchors_per_location


_B, _S = _boxes(300, 2)
_F = [torch.randn(2, 8, 256 // s, 256 // s) for s in (4, 8, 16, 32)]

CALLS: dict[str, Callable[[], object]] = {
    "AnchorGenerator": _anchors,
    "DefaultBoxes": lambda: ops.DefaultBoxes([[2], [2, 3]], steps=[16, 32])([(19, 19), (10, 10)], (300, 300)),
    "YOLOAnchorGenerator": lambda: ops.YOLOAnchorGenerator([[[10, 13]], [[30, 61]]], [8, 16])([(10, 12), (5, 6)]),
    "DeltaXYWHCoder": _coders,
    "DistanceCoder": _coders,
    "YOLOCoder": _coders,
    "grid_points": lambda: ops.grid_points((10, 12), 8),
    "map_roi_levels": lambda: ops.map_roi_levels(_rois(20), 2, 5),
    "multiscale_roi_align": lambda: (ops.multiscale_roi_align(_F, _rois(30), [4, 8, 16, 32], 7, 2),
                                     ops.multiscale_roi_align(_F, _rois(30)[:, 1:].reshape(2, 15, 4), [4, 8, 16, 32], 7, 2)),
    "roi_align": _roi_align_backward,
    "roi_pool": lambda: ops.roi_pool(torch.randn(2, 8, 20, 24), _rois(40), 7, 1 / 8),
    "ssd300_priors": ops.ssd300_priors,
    "ssd_priors": lambda: ops.ssd_priors(300, [19, 10], [16, 32], [60, 111], [111, 162], [[2], [2, 3]]),
    "aligned_box_iou": lambda: ops.aligned_box_iou(_B, _B + 1),
    "batched_nms": _batched,
    "box_area": lambda: ops.box_area(_B),
    "box_convert": lambda: ops.box_convert(_B, "xyxy", "cxcywh"),
    "box_iou": lambda: ops.box_iou(_B, _B),
    "clip_boxes": lambda: ops.clip_boxes(_B, (100, 120)),
    "complete_box_iou": lambda: ops.complete_box_iou(_B, _B),
    "cxcywh_to_xyxy": lambda: ops.cxcywh_to_xyxy(_B),
    "diou_nms": _nms_paths,
    "distance_box_iou": lambda: ops.distance_box_iou(_B, _B),
    "generalized_box_iou": lambda: ops.generalized_box_iou(_B, _B),
    "matrix_nms": lambda: ops.matrix_nms(_B, _S, torch.randint(0, 3, (300,))),
    "multiclass_nms": lambda: ops.multiclass_nms(_B, torch.rand(300, 5), 0.1, 0.5),
    "nms": _nms_paths,
    "soft_nms": lambda: ops.soft_nms(_B[:100], _S[:100]),
    "xywh_to_xyxy": lambda: ops.xywh_to_xyxy(_B),
    "xyxy_to_cxcywh": lambda: ops.xyxy_to_cxcywh(_B),
    "xyxy_to_xywh": lambda: ops.xyxy_to_xywh(_B),
}


def test_every_public_op_has_a_call():
    assert set(ops.__all__) <= set(CALLS), f"add an example call for {sorted(set(ops.__all__) - set(CALLS))}"


@pytest.fixture
def thread_spy(monkeypatch):
    """At least 2 intra-op threads for the test (the old one-thread guard skipped 1), setters spied."""
    n0 = torch.get_num_threads()
    torch.set_num_threads(max(2, n0))
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("set_num_threads", n)))
    monkeypatch.setattr(torch, "set_num_interop_threads", lambda n: calls.append(("set_num_interop_threads", n)))
    yield calls
    monkeypatch.undo()
    torch.set_num_threads(n0)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_op_leaves_thread_settings_alone(name, thread_spy):
    before = torch.get_num_threads()
    CALLS[name]()
    assert thread_spy == [], f"{name} called {thread_spy}"
    assert torch.get_num_threads() == before
