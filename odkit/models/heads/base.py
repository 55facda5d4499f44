"""``DenseHead``: the base of one-stage heads (YOLOX, RetinaNet, FCOS, ATSS, GFL, ...).

The contract with :class:`~odkit.models.detector.Detector`:

- ``loss(feats, targets, input_hw) -> dict`` (``loss`` is the total);
- ``predict_raw(feats, input_hw) -> (boxes [B, N, 4], scores [B, N, C])``: every prior decoded, no
  data-dependent control flow (what ONNX export runs);
- ``predict_candidates(feats, input_hw, conf, pre_topk)``: per image, per level, keep
  ``(prior, class)`` pairs with score ``> conf``, the best ``pre_topk`` of them, decode only those;
  the Detector then runs one class-wise NMS over the levels.

A subclass declares ``output_channels`` (channels per prior of each output map, e.g. ``(C, 4)`` for
class logits and box deltas), builds its layers, and writes four methods: ``forward`` (per level a
tuple of ``[B, k * c_i, H, W]`` maps, ``k`` priors per location), ``scores_of`` (probabilities
``[..., C]`` of flat outputs), ``boxes_of`` (xyxy input-pixel boxes of flat outputs and their priors)
and ``loss_by_flat`` (loss terms of the outputs of all levels concatenated), which gets its
assignment from the one :meth:`DenseHead.assign` call.

Assignment: ``self.assigner`` is checked when it is set (``odkit.assign.check_assigner``: an
assigner that matches anchor boxes on an anchor-free head is a ``ConfigError`` at build time);
:meth:`DenseHead.assign` hands the detached decoded boxes and scores to the assigners that declare
``needs_predictions`` and nothing to the others.

Loss normalisation (``loss_norm``): ``"batch"`` divides each term's sum by the batch's positives
(MMDetection's rule, averaged over processes), ``"image"`` divides each image's sum by its own
positives and averages over the images (torchvision's RetinaNet); see :class:`LossNorm`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from odkit.assign.base import Assigner, GTBatch, Priors
from odkit.assign.registry import check_assigner
from odkit.assign.result import IGNORE, AssignResult
from odkit.errors import ConfigError
from odkit.ops.priors import AnchorGenerator, grid_points

Flat = tuple[Tensor, ...]


class DenseHead(nn.Module):
    """Base of dense heads; see the module docstring.

    Args:
        num_classes: number of object classes ``C`` (no background class).
        strides: stride in pixels of each input level.
        prior_generator: anchors per location (anchor-based heads), or ``None`` (one point per cell).
        point_offset: anchor-free points at ``(j + point_offset) * stride`` (0.5: cell centres).
        stride_from_input: level strides are ``input_size // feature_size`` per side (torchvision's
            rule; it differs from the nominal stride on P6/P7 when the input is not a multiple of 128).
        clip_before_nms: clip decoded candidate boxes to the input before NMS.
        loss_norm: ``"batch"`` or ``"image"`` (see the module docstring); heads whose reference
            normalises otherwise set ``LOSS_NORMS`` to what they support.
    """

    output_channels: tuple[int, ...] = ()
    background_slot: bool = False  # every class slot is an object class
    half_export: str | None = None  # float16 export supported (decoding runs in float32)
    LOSS_NORMS: tuple[str, ...] = ("batch", "image")

    def __init__(
        self,
        num_classes: int,
        strides: Sequence[int],
        prior_generator: AnchorGenerator | None = None,
        point_offset: float = 0.5,
        stride_from_input: bool = False,
        clip_before_nms: bool = True,
        loss_norm: str = "batch",
    ) -> None:
        super().__init__()
        if loss_norm not in self.LOSS_NORMS:
            raise ConfigError(f"{type(self).__name__}: loss_norm must be one of {self.LOSS_NORMS}, got {loss_norm!r}")
        self.loss_norm = loss_norm
        self.num_classes = int(num_classes)
        self.strides = [int(s) for s in strides]
        self.prior_generator = prior_generator
        self.point_offset = float(point_offset)
        self.stride_from_input = bool(stride_from_input)
        self.clip_before_nms = bool(clip_before_nms)
        self._prior_cache: dict[Any, Priors] = {}
        if prior_generator is not None and prior_generator.num_levels != len(self.strides):
            raise ValueError(f"{type(self).__name__}: anchor generator has {prior_generator.num_levels} levels, "
                             f"head has {len(self.strides)} strides")

    @property
    def assigner(self) -> Assigner:
        """The label assigner (checked against the head's priors when set)."""
        return self._assigner

    @assigner.setter
    def assigner(self, value: Assigner) -> None:
        self._assigner = check_assigner(value, type(self).__name__, self.prior_generator is not None,
                                        len(self.strides))

    @property
    def num_anchors(self) -> int:
        """Priors per feature-map location (1 for anchor-free heads)."""
        if self.prior_generator is None:
            return 1
        return int(self.prior_generator.num_anchors_per_location()[0])

    # ----------------------------------------------------------------------------- priors

    def get_priors(self, level_sizes: Sequence[tuple[int, int]], input_hw: tuple[int, int],
                   device: torch.device) -> Priors:
        """Priors of all levels for feature maps of ``level_sizes`` (cached per sizes and device)."""
        key = (tuple(level_sizes), tuple(input_hw), str(device))
        cached = self._prior_cache.get(key)
        if cached is not None:
            return cached
        if self.stride_from_input:
            lvl_strides = [(input_hw[0] // h, input_hw[1] // w) for h, w in level_sizes]
        else:
            lvl_strides = [(s, s) for s in self.strides]
        k = self.num_anchors
        anchors = None
        if self.prior_generator is not None:
            anchors = torch.cat(self.prior_generator.grid_anchors(level_sizes, device, strides=lvl_strides))
        points, strides, nominal, levels, grids, counts = [], [], [], [], [], []
        for lvl, ((h, w), st) in enumerate(zip(level_sizes, lvl_strides)):
            offset = self.prior_generator.offset if self.prior_generator is not None else self.point_offset
            pts = grid_points((h, w), st, offset, device=device)
            cells = grid_points((h, w), 1.0, 0.0, device=device)
            n = h * w * k
            points.append(pts.repeat_interleave(k, 0))
            grids.append(cells.repeat_interleave(k, 0))
            strides.append(torch.full((n,), float(st[0]), device=device))
            nominal.append(torch.full((n,), float(self.strides[lvl]), device=device))
            levels.append(torch.full((n,), lvl, dtype=torch.long, device=device))
            counts.append(n)
        priors = Priors(torch.cat(points), torch.cat(strides), torch.cat(levels), counts, torch.cat(grids), anchors,
                        torch.cat(nominal) if self.stride_from_input else None)
        if not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export():
            if len(self._prior_cache) > 16:
                self._prior_cache.clear()
            self._prior_cache[key] = priors
        return priors

    # ----------------------------------------------------------------------------- layout

    def flatten_level(self, outs: Sequence[Tensor]) -> Flat:
        """One level's maps ``[B, k * c_i, H, W]`` -> flat ``[B, H * W * k, c_i]`` (prior order)."""
        k = self.num_anchors
        flat = []
        for t, c in zip(outs, self.output_channels):
            b, _, h, w = t.shape
            flat.append(t.view(b, k, c, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * k, c))
        return tuple(flat)

    def flatten(self, outs: Sequence[Sequence[Tensor]]) -> Flat:
        """All levels' outputs -> flat tensors ``[B, A, c_i]`` concatenated over levels."""
        per_level = [self.flatten_level(o) for o in outs]
        return tuple(torch.cat(parts, 1) for parts in zip(*per_level))

    @staticmethod
    def level_sizes(outs: Sequence[Sequence[Tensor]]) -> list[tuple[int, int]]:
        return [(int(o[0].shape[-2]), int(o[0].shape[-1])) for o in outs]

    # ----------------------------------------------------------------------------- subclass hooks

    def scores_of(self, flat: Flat) -> Tensor:
        """Class probabilities ``[..., C]`` of flat outputs ``[..., c_i]``."""
        raise NotImplementedError

    def boxes_of(self, flat: Flat, priors: Priors) -> Tensor:
        """Decoded xyxy boxes ``[..., 4]`` (input pixels) of flat outputs and their priors."""
        raise NotImplementedError

    def loss_by_flat(self, flat: Flat, priors: Priors, gt: GTBatch, input_hw: tuple[int, int]) -> dict[str, Tensor]:
        """Loss dict of flat outputs ``[B, A, c_i]`` (all levels) against a padded gt batch."""
        raise NotImplementedError

    def enter_phase(self, phase: str) -> None:
        """Training phase hook (e.g. ``"no_aug"`` for the last epochs without strong augmentation)."""

    def assign_scores_of(self, flat: Flat) -> Tensor:
        """Scores ``[B, A, C]`` handed to prediction-aware assigners (default: :meth:`scores_of`)."""
        return self.scores_of(flat)

    def assign(self, flat: Flat, priors: Priors, gt: GTBatch, pred_boxes: Tensor | None = None) -> AssignResult:
        """The one assignment call of a dense head: ``self.assigner`` on the priors and gts, with the
        detached decoded boxes ``[B, A, 4]`` and scores ``[B, A, C]`` when the assigner
        ``needs_predictions`` (``pred_boxes`` may be passed when the loss decoded them already)."""
        boxes = scores = None
        if self.assigner.needs_predictions:
            with torch.no_grad():
                detached = tuple(t.detach() for t in flat)
                boxes = self.boxes_of(detached, priors) if pred_boxes is None else pred_boxes.detach()
                scores = self.assign_scores_of(detached)
        return self.assigner.assign(priors, gt, boxes, scores)

    def loss_normalizer(self, assign: AssignResult) -> LossNorm:
        """The :class:`LossNorm` of this head's ``loss_norm`` for one batch's assignment."""
        return LossNorm(assign, self.loss_norm)

    # ----------------------------------------------------------------------------- contract

    def loss(self, feats: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]],
             input_hw: tuple[int, int]) -> dict[str, Tensor]:
        """Loss dict of features against ``targets`` (xyxy boxes in input pixels)."""
        outs = self(feats)
        flat = tuple(t.float() for t in self.flatten(outs))
        priors = self.get_priors(self.level_sizes(outs), input_hw, flat[0].device)
        gt = GTBatch.from_targets(targets, self.num_classes, flat[0].device, batch_size=flat[0].shape[0])
        return self.loss_by_flat(flat, priors, gt, input_hw)

    def decode_outputs(self, outs: Sequence[Sequence[Tensor]], input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Raw per-level outputs -> boxes ``[B, A, 4]`` and scores ``[B, A, C]`` of every prior,
        decoded in float32 (a float16 network's outputs are cast first)."""
        flat = tuple(t.float() for t in self.flatten(outs))
        priors = self.get_priors(self.level_sizes(outs), input_hw, flat[0].device)
        return self.boxes_of(flat, priors), self.scores_of(flat)

    def predict_raw(self, feats: Sequence[Tensor], input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Boxes ``[B, A, 4]`` xyxy (input pixels; clipped to the input when ``clip_before_nms``, as
        :meth:`predict_candidates` clips them, so in-graph NMS sees the same boxes) and scores
        ``[B, A, C]`` of every prior."""
        boxes, scores = self.decode_outputs(self(feats), input_hw)
        if self.clip_before_nms:
            h, w = input_hw
            boxes = torch.stack((boxes[..., 0].clamp(0, w), boxes[..., 1].clamp(0, h),
                                 boxes[..., 2].clamp(0, w), boxes[..., 3].clamp(0, h)), dim=-1)
        return boxes, scores

    def predict_candidates(
        self, feats: Sequence[Tensor], input_hw: tuple[int, int], conf: float, pre_topk: int
    ) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per image ``(boxes [K, 4], scores [K], labels [K])``: filter, then decode, level by level."""
        outs = self(feats)
        sizes = self.level_sizes(outs)
        priors = self.get_priors(sizes, input_hw, outs[0][0].device)
        levels = [(self.flatten_level(o), priors.level(i)) for i, o in enumerate(outs)]
        level_scores = [self.scores_of(flat) for flat, _ in levels]
        results = []
        for b in range(outs[0][0].shape[0]):
            boxes, scores, labels = [], [], []
            for (flat, pri), sc in zip(levels, level_scores):
                s = sc[b].reshape(-1)
                idx = (s > conf).nonzero().squeeze(1)
                vals = s[idx]
                k = min(pre_topk, vals.numel()) if pre_topk > 0 else vals.numel()
                vals, order = vals.topk(k)
                idx = idx[order]
                prior_idx = torch.div(idx, self.num_classes, rounding_mode="floor")
                box = self.boxes_of(tuple(t[b, prior_idx] for t in flat), pri.take(prior_idx))
                boxes.append(box)
                scores.append(vals)
                labels.append(idx % self.num_classes)
            box = torch.cat(boxes).float()
            if self.clip_before_nms:
                h, w = input_hw
                box = torch.stack((box[:, 0].clamp(0, w), box[:, 1].clamp(0, h),
                                   box[:, 2].clamp(0, w), box[:, 3].clamp(0, h)), dim=1)
            results.append((box, torch.cat(scores).float(), torch.cat(labels)))
        return results


class LossNorm:
    """How a loss term's sum is normalised over a batch.

    ``mode="batch"``: ``sum / P`` with ``P`` the batch's positives (at least 1, averaged over
    processes). ``mode="image"``: ``mean_i (sum_i / max(1, P_i))``, each image's sum divided by its
    own positives, then the mean over the ``B`` images (torchvision's RetinaNet)."""

    def __init__(self, assign: AssignResult, mode: str = "batch") -> None:
        from odkit.losses import reduce_num_pos

        pos = assign.gt_inds >= 0
        self.mode = mode
        self.batch = int(pos.shape[0])
        self.num_pos = reduce_num_pos(pos.sum().float())
        self.per_image = pos.sum(1).clamp(min=1).float()

    def __call__(self, values: Tensor, b_idx: Tensor) -> Tensor:
        """Normalised sum of per-element losses ``values [N, ...]`` belonging to images ``b_idx [N]``."""
        if self.mode == "batch":
            return values.sum() / self.num_pos
        flat = values.reshape(values.shape[0], -1)
        # one plain sum per image (as torchvision sums each image's loss), not a running index_add
        per = torch.stack([flat[b_idx == i].sum() for i in range(self.batch)])
        return (per / self.per_image.to(per.dtype)).sum() / self.batch


def positives(assign: AssignResult) -> tuple[Tensor, Tensor, Tensor]:
    """``(b_idx, a_idx)`` of the foreground priors of a batched result and the number of positives
    for normalisation (clamped at 1, averaged over processes)."""
    from odkit.losses import reduce_num_pos

    pos = assign.gt_inds >= 0
    b_idx, a_idx = pos.nonzero(as_tuple=True)
    return b_idx, a_idx, reduce_num_pos(pos.sum().float())


def cell_targets(assign: AssignResult, gt: GTBatch, priors: Priors) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Grid-cell regression targets of the foreground priors (YOLO heads): ``(b_idx, a_idx)``, their
    matched gt boxes xyxy ``[P, 4]`` (input pixels), strides ``[P, 1]`` and the gt centre's offset
    inside its cell ``[P, 2]`` in cell units (0-1 when the centre lies in the prior's cell)."""
    b_idx, a_idx, _ = positives(assign)
    matched = gt.matched_boxes(assign)[b_idx, a_idx]
    stride = priors.strides[a_idx, None]
    t_xy = (matched[:, :2] + matched[:, 2:]) * 0.5 / stride - priors.grid[a_idx]
    return b_idx, a_idx, matched, stride, t_xy


def log_wh_targets(matched: Tensor, priors: Priors, a_idx: Tensor) -> tuple[Tensor, Tensor]:
    """gt widths and heights ``[P, 2]`` (pixels, at least 1e-6) and their log ratio to the anchors of
    priors ``a_idx`` (YOLOv2 / v3 ``t_w, t_h`` targets)."""
    gt_wh = (matched[:, 2:] - matched[:, :2]).clamp(min=1e-6)
    anchor_wh = priors.anchors[a_idx, 2:] - priors.anchors[a_idx, :2]
    return gt_wh, torch.log(gt_wh / anchor_wh)


def focal_class_loss(cls: Tensor, assign: AssignResult, num_pos: Tensor | LossNorm, alpha: float = 0.25,
                     gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss of class logits ``[B, A, C]`` against one-hot targets of the foreground
    priors (background: all zeros), summed over non-ignored priors and divided by ``num_pos`` (a
    count, or a :class:`LossNorm` for per-image normalisation)."""
    from odkit.losses import sigmoid_focal_loss

    pos = assign.gt_inds >= 0
    target = torch.zeros_like(cls)
    b_idx, a_idx = pos.nonzero(as_tuple=True)
    target[b_idx, a_idx, assign.labels[b_idx, a_idx]] = 1.0
    valid = assign.gt_inds != IGNORE
    if isinstance(num_pos, LossNorm) and num_pos.mode == "image":
        vb = valid.nonzero(as_tuple=True)[0]
        return num_pos(sigmoid_focal_loss(cls[valid], target[valid], alpha, gamma, "none"), vb)
    n = num_pos.num_pos if isinstance(num_pos, LossNorm) else num_pos
    return sigmoid_focal_loss(cls[valid], target[valid], alpha, gamma, "sum") / n


def init_prior_bias(conv: nn.Conv2d, prior_prob: float = 0.01) -> None:
    """Set a class-logit conv's bias so that initial probabilities are ``prior_prob``."""
    import math

    nn.init.constant_(conv.bias, -math.log((1.0 - prior_prob) / prior_prob))
