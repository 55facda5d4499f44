"""Small objects on large images: a detector trained on tiles and predicting slice by slice, against
the same detector on letterboxed whole images.

    python benchmarks/small_objects.py [--minutes 5] [--train-images 8] [--val-images 4] [--out DIR]

The benchmark makes its data: 2000 x 2000 pictures (a smooth gradient with noise) holding 40-70
shapes each (filled circles, squares, triangles of random colour), 8-24 px across, written with COCO
annotations to ``--out`` (default: a folder in the system temp directory; ``--train-objects`` shapes
per train image). yolox-nano (input ``--tile``, 320) is trained from scratch for ``--minutes`` on tiles
of that size of the train images (``odkit train --slice``; ``--slice-empty``, ``--scale`` of the random
affine and ``--mosaic`` are the training's;
validation during training on whole images is not used: the last weights are evaluated). Then on the
val images it prints COCO mAP50 (and mAP50-95) of:

- the letterboxed whole image at the training input and at 1280;
- sliced prediction (``--slice <tile> --overlap 0.2``) merged by greedy NMM (IoS 0.5) and by NMS (IoS 0.5).

Keep the CPU free for it (``flock`` the shared lock around it); results go to
``benchmarks/results/small_objects.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

NAMES = ["circle", "square", "triangle"]
SIDE = 2000


def picture(rng: np.random.Generator, n_objects: tuple[int, int] = (40, 70)) -> tuple[np.ndarray, list[list[float]], list[int]]:
    """One 2000 x 2000 RGB picture with ``n_objects`` (a range) shapes, and their boxes (xyxy) and labels."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32) / SIDE
    base = rng.uniform(60, 190, 3) + rng.uniform(-50, 50, 3) * (xx[..., None] * rng.uniform(-1, 1) + yy[..., None])
    img = np.clip(base + rng.normal(0, 12, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
    boxes, labels = [], []
    for _ in range(int(rng.integers(n_objects[0], n_objects[1] + 1))):
        s = float(rng.uniform(8, 24))
        x, y = rng.uniform(2, SIDE - s - 2, 2)
        c = int(rng.integers(0, 3))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        if c == 0:
            cv2.circle(img, (int(round(x + s / 2)), int(round(y + s / 2))), int(round(s / 2)), color, -1, cv2.LINE_AA)
        elif c == 1:
            cv2.rectangle(img, (int(round(x)), int(round(y))), (int(round(x + s)), int(round(y + s))), color, -1)
        else:
            pts = np.array([[x + s / 2, y], [x, y + s], [x + s, y + s]]).round().astype(np.int32)
            cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
        boxes.append([float(x), float(y), float(x + s), float(y + s)])
        labels.append(c)
    return img, boxes, labels


def make_data(root: Path, n_train: int, n_val: int, train_objects: tuple[int, int] = (40, 70), seed: int = 0) -> Path:
    from odkit.data.imageio import write_image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    spec = {"format": "coco"}
    for split, n in (("train", n_train), ("val", n_val)):
        images, anns = [], []
        for i in range(n):
            img, boxes, labels = picture(rng, train_objects if split == "train" else (40, 70))
            name = f"{split}_{i:03d}.png"
            write_image(root / "images" / name, img)
            images.append({"id": i + 1, "file_name": f"images/{name}", "width": SIDE, "height": SIDE})
            for b, c in zip(boxes, labels):
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1, "iscrowd": 0,
                             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        doc = {"images": images, "annotations": anns,
               "categories": [{"id": k + 1, "name": n} for k, n in enumerate(NAMES)]}
        (root / f"{split}.json").write_text(json.dumps(doc))
        spec[split] = f"{split}.json"
    spec["names"] = NAMES
    (root / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root / "data.yaml"


def evaluate(pred, aset, **kw) -> tuple[float, float, float]:
    """(mAP50, mAP50-95, seconds per image) of ``pred`` on ``aset``."""
    from odkit.eval.coco import evaluate_coco

    t = time.perf_counter()
    preds = []
    for i in range(len(aset)):
        d = pred.predict([str(aset.path(i))], **kw)[0]
        preds.append({k: v[:100].numpy() for k, v in d.items()})
    dt = (time.perf_counter() - t) / max(len(aset), 1)
    r = evaluate_coco(aset, preds)
    return float(r.metrics["AP50"]), float(r.map), dt


def main() -> int:
    import odkit
    from odkit.data.formats import load_split
    from odkit.engine.slicing import SliceConfig, SlicedPredictor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--train-images", type=int, default=8)
    ap.add_argument("--val-images", type=int, default=4)
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "odkit-small-objects"))
    ap.add_argument("--weights", help="skip training: evaluate these weights")
    ap.add_argument("--slice-empty", type=float, default=1.0, help="fraction of the empty tiles trained on")
    ap.add_argument("--scale", default="0.1,2", help="random-affine scale range of the augmentation (YOLOX's 0.1,2)")
    ap.add_argument("--mosaic", type=float, default=1.0)
    ap.add_argument("--tile", type=int, default=320, help="tile / slice side and training input (default 320)")
    ap.add_argument("--train-objects", default="40,70", help="shapes per train image, a range (val: 40-70)")
    a = ap.parse_args()
    out = Path(a.out)
    data = out / "data" / "data.yaml"
    if not data.is_file():
        data = make_data(out / "data", a.train_images, a.val_images, tuple(int(v) for v in a.train_objects.split(",")))
    if a.weights is None:
        res = odkit.train(data=str(data), model="yolox-nano", img_size=a.tile, slice=a.tile, slice_overlap=0.2,
                          slice_empty=a.slice_empty, time=a.minutes, batch=16, project=str(out / "runs"), name="tiles",
                          val_interval=1000, plots=False, mosaic=a.mosaic,
                          aug={"scale": [float(v) for v in a.scale.split(",")]})
        weights = res.last
    else:
        weights = a.weights
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    pred = odkit.load(weights)
    val = load_split(str(data), "val")
    rows = {}
    rows[f"letterbox {a.tile} (whole image)"] = evaluate(pred, val, conf=0.001, iou=0.65, max_det=100)
    rows["letterbox 1280 (whole image)"] = evaluate(pred, val, conf=0.001, iou=0.65, max_det=100, img_size=1280)
    for merge in ("greedy-nmm", "nms"):
        sp = SlicedPredictor(pred, SliceConfig(size=a.tile, overlap=0.2, merge=merge, match="ios", match_thr=0.5))
        rows[f"sliced {a.tile} / 0.2, {merge} ios 0.5"] = evaluate(sp, val, conf=0.05 if merge == "greedy-nmm" else 0.001,
                                                               iou=0.65, max_det=100)
    print(f"\nyolox-nano trained {a.minutes} min on {a.tile} px tiles of {a.train_images} 2000x2000 images "
          f"(empty tiles kept: {a.slice_empty}, scale {a.scale}, mosaic {a.mosaic}); "
          f"val: {len(val)} images, {val.num_annotations} objects of 8-24 px")
    print(f"{'prediction':<40} {'mAP50':>7} {'mAP50-95':>9} {'s/image':>8}")
    for k, (m50, m, dt) in rows.items():
        print(f"{k:<40} {m50:>7.4f} {m:>9.4f} {dt:>8.2f}")
    res_dir = Path(__file__).resolve().parent / "results"
    res_dir.mkdir(exist_ok=True)
    (res_dir / "small_objects.json").write_text(json.dumps(
        {"minutes": a.minutes, "weights": str(weights), "rows": {k: {"map50": v[0], "map": v[1], "s_per_image": v[2]}
                                                                 for k, v in rows.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
