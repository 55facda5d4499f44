"""Test-time augmentation on BCCD val: COCO mAP of a briefly trained yolox-nano (or --weights) with and without
``--tta`` (input sizes x1, x0.83 flipped, x0.67, merged by class-aware NMS at the prediction IoU).

    python benchmarks/tta_bccd.py [--minutes 5] [--weights W] [--data DIR]

Trains yolox-nano from scratch on BCCD's train split for ``--minutes`` (or evaluates ``--weights``),
then predicts the val split image by image (conf 0.001, IoU 0.65, 100 detections) with the plain
predictor and with :class:`odkit.engine.merging.TTAPredictor`, and prints mAP50-95 / mAP50 and the
seconds per image of both. Keep the CPU free for it (``flock`` the shared lock around it).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = os.environ.get("ODKIT_BCCD") or str(Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd")


def main() -> int:
    import odkit
    from odkit.data.formats import load_split
    from odkit.engine.merging import TTAPredictor
    from odkit.eval.coco import evaluate_coco

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--weights")
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "odkit-tta-bccd"))
    a = ap.parse_args()
    weights = a.weights
    if weights is None:
        res = odkit.train(data=a.data, model="yolox-nano", time=a.minutes, train_split="train", val_split="val",
                          project=a.out, name="nano", plots=False)
        weights = res.best
    base = odkit.load(weights)
    val = load_split(a.data, "val")
    rows = {}
    for name, pred in (("plain", base), ("--tta", TTAPredictor(base))):
        t = time.perf_counter()
        preds = []
        for i in range(len(val)):
            d = pred.predict([str(val.path(i))], conf=0.001, iou=0.65, max_det=100)[0]
            preds.append({k: v[:100].numpy() for k, v in d.items()})
        dt = (time.perf_counter() - t) / len(val)
        r = evaluate_coco(val, preds)
        rows[name] = (r.map, r.metrics["AP50"], dt)
    print(f"\n{base.name} ({weights}) on BCCD val ({len(val)} images, conf 0.001, IoU 0.65)")
    print(f"{'prediction':<8} {'mAP50-95':>9} {'mAP50':>7} {'s/image':>8}")
    for k, (m, m50, dt) in rows.items():
        print(f"{k:<8} {m:>9.4f} {m50:>7.4f} {dt:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
