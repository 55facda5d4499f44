"""In-graph multi-class NMS with fixed-shape outputs, written in plain torch ops that export to ONNX.

:class:`ExportNMS` turns decoded ``boxes [B, N, 4]`` or per class ``[B, N, C, 4]`` (xyxy, input pixels) and class scores
``[B, N, C]`` into ``dets [B, max_det, 6]`` rows ``(x1, y1, x2, y2, score, class)`` plus
``num_dets [B]`` (int64), the number of valid leading rows of each image. Rows past ``num_dets`` are
padding ``(0, 0, 0, 0, 0, -1)``.

Per image the result is exactly that of :func:`odkit.ops.multiclass_nms` (``score > conf``, the
best ``pre_topk`` (box, class) candidates, class-wise greedy NMS suppressing ``IoU > iou``, the
best ``max_det``; equal scores ordered by lower ``n * C + c`` first), computed with the same float32
IoU arithmetic, so the kept set is the same and only the upstream box/score rounding of a runtime can
differ. (One corner is not pinned: when more than ``pre_topk`` candidates pass and the
``pre_topk``-th and next score are exactly equal, the runtime's TopK picks which one enters.)

Greedy NMS is :func:`odkit.ops.nms_fixed.sorted_nms_keep` (class-wise), a fixed point that needs no
data-dependent shapes, so every image of a batch gets exactly what it gets alone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from odkit.errors import ConfigError
from odkit.ops.nms_fixed import iou_threshold_f32, sorted_nms_keep

__all__ = ["ExportNMS"]


class ExportNMS(nn.Module):
    """Fixed-shape class-wise NMS: ``(boxes [B,N,4], scores [B,N,C]) -> (dets [B,max_det,6], num_dets [B])``.

    Thresholds are fixed at construction (they become constants of an exported graph).
    Memory and time grow with ``K^2`` per image, ``K = min(pre_topk, N * C)``.
    """

    def __init__(
        self, conf: float = 0.001, iou: float = 0.65, max_det: int = 100, pre_topk: int = 1000
    ):
        super().__init__()
        if not 0.0 <= float(conf) < 1.0:
            raise ConfigError(f"--conf must be in [0, 1), got {conf}")
        if not 0.0 <= float(iou) <= 1.0:
            raise ConfigError(f"--iou must be in [0, 1], got {iou}")
        if int(max_det) < 1:
            raise ConfigError(f"--max-det must be >= 1, got {max_det}")
        if int(pre_topk) < 1:
            raise ConfigError(f"pre_topk must be >= 1, got {pre_topk}")
        self.conf = float(conf)
        self.iou = float(iou)
        self.iou_f32 = iou_threshold_f32(self.iou)
        self.max_det = int(max_det)
        self.pre_topk = int(pre_topk)

    def forward(self, boxes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
        boxes = boxes.float()
        scores = scores.float()
        n, c = int(scores.shape[1]), int(scores.shape[2])
        k = min(self.pre_topk, n * c)
        flat = scores.flatten(1)  # [B, N*C], index n * C + c
        masked = torch.where(flat > self.conf, flat, torch.full_like(flat, -1.0))
        vals, idx = torch.topk(masked, k, dim=1, largest=True, sorted=True)
        # exact order: score descending, then flat index ascending (independent of TopK's tie rule)
        ahead = (vals[:, None, :] > vals[:, :, None]) | (
            (vals[:, None, :] == vals[:, :, None]) & (idx[:, None, :] < idx[:, :, None])
        )
        rank = ahead.to(torch.int64).sum(2)
        order = torch.argsort(rank, dim=1)
        vals = torch.gather(vals, 1, order)
        idx = torch.gather(idx, 1, order)
        valid = vals > self.conf
        rows = torch.div(idx, c, rounding_mode="floor")
        labels = idx - rows * c
        if boxes.dim() == 4:  # one box per class [B, N, C, 4]: candidate n * C + c takes box (n, c)
            cand = torch.gather(boxes.flatten(1, 2), 1, idx.unsqueeze(2).expand(-1, -1, 4))
        else:
            cand = torch.gather(boxes, 1, rows.unsqueeze(2).expand(-1, -1, 4))  # [B, K, 4]

        keep = sorted_nms_keep(cand, valid, self.iou_f32, labels)  # class-wise greedy NMS

        # the first max_det kept candidates, in order
        pos = torch.arange(k, device=boxes.device)
        m = min(self.max_det, k)
        key = keep.to(torch.float32) * (k - pos).to(torch.float32)[None]
        sel = torch.topk(key, m, dim=1, largest=True, sorted=True)[1]
        num = keep.to(torch.int64).sum(1).clamp(max=self.max_det)
        out_boxes = torch.gather(cand, 1, sel.unsqueeze(2).expand(-1, -1, 4))
        out_scores = torch.gather(vals, 1, sel)
        out_labels = torch.gather(labels, 1, sel).to(torch.float32)
        dets = torch.cat((out_boxes, out_scores.unsqueeze(2), out_labels.unsqueeze(2)), dim=2)
        filled = pos[:m][None, :] < num[:, None]
        pad_row = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, -1.0], device=boxes.device)
        dets = torch.where(filled.unsqueeze(2), dets, pad_row)
        if m < self.max_det:
            dets = torch.cat((dets, pad_row.expand(dets.shape[0], self.max_det - m, 6)), dim=1)
        return dets, num
