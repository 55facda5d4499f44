"""The inference options shared by ``odkit predict`` and ``odkit val``: sliced inference, test-time
augmentation, merging (and, for predict, ensembles of several weights)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from odkit.cli.args import arg_type

log = logging.getLogger(__name__)

MERGES = ("greedy-nmm", "nms", "wbf", "soft-nms", "nmw")


def add_inference_args(p: argparse.ArgumentParser) -> None:
    """``--slice --overlap --full-image --merge --match --match-thr --tta``."""
    g = p.add_argument_group("sliced inference, test-time augmentation, merging")
    g.add_argument("--slice", type=arg_type("size"), default=None, metavar="PX",
                   help="predict large images slice by slice: square slices of PX pixels (each resized to the "
                   "model's input), batched through the model (--batch slices at a time), boxes shifted back and merged")
    g.add_argument("--overlap", type=arg_type("unit"), default=0.2,
                   help="fraction of a slice shared with its neighbours (default 0.2; must be < 1)")
    g.add_argument("--full-image", action="store_true",
                   help="with --slice, also predict the whole (letterboxed) image and merge it in (large objects)")
    g.add_argument("--merge", choices=MERGES, default=None,
                   help="how detections are merged: greedy-nmm (union of matching boxes, SAHI's), nms, wbf "
                   "(weighted box fusion), soft-nms, nmw (non-maximum weighted). Default: greedy-nmm for --slice, "
                   "wbf for several --weights, nms for --tta")
    g.add_argument("--match", choices=("iou", "ios"), default=None,
                   help="match of greedy-nmm / nms: iou, or ios (intersection over the smaller box; default with "
                   "--slice, where a box cut by a slice border lies inside the whole one)")
    g.add_argument("--match-thr", type=arg_type("unit"), default=None,
                   help="boxes match when their iou/ios is >= this (default 0.5; 0.55 for wbf / nmw)")
    g.add_argument("--tta", action="store_true",
                   help="test-time augmentation: input sizes x1, x0.83 (flipped left-right), x0.67, merged "
                   "(as Ultralytics' augment; PyTorch weights only)")


def _merge_settings(args: argparse.Namespace, default_merge: str, sliced: bool) -> tuple[str, str, float]:
    merge = args.merge or default_merge
    match = args.match or ("ios" if sliced and merge in ("greedy-nmm", "nms") else "iou")
    thr = args.match_thr if args.match_thr is not None else (0.55 if merge in ("wbf", "nmw") else 0.5)
    return merge, match, float(thr)


def wrap_predictor(members: list[Any], args: argparse.Namespace) -> Any:
    """The predictor the options describe, around loaded ``members`` (one per ``--weights``):
    each member with ``--tta``, the ensemble of several, all of it slice by slice with ``--slice``.
    ``--merge`` / ``--match`` / ``--match-thr`` set the outermost merge (the slices' with ``--slice``);
    inner merges keep their defaults (TTA: NMS at the model's IoU, ensemble: WBF at 0.55)."""
    from odkit.engine.merging import EnsemblePredictor, TTAPredictor
    from odkit.engine.slicing import SliceConfig, SlicedPredictor

    sliced = getattr(args, "slice", None) is not None
    ensemble = len(members) > 1
    if (sliced or ensemble or args.tta) and any(_has_masks(m) for m in members):
        log.warning("masks are not merged across slices, test-time augmentations or ensembles: "
                    "the predictions keep boxes only")
        members = [WithoutMasks(m) for m in members]
    outer_tta = args.tta and not ensemble and not sliced
    if args.tta:
        if outer_tta:
            merge, match, thr = _merge_settings(args, "nms", False)
            members = [TTAPredictor(m, merge=merge, match=match,
                                    match_thr=thr if args.match_thr is not None or args.merge else None)
                       for m in members]
        else:
            members = [TTAPredictor(m) for m in members]
    pred = members[0]
    if ensemble:
        merge, match, thr = _merge_settings(args, "wbf", False) if not sliced else ("wbf", "iou", 0.55)
        pred = EnsemblePredictor(members, merge=merge, match=match, match_thr=thr)
    if sliced:
        merge, match, thr = _merge_settings(args, "greedy-nmm", True)
        pred = SlicedPredictor(pred, SliceConfig(size=int(args.slice), overlap=float(args.overlap),
                                                 full_image=bool(args.full_image), merge=merge, match=match,
                                                 match_thr=thr))
    return pred


def _has_masks(pred: Any) -> bool:
    """Whether a predictor returns masks (a mask model, or an exported graph with a masks output)."""
    info = getattr(pred, "info", None)
    return bool(getattr(getattr(pred, "model", None), "has_masks", False)
                or (isinstance(info, dict) and info.get("masks")))


class WithoutMasks:
    """A predictor whose detections leave out ``"masks"`` (what the merging wrappers get from a mask
    model: they merge boxes only); everything else is the wrapped predictor's."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self.base, name)

    @staticmethod
    def _drop(preds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in p.items() if k != "masks"} for p in preds]

    def predict(self, *args: Any, **kw: Any) -> list[dict[str, Any]]:
        return self._drop(self.base.predict(*args, **kw))

    __call__ = predict

    def predict_prepared(self, *args: Any, **kw: Any) -> list[dict[str, Any]]:
        return self._drop(self.base.predict_prepared(*args, **kw))
