"""Benchmark odkit box ops: nms, batched_nms, roi_align.

Usage: python benchmarks/ops.py [--repeat 7] [--json benchmarks/results/ops.json]

NMS inputs are clustered, detector-like boxes: n/10 objects with centres uniform in a square
image whose side grows as sqrt(n) (1000 px at 5k boxes, so the density stays constant) and sizes
log-uniform in [16, 256] px (w and h drawn independently); each box is a copy of a random object
with its centre jittered by N(0, 0.08 * size) and its w, h scaled by exp(N(0, 0.08)); scores are
uniform. About one box in eight survives NMS at IoU 0.5.

The baseline is the textbook numpy greedy loop (py-faster-rcnn style), measured in the same run.
On the reference machine torchvision's compiled nms took 0.3 / 6.6 / 109 ms and that numpy loop
1.1 / 10.5 / 105 ms at 1k / 5k / 20k boxes, so ``odkit vs tv (est.)`` = (odkit / numpy) x
(numpy_ref / tv_ref). When torchvision is importable its kernels are timed directly as well.
Times are medians of ``--repeat`` runs with torch's default thread count (printed).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from odkit.ops import batched_nms, nms, roi_align

REF_MS = {1000: (0.3, 1.1), 5000: (6.6, 10.5), 20000: (109.0, 105.0)}  # (torchvision, numpy loop)

try:  # optional, only for direct ratios
    import torchvision.ops as tvops  # type: ignore[import-not-found]
except Exception:  # noqa: BLE001
    tvops = None


def clustered_boxes(n: int, seed: int = 0, per: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    g = np.random.default_rng(seed)
    nobj = max(1, n // per)
    centres = g.uniform(0, 1000.0 * math.sqrt(n / 5000), (nobj, 2))
    sizes = np.exp(g.uniform(math.log(16), math.log(256), (nobj, 2)))
    obj = g.integers(0, nobj, n)
    c = centres[obj] + g.normal(0, 0.08, (n, 2)) * sizes[obj]
    s = sizes[obj] * np.exp(g.normal(0, 0.08, (n, 2)))
    boxes = np.concatenate([c - s / 2, c + s / 2], 1).astype(np.float32)
    return torch.from_numpy(boxes), torch.from_numpy(g.uniform(0, 1, n).astype(np.float32))


def numpy_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1) * np.maximum(0.0, yy2 - yy1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thr)[0] + 1]
    return keep


def numpy_batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, thr: float) -> list[int]:
    keep = []
    for c in np.unique(labels):
        idx = np.nonzero(labels == c)[0]
        keep += [int(idx[k]) for k in numpy_nms(boxes[idx], scores[idx], thr)]
    return keep


def timeit(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    results: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__, "nms": [], "tv": tvops is not None}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeat}")
    print("\nnms, IoU 0.5, clustered boxes")
    hdr = f"{'boxes':>6} {'kept':>6} {'numpy ms':>9} {'odkit ms':>9} {'odkit/numpy':>12} {'odkit vs tv (est.)':>19}"
    print(hdr + (f" {'tv ms':>7} {'odkit/tv':>9}" if tvops else ""))
    for n in (1000, 5000, 20000):
        boxes, scores = clustered_boxes(n)
        bn, sn = boxes.numpy(), scores.numpy()
        rep = args.repeat if n < 20000 else max(3, args.repeat // 2)
        keep = nms(boxes, scores, 0.5)
        ok = keep.tolist() == numpy_nms(bn, sn, 0.5)
        t_np = timeit(lambda: numpy_nms(bn, sn, 0.5), rep)  # noqa: B023
        t_od = timeit(lambda: nms(boxes, scores, 0.5), rep)  # noqa: B023
        tv_ref, np_ref = REF_MS[n]
        est = t_od / t_np * (np_ref / tv_ref)
        row = {"n": n, "kept": len(keep), "numpy_ms": t_np, "odkit_ms": t_od, "odkit_over_numpy": t_od / t_np,
               "odkit_vs_tv_est": est, "identical_to_numpy": ok}
        line = f"{n:>6} {len(keep):>6} {t_np:>9.2f} {t_od:>9.2f} {t_od / t_np:>12.3f} {est:>18.2f}x"
        if tvops:
            t_tv = timeit(lambda: tvops.nms(boxes, scores, 0.5), rep)  # noqa: B023
            row.update(tv_ms=t_tv)
            line += f" {t_tv:>7.2f} {t_od / t_tv:>9.2f}"
        print(line + ("" if ok else "  (MISMATCH vs numpy loop)"))
        results["nms"].append(row)
    print(f"target: odkit <= 1.5x torchvision at 5k (ref {REF_MS[5000][0]} ms), goal <= 1.0x at 5k and 20k")

    print("\nbatched_nms, 80 classes, IoU 0.5 (baseline: numpy loop per class)")
    for n in (5000, 20000):
        boxes, scores = clustered_boxes(n, seed=1)
        labels = torch.from_numpy(np.random.default_rng(1).integers(0, 80, n))
        bn, sn, ln = boxes.numpy(), scores.numpy(), labels.numpy()
        t_np = timeit(lambda: numpy_batched_nms(bn, sn, ln, 0.5), args.repeat)  # noqa: B023
        t_od = timeit(lambda: batched_nms(boxes, scores, labels, 0.5), args.repeat)  # noqa: B023
        line = f"{n:>6} boxes: numpy {t_np:8.2f} ms  odkit {t_od:7.2f} ms  odkit/numpy {t_od / t_np:.3f}"
        row = {"n": n, "numpy_ms": t_np, "odkit_ms": t_od}
        if tvops:
            t_tv = timeit(lambda: tvops.batched_nms(boxes, scores, labels, 0.5), args.repeat)  # noqa: B023
            line += f"  tv {t_tv:.2f} ms  odkit/tv {t_od / t_tv:.2f}"
            row["tv_ms"] = t_tv
        print(line)
        results.setdefault("batched_nms", []).append(row)

    print("\nroi_align, 512 RoIs x 256 channels -> 7x7, features [2, 256, 50, 68] at stride 16")
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 256, 50, 68, generator=g)
    xy = torch.rand(512, 2, generator=g) * torch.tensor([1000.0, 700.0])
    wh = torch.exp(torch.rand(512, 2, generator=g) * math.log(400 / 16)) * 16
    rois = torch.cat([torch.randint(0, 2, (512, 1), generator=g).float(), xy, xy + wh], 1)
    for sr in (2, 0):
        t_f = timeit(lambda: roi_align(feats, rois, 7, 1 / 16, sr, True), args.repeat)  # noqa: B023
        fr = feats.clone().requires_grad_()

        def fwd_bwd() -> None:
            roi_align(fr, rois, 7, 1 / 16, sr, True).sum().backward()  # noqa: B023

        t_b = timeit(fwd_bwd, max(3, args.repeat // 2))
        line = f"sampling_ratio={sr}: forward {t_f:.1f} ms, forward+backward {t_b:.1f} ms"
        row = {"sampling_ratio": sr, "forward_ms": t_f, "fwd_bwd_ms": t_b}
        if tvops:
            t_tv = timeit(lambda: tvops.roi_align(feats, rois, 7, 1 / 16, sr, True), args.repeat)  # noqa: B023
            line += f"; tv forward {t_tv:.1f} ms (odkit/tv {t_f / t_tv:.2f})"
            row["tv_ms"] = t_tv
        print(line)
        results.setdefault("roi_align", []).append(row)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
