"""Region proposal network (Faster R-CNN, with FPN): a dense head (one class, objectness) with
anchors, max-IoU assignment with balanced sampling for the loss, and proposals as a fixed-size tensor
with a validity mask (no data-dependent shapes, so the detector exports to ONNX).

``RPN`` is a :class:`~odkit.models.heads.base.DenseHead`: its priors (anchors, torchvision's stride
rule ``input // feature``), flattening, prior cache and assignment call are the dense base's, so any
assigner that works on anchors can be swapped in (``assigner=``), and an RPN alone is a
class-agnostic detector (``Detector(backbone, neck, rpn)``). Gts are matched class-agnostically.

Proposals per image (torchvision's ``RegionProposalNetwork`` semantics): on every level the
``pre_nms_top_n`` anchors of highest objectness (logits), decoded (weights 1, ``dw, dh`` clamped at
``log(1000 / 16)``) and clipped to the input; a candidate takes part when its width and height are
``>= min_size`` and ``sigmoid(objectness) >= score_thr``; greedy NMS at ``nms_thr`` within each
level; then the ``post_nms_top_n`` best kept candidates over all levels by objectness. Output rows
past the kept count are invalid (``valid`` False, boxes all zero). Top-k sizes are per image, ``(train, test)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from odkit.assign.base import Assigner, GTBatch, Priors
from odkit.assign.max_iou import MaxIoUAssigner
from odkit.errors import ConfigError
from odkit.models.heads.base import DenseHead, Flat
from odkit.models.two_stage.sampler import BalancedSampler
from odkit.ops.coders import DeltaXYWHCoder
from odkit.ops.nms_fixed import sorted_nms_keep
from odkit.ops.priors import AnchorGenerator

BOX_CLIP = math.log(1000.0 / 16)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


class RPNHead(nn.Module):
    """Shared 3x3 conv + ReLU, then 1x1 convs for ``A`` objectness logits and ``4 A`` deltas per
    location (torchvision's names: ``conv.0.0``, ``cls_logits``, ``bbox_pred``)."""

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1) -> None:
        super().__init__()
        self.conv = nn.Sequential(*(
            nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True))
            for _ in range(conv_depth)))
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level ``[B, A, H, W]`` logits and ``[B, 4 A, H, W]`` deltas."""
        logits, deltas = [], []
        for f in feats:
            t = self.conv(f)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


class RPN(DenseHead):
    """Region proposal network; see the module docstring.

    Args:
        in_channels: channels of every input level.
        anchor_generator: anchors per level (torchvision's stride rule ``input // feature`` is used).
        pre_nms_top_n, post_nms_top_n: per image, ``(train, test)`` or one value for both.
        nms_thr, score_thr, min_size: proposal NMS IoU, objectness probability floor, side floor (px).
        pos_iou_thr, neg_iou_thr: max-IoU assignment (low-quality matches allowed).
        num_samples, pos_fraction: anchors sampled per image for the loss, positive share.
        assigner: another assigner instead of max-IoU (checked as for every dense head).
    """

    LOSS_NORMS = ("batch",)  # torchvision: sums over the batch's sampled anchors

    def __init__(
        self,
        in_channels: int,
        anchor_generator: AnchorGenerator,
        pre_nms_top_n: int | Sequence[int] = (2000, 1000),
        post_nms_top_n: int | Sequence[int] = (2000, 1000),
        nms_thr: float = 0.7,
        score_thr: float = 0.0,
        min_size: float = 1e-3,
        pos_iou_thr: float = 0.7,
        neg_iou_thr: float = 0.3,
        num_samples: int = 256,
        pos_fraction: float = 0.5,
        assigner: Assigner | None = None,
    ) -> None:
        counts = set(anchor_generator.num_anchors_per_location())
        if len(counts) != 1:
            raise ConfigError(f"RPN: every level needs the same number of anchors per location, got {counts}")
        super().__init__(1, anchor_generator.strides, anchor_generator, stride_from_input=True)
        self.output_channels = (1, 4)
        self.head = RPNHead(in_channels, counts.pop())
        self.pre_nms_top_n = _pair(pre_nms_top_n)
        self.post_nms_top_n = _pair(post_nms_top_n)
        self.nms_thr = float(nms_thr)
        self.score_thr = float(score_thr)
        self.min_size = float(min_size)
        self.coder = DeltaXYWHCoder(clip=BOX_CLIP)
        self.assigner = assigner if assigner is not None else MaxIoUAssigner(
            pos_iou_thr, neg_iou_thr, allow_low_quality_matches=True)
        self.sampler = BalancedSampler(num_samples, pos_fraction)

    @property
    def anchor_generator(self) -> AnchorGenerator:
        return self.prior_generator

    def forward(self, feats: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Per level ``(logits [B, A, H, W], deltas [B, 4 A, H, W])``."""
        return list(zip(*self.head(feats)))

    def scores_of(self, flat: Flat) -> Tensor:
        return torch.sigmoid(flat[0])

    def boxes_of(self, flat: Flat, priors: Priors) -> Tensor:
        return self.coder.decode(priors.anchors, flat[1])

    def loss(self, feats: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]],
             input_hw: tuple[int, int]) -> dict[str, Tensor]:
        """Loss dict of the RPN alone (gts class-agnostic: every label counts as object)."""
        objects = [{**t, "labels": torch.zeros_like(torch.as_tensor(t["labels"]).reshape(-1))} for t in targets]
        return super().loss(feats, objects, input_hw)

    def propose(self, feats: Sequence[Tensor], input_hw: tuple[int, int],
                gt: GTBatch | None = None) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Proposals ``[B, P, 4]`` (xyxy input px), their objectness ``[B, P]`` and validity ``[B, P]``;
        with ``gt`` also the losses ``loss_rpn_cls``, ``loss_rpn_box``."""
        outs = self(feats)
        obj, dts = self.flatten(outs)
        priors = self.get_priors(self.level_sizes(outs), input_hw, obj.device)
        losses = {}
        if gt is not None:
            losses = self.loss_by_flat((obj.float(), dts.float()), priors, agnostic(gt), input_hw)
            losses.pop("loss")
        k = 0 if self.training else 1
        boxes, scores, valid = self.proposals(obj[..., 0].detach().float(), dts.detach().float(), priors, input_hw,
                                              self.pre_nms_top_n[k], self.post_nms_top_n[k])
        return boxes, scores, valid, losses

    def proposals(self, obj: Tensor, deltas: Tensor, priors: Priors, input_hw: tuple[int, int],
                  pre_nms_top_n: int, post_nms_top_n: int) -> tuple[Tensor, Tensor, Tensor]:
        """Fixed-size proposals from flat objectness ``[B, N]`` and deltas ``[B, N, 4]``."""
        h, w = input_hw
        start = 0
        boxes, probs, keeps, oks = [], [], [], []
        for n in priors.num_per_level:
            top, idx = obj[:, start:start + n].topk(min(pre_nms_top_n, n), dim=1)  # sorted, descending
            idx = idx + start
            d = deltas.gather(1, idx[..., None].expand(-1, -1, 4))
            bx = self.coder.decode(priors.anchors[idx], d)
            bx = torch.stack((bx[..., 0].clamp(0, w), bx[..., 1].clamp(0, h),
                              bx[..., 2].clamp(0, w), bx[..., 3].clamp(0, h)), dim=-1)
            prob = top.sigmoid()
            ok = ((bx[..., 2] - bx[..., 0]) >= self.min_size) & ((bx[..., 3] - bx[..., 1]) >= self.min_size)
            ok = ok & (prob >= self.score_thr)
            keeps.append(sorted_nms_keep(bx, ok, self.nms_thr))
            oks.append(ok)
            boxes.append(bx)
            probs.append(prob)
            start += n
        bx, prob, keep = torch.cat(boxes, 1), torch.cat(probs, 1), torch.cat(keeps, 1)
        k = min(post_nms_top_n, prob.shape[1])
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling():
            ranked = torch.where(keep, prob, torch.full_like(prob, -1.0))
            vals, order = ranked.topk(k, dim=1)
        else:
            vals, order = rank_kept(prob, keep, torch.cat(oks, 1), k)
        valid = vals >= 0
        out = bx.gather(1, order[..., None].expand(-1, -1, 4)) * valid[..., None].to(bx.dtype)  # padding: zeros
        return out, vals.clamp(min=0), valid

    def loss_by_flat(self, flat: Flat, priors: Priors, gt: GTBatch, input_hw: tuple[int, int]) -> dict[str, Tensor]:
        """Objectness BCE over the sampled anchors and smooth L1 (beta 1/9) on the positives' deltas,
        both summed and divided by the number of sampled anchors of the batch (torchvision)."""
        obj, deltas = flat[0][..., 0], flat[1]
        assign = self.assign(flat, priors, gt)
        pos, neg = self.sampler.sample(assign.gt_inds)
        sampled = pos | neg
        n = sampled.sum().clamp(min=1).float()
        loss_cls = F.binary_cross_entropy_with_logits(obj[sampled], pos[sampled].float(), reduction="sum") / n
        b_idx, a_idx = pos.nonzero(as_tuple=True)
        if b_idx.numel():
            target = self.coder.encode(priors.anchors[a_idx], gt.boxes[b_idx, assign.gt_inds[b_idx, a_idx]])
            loss_box = F.smooth_l1_loss(deltas[b_idx, a_idx], target, beta=1.0 / 9, reduction="sum") / n
        else:
            loss_box = deltas.sum() * 0.0
        return {"loss": loss_cls + loss_box, "loss_rpn_cls": loss_cls, "loss_rpn_box": loss_box}


def rank_kept(prob: Tensor, keep: Tensor, ok: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per image, the ``k`` best kept candidates ``(scores, indices)`` ``[B, k]`` (score -1 past the
    kept count) in the order torchvision's ``batched_nms`` returns them, exact ties included: with
    more than 1000 candidates in NMS (4000 coordinates on the CPU, 100,000 on a GPU) it sorts the
    kept scores, in candidate order, with the default (unstable) sort; otherwise its NMS kernel's
    stable descending sort orders them. Tie order decides which proposals a seeded sampler draws."""
    vals = prob.new_full((prob.shape[0], k), -1.0)
    order = torch.zeros((prob.shape[0], k), dtype=torch.long, device=prob.device)
    limit = 4000 if prob.device.type == "cpu" else 100_000
    for b in range(prob.shape[0]):
        kept = keep[b].nonzero().squeeze(1)
        if 4 * int(ok[b].sum()) > limit:
            rank = prob[b, kept].sort(descending=True)[1]
        else:
            rank = prob[b, kept].sort(descending=True, stable=True)[1]
        n = min(k, int(rank.numel()))
        order[b, :n] = kept[rank[:n]]
        vals[b, :n] = prob[b, order[b, :n]]
    return vals, order


def agnostic(gt: GTBatch) -> GTBatch:
    """The same gts with every label 0 (the RPN's one class, objectness)."""
    return GTBatch(gt.boxes, torch.zeros_like(gt.labels), gt.valid, gt.crowd)
