"""``TwoStageHead(rpn, roi_heads)``: a region proposal network and an RoI head behind the head
contract of :class:`~odkit.models.detector.Detector` (``loss``, ``predict_raw``,
``predict_candidates``), so training, validation, prediction, export and ``odkit info`` work
unchanged for two-stage detectors.

- ``loss`` -> ``{loss, loss_rpn_cls, loss_rpn_box, loss_cls, loss_box}`` (plus ``loss_mask`` for
  Mask R-CNN); the RoI head trains on the RPN's proposals (training top-k sizes) plus the gt boxes.
- ``predict_raw`` -> per-class boxes ``[B, P, C, 4]`` and scores ``[B, P, C]`` for a fixed number
  ``P`` of proposals (the RPN's test ``post_nms_top_n``, fewer when the input has fewer anchors);
  rows of invalid proposals and boxes under ``min_size`` score 0. No data-dependent shapes: this is
  what ONNX export runs, with a dynamic batch.
- ``predict_candidates`` -> per image the ``(box, class)`` pairs with score ``> conf`` (at most
  ``pre_topk`` of them, best first; ``<= 0``: all) for the Detector's class-wise NMS; with
  ``proposals`` (per image ``[K, 4]`` xyxy input px) the RPN is skipped: Fast R-CNN on given boxes.
- ``has_masks`` / ``predict_masks`` / ``predict_masks_batched``: the optional mask members of the
  head contract (Mask R-CNN's :class:`~odkit.models.two_stage.mask_head.MaskRoIHead`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from odkit.assign.base import GTBatch
from odkit.errors import ConfigError
from odkit.models.two_stage.roi_head import RoIHead
from odkit.models.two_stage.rpn import RPN


class TwoStageHead(nn.Module):
    """RPN + RoI head with the Detector head contract; see the module docstring."""

    def __init__(self, rpn: RPN, roi_heads: RoIHead) -> None:
        super().__init__()
        self.rpn = rpn
        self.roi_heads = roi_heads

    @property
    def num_classes(self) -> int:
        return self.roi_heads.num_classes

    @property
    def background_slot(self) -> bool:
        return self.roi_heads.background_slot

    @property
    def has_masks(self) -> bool:
        """Whether the RoI head predicts instance masks (Mask R-CNN)."""
        return bool(getattr(self.roi_heads, "has_masks", False))

    def predict_masks(self, feats: Sequence[Tensor], boxes: Sequence[Tensor], labels: Sequence[Tensor]) -> list[Tensor]:
        """Per image mask probabilities ``[K, 1, M, M]`` of detections (``boxes`` ``[K, 4]`` xyxy input
        px, ``labels`` ``[K]``); only for heads with :attr:`has_masks`."""
        if not self.has_masks:
            raise ConfigError(f"{type(self.roi_heads).__name__} predicts no masks")
        return self.roi_heads.predict_masks(feats, boxes, labels)

    def predict_masks_batched(self, feats: Sequence[Tensor], boxes: Tensor, labels: Tensor) -> Tensor:
        """Mask probabilities ``[B, K, M, M]`` of padded detections ``[B, K, 4]`` (fixed shapes, export)."""
        if not self.has_masks:
            raise ConfigError(f"{type(self.roi_heads).__name__} predicts no masks")
        return self.roi_heads.predict_masks_batched(feats, boxes, labels)

    @property
    def half_export(self) -> str | None:
        """``None``: float16 export is supported (proposals and boxes are decoded in float32)."""
        return getattr(self.roi_heads, "half_export", None)

    # ``odkit export --half`` runs the backbone and neck in float16 and this head in float32: the
    # proposals are a discrete choice (top-k, NMS, the post-NMS cut) that float16 objectness reorders
    # (R50 at 320 px with the head in float16: 82 % of the float32 detections reproduced)
    float32_in_half = True

    def enter_phase(self, phase: str) -> None:
        """Training phase hook (nothing changes for two-stage heads)."""

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Not available: two-stage outputs need the input size (``predict_raw(feats, input_hw)``)."""
        raise ConfigError("TwoStageHead has no raw per-level outputs; use predict_raw(feats, input_hw)")

    def loss(self, feats: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]],
             input_hw: tuple[int, int]) -> dict[str, Tensor]:
        """Loss dict; ``loss`` is the sum of the RPN's and the RoI head's terms."""
        gt = GTBatch.from_targets(targets, self.num_classes, feats[0].device, batch_size=feats[0].shape[0],
                                  label_offset=int(self.background_slot))
        proposals, _, valid, losses = self.rpn.propose(feats, input_hw, gt)
        losses = {**losses, **self.roi_heads.loss(feats, proposals, valid, gt, targets)}
        return {"loss": sum(losses.values()), **losses}

    def predict_raw(self, feats: Sequence[Tensor], input_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Per-class boxes ``[B, P, C, 4]`` (xyxy input px) and scores ``[B, P, C]``."""
        dtype = self.roi_heads.box_predictor_dtype()
        feats = [f.to(dtype) for f in feats]  # a float16 trunk before this float32 head (float32_in_half)
        proposals, _, valid, _ = self.rpn.propose(feats, input_hw)
        return self.roi_heads.predict_batched(feats, proposals, valid, input_hw)

    def predict_candidates(
        self, feats: Sequence[Tensor], input_hw: tuple[int, int], conf: float, pre_topk: int,
        proposals: Sequence[Tensor] | None = None,
    ) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per image ``(boxes [K, 4], scores [K], labels [K])`` before class-wise NMS."""
        b = feats[0].shape[0]
        if proposals is None:
            props, _, valid, _ = self.rpn.propose(feats, input_hw)
            per_image = [props[i][valid[i]] for i in range(b)]
        else:
            if len(proposals) != b:
                raise ConfigError(f"predict: {len(proposals)} proposal sets for a batch of {b} images")
            per_image = [torch.as_tensor(p, dtype=torch.float32, device=feats[0].device).reshape(-1, 4)
                         for p in proposals]
        rois = torch.cat([torch.cat((torch.full_like(p[:, :1], i), p), 1) for i, p in enumerate(per_image)])
        boxes, scores = self.roi_heads.predict_rois(feats, rois, input_hw)
        results, start = [], 0
        c = scores.shape[1]  # labels (num_labels columns)
        for p in per_image:
            bx, sc = boxes[start:start + len(p)], scores[start:start + len(p)]
            start += len(p)
            ok = (sc > conf) & self.roi_heads.big_enough(bx)
            idx = ok.reshape(-1).nonzero().squeeze(1)
            vals = sc.reshape(-1)[idx]
            if 0 < pre_topk < vals.numel():
                vals, order = vals.topk(pre_topk)
                idx = idx[order]
            results.append((bx.reshape(-1, 4)[idx], vals, idx % c))
        return results
