"""Parity of odkit's sliced prediction with SAHI's ``get_sliced_prediction`` given the same per-slice
detections: odkit's predictor is wrapped as a SAHI detection model, so both slice the same image,
get the same detections for each slice (and for the whole image), and merge them their own way.

Runs in a reference environment with sahi (never an odkit dependency):

    REF=$(../shared/tools/reference-env ~/.refenv-sahi sahi ensemble-boxes | tail -1)
    $REF benchmarks/sahi_parity.py [--write-fixture]

The detector is yolox-nano with deterministic random weights (seed 0) whose objectness biases are
raised so that every slice has many detections of varied size and overlap (a random network's boxes:
what is compared is the slicing, shifting and merging, not the detector), or trained weights
(``--weights``); per-slice NMS at IoU 0.9 (``--iou``) so that many overlapping boxes reach the merge. Images: synthetic pictures
of several sizes. Per-slice predictions are cached by slice content, so both sides merge exactly the
same detections. For each merge (greedy NMM and NMS, with the IoS and IoU matches), with and without
the full-image pass, the table prints the images whose results are equal (same count and labels,
boxes within 0.01 px, scores within 1e-5), the largest differences and the number of merged boxes.
``--write-fixture`` stores one image's per-slice detections, SAHI's slice grids for several image
sizes and SAHI's merged results in ``tests/fixtures/sahi_parity.json`` (for ``tests/test_slicing.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "sahi_parity.json"
SIZES = [(1000, 760), (1500, 1100), (700, 1900), (2000, 2000)]  # (width, height); the last one has > 2000 boxes per class (SAHI's sparse path)
CONFIGS = [("greedy-nmm", "ios"), ("greedy-nmm", "iou"), ("nms", "iou"), ("nms", "ios")]
SLICE, OVERLAP, CONF, MATCH_THR = 416, 0.2308, 0.35, 0.5  # slice step 320 = 10 strides of 32


class CachedPredictor:
    """odkit's predictor, predictions cached by image content: every caller gets the same detections."""

    def __init__(self, base, max_det: int, iou: float):
        self.base, self.max_det, self.iou, self.cache = base, max_det, iou, {}
        self.class_names, self.img_size, self.name = base.class_names, base.img_size, base.name

    def predict(self, images, conf=None, iou=None, max_det=None, img_size=None, batch=8):
        out = []
        for img in images:
            img = np.ascontiguousarray(img)
            key = hashlib.sha1(img.tobytes() + str(img.shape).encode()).hexdigest()
            if key not in self.cache:
                self.cache[key] = self.base.predict([img], conf=CONF, iou=self.iou, max_det=self.max_det)[0]
            out.append({k: v.clone() for k, v in self.cache[key].items()})
        return out


def sahi_model(pred):
    from sahi.models.base import DetectionModel
    from sahi.prediction import ObjectPrediction
    from sahi.utils.compatibility import fix_full_shape_list, fix_shift_amount_list

    class OdkitDetectionModel(DetectionModel):
        def load_model(self):
            self.model = pred

        def perform_inference(self, image):
            self._original_predictions = pred.predict([image])

        def _create_object_prediction_list_from_original_predictions(self, shift_amount_list=None,
                                                                     full_shape_list=None):
            shifts = fix_shift_amount_list(shift_amount_list or [[0, 0]])
            shapes = fix_full_shape_list(full_shape_list)
            per_image = []
            for i, p in enumerate(self._original_predictions):
                per_image.append([
                    ObjectPrediction(bbox=b, category_id=int(c), category_name=pred.class_names[int(c)], score=float(s),
                                     shift_amount=shifts[i], full_shape=shapes[i] if shapes else None)
                    for b, s, c in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist())])
            self._object_prediction_list_per_image = per_image

    return OdkitDetectionModel(confidence_threshold=CONF, load_at_init=True,
                               category_mapping={str(i): n for i, n in enumerate(pred.class_names)})


