"""Keypoint peak decoding of heatmaps (CenterNet): a 3 x 3 max-pool keeps local maxima, then the top-k
over classes and cells. Fixed shapes, no data-dependent control flow (exports to ONNX as MaxPool, Equal,
TopK)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def heatmap_peaks(heat: Tensor, k: int, kernel: int = 3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top-``k`` local maxima of heatmaps ``heat [B, C, H, W]`` (scores, not logits): ``(scores [B, K],
    classes [B, K], ys [B, K], xs [B, K])`` with ``K = min(k, C H W)``; a cell counts when it equals the
    maximum of its ``kernel x kernel`` neighbourhood (CenterNet's ``_nms``), others score 0."""
    b, c, h, w = heat.shape
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
    peaks = heat * (hmax == heat).to(heat.dtype)
    scores, idx = peaks.reshape(b, -1).topk(min(int(k), c * h * w), dim=1)
    cls = idx // (h * w)
    pix = idx % (h * w)
    return scores, cls, pix // w, pix % w
