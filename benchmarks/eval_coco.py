"""COCO bbox / segm evaluation speed: odkit against pycocotools (and faster-coco-eval if installed).

A synthetic COCO-sized set (default 5,000 images, 80 categories, about 7 ground truths and 100
detections per image, some crowd boxes) is evaluated by each implementation in the same run; the
12 summary stats must be identical. Prints a table with times and speed-ups against pycocotools.

``--iou-type segm``: every box becomes an ellipse polygon inscribed in it (16 vertices; crowd
regions as uncompressed RLE), every detection the compressed RLE of its ellipse (with its box, as
detectors write segm results). odkit's time then includes reading the ground-truth json and
rasterising its polygons (pycocotools' evaluate() rasterises them too, its json loading excluded).

    python benchmarks/eval_coco.py [--images 5000] [--seed 0] [--skip-pycocotools] [--iou-type segm]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time

import numpy as np

from odkit.data import AnnotationSet
from odkit.eval.coco import STAT_NAMES, evaluate_coco


def make_data(n_images: int, n_classes: int = 80, seed: int = 0) -> tuple[AnnotationSet, list[dict]]:
    """Synthetic ground truth (AnnotationSet) and predictions (one dict per image, xyxy pixels)."""
    rng = np.random.default_rng(seed)
    W, H = 640, 480
    boxes, labels, crowd, preds = [], [], [], []
    for _ in range(n_images):
        g = int(rng.poisson(7))
        wh = np.exp(rng.uniform(np.log(6), np.log(400), (g, 2)))
        xy = rng.uniform(0, 1, (g, 2)) * np.maximum([W, H] - wh, 1)
        b = np.concatenate([xy, xy + wh], 1)
        lab = rng.integers(0, n_classes, g)
        boxes.append(b.astype(np.float32))
        labels.append(lab)
        crowd.append(rng.random(g) < 0.01)
        # ~5 jittered detections per object (10% with a wrong class), the rest random.
        n_tp = min(5 * g, 100)
        src = rng.integers(0, max(g, 1), n_tp)
        if g:
            jit = b[src] + rng.normal(0, 1, (n_tp, 4)) * np.repeat(wh[src] * 0.12, 2, axis=1)
            jl = np.where(rng.random(n_tp) < 0.9, lab[src], rng.integers(0, n_classes, n_tp))
            js = np.clip(rng.beta(4, 2, n_tp), 0.001, 1)
        else:
            jit, jl, js = np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0)
        n_fp = 100 - n_tp
        fwh = np.exp(rng.uniform(np.log(4), np.log(300), (n_fp, 2)))
        fxy = rng.uniform(0, 1, (n_fp, 2)) * np.maximum([W, H] - fwh, 1)
        fb = np.concatenate([fxy, fxy + fwh], 1)
        db = np.concatenate([jit, fb])
        db = np.concatenate([np.minimum(db[:, :2], db[:, 2:]), np.maximum(db[:, :2], db[:, 2:])], 1)
        ds = np.round(np.concatenate([js, rng.beta(1, 4, n_fp)]), 3)  # rounded: many score ties
        dl = np.concatenate([jl, rng.integers(0, n_classes, n_fp)])
        preds.append({"boxes": db.astype(np.float32), "scores": ds.astype(np.float32), "labels": dl})
    n = n_images
    cat_ids = [i + 1 + i // 10 for i in range(n_classes)]  # non-contiguous, like COCO
    aset = AnnotationSet.from_lists(
        "/synthetic",
        [f"{i:06d}.jpg" for i in range(n)],
        [W] * n,
        [H] * n,
        boxes,
        labels,
        [f"class{c}" for c in cat_ids],
        class_ids=cat_ids,
        image_ids=np.arange(n) * 2 + 1,
        iscrowd=crowd,
    )
    return aset, preds


def to_coco(aset: AnnotationSet, preds: list[dict]) -> tuple[dict, list[dict]]:
    """The same data as a COCO ground-truth dict and a COCO results list (float64 xywh)."""
    images = [
        {"id": int(i), "width": 640, "height": 480, "file_name": f}
        for i, f in zip(aset.image_ids, aset.files)
    ]
    img = aset.image_index()
    b = aset.boxes.astype(np.float64)
    wh = b[:, 2:] - b[:, :2]
    anns = [
        {
            "id": k + 1,
            "image_id": int(aset.image_ids[img[k]]),
            "category_id": int(aset.class_ids[aset.labels[k]]),
            "bbox": [float(b[k, 0]), float(b[k, 1]), float(wh[k, 0]), float(wh[k, 1])],
            "area": float(wh[k, 0] * wh[k, 1]),
            "iscrowd": int(aset.iscrowd[k]),
        }
        for k in range(len(b))
    ]
    cats = [{"id": int(c), "name": n} for c, n in zip(aset.class_ids, aset.class_names)]
    res = []
    for i, p in enumerate(preds):
        pb = p["boxes"].astype(np.float64)
        for j in range(len(pb)):
            res.append(
                {
                    "image_id": int(aset.image_ids[i]),
                    "category_id": int(aset.class_ids[p["labels"][j]]),
                    "bbox": [
                        float(pb[j, 0]),
                        float(pb[j, 1]),
                        float(pb[j, 2] - pb[j, 0]),
                        float(pb[j, 3] - pb[j, 1]),
                    ],
                    "score": float(p["scores"][j]),
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}, res


def _ellipses(xywh: np.ndarray, k: int = 16) -> np.ndarray:
    """``[N, 2k]`` flat polygons of the ellipses inscribed in ``xywh`` boxes."""
    a = np.linspace(0, 2 * np.pi, k, endpoint=False)
    cx, cy = xywh[:, 0] + xywh[:, 2] / 2, xywh[:, 1] + xywh[:, 3] / 2
    x = cx[:, None] + xywh[:, 2:3] / 2 * np.cos(a)[None]
    y = cy[:, None] + xywh[:, 3:4] / 2 * np.sin(a)[None]
    return np.round(np.stack([x, y], 2).reshape(len(xywh), 2 * k), 2)


def add_masks(gt: dict, res: list[dict]) -> None:
    """Ellipse polygons for the ground truth (crowds as uncompressed RLE), compressed RLE results."""
    from odkit.ops.masks import polygons_to_array
    from odkit.ops.rle import counts_to_strings

    H, W = 480, 640
    anns = gt["annotations"]
    polys = _ellipses(np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4))
    gm = polygons_to_array(list(polys), H, W)
    for k, a in enumerate(anns):
        if a["iscrowd"]:
            a["segmentation"] = {"size": [H, W], "counts": gm[k].counts.tolist()}
        else:
            a["segmentation"] = [polys[k].tolist()]
        a["area"] = float(gm.areas[k])
    dpolys = _ellipses(np.array([r["bbox"] for r in res], dtype=np.float64).reshape(-1, 4))
    dm = polygons_to_array(list(dpolys), H, W)
    for r, c in zip(res, counts_to_strings(dm.counts, dm.offsets)):
        r["segmentation"] = {"size": [H, W], "counts": c.decode()}


def run_pycocotools(
    gt: dict, res: list[dict], module: str = "pycocotools", iou_type: str = "bbox"
) -> tuple[np.ndarray, float]:
    """Stats and seconds of evaluate+accumulate+summarize (loading excluded)."""
    if module == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        dt = coco.loadRes(res)
        t0 = time.perf_counter()
        ev = COCOeval(coco, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        t = time.perf_counter() - t0
    return np.asarray(ev.stats[:12], dtype=np.float64), t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="odkit runs (best time is reported)")
    ap.add_argument("--skip-pycocotools", action="store_true")
    ap.add_argument("--iou-type", choices=["bbox", "segm"], default="bbox")
    args = ap.parse_args(argv)
    if args.iou_type == "segm":
        return main_segm(args)

    aset, preds = make_data(args.images, args.classes, args.seed)
    n_dt = sum(len(p["scores"]) for p in preds)
    print(
        f"data: {len(aset)} images, {args.classes} categories, {aset.num_annotations} gt, {n_dt} detections"
    )

    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ours = evaluate_coco(aset, preds)
        times.append(time.perf_counter() - t0)
    t_odkit = min(times)
    rows = [("odkit (AnnotationSet + prediction dicts)", t_odkit, ours.stats)]

    gt_json, res = to_coco(aset, preds)
    t0 = time.perf_counter()
    ours_json = evaluate_coco(aset, res)
    rows.append(("odkit (COCO results list)", time.perf_counter() - t0, ours_json.stats))

    ok = True
    ref_stats = None
    if not args.skip_pycocotools:
        ref_stats, t_ref = run_pycocotools(gt_json, res)
        rows.append(("pycocotools", t_ref, ref_stats))
    try:
        import faster_coco_eval  # noqa: F401

        s, t = run_pycocotools(gt_json, res, module="faster_coco_eval")
        rows.append(("faster-coco-eval", t, s))
    except ImportError:
        pass

    base = next((t for name, t, _ in rows if name == "pycocotools"), None)
    print(f"\n{'implementation':<42} {'time (s)':>9} {'speed-up vs pycocotools':>24} {'stats identical':>16}")
    for name, t, s in rows:
        speed = f"{base / t:.1f}x" if base else "-"
        if ref_stats is None:
            same = "-"
        else:
            same_b = bool(np.array_equal(s, ref_stats))
            same = "yes" if same_b else f"no ({np.abs(s - ref_stats).max():.1e})"
            ok &= same_b or name == "faster-coco-eval"
        print(f"{name:<42} {t:>9.2f} {speed:>24} {same:>16}")
    print("\nstats: " + ", ".join(f"{k}={v:.4f}" for k, v in zip(STAT_NAMES, ours.stats)))
    if ref_stats is not None and not ok:
        print("MISMATCH between odkit and pycocotools", file=sys.stderr)
        return 1
    return 0


def main_segm(args: argparse.Namespace) -> int:
    import json
    import tempfile
    from pathlib import Path

    aset, preds = make_data(args.images, args.classes, args.seed)
    gt_json, res = to_coco(aset, preds)
    add_masks(gt_json, res)
    print(f"data (segm): {len(aset)} images, {args.classes} categories, {len(gt_json['annotations'])} gt, "
          f"{len(res)} detections")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gt_path = Path(tmp) / "instances.json"
        gt_path.write_text(json.dumps(gt_json))
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            ours = evaluate_coco(gt_path, res, iou_type="segm")
            times.append(time.perf_counter() - t0)
    rows.append(("odkit (gt json + COCO results list)", min(times), ours.stats))
    ref_stats = None
    if not args.skip_pycocotools:
        ref_stats, t_ref = run_pycocotools(gt_json, res, iou_type="segm")
        rows.append(("pycocotools", t_ref, ref_stats))
    base = next((t for name, t, _ in rows if name == "pycocotools"), None)
    print(f"\n{'implementation':<42} {'time (s)':>9} {'speed-up vs pycocotools':>24} {'max |stat diff|':>16}")
    ok = True
    for name, t, st in rows:
        speed = f"{base / t:.2f}x" if base else "-"
        diff = "-" if ref_stats is None else f"{np.abs(st - ref_stats).max():.1e}"
        ok &= ref_stats is None or bool(np.abs(st - ref_stats).max() <= 1e-12)
        print(f"{name:<42} {t:>9.2f} {speed:>24} {diff:>16}")
    print("\nstats: " + ", ".join(f"{k}={v:.4f}" for k, v in zip(STAT_NAMES, ours.stats)))
    if not ok:
        print("MISMATCH between odkit and pycocotools", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