def picture(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 110, np.uint8)
    for _ in range(w * h // 6000):
        x, y = rng.integers(0, w), rng.integers(0, h)
        s = rng.integers(8, 90)
        img[y : y + s, x : x + s] = rng.integers(0, 256, 3)
    return img


def detector():
    from odkit.engine.predictor import Predictor
    from odkit.models import zoo

    torch.manual_seed(0)
    m = zoo.build("yolox-nano", num_classes=3)
    with torch.no_grad():
        for i in range(3):
            m.head.obj_preds[i].bias.fill_(3.0)
            m.head.cls_preds[i].bias.fill_(0.0)
            m.head.reg_preds[i].weight.mul_(4.0)
    return Predictor(m, {"model_config": m.config})


def sahi_result(model, img, merge, match, full):
    from sahi.predict import get_sliced_prediction

    r = get_sliced_prediction(img, model, slice_height=SLICE, slice_width=SLICE, overlap_height_ratio=OVERLAP,
                              overlap_width_ratio=OVERLAP, perform_standard_pred=full,
                              postprocess_type={"greedy-nmm": "GREEDYNMM", "nms": "NMS"}[merge],
                              postprocess_match_metric=match.upper(), postprocess_match_threshold=MATCH_THR,
                              postprocess_class_agnostic=False, verbose=0, force_postprocess_type=True)
    ops = r.object_prediction_list
    return (np.array([o.bbox.to_xyxy() for o in ops], np.float64).reshape(-1, 4),
            np.array([o.score.value for o in ops], np.float64), np.array([o.category.id for o in ops], np.float64))


def compare(a, b):
    """(same count, max box difference px, max score difference): each box of ``b`` is paired with the
    closest unpaired box of ``a`` of its label (scores tie often: one object seen by several slices)."""
    ab, as_, al = (np.asarray(x, np.float64) for x in a)
    bb, bs, bl = (np.asarray(x, np.float64) for x in b)
    ab, bb = ab.reshape(-1, 4), bb.reshape(-1, 4)
    if len(as_) != len(bs):
        return False, float("inf"), float("inf")
    free = np.ones(len(as_), bool)
    db = ds = 0.0
    for i in np.argsort(-bs, kind="stable"):
        cost = np.abs(ab - bb[i]).max(1) + 1e3 * np.abs(as_ - bs[i]) + np.where(free & (al == bl[i]), 0, np.inf)
        j = int(np.argmin(cost)) if len(cost) else -1
        if j < 0 or not np.isfinite(cost[j]):
            return False, float("inf"), float("inf")
        free[j] = False
        db, ds = max(db, float(np.abs(ab[j] - bb[i]).max())), max(ds, abs(float(as_[j] - bs[i])))
    return True, db, ds


def main() -> int:
    from sahi.slicing import get_slice_bboxes

    from odkit.engine.api import load
    from odkit.engine.slicing import SliceConfig, SlicedPredictor, predict_slices, slice_grid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-fixture", action="store_true")
    ap.add_argument("--max-det", type=int, default=150, help="detections per slice (default 150)")
    ap.add_argument("--iou", type=float, default=0.9,
                    help="per-slice NMS IoU (default 0.9: many overlapping boxes reach the merge)")
    ap.add_argument("--weights", help="trained odkit weights instead of the random detector")
    a = ap.parse_args()
    torch.set_num_threads(1)
    pred = CachedPredictor(detector() if a.weights is None else load(a.weights), a.max_det, a.iou)
    model = sahi_model(pred)
    grids_ok = all(
        [list(c) for c in slice_grid(h, w, s, o)] == get_slice_bboxes(h, w, s, s, False, o, o)
        for h in (100, 416, 500, 1000, 2333) for w in (90, 416, 777, 3000) for s in (128, 416, 640) for o in (0.0, 0.2, 0.5))
    print(f"slice grids equal to SAHI's get_slice_bboxes on 144 (size, slice, overlap) combinations: {grids_ok}")
    rows = {}
    fixture = {"slice": SLICE, "overlap": OVERLAP, "match_thr": MATCH_THR, "cases": [], "grids": []}
    for k, (w, h) in enumerate(SIZES):
        img = picture(w, h, k)
        for merge, match in CONFIGS:
            for full in (False, True):
                ref = sahi_result(model, img, merge, match, full)
                cfg = SliceConfig(size=SLICE, overlap=OVERLAP, full_image=full, merge=merge, match=match,
                                  match_thr=MATCH_THR)
                d = SlicedPredictor(pred, cfg).predict(img)[0]
                ok, db, ds = compare((d["boxes"], d["scores"], d["labels"]), ref)
                rows.setdefault((merge, match, full), []).append((ok and db <= 0.01 and ds <= 1e-5, db, ds, len(ref[1])))
                if k == 0 and a.write_fixture:
                    if full:  # the slices' detections, then the whole image's
                        fixture["parts"] = [{kk: v.tolist() for kk, v in p.items()} for p in predict_slices(pred, img, cfg)]
                    fixture["cases"].append({
                        "merge": merge, "match": match, "full_image": full,
                        "expected": {"boxes": np.round(ref[0], 4).tolist(), "scores": np.round(ref[1], 7).tolist(),
                                     "labels": ref[2].tolist()}})
    print(f"\n{'merge':<11} {'match':<5} {'full image':<10} {'images':>6} {'equal':>5} {'max |box| px':>13} "
          f"{'max |score|':>12} {'boxes':>6}")
    for (merge, match, full), r in rows.items():
        print(f"{merge:<11} {match:<5} {str(full):<10} {len(r):>6} {sum(x[0] for x in r):>5} "
              f"{max(x[1] for x in r):>13.2e} {max(x[2] for x in r):>12.2e} {sum(x[3] for x in r):>6}")
    equal = sum(x[0] for r in rows.values() for x in r)
    total = sum(len(r) for r in rows.values())
    print(f"all: {equal}/{total} equal (images {SIZES}, slice {SLICE}, overlap {OVERLAP}, conf {CONF}, "
          f"match threshold {MATCH_THR})")
    if a.write_fixture:
        for h, w in ((100, 90), (760, 1000), (1100, 1500), (2333, 777)):
            for s, o in ((416, 0.2), (128, 0.5)):
                fixture["grids"].append({"h": h, "w": w, "size": s, "overlap": o,
                                         "slices": get_slice_bboxes(h, w, s, s, False, o, o)})
        FIXTURE.write_text(json.dumps(fixture))
        print(f"fixture: {FIXTURE}")
    return 0 if equal == total and grids_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
