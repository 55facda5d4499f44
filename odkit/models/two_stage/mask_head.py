"""Mask R-CNN's mask branch (He et al. 2017; torchvision's ``MaskRCNNHeads`` / ``MaskRCNNPredictor``
and the mask part of its ``RoIHeads``) on top of the Fast R-CNN box head.

- Pooling: multi-level RoIAlign ``mask_roi_size`` (14) from the box head's maps and level rule.
- ``mask_head``: four 3x3 convs (256, ReLU); ``mask_predictor``: a 2x2 stride-2 deconvolution
  (``conv5_mask``, ReLU) and a 1x1 conv (``mask_fcn_logits``) to one ``28 x 28`` logit map per
  classifier column (column 0 the background, as the box classifier). Parameter names are
  torchvision's (``mask_head.<i>.0``, ``mask_predictor.conv5_mask`` / ``mask_fcn_logits``).
- Training: the positive RoIs of the box head's sample; targets are RoIAlign crops of their matched
  gt masks (:func:`odkit.ops.roi_masks.project_masks_on_boxes`), the loss ``loss_mask`` is
  :func:`odkit.losses.mask_loss` on the gt class's column (torchvision's ``maskrcnn_loss``). The
  targets' ``"masks"`` are ``uint8 [N, H, W]`` in network-input pixels, rows as ``"boxes"``.
- Prediction: the detections' boxes (input px) are pooled, the column of each detection's label
  taken and ``sigmoid`` applied: ``[K, 1, 28, 28]`` probabilities, pasted into the image by
  :func:`odkit.ops.roi_masks.paste_masks_in_image` (``Detector.predict``, the exported runtime).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from odkit.errors import DataError
from odkit.losses.mask import mask_loss
from odkit.models.two_stage.roi_head import RoIHead, SampledRoIs
from odkit.ops.roi import multiscale_roi_align
from odkit.ops.roi_masks import project_masks_on_boxes


class MaskRCNNHeads(nn.Sequential):
    """``len(layers)`` 3x3 convs with ReLU (``<i>.0`` conv, ``<i>.1`` ReLU; torchvision's layout)."""

    def __init__(self, in_channels: int, layers: Sequence[int] = (256, 256, 256, 256)) -> None:
        blocks, cin = [], in_channels
        for cout in layers:
            blocks.append(nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)))
            cin = cout
        super().__init__(*blocks)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)


class MaskRCNNPredictor(nn.Sequential):
    """2x deconvolution + ReLU + 1x1 conv to ``num_logits`` mask logit maps."""

    def __init__(self, in_channels: int, dim_reduced: int, num_logits: int) -> None:
        super().__init__(OrderedDict([
            ("conv5_mask", nn.ConvTranspose2d(in_channels, dim_reduced, 2, 2, 0)),
            ("relu", nn.ReLU(inplace=True)),
            ("mask_fcn_logits", nn.Conv2d(dim_reduced, num_logits, 1, 1, 0)),
        ]))
        for name, param in self.named_parameters():
            if "weight" in name:
                nn.init.kaiming_normal_(param, mode="fan_out", nonlinearity="relu")


