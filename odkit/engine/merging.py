"""Merging several sets of detections of one image, and the predictors built on it: test-time
augmentation (:class:`TTAPredictor`) and ensembles of models (:class:`EnsemblePredictor`).

A "predictor" here is anything with ``predict(images, conf, iou, max_det, img_size, batch)``
returning one ``{"boxes" [K, 4] xyxy original pixels, "scores" [K], "labels" [K]}`` dict per image
(:class:`odkit.engine.predictor.Predictor`, the exported runtimes, and the wrappers of this module
and :mod:`odkit.engine.slicing`), so the wrappers compose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from odkit.errors import ConfigError

MERGE_METHODS = ("greedy-nmm", "nms", "wbf", "soft-nms", "nmw")
Dets = dict[str, torch.Tensor]


def check_merge(method: str, match: str, match_thr: float) -> None:
    """ConfigError for an unknown merge method, match metric or a threshold outside [0, 1]."""
    from odkit.ops.fusion import MATCH_METRICS

    if method not in MERGE_METHODS:
        raise ConfigError(f"merge: must be one of {', '.join(MERGE_METHODS)}, got {method!r}")
    if match not in MATCH_METRICS:
        raise ConfigError(f"match: must be one of {', '.join(MATCH_METRICS)}, got {match!r}")
    if not 0.0 <= float(match_thr) <= 1.0:
        raise ConfigError(f"match_thr: must be in [0, 1], got {match_thr}")


def empty_dets() -> Dets:
    return {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}


def concat_dets(dets: Sequence[Dets]) -> Dets:
    """One dict of all the detections of ``dets``."""
    if not dets:
        return empty_dets()
    return {k: torch.cat([d[k].to(v.dtype) for d in dets]) for k, v in dets[0].items()}


def merge_detections(sources: Sequence[Dets], method: str = "nms", match: str = "iou", match_thr: float = 0.5,
                     weights: Sequence[float] | None = None) -> Dets:
    """Merge detections of one image, class-aware, by decreasing score.

    ``sources``: one dict per source (model, augmentation); ``"greedy-nmm"`` and ``"nms"`` pool all
    sources (``match``: ``"iou"`` or ``"ios"``, a match is ``>= match_thr``; see
    :func:`odkit.ops.fusion.greedy_nmm`, :func:`odkit.ops.fusion.match_nms`); ``"wbf"``, ``"nmw"``
    and ``"soft-nms"`` (gaussian; decayed scores) fuse across sources with IoU threshold ``match_thr`` and the
    sources' ``weights``.
    """
    from odkit.ops import fusion

    check_merge(method, match, match_thr)
    if method in ("greedy-nmm", "nms"):
        d = concat_dets(sources)
        if d["boxes"].shape[0] == 0:
            return empty_dets()
        if method == "nms":
            keep = fusion.match_nms(d["boxes"], d["scores"], d["labels"], match, match_thr)
            return {k: v[keep] for k, v in d.items()}
        b, s, lab = fusion.greedy_nmm(d["boxes"], d["scores"], d["labels"], match, match_thr)
        return {"boxes": b, "scores": s, "labels": lab}
    args = ([d["boxes"] for d in sources], [d["scores"] for d in sources], [d["labels"] for d in sources])
    if method == "wbf":
        b, s, lab = fusion.weighted_boxes_fusion(*args, weights=weights, iou_thr=match_thr)
    elif method == "nmw":
        b, s, lab = fusion.non_maximum_weighted(*args, weights=weights, iou_thr=match_thr)
    else:
        b, s, lab = fusion.soft_nms_fusion(*args, weights=weights, iou_thr=match_thr, decayed_scores=True)
    return {"boxes": b, "scores": s, "labels": lab}


def _images(images: Any) -> list[Any]:
    """The images of a predict call, one item each (decoded later, one at a time)."""
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images)
    if isinstance(images, (str, np.ndarray, torch.Tensor)) or hasattr(images, "__fspath__"):
        return [images]
    return list(images)


# Ultralytics' augmented inference: these scales of the input, the 0.83 one flipped left-right
TTA_SCALES = (1.0, 0.83, 0.67)
TTA_FLIPS = (False, True, False)


class TTAPredictor:
    """Test-time augmentation of a PyTorch :class:`~odkit.engine.predictor.Predictor`: the image at
    input sizes ``img * scale`` (rounded to the size divisor) for ``scales``, flipped left-right where
    ``flips`` says, boxes mapped back and merged (``merge``: a :data:`MERGE_METHODS` name; default
    class-aware NMS at the prediction's IoU threshold, as Ultralytics' ``augment``)."""

    def __init__(self, base: Any, scales: Sequence[float] = TTA_SCALES, flips: Sequence[bool] = TTA_FLIPS,
                 merge: str = "nms", match: str = "iou", match_thr: float | None = None):
        if not hasattr(base, "model") or not hasattr(base.model, "size_divisor"):
            raise ConfigError("--tta needs a PyTorch model: an exported graph has a single input size")
        if len(scales) != len(flips) or not scales:
            raise ConfigError(f"tta: scales {list(scales)} and flips {list(flips)} must have the same length")
        check_merge(merge, match, 0.5 if match_thr is None else match_thr)
        self.base, self.scales, self.flips = base, [float(s) for s in scales], [bool(f) for f in flips]
        self.merge, self.match, self.match_thr = merge, match, match_thr
        self.class_names = base.class_names
        self.img_size = base.img_size
        self.name = base.name

    def predict(self, images: Any, conf: float | None = None, iou: float | None = None,
                max_det: int | None = None, img_size: int | None = None, batch: int = 8) -> list[Dets]:
        from odkit.engine.predictor import prepare_inputs

        div = int(self.base.model.size_divisor)
        size = int(img_size or self.base.img_size)
        thr = self.match_thr if self.match_thr is not None else (
            iou if iou is not None else float(self.base.model.postprocess_defaults.get("iou", 0.5)))
        out = []
        for item in _images(images):
            (img, _), = prepare_inputs(item)
            w = img.shape[1]
            sources = []
            for scale, flip in zip(self.scales, self.flips):
                s = max(div, int(round(size * scale / div)) * div)
                x = np.ascontiguousarray(img[:, ::-1]) if flip else img
                d, = self.base.predict([x], conf=conf, iou=iou, max_det=max_det, img_size=s, batch=batch)
                if flip:
                    b = d["boxes"].clone()
                    b[:, 0], b[:, 2] = w - d["boxes"][:, 2], w - d["boxes"][:, 0]
                    d = {**d, "boxes": b}
                sources.append(d)
            m = merge_detections(sources, self.merge, self.match, thr)
            if max_det is not None:
                m = {k: v[:max_det] for k, v in m.items()}
            out.append(m)
        return out

    __call__ = predict


class EnsemblePredictor:
    """Several models on the same images, their detections fused (``merge``: ``"wbf"`` by default,
    IoU threshold ``match_thr``, per-model ``weights``). The models must predict the same classes."""

    def __init__(self, members: Sequence[Any], merge: str = "wbf", match: str = "iou", match_thr: float = 0.55,
                 weights: Sequence[float] | None = None):
        if len(members) < 1:
            raise ConfigError("ensemble: no models given")
        names = [list(m.class_names) for m in members]
        for m, n in zip(members[1:], names[1:]):
            if n != names[0]:
                raise ConfigError(f"ensemble: {m.name} predicts classes {n}, {members[0].name} {names[0]}")
        if weights is not None and len(weights) != len(members):
            raise ConfigError(f"ensemble: {len(weights)} weights for {len(members)} models")
        check_merge(merge, match, match_thr)
        self.members, self.merge, self.match, self.match_thr = list(members), merge, match, match_thr
        self.weights = None if weights is None else [float(w) for w in weights]
        self.class_names = members[0].class_names
        self.img_size = members[0].img_size
        self.name = "+".join(m.name for m in members)

    def predict(self, images: Any, conf: float | None = None, iou: float | None = None,
                max_det: int | None = None, img_size: int | None = None, batch: int = 8) -> list[Dets]:
        from odkit.engine.predictor import prepare_inputs

        items = [prepare_inputs(img)[0][0] for img in _images(images)]
        per_model = [m.predict(items, conf=conf, iou=iou, max_det=max_det, img_size=img_size, batch=batch)
                     for m in self.members]
        out = []
        for i in range(len(items)):
            m = merge_detections([p[i] for p in per_model], self.merge, self.match, self.match_thr, self.weights)
            out.append({k: v[:max_det] for k, v in m.items()} if max_det is not None else m)
        return out

    __call__ = predict
