"""Two-stage building blocks: the balanced sampler (exact counts), the RPN (proposal cap, NMS equal
to a loop over odkit.ops.batched_nms, images without gt, crowd boxes), the fixed-shape NMS and the
export-friendly RoIAlign against odkit.ops.roi_align."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from odkit.assign.base import GTBatch
from odkit.assign.result import IGNORE, NEGATIVE
from odkit.errors import ConfigError
from odkit.models.two_stage import RPN, BalancedSampler
from odkit.ops import batched_nms, nms, roi_align
from odkit.ops.nms_fixed import sorted_nms_keep
from odkit.ops.priors import AnchorGenerator
from odkit.ops.roi_grid import batched_roi_align


@settings(max_examples=40, deadline=None)
@given(n_pos=st.integers(0, 300), n_neg=st.integers(0, 600), n_ign=st.integers(0, 50),
       num=st.integers(1, 512), frac=st.sampled_from([0.25, 0.5, 1.0]), seed=st.integers(0, 1000))
def test_sampler_exact_counts(n_pos: int, n_neg: int, n_ign: int, num: int, frac: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    gt_inds = torch.cat([torch.randint(0, 5, (n_pos,), generator=g), torch.full((n_neg,), NEGATIVE),
                         torch.full((n_ign,), IGNORE)])
    gt_inds = gt_inds[torch.randperm(gt_inds.numel(), generator=g)][None]
    pos, neg = BalancedSampler(num, frac).sample(gt_inds, generator=g)
    want_pos = min(n_pos, int(num * frac))
    assert int(pos.sum()) == want_pos
    assert int(neg.sum()) == min(n_neg, num - want_pos)
    assert bool((gt_inds[pos] >= 0).all()) and bool((gt_inds[neg] == NEGATIVE).all())
    assert not bool((pos & neg).any())


def test_sampler_hand_worked_and_valid_mask() -> None:
    # 3 positives, 5 negatives, 2 ignored; 4 samples at 50 %: 2 positives, 2 negatives
    gt_inds = torch.tensor([[0, 1, 2, -1, -1, -1, -1, -1, -2, -2]])
    pos, neg = BalancedSampler(4, 0.5).sample(gt_inds)
    assert int(pos.sum()) == 2 and int(neg.sum()) == 2
    # only 1 positive: the negatives fill the rest (3)
    pos, neg = BalancedSampler(4, 0.5).sample(torch.tensor([[0, -1, -1, -1, -1]]))
    assert int(pos.sum()) == 1 and int(neg.sum()) == 3
    # rows outside ``valid`` are never drawn
    valid = torch.tensor([[True, False, True, False, True]])
    pos, neg = BalancedSampler(10, 0.5).sample(torch.tensor([[0, 1, -1, -1, -1]]), valid)
    assert pos.tolist() == [[True, False, False, False, False]]
    assert neg.tolist() == [[False, False, True, False, True]]
    with pytest.raises(ConfigError):
        BalancedSampler(0)


def _rpn(**kw) -> RPN:
    torch.manual_seed(0)
    anchors = AnchorGenerator([[32.0], [64.0]], (0.5, 1.0, 2.0), [8, 16], round_base=True)
    rpn = RPN(8, anchors, **kw)
    with torch.no_grad():  # spread objectness and deltas
        rpn.head.cls_logits.weight.normal_(0, 1.0)
        rpn.head.bbox_pred.weight.normal_(0, 0.3)
    return rpn


def _reference_proposals(rpn: RPN, feats, input_hw, pre: int, post: int) -> list[torch.Tensor]:
    """Per image: per level top-k, decode, clip, small / score filter, NMS per level, top post (loops)."""
    outs = rpn(feats)
    obj, dts = rpn.flatten(outs)
    obj = obj[..., 0]
    pri = rpn.get_priors(rpn.level_sizes(outs), input_hw, obj.device)
    out = []
    for b in range(obj.shape[0]):
        boxes, scores, lvls, start = [], [], [], 0
        for lvl, n in enumerate(pri.num_per_level):
            s, i = obj[b, start:start + n].topk(min(pre, n))
            bx = rpn.coder.decode(pri.anchors[start + i], dts[b, start + i])
            bx[:, 0::2] = bx[:, 0::2].clamp(0, input_hw[1])
            bx[:, 1::2] = bx[:, 1::2].clamp(0, input_hw[0])
            p = s.sigmoid()
            ok = ((bx[:, 2] - bx[:, 0]) >= rpn.min_size) & ((bx[:, 3] - bx[:, 1]) >= rpn.min_size)
            ok &= p >= rpn.score_thr
            boxes.append(bx[ok])
            scores.append(p[ok])
            lvls.append(torch.full((int(ok.sum()),), lvl))
            start += n
        bx, sc, lv = torch.cat(boxes), torch.cat(scores), torch.cat(lvls)
        keep = batched_nms(bx, sc, lv, rpn.nms_thr)[:post]
        out.append(bx[keep])
    return out


@pytest.mark.parametrize(("pre", "post", "score_thr"), [(50, 40, 0.0), (200, 1000, 0.3), (10, 5, 0.0)])
def test_rpn_proposals_equal_reference_and_respect_the_cap(pre: int, post: int, score_thr: float) -> None:
    rpn = _rpn(pre_nms_top_n=pre, post_nms_top_n=post, score_thr=score_thr).eval()
    feats = [torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(1)),
             torch.randn(2, 8, 8, 8, generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        boxes, scores, valid, losses = rpn.propose(feats, (128, 128))
        ref = _reference_proposals(rpn, feats, (128, 128), pre, post)
    assert losses == {}
    assert boxes.shape[1] <= post and valid.shape == boxes.shape[:2]
    for b in range(2):
        got = boxes[b][valid[b]]
        assert len(got) <= post
        assert torch.equal(got, ref[b])  # same boxes, same (score) order
        assert bool((scores[b][valid[b]][:-1] >= scores[b][valid[b]][1:]).all())


def test_rpn_image_without_gt_trains_on_negatives_and_crowd_is_ignored() -> None:
    rpn = _rpn(num_samples=64, pos_fraction=0.5).train()
    feats = [torch.randn(2, 8, 16, 16), torch.randn(2, 8, 8, 8)]
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
               {"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "labels": torch.tensor([0]),
                "iscrowd": torch.tensor([1])}]
    gt = GTBatch.from_targets(targets, 1)
    pri = rpn.get_priors([(16, 16), (8, 8)], (128, 128), torch.device("cpu"))
    assign = rpn.assigner.assign(pri, gt)
    pos, neg = rpn.sampler.sample(assign.gt_inds)
    assert int(pos.sum()) == 0 and int(neg[0].sum()) == 64 and int(neg[1].sum()) == 64
    inside = _iof(pri.anchors, torch.tensor([10.0, 10.0, 60.0, 60.0])) >= 0.5
    assert bool(inside.any()) and not bool((neg[1] & inside).any())  # crowd region never sampled
    boxes, _, valid, losses = rpn.propose(feats, (128, 128), gt)
    assert float(losses["loss_rpn_box"].detach()) == 0.0 and math.isfinite(float(losses["loss_rpn_cls"].detach()))
    losses["loss_rpn_cls"].backward()
    assert rpn.head.cls_logits.weight.grad is not None
    assert boxes.shape[1] <= rpn.post_nms_top_n[0]


def _iof(anchors: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    iw = (torch.minimum(anchors[:, 2], box[2]) - torch.maximum(anchors[:, 0], box[0])).clamp(min=0)
    ih = (torch.minimum(anchors[:, 3], box[3]) - torch.maximum(anchors[:, 1], box[1])).clamp(min=0)
    return iw * ih / ((anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1]))


def _random_boxes(g: torch.Generator, n: int, size: float) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 3 + 1
    return torch.cat([xy, xy + wh], 1)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), thr=st.sampled_from([0.3, 0.5, 0.7]), seed=st.integers(0, 10_000))
def test_fixed_shape_nms_equals_greedy_nms(n: int, thr: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    boxes = _random_boxes(g, n, 50.0)
    scores = torch.rand(n, generator=g)
    order = scores.argsort(descending=True)
    valid = torch.rand(n, generator=g) > 0.2
    keep = sorted_nms_keep(boxes[order][None], valid[order][None], thr)[0]
    sel = order[valid[order]]
    ref = sel[nms(boxes[sel], scores[sel], thr)]
    assert set(order[keep].tolist()) == set(ref.tolist())


@pytest.mark.parametrize("aligned", [True, False])
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.sampled_from([0.25, 0.125]))
def test_batched_roi_align_equals_ops_roi_align(aligned: bool, seed: int, scale: float) -> None:
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 3, 9, 11, generator=g)
    boxes = _random_boxes(g, 10, 60.0).view(2, 5, 4) - 8  # some boxes reach outside the map
    got = batched_roi_align(feats, boxes, (7, 7), scale, 2, aligned)
    rois = torch.cat([torch.arange(2).repeat_interleave(5)[:, None].float(), boxes.reshape(-1, 4)], 1)
    ref = roi_align(feats, rois, (7, 7), scale, 2, aligned)
    torch.testing.assert_close(got.reshape(10, 3, 7, 7), ref, atol=1e-5, rtol=1e-5)