class MaskRoIHead(RoIHead):
    """Fast R-CNN box head plus the mask branch; see the module docstring.

    Extra args (besides :class:`RoIHead`'s): ``mask_roi_size`` (14), ``mask_layers`` (four 256-channel
    convs), ``mask_dim`` (256, the deconvolution's channels).
    """

    has_masks = True

    def __init__(self, num_classes: int, in_channels: int, *args, mask_roi_size: int = 14,
                 mask_layers: Sequence[int] = (256, 256, 256, 256), mask_dim: int = 256, **kw) -> None:
        super().__init__(num_classes, in_channels, *args, **kw)
        self.mask_roi_size = int(mask_roi_size)
        self.mask_head = MaskRCNNHeads(in_channels, [int(c) for c in mask_layers])
        self.mask_predictor = MaskRCNNPredictor(int(mask_layers[-1]), int(mask_dim), self.num_logits)

    @property
    def mask_size(self) -> int:
        """Side of the predicted masks (twice the pooled size: 28)."""
        return 2 * self.mask_roi_size

    def mask_logits(self, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
        """Mask logits ``[K, L, 28, 28]`` of ``rois`` ``[K, 5]``, or ``[B * P, L, 28, 28]`` of padded
        boxes ``[B, P, 4]`` (the fixed-shape pooling)."""
        x = multiscale_roi_align(self._maps(feats), rois, self.strides, self.mask_roi_size, self.sampling_ratio,
                                 self.aligned, *self.canonical)
        if rois.dim() == 3:
            x = x.flatten(0, 1)
        return self.mask_predictor(self.mask_head(x))

    def label_columns(self, labels: Tensor) -> Tensor:
        """Classifier columns of predicted ``labels`` (label ``c`` is column ``c + 1`` unless
        ``background_slot``, where labels are the columns)."""
        return labels.long() + (0 if self.background_slot else 1)

    def sampled_loss(self, feats: Sequence[Tensor], s: SampledRoIs,
                     targets: Sequence[Mapping[str, Tensor]] | None = None) -> dict[str, Tensor]:
        """The box terms plus ``loss_mask`` on the positive sampled RoIs."""
        terms = super().sampled_loss(feats, s, targets)
        pos = (s.labels > 0).nonzero().squeeze(1)
        rois = s.rois[pos]
        logits = self.mask_logits(feats, rois)
        size = logits.shape[-1]
        crops = []
        for b in rois[:, 0].long().unique().tolist():
            sel = (rois[:, 0] == b).nonzero().squeeze(1)
            masks = self._gt_masks(targets, b, feats[0].device)
            rows, index = s.gt_index[pos][sel].unique(return_inverse=True)  # only the matched masks as float
            crops.append((sel, project_masks_on_boxes(masks[rows], rois[sel, 1:], index, size)))
        mask_targets = logits.new_zeros((len(pos), size, size), dtype=torch.float32)
        for sel, crop in crops:
            mask_targets[sel] = crop
        terms["loss_mask"] = mask_loss(logits, s.labels[pos], mask_targets)
        return terms

    @staticmethod
    def _gt_masks(targets: Sequence[Mapping[str, Tensor]] | None, b: int, device: torch.device) -> Tensor:
        """The ``"masks"`` ``[N, H, W]`` of image ``b``'s target (``DataError`` when missing or of
        the wrong shape)."""
        t = targets[b] if targets is not None and b < len(targets) else {}
        if "masks" not in t:
            raise DataError(f"loss: image {b} of the batch has no 'masks' in its target (Mask R-CNN trains on "
                            f"instance masks: uint8 [N, H, W] in network-input pixels)")
        masks = torch.as_tensor(t["masks"], device=device)
        n = int(torch.as_tensor(t["boxes"]).reshape(-1, 4).shape[0])
        if masks.dim() != 3 or masks.shape[0] != n:
            raise DataError(f"loss: image {b} of the batch has {n} boxes but masks of shape {tuple(masks.shape)} "
                            f"(expected [{n}, H, W])")
        return masks

    def predict_masks(self, feats: Sequence[Tensor], boxes: Sequence[Tensor],
                      labels: Sequence[Tensor]) -> list[Tensor]:
        """Per image mask probabilities ``[K, 1, 28, 28]`` of detections ``boxes`` ``[K, 4]`` (xyxy
        input px) with ``labels`` ``[K]``."""
        counts = [len(b) for b in boxes]
        if sum(counts) == 0:
            return [feats[0].new_zeros((0, 1, self.mask_size, self.mask_size)) for _ in boxes]
        rois = torch.cat([torch.cat((torch.full_like(b[:, :1], i), b), 1) for i, b in enumerate(boxes)]).float()
        feats = [f.to(self.box_predictor_dtype()) for f in feats]
        logits = self.mask_logits(feats, rois)
        cols = self.label_columns(torch.cat(list(labels)))
        probs = logits[torch.arange(len(cols), device=cols.device), cols].float().sigmoid()[:, None]
        return list(probs.split(counts))

    def predict_masks_batched(self, feats: Sequence[Tensor], boxes: Tensor, labels: Tensor) -> Tensor:
        """Mask probabilities ``[B, K, 28, 28]`` of padded detections ``boxes`` ``[B, K, 4]`` (xyxy
        input px) with ``labels`` ``[B, K]`` (padding rows: any label; -1 is read as 0). Fixed
        shapes, for export."""
        b, k = boxes.shape[:2]
        feats = [f.to(self.box_predictor_dtype()) for f in feats]
        logits = self.mask_logits(feats, boxes.float()).float()  # [B * K, L, M, M]
        cols = self.label_columns(labels.reshape(-1).clamp(min=0))
        idx = cols[:, None, None, None].expand(-1, 1, logits.shape[-2], logits.shape[-1])
        probs = torch.gather(logits, 1, idx).sigmoid()
        return probs.view(b, k, logits.shape[-2], logits.shape[-1])
