"""Sliced prediction of one large image: time per image and peak memory, for growing image sizes.

    python benchmarks/slice_speed.py [--weights W] [--sizes 2000x1500,4000x3000,8000x6000] [--slice 640]
        [--batch 8] [--threads N]

yolox-nano (random weights, objectness raised so that every slice has detections to merge; or
``--weights``) predicts a synthetic picture of each size slice by slice (``--slice`` px, overlap
0.2, slices resized to the model's input, ``--batch`` slices per forward pass, greedy NMM). Each
size runs in a fresh process: the table prints the slices, seconds per image (after one warm-up
image), the process's peak resident memory and its growth over the same process right after loading
the model, next to the image's own size in memory. Slices are views streamed ``--batch`` at a time,
so the growth is the image plus one batch, not the number of slices.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(w: int, h: int, a: argparse.Namespace) -> dict:
    import torch

    from odkit.engine.predictor import Predictor
    from odkit.engine.slicing import SliceConfig, SlicedPredictor, slice_grid
    from odkit.models import zoo

    torch.set_num_threads(a.threads)
    if a.weights:
        import odkit

        base = odkit.load(a.weights)
    else:
        torch.manual_seed(0)
        m = zoo.build("yolox-nano", num_classes=3)
        with torch.no_grad():
            for i in range(3):
                m.head.obj_preds[i].bias.fill_(2.0)
                m.head.cls_preds[i].bias.fill_(0.0)
        base = Predictor(m, {"model_config": m.config})
    pred = SlicedPredictor(base, SliceConfig(size=a.slice, overlap=0.2))
    warm = np.full((a.slice, a.slice, 3), 100, np.uint8)
    pred.predict(warm)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    before = rss_mb()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    out = pred.predict(img, batch=a.batch)[0]
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"size": f"{w}x{h}", "slices": len(slice_grid(h, w, a.slice, 0.2)), "seconds": dt,
            "boxes": int(len(out["boxes"])), "peak_mb": peak, "rss_after_load_mb": before,
            "growth_mb": peak - max(before, peak_before), "image_mb": img.nbytes / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights")
    ap.add_argument("--sizes", default="2000x1500,4000x3000,8000x6000")
    ap.add_argument("--slice", type=int, default=640)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        w, h = map(int, a.child.split("x"))
        print(json.dumps(child(w, h, a)))
        return 0
    rows = []
    for s in a.sizes.split(","):
        cmd = [sys.executable, __file__, "--child", s, "--slice", str(a.slice), "--batch", str(a.batch),
               "--threads", str(a.threads)] + (["--weights", a.weights] if a.weights else [])
        rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]))
    print(f"yolox-nano, slice {a.slice} overlap 0.2 (resized to 416), batch {a.batch}, {a.threads} threads, greedy NMM")
    print(f"{'image':<10} {'slices':>6} {'s/image':>8} {'boxes':>6} {'peak RSS MB':>12} {'growth MB':>10} {'image MB':>9}")
    for r in rows:
        print(f"{r['size']:<10} {r['slices']:>6} {r['seconds']:>8.2f} {r['boxes']:>6} {r['peak_mb']:>12.0f} "
              f"{r['growth_mb']:>10.0f} {r['image_mb']:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
