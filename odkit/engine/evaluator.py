"""Predict a whole dataset (optionally sharded over ranks) and evaluate it with the COCO evaluator.

Predictions do not depend on the batch size: images are letterboxed (or plainly resized, as the
model was trained) one by one to the same square input, and the model's BatchNorm layers run in eval mode.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from odkit.data.structures import AnnotationSet
from odkit.engine import distributed as dist_utils
from odkit.engine import runtime

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_set(
    model: nn.Module,
    aset: AnnotationSet,
    img_size: int,
    batch: int = 16,
    device: torch.device | str = "cpu",
    workers: int = 0,
    conf: float | None = 0.001,
    iou: float | None = 0.65,
    max_det: int = 100,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = True,
    distributed: bool = False,
    progress: bool = False,
    compile: bool = False,
    runner: Any = None,
) -> list[dict[str, np.ndarray]]:
    """Predictions for every image of ``aset`` in order: ``{"boxes" [K,4] float32 xyxy original
    pixels, "scores" [K], "labels" [K] int64}`` (numpy); a mask model adds ``"masks"``, one
    :class:`~odkit.ops.rle.RLE` per detection (probability > 0.5).

    ``model`` is run as its prepared inference copy (:func:`odkit.models.fuse.prepare_inference_model`:
    BatchNorm folded, eval mode; ``compile``: through ``torch.compile``); ``model`` itself is not
    modified.

    ``runner(images [B, 3, S, S] float in [0, 1], metas, conf=, iou=, max_det=) -> predictions``
    replaces the model's forward (e.g. an exported graph: ``GraphPredictor.predict_letterboxed``).

    With ``distributed``, rank ``r`` predicts images ``r, r + world, ...`` and the full list is
    all-gathered (every rank receives it).
    """
    from tqdm import tqdm

    from odkit.engine.data import unpack, val_loader
    from odkit.models.postprocess import resize_mode

    device = torch.device(device)
    indices = np.arange(len(aset))
    if distributed and dist_utils.is_initialized():
        import torch.distributed as dist

        indices = indices[dist.get_rank() :: dist.get_world_size()]
    part = aset.select_images(indices) if len(indices) != len(aset) else aset
    net = model
    if runner is None and not getattr(model, "prepared_for_inference", False):
        from odkit.models.fuse import prepare_inference_model

        net = prepare_inference_model(model, channels_last=channels_last, device=device, compile=compile)
    out: list[dict[str, np.ndarray]] = []
    if len(part):
        loader = val_loader(part, img_size, batch, workers, resize_mode(model))
        for b in tqdm(loader, desc="val", leave=False, disable=not progress, unit="batch"):
            images, _, metas = unpack(b)
            if runner is not None:
                preds = runner(images, metas, conf=conf, iou=iou, max_det=max_det)
                out += [_to_numpy(p) for p in preds]
                continue
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with runtime.autocast(device, amp_dtype):
                if getattr(net, "compiled", False) and not getattr(net, "compile_checked", False):
                    from odkit.models.fuse import compile_or_eager

                    net = compile_or_eager(net, lambda m, x=images, mt=metas: m.predict(x, mt))
                    net.compile_checked = True
                preds = net.predict(images, metas, conf=conf, iou=iou, max_det=max_det)
            out += [_to_numpy(p) for p in preds]
    if distributed and dist_utils.is_initialized():
        shards = dist_utils.all_gather_object((indices.tolist(), out))
        full: list[dict[str, np.ndarray] | None] = [None] * len(aset)
        for idx, preds in shards:
            for i, p in zip(idx, preds):
                full[i] = p
        out = [p for p in full if p is not None]
        if len(out) != len(aset):
            raise RuntimeError(f"distributed evaluation gathered {len(out)} of {len(aset)} images")
    for p in out:
        p["boxes"] = p["boxes"].astype(np.float32)
        p["labels"] = p["labels"].astype(np.int64)
    return out


def _to_numpy(p: dict[str, Any]) -> dict[str, Any]:
    """A prediction dict in numpy; mask probabilities become RLEs (:func:`odkit.ops.roi_masks.masks_to_rles`,
    a few bytes per mask instead of an image of floats)."""
    from odkit.ops.roi_masks import masks_to_rles

    return {k: masks_to_rles(v) if k == "masks" else v.detach().float().cpu().numpy() if k != "labels"
            else v.cpu().numpy() for k, v in p.items()}


def has_masks(preds: list[dict[str, Any]]) -> bool:
    """Whether every prediction carries ``"masks"`` (and there is one)."""
    return bool(preds) and all("masks" in p for p in preds)


def evaluate_predictions(aset: AnnotationSet, preds: list[dict[str, Any]], iou_type: str = "bbox") -> Any:
    """COCO evaluation (:func:`odkit.eval.coco.evaluate_coco`) of predictions aligned with ``aset``
    (``iou_type="segm"``: on the predictions' masks against the set's segmentations)."""
    from odkit.eval.coco import evaluate_coco

    return evaluate_coco(aset, preds, iou_type=iou_type)


def coco_results(aset: AnnotationSet, preds: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """COCO results list (``image_id``, ``category_id`` original ids; ``bbox`` xywh pixels; ``score``;
    ``segmentation``, a compressed RLE, when the predictions carry masks)."""
    from odkit.ops.rle import to_coco

    res: list[dict[str, Any]] = []
    cids = np.asarray(aset.class_ids, dtype=np.int64)
    for i, p in enumerate(preds):
        b = np.asarray(p["boxes"], dtype=np.float64).reshape(-1, 4)
        xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
        img_id = int(aset.image_ids[i])
        segms = [to_coco(r) for r in p["masks"]] if "masks" in p else None
        for k, (box, s, lab) in enumerate(zip(xywh.tolist(), np.asarray(p["scores"]).tolist(),
                                              np.asarray(p["labels"]).tolist())):
            rec = {"image_id": img_id, "category_id": int(cids[int(lab)]),
                   "bbox": [round(v, 3) for v in box], "score": round(float(s), 5)}
            if segms is not None:
                rec["segmentation"] = segms[k]
            res.append(rec)
    return res


def write_coco_results(aset: AnnotationSet, preds: list[dict[str, np.ndarray]], path: str | Path) -> Path:
    """Write :func:`coco_results` to ``path`` (json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(coco_results(aset, preds), f)
    return path


def curve_plots(aset: AnnotationSet, preds: list[dict[str, np.ndarray]], out_dir: str | Path,
                conf: float = 0.25, iou: float = 0.45) -> list[Path]:
    """``pr_curve.png`` (IoU 0.5) and ``confusion_matrix.png`` (detections with score >= ``conf``
    matched at IoU >= ``iou``) of ``preds`` on ``aset``, written to ``out_dir``."""
    from odkit.eval.curves import confusion_matrix, plot_confusion_matrix, plot_pr_curves

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = evaluate_predictions(aset, preds)
    cm = confusion_matrix(aset, preds, iou_threshold=iou, score_threshold=conf)
    return [
        plot_pr_curves(res, out_dir / "pr_curve.png"),
        plot_confusion_matrix(cm, list(aset.class_names), out_dir / "confusion_matrix.png"),
    ]
