"""Parity of odkit's TIDE error analysis (``odkit.eval.tide``) with the ``tidecv`` package.

Runs in a separate environment that has tidecv (never an odkit dependency):

    <python with tidecv> benchmarks/tide_parity.py                      # generated data set
    <python with tidecv> benchmarks/tide_parity.py --gt DATA --split val --dt predictions.json

Without ``--gt`` a COCO data set with controlled errors is generated (``--seed``): true positives,
localisation, classification and combined errors, duplicates, background detections, missed
objects, crowd regions with detections inside, images without objects, an image with more than
100 detections and scores with ties. With ``--gt`` / ``--dt`` the ground truth is any data set odkit
reads and the detections a COCO results json (``predictions.json`` of a run).

Both sides get the same numbers: tidecv's ``Data`` is filled from odkit's parsed ground truth and
detections (xywh float64; crowd boxes as ignore regions, as ``tidecv.datasets.COCO`` does).
Printed: AP, the six main and two special dAPs of each, and the largest difference.
``--write-fixture DIR`` (generated data only) writes ``gt.json``, ``dt.json`` and tidecv's figures
``tidecv.json`` for ``tests/test_eval_tide.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from odkit.eval.inputs import load_detections, load_ground_truth  # noqa: E402
from odkit.eval.tide import ERROR_TYPES, SPECIAL_TYPES, tide_errors  # noqa: E402


def _shift(box: np.ndarray, rng: np.random.RandomState, iou_lo: float, iou_hi: float) -> list[float]:
    """A copy of xywh ``box`` moved sideways so that its IoU with ``box`` lies in [iou_lo, iou_hi]."""
    x, y, w, h = box
    target = rng.uniform(iou_lo, iou_hi)
    # sideways shift by f*w: IoU = (1 - f) / (1 + f)
    f = (1 - target) / (1 + target)
    sx = rng.choice([-1, 1]) * f * w
    return [float(x + sx), float(y), float(w), float(h)]


def generate(seed: int = 0, n_images: int = 60, n_classes: int = 5) -> tuple[dict, list[dict]]:
    """A COCO ground truth and results list with every TIDE error type (deterministic)."""
    rng = np.random.RandomState(seed)
    W, H = 640, 480
    images, anns, dets = [], [], []
    cats = [{"id": 10 + 3 * c, "name": f"class{c}"} for c in range(n_classes)]
    cids = [c["id"] for c in cats]

    def score() -> float:
        return float(np.round(rng.uniform(0.01, 1.0), 2))  # rounded: ties occur

    def det(img: int, cid: int, box: list[float], s: float | None = None) -> None:
        dets.append({"image_id": img, "category_id": cid, "bbox": [round(v, 3) for v in box],
                     "score": score() if s is None else s})

    for i in range(n_images):
        img = 1000 + 7 * i
        images.append({"id": img, "file_name": f"{img}.jpg", "width": W, "height": H})
        n_obj = 0 if i % 10 == 3 else rng.randint(1, 9)
        for _ in range(n_obj):
            w, h = rng.uniform(20, 160), rng.uniform(20, 160)
            box = np.array([rng.uniform(0, W - w), rng.uniform(0, H - h), w, h])
            cid = int(rng.choice(cids))
            other = int(rng.choice([c for c in cids if c != cid]))
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cid, "bbox": box.round(2).tolist(),
                         "area": float(w * h), "iscrowd": 0})
            box = np.array(anns[-1]["bbox"])
            u = rng.uniform()
            if u < 0.40:
                det(img, cid, _shift(box, rng, 0.7, 0.98))
            elif u < 0.50:
                det(img, cid, _shift(box, rng, 0.15, 0.45))  # localisation
            elif u < 0.58:
                det(img, other, _shift(box, rng, 0.6, 0.95))  # classification
            elif u < 0.63:
                det(img, other, _shift(box, rng, 0.15, 0.45))  # both
            elif u < 0.72:
                det(img, cid, _shift(box, rng, 0.7, 0.98))
                det(img, cid, _shift(box, rng, 0.55, 0.9))  # duplicate (or the better of two)
            elif u < 0.80:
                det(img, cid, _shift(box, rng, 0.15, 0.45))
                det(img, other, _shift(box, rng, 0.6, 0.9))  # two errors pointing at one object
            # else: missed
        for _ in range(rng.randint(0, 3)):  # background
            w, h = rng.uniform(10, 60), rng.uniform(10, 60)
            det(img, int(rng.choice(cids)), [float(rng.uniform(0, W - w)), float(rng.uniform(0, H - h)), w, h])
        if i % 15 == 5:  # a crowd region with detections inside
            box = [100.0, 100.0, 300.0, 200.0]
            cid = cids[0]
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cid, "bbox": box,
                         "area": 60000.0, "iscrowd": 1})
            for _ in range(4):
                det(img, cid, [float(rng.uniform(110, 250)), float(rng.uniform(110, 200)), 40.0, 50.0])
            det(img, cids[1], [120.0, 120.0, 40.0, 50.0])  # other class: not ignored
    for _ in range(120):  # more than max_dets on one image
        det(images[0]["id"], cids[0], [float(rng.uniform(0, W - 30)), float(rng.uniform(0, H - 30)), 30.0, 30.0])
    gt = {"images": images, "annotations": anns, "categories": cats}
    return gt, dets


def run_tidecv(gt_src, dt_src, split: str | None = None) -> dict:
    """tidecv's AP, main and special dAPs on odkit's parsed inputs."""
    from tidecv import TIDE, Data

    g = load_ground_truth(gt_src, split=split)
    d = load_detections(dt_src, g)
    gd, dd = Data("gt"), Data("dt")
    for iid in g.image_ids:
        gd.add_image(int(iid), str(iid))
    for cid, name in zip(g.class_ids, g.class_names):
        gd.add_class(int(cid), name)
    for k in range(len(g.labels)):
        iid, cid, box = int(g.image_ids[g.img[k]]), int(g.class_ids[g.labels[k]]), g.xywh[k].tolist()
        (gd.add_ignore_region if g.iscrowd[k] else gd.add_ground_truth)(iid, cid, box)
    for k in range(len(d)):
        dd.add_detection(int(g.image_ids[d.img[k]]), int(g.class_ids[d.labels[k]]), float(d.scores[k]),
                         d.xywh[k].tolist())
    tide = TIDE()
    run = tide.evaluate(gd, dd, mode=TIDE.BOX)
    main = tide.get_main_errors()["dt"]
    special = tide.get_special_errors()["dt"]
    return {"ap": float(run.ap), "main": {k: float(v) for k, v in main.items()},
            "special": {k: float(v) for k, v in special.items()}}


def compare(ours: dict, ref: dict | None) -> float:
    """Print the table; returns the largest absolute difference (0 without a reference)."""
    names = ["AP", *ERROR_TYPES, *SPECIAL_TYPES]

    def row(r: dict) -> list[float]:
        return [r["ap"]] + [r["main"][t] for t in ERROR_TYPES] + [r["special"][t] for t in SPECIAL_TYPES]

    print(f"{'':<8}" + "".join(f"{n:>10}" for n in names))
    print(f"{'odkit':<8}" + "".join(f"{v:10.4f}" for v in row(ours)))
    if ref is None:
        return 0.0
    print(f"{'tidecv':<8}" + "".join(f"{v:10.4f}" for v in row(ref)))
    diff = np.abs(np.array(row(ours)) - np.array(row(ref)))
    print(f"{'|diff|':<8}" + "".join(f"{v:10.2e}" for v in diff))
    return float(diff.max())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gt", help="ground truth (any data set odkit reads); default: generated")
    ap.add_argument("--split", help="split of --gt")
    ap.add_argument("--dt", help="detections: COCO results json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--images", type=int, default=60, help="images of the generated data set (default 60)")
    ap.add_argument("--classes", type=int, default=5, help="classes of the generated data set (default 5)")
    ap.add_argument("--write-fixture", metavar="DIR")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if a.gt is None:
            gt, dets = generate(a.seed, a.images, a.classes)
            out = Path(a.write_fixture) if a.write_fixture else Path(tmp)
            out.mkdir(parents=True, exist_ok=True)
            gt_src, dt_src = out / "gt.json", out / "dt.json"
            gt_src.write_text(json.dumps(gt))
            dt_src.write_text(json.dumps(dets))
            print(f"generated: {len(gt['images'])} images, {len(gt['annotations'])} objects, {len(dets)} detections")
        else:
            if not a.dt:
                ap.error("--gt needs --dt")
            gt_src, dt_src = a.gt, a.dt
        t0 = time.perf_counter()
        res = tide_errors(str(gt_src), str(dt_src), split=a.split)
        t1 = time.perf_counter()
        print(res.table())
        print()
        try:
            ref = run_tidecv(str(gt_src), str(dt_src), split=a.split)
            print(f"time: odkit {t1 - t0:.2f} s, tidecv {time.perf_counter() - t1:.2f} s (each with its input parsing)")
        except ImportError:
            print("tidecv is not installed: odkit's figures only")
            ref = None
        worst = compare(res.to_dict(), ref)
        if ref is not None:
            print(f"largest difference: {worst:.2e} (AP points)")
            if a.write_fixture:
                (Path(a.write_fixture) / "tidecv.json").write_text(json.dumps(ref, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
