"""YOLOX decoupled head: per level a 1x1 stem, separate class and regression branches, and
``reg (4) + objectness (1) + class (C)`` outputs; anchor-free, one prior per grid cell."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from odkit.assign import SimOTAAssigner
from odkit.errors import DataError
from odkit.losses.yolox import yolox_loss
from odkit.nn import ConvBNAct, conv_or_dw


class YOLOXHead(nn.Module):
    """YOLOX head over pyramid levels at ``strides`` (default 8, 16, 32).

    ``forward(feats)`` returns one raw map per level, ``[B, 4 + 1 + C, H_l, W_l]`` with channels
    ``(tx, ty, tw, th, obj_logit, cls_logits...)``. A prior is a grid cell ``(gx, gy)`` of its level;
    decoding gives ``cx = (tx + gx) * s``, ``cy = (ty + gy) * s``, ``w = exp(tw) * s``, ``h = exp(th) * s``
    in input pixels. Class and objectness biases start at ``-log((1 - p) / p)`` with ``p = prior_prob``.
    Set ``use_l1 = True`` to add the L1 loss on raw offsets (last no-augmentation epochs).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: Sequence[int],
        feat_channels: int = 256,
        strides: Sequence[int] = (8, 16, 32),
        depthwise: bool = False,
        act: str = "silu",
        prior_prob: float = 0.01,
        iou_loss_mode: str = "iou",
        reg_weight: float = 5.0,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(strides):
            raise ValueError("YOLOXHead: in_channels and strides must have the same length")
        self.num_classes = int(num_classes)
        self.strides = [int(s) for s in strides]
        self.use_l1 = False
        self.iou_loss_mode = iou_loss_mode
        self.reg_weight = float(reg_weight)
        self.assigner = SimOTAAssigner()
        c = int(feat_channels)
        self.stems = nn.ModuleList(ConvBNAct(int(ch), c, 1, 1, act=act) for ch in in_channels)

        def branch() -> nn.Sequential:
            return nn.Sequential(
                conv_or_dw(c, c, 3, 1, depthwise, act), conv_or_dw(c, c, 3, 1, depthwise, act)
            )

        self.cls_convs = nn.ModuleList(branch() for _ in strides)
        self.reg_convs = nn.ModuleList(branch() for _ in strides)
        self.cls_preds = nn.ModuleList(nn.Conv2d(c, self.num_classes, 1) for _ in strides)
        self.reg_preds = nn.ModuleList(nn.Conv2d(c, 4, 1) for _ in strides)
        self.obj_preds = nn.ModuleList(nn.Conv2d(c, 1, 1) for _ in strides)
        self.init_biases(prior_prob)

    def init_biases(self, prior_prob: float = 0.01) -> None:
        """Set class and objectness biases so that initial probabilities are ``prior_prob``."""
        bias = -math.log((1.0 - prior_prob) / prior_prob)
        for conv in list(self.cls_preds) + list(self.obj_preds):
            nn.init.constant_(conv.bias, bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for i, x in enumerate(feats):
            x = self.stems[i](x)
            cls_feat = self.cls_convs[i](x)
            reg_feat = self.reg_convs[i](x)
            outs.append(
                torch.cat(
                    (self.reg_preds[i](reg_feat), self.obj_preds[i](reg_feat), self.cls_preds[i](cls_feat)), 1
                )
            )
        return outs

    # ----------------------------------------------------------------------------- priors / decode

    def priors(self, raw: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Grid cells ``[A, 2]`` (float ``(gx, gy)``) and strides ``[A]`` of all priors, level by level,
        row-major within a level (the order of :meth:`flatten`)."""
        grids, strides = [], []
        for r, s in zip(raw, self.strides):
            h, w = r.shape[-2:]
            ys = torch.arange(h, device=r.device, dtype=torch.float32)
            xs = torch.arange(w, device=r.device, dtype=torch.float32)
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            grids.append(torch.stack((gx, gy), dim=-1).reshape(-1, 2))
            strides.append(torch.full_like(gx.reshape(-1), float(s)))
        return torch.cat(grids, 0), torch.cat(strides, 0)

    @staticmethod
    def flatten(raw: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-level raw maps -> ``[B, A, 4 + 1 + C]``."""
        return torch.cat([r.flatten(2) for r in raw], dim=2).permute(0, 2, 1)

    @staticmethod
    def decode_boxes(raw_reg: torch.Tensor, grid: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
        """Raw ``[B, A, 4]`` offsets -> xyxy boxes ``[B, A, 4]`` in input pixels."""
        s = strides[:, None].to(raw_reg.dtype)
        cxcy = (raw_reg[..., :2] + grid.to(raw_reg.dtype)) * s
        half = torch.exp(raw_reg[..., 2:4]) * s * 0.5
        return torch.cat((cxcy - half, cxcy + half), dim=-1)

    def decode(self, raw: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes ``[B, A, 4]`` xyxy (input pixels) and scores ``[B, A, C]`` = sigmoid(obj) * sigmoid(cls)."""
        flat = self.flatten(raw)
        grid, strides = self.priors(raw)
        boxes = self.decode_boxes(flat[..., :4], grid, strides)
        scores = torch.sigmoid(flat[..., 4:5]) * torch.sigmoid(flat[..., 5:])
        return boxes, scores

    # ----------------------------------------------------------------------------- loss

    def pad_targets(
        self, targets: Sequence[dict], batch_size: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Targets (list of ``{"boxes", "labels"}``) -> padded ``[B, G, 4]`` boxes, ``[B, G]`` labels, valid mask."""
        if len(targets) != batch_size:
            raise DataError(f"YOLOX loss: {len(targets)} targets for a batch of {batch_size} images")
        g = max([int(t["boxes"].shape[0]) for t in targets] + [0])
        boxes = torch.zeros((batch_size, g, 4), dtype=torch.float32, device=device)
        labels = torch.zeros((batch_size, g), dtype=torch.long, device=device)
        valid = torch.zeros((batch_size, g), dtype=torch.bool, device=device)
        for i, t in enumerate(targets):
            n = int(t["boxes"].shape[0])
            if n == 0:
                continue
            lab = torch.as_tensor(t["labels"], device=device).long().reshape(-1)
            if lab.numel() != n:
                raise DataError(f"YOLOX loss: image {i} of the batch has {n} boxes but {lab.numel()} labels")
            if int(lab.min()) < 0 or int(lab.max()) >= self.num_classes:
                raise DataError(
                    f"YOLOX loss: image {i} of the batch has labels outside 0..{self.num_classes - 1} "
                    f"(min {int(lab.min())}, max {int(lab.max())})"
                )
            boxes[i, :n] = torch.as_tensor(t["boxes"], device=device).float().reshape(n, 4)
            labels[i, :n] = lab
            valid[i, :n] = True
        return boxes, labels, valid

    def loss(self, raw: Sequence[torch.Tensor], targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Loss dict (see :func:`odkit.losses.yolox_loss`) of raw outputs against targets in input pixels."""
        flat = self.flatten(raw).float()
        grid, strides = self.priors(raw)
        raw_reg = flat[..., :4]
        boxes = self.decode_boxes(raw_reg, grid, strides)
        obj, cls = flat[..., 4], flat[..., 5:]
        gt_boxes, gt_labels, gt_valid = self.pad_targets(targets, flat.shape[0], flat.device)
        with torch.no_grad():
            scores = (torch.sigmoid(cls) * torch.sigmoid(obj)[..., None]).sqrt()
            centers = (grid + 0.5) * strides[:, None]
            assign = self.assigner.assign(
                boxes.detach(), scores, centers, strides, gt_boxes, gt_labels, gt_valid
            )
        return yolox_loss(
            raw_reg,
            boxes,
            obj,
            cls,
            assign,
            gt_boxes,
            grid,
            strides,
            use_l1=self.use_l1,
            reg_weight=self.reg_weight,
            iou_mode=self.iou_loss_mode,
        )
