"""Shared detector postprocessing: score threshold, pre-top-k, class-wise NMS, max detections, and
mapping boxes from network-input (letterbox) coordinates back to original image coordinates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from odkit.errors import ConfigError

# Default prediction settings of a Detector (zoo models override them with their reference's values):
# score threshold, candidates kept per pyramid level before NMS, NMS IoU, detections per image.
POSTPROCESS_DEFAULTS: dict[str, Any] = {"conf": 0.001, "pre_topk": 1000, "iou": 0.65, "max_det": 300}


def undo_letterbox(boxes: torch.Tensor, meta: Mapping[str, Any]) -> torch.Tensor:
    """Map xyxy boxes from network-input pixels to original image pixels.

    ``meta`` is the letterbox meta ``{"orig_size": (h, w), "ratio": r, "pad": (dx, dy), ...}``:
    ``original = (box - [dx, dy, dx, dy]) / r``, then clipped to ``[0, w] x [0, h]``. A plain-resize
    (stretch) meta has ``ratio = (rx, ry)``, one scale per axis
    (:func:`odkit.data.transforms.fit_to_input`).
    """
    try:
        h, w = meta["orig_size"]
        r = meta["ratio"]
        rx, ry = (float(r[0]), float(r[1])) if isinstance(r, (tuple, list)) else (float(r), float(r))
        dx, dy = meta["pad"]
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ConfigError(
            f"letterbox meta needs orig_size (h, w), ratio (r or (rx, ry)) and pad (dx, dy); got {dict(meta)}"
        ) from e
    if rx <= 0 or ry <= 0:
        raise ConfigError(f"letterbox meta ratio must be > 0, got {r}")
    pad = boxes.new_tensor([dx, dy, dx, dy])
    out = (boxes - pad) / (rx if rx == ry else boxes.new_tensor([rx, ry, rx, ry]))
    x = out[:, 0::2].clamp(0, float(w))
    y = out[:, 1::2].clamp(0, float(h))
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)


def postprocess(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    metas: Sequence[Mapping[str, Any]] | None = None,
    conf: float = 0.001,
    iou: float = 0.65,
    max_det: int = 300,
    pre_topk: int = 1000,
) -> list[dict[str, torch.Tensor]]:
    """Decoded ``boxes [B, N, 4]`` (xyxy, input pixels) and ``scores [B, N, C]`` -> predictions.

    Per image: keep (box, class) pairs with score > ``conf``, the best ``pre_topk`` of them, class-wise
    NMS at ``iou`` and the best ``max_det`` (``odkit.ops.multiclass_nms``). Returns one dict
    ``{"boxes" [K, 4] float32, "scores" [K], "labels" [K] int64}`` per image, in original image
    coordinates when ``metas`` is given (letterbox undone and clipped), else in input coordinates.
    """
    from odkit.ops import multiclass_nms

    if metas is not None and len(metas) != boxes.shape[0]:
        raise ConfigError(f"postprocess: {len(metas)} metas for a batch of {boxes.shape[0]} images")
    results = []
    for i in range(boxes.shape[0]):
        b, s, lab = multiclass_nms(boxes[i].float(), scores[i].float(), conf, iou, pre_topk, max_det)
        if metas is not None:
            b = undo_letterbox(b, metas[i])
        results.append({"boxes": b.float(), "scores": s.float(), "labels": lab.long()})
    return results


def postprocess_candidates(
    candidates: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    metas: Sequence[Mapping[str, Any]] | None = None,
    iou: float = 0.65,
    max_det: int = 300,
) -> list[dict[str, torch.Tensor]]:
    """Per-image candidates ``(boxes [K, 4] xyxy input px, scores [K], labels [K])`` (already
    score-filtered and top-k'd by the head) -> class-wise NMS at ``iou``, the best ``max_det``
    (``<= 0``: all), letterbox undone when ``metas`` is given. Same dict format as :func:`postprocess`."""
    from odkit.ops import batched_nms

    if metas is not None and len(metas) != len(candidates):
        raise ConfigError(f"postprocess: {len(metas)} metas for a batch of {len(candidates)} images")
    results = []
    for i, (b, s, lab) in enumerate(candidates):
        keep = batched_nms(b.float(), s.float(), lab, iou)
        if max_det > 0:
            keep = keep[:max_det]
        b, s, lab = b[keep].float(), s[keep].float(), lab[keep].long()
        if metas is not None:
            b = undo_letterbox(b, metas[i])
        results.append({"boxes": b, "scores": s, "labels": lab})
    return results


def paste_detection_masks(
    dets: Sequence[dict[str, torch.Tensor]],
    probs: Sequence[torch.Tensor],
    metas: Sequence[Mapping[str, Any]] | None,
    input_hw: tuple[int, int],
) -> list[dict[str, torch.Tensor]]:
    """Detections in input pixels with their ``M x M`` mask probabilities ``[K, 1, M, M]`` -> the
    detections in original pixels (letterbox undone when ``metas`` is given) with ``"masks"``
    ``[K, 1, H, W]``: each mask pasted on its original-pixel box into the original image
    (:func:`odkit.ops.roi_masks.paste_masks_in_image`, torchvision's rule)."""
    from odkit.ops.roi_masks import paste_masks_in_image

    if metas is not None and len(metas) != len(dets):
        raise ConfigError(f"postprocess: {len(metas)} metas for a batch of {len(dets)} images")
    out = []
    for i, (d, p) in enumerate(zip(dets, probs)):
        d = dict(d)
        hw = input_hw
        if metas is not None:
            d["boxes"] = undo_letterbox(d["boxes"], metas[i])
            hw = tuple(int(v) for v in metas[i]["orig_size"])
        d["masks"] = paste_masks_in_image(p.float(), d["boxes"], hw)
        out.append(d)
    return out


def resize_mode(model: Any) -> str:
    """How ``model`` (or a wrapper with ``.module``, or a ``model.config`` dict) takes images to its
    input size: ``"letterbox"`` (default) or ``"stretch"`` (plain resize, SSD), from its config."""
    if isinstance(model, Mapping):
        cfg = model
    else:
        cfg = getattr(getattr(model, "module", model), "config", None) or {}
    return str(cfg.get("resize") or "letterbox")
