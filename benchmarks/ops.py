"""Benchmark odkit box ops against torchvision's compiled kernels and textbook loops.

Usage: python benchmarks/ops.py [--repeat 15] [--baseline REV] [--no-loop] [--json benchmarks/results/ops.json]

Run it in an environment with torchvision (the reference environment) to get the direct ratios
odkit / torchvision; without torchvision only the textbook-loop columns are printed.
``--baseline REV`` also times ``odkit/ops/nms.py`` and ``odkit/ops/roi.py`` as they were at git
revision ``REV`` (loaded from ``git show``), so that before / after ratios come from one run.

NMS inputs are clustered, detector-like boxes: n/10 objects with centres uniform in a square
image whose side grows as sqrt(n) (1000 px at 5k boxes, so the density stays constant) and sizes
log-uniform in [16, 256] px (w and h drawn independently); each box is a copy of a random object
with its centre jittered by N(0, 0.08 * size) and its w, h scaled by exp(N(0, 0.08)); scores are
uniform. About one box in eight survives NMS at IoU 0.5. The textbook NMS is the numpy greedy
loop (py-faster-rcnn style); the textbook RoIAlign is a loop over RoIs, each one vectorised over
channels and samples (the usual pure-PyTorch port of the reference kernel).

Timings are interleaved (one sample of every contender per round) and each sample repeats the
call until it lasts at least ~2 ms; the figure is the median (or, with ``--stat min``, the
fastest sample, which other processes' load disturbs least) per call, with torch's default thread
count (printed). Every odkit result is checked against the other contenders.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from odkit.ops import batched_nms, nms, roi_align

ROOT = Path(__file__).resolve().parents[1]
STAT = "median"  # or "min" (--stat): the fastest sample, robust to other processes' load

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


def loop_roi_align(
    feats: torch.Tensor, rois: torch.Tensor, out: int, scale: float, sr: int, aligned: bool = True
) -> torch.Tensor:
    """Textbook RoIAlign: a Python loop over RoIs, bilinear samples gathered per RoI."""
    _, c, h, w = feats.shape
    res = []
    off = 0.5 if aligned else 0.0
    for r in rois.tolist():
        x0, y0 = r[1] * scale - off, r[2] * scale - off
        rw, rh = r[3] * scale - off - x0, r[4] * scale - off - y0
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        gh = sr if sr > 0 else math.ceil(rh / out)
        gw = sr if sr > 0 else math.ceil(rw / out)
        ys = y0 + (torch.arange(out * gh, dtype=torch.float32) + 0.5) * (rh / out / gh)
        xs = x0 + (torch.arange(out * gw, dtype=torch.float32) + 0.5) * (rw / out / gw)
        vy, vx = (ys >= -1) & (ys <= h), (xs >= -1) & (xs <= w)
        ys, xs = ys.clamp(0, h - 1), xs.clamp(0, w - 1)
        y_lo, x_lo = ys.floor().long().clamp(max=h - 2), xs.floor().long().clamp(max=w - 2)
        ly, lx = ys - y_lo, xs - x_lo
        f = feats[int(r[0])]
        top = f[:, y_lo] * (1 - ly)[:, None] + f[:, y_lo + 1] * ly[:, None]  # [c, ny, w]
        v = top[:, :, x_lo] * (1 - lx) + top[:, :, x_lo + 1] * lx  # [c, ny, nx]
        v = v * (vy[:, None] & vx[None, :])
        res.append(v.reshape(c, out, gh, out, gw).mean(dim=(2, 4)))
    return torch.stack(res)


def load_baseline(rev: str) -> dict[str, types.ModuleType]:
    """odkit/ops/nms.py and roi.py at git revision ``rev``, as stand-alone modules."""
    mods = {}
    for name in ("nms", "roi"):
        path = f"odkit/ops/{name}.py"
        src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True)
        mod = types.ModuleType(f"odkit_baseline_{name}")
        exec(compile(src.stdout, f"{rev}:{path}", "exec"), mod.__dict__)  # noqa: S102
        mods[name] = mod
    return mods


def bench(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median ms per call of each function, sampled in interleaved rounds.

    A ``"before"`` entry is timed after the others, not interleaved: the old code changed the
    process-wide thread count on every call, which disturbs whatever runs next.
    """
    if "before" in fns and len(fns) > 1:
        rest = {k: f for k, f in fns.items() if k != "before"}
        return bench(rest, repeat) | bench({"before": fns["before"]}, repeat)
    inner = {}
    for k, fn in fns.items():
        fn()
        t = time.perf_counter()
        fn()
        inner[k] = max(1, min(200, int(2e-3 / max(time.perf_counter() - t, 1e-7))))
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(inner[k]):
                fn()
            samples[k].append((time.perf_counter() - t) / inner[k])
    stat = min if STAT == "min" else statistics.median
    return {k: stat(v) * 1e3 for k, v in samples.items()}


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def bench_nms(args: argparse.Namespace, base: dict | None) -> list[dict]:
    print("\nnms, IoU 0.5, clustered boxes (ms per call)")
    print(f"{'boxes':>6} {'kept':>5} {'numpy':>8} {'odkit':>8} {'before':>8} {'tv':>8} "
          f"{'odkit/tv':>9} {'before/tv':>10} {'odkit/numpy':>12}")
    rows = []
    for n in (100, 500, 1000, 2000, 5000, 20000):
        boxes, scores = clustered_boxes(n)
        bn, sn = boxes.numpy(), scores.numpy()
        keep = nms(boxes, scores, 0.5).tolist()
        ok = sorted(keep) == sorted(numpy_nms(bn, sn, 0.5))
        fns: dict[str, Callable[[], object]] = {
            "numpy": lambda: numpy_nms(bn, sn, 0.5),  # noqa: B023
            "odkit": lambda: nms(boxes, scores, 0.5),  # noqa: B023
        }
        if base:
            fns["before"] = lambda: base["nms"].nms(boxes, scores, 0.5)  # noqa: B023
        if tvops:  # same set (the order of exactly tied scores may differ)
            ok &= sorted(keep) == sorted(tvops.nms(boxes, scores, 0.5).tolist())
            fns["tv"] = lambda: tvops.nms(boxes, scores, 0.5)  # noqa: B023
        t = bench(fns, args.repeat if n < 20000 else max(3, args.repeat // 3))
        t_b, t_tv = t.get("before"), t.get("tv")
        print(f"{n:>6} {len(keep):>5} {t['numpy']:>8.3f} {t['odkit']:>8.3f} "
              f"{t_b if t_b is not None else float('nan'):>8.3f} {t_tv if t_tv is not None else float('nan'):>8.3f} "
              f"{_ratio(t['odkit'], t_tv):>9} {_ratio(t_b, t_tv):>10} {t['odkit'] / t['numpy']:>12.3f}"
              + ("" if ok else "  MISMATCH"))
        rows.append({"n": n, "kept": len(keep), "identical": ok, **{f"{k}_ms": v for k, v in t.items()}})
    return rows


def bench_batched(args: argparse.Namespace, base: dict | None) -> list[dict]:
    print("\nbatched_nms, 80 classes, IoU 0.5 (ms per call; numpy = the loop per class)")
    rows = []
    for n in (5000, 20000):
        boxes, scores = clustered_boxes(n, seed=1)
        labels = torch.from_numpy(np.random.default_rng(1).integers(0, 80, n))
        bn, sn, ln = boxes.numpy(), scores.numpy(), labels.numpy()
        keep = batched_nms(boxes, scores, labels, 0.5)
        ok = sorted(keep.tolist()) == sorted(numpy_batched_nms(bn, sn, ln, 0.5))
        fns: dict[str, Callable[[], object]] = {
            "numpy": lambda: numpy_batched_nms(bn, sn, ln, 0.5),  # noqa: B023
            "odkit": lambda: batched_nms(boxes, scores, labels, 0.5),  # noqa: B023
        }
        if base:
            fns["before"] = lambda: base["nms"].batched_nms(boxes, scores, labels, 0.5)  # noqa: B023
        if tvops:
            ok &= sorted(keep.tolist()) == sorted(tvops.batched_nms(boxes, scores, labels, 0.5).tolist())
            fns["tv"] = lambda: tvops.batched_nms(boxes, scores, labels, 0.5)  # noqa: B023
        t = bench(fns, args.repeat if n < 20000 else max(3, args.repeat // 3))
        print(f"{n:>6} boxes: " + "  ".join(f"{k} {v:.2f}" for k, v in t.items())
              + f"  odkit/tv {_ratio(t['odkit'], t.get('tv'))}  before/tv {_ratio(t.get('before'), t.get('tv'))}"
              + ("" if ok else "  MISMATCH"))
        rows.append({"n": n, "identical": ok, **{f"{k}_ms": v for k, v in t.items()}})
    return rows


def bench_roi_align(args: argparse.Namespace, base: dict | None) -> list[dict]:
    print("\nroi_align, 512 RoIs x 256 channels -> 7x7, features [2, 256, 50, 68] at stride 16 (ms per call)")
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 256, 50, 68, generator=g)
    xy = torch.rand(512, 2, generator=g) * torch.tensor([1000.0, 700.0])
    wh = torch.exp(torch.rand(512, 2, generator=g) * math.log(400 / 16)) * 16
    rois = torch.cat([torch.randint(0, 2, (512, 1), generator=g).float(), xy, xy + wh], 1)
    fr = feats.clone().requires_grad_()
    grad = torch.randn(512, 256, 7, 7, generator=g)
    impls: dict[str, Callable[..., torch.Tensor]] = {"odkit": roi_align}
    if not args.no_loop:
        impls["loop"] = loop_roi_align
    if base:
        impls["before"] = base["roi"].roi_align
    if tvops:
        impls["tv"] = tvops.roi_align
    rows = []
    for sr in (2, 0):
        ref = impls["tv" if tvops else "loop"](feats, rois, 7, 1 / 16, sr, True)
        err = (roi_align(feats, rois, 7, 1 / 16, sr, True) - ref).abs().max().item()
        fwd = {k: (lambda f=f: f(feats, rois, 7, 1 / 16, sr, True)) for k, f in impls.items()}  # noqa: B023

        def fb(f: Callable[..., torch.Tensor]) -> Callable[[], None]:
            def run() -> None:
                fr.grad = None
                f(fr, rois, 7, 1 / 16, sr, True).backward(grad)  # noqa: B023
            return run

        fast = [k for k in impls if k != "loop"]  # the textbook loop is timed with fewer repeats
        tf = bench({k: fwd[k] for k in fast}, args.repeat)
        tb = bench({k: fb(impls[k]) for k in fast}, max(3, args.repeat // 2))
        if "loop" in impls:
            tf |= bench({"loop": fwd["loop"]}, 3)
            tb |= bench({"loop": fb(impls["loop"])}, 2)
        print(f"sampling_ratio={sr} (max |odkit - {'tv' if tvops else 'loop'}| = {err:.1e})")
        for name, t in (("forward", tf), ("forward+backward", tb)):
            print(f"  {name:<17}" + "  ".join(f"{k} {v:.1f}" for k, v in t.items())
                  + f"  odkit/tv {_ratio(t['odkit'], t.get('tv'))}  before/tv {_ratio(t.get('before'), t.get('tv'))}"
                  + f"  odkit/loop {_ratio(t['odkit'], t.get('loop'))}")
        rows.append({"sampling_ratio": sr, "max_abs_err": err, "forward_ms": tf, "fwd_bwd_ms": tb})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--baseline", default=None, help="git revision whose nms.py / roi.py are timed as 'before'")
    ap.add_argument("--only", default="nms,batched,roi", help="comma-separated subset of nms,batched,roi")
    ap.add_argument("--no-loop", action="store_true", help="skip the (slow) textbook RoIAlign loop")
    ap.add_argument("--stat", choices=("median", "min"), default="median", help="per-call time reported")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    global STAT
    STAT = args.stat
    base = load_baseline(args.baseline) if args.baseline else None
    only = set(args.only.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, torchvision: {tvops is not None}, "
          f"baseline: {args.baseline}, {args.stat} of {args.repeat}, python {sys.version.split()[0]}")
    results: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__, "baseline": args.baseline,
                     "stat": args.stat, "repeat": args.repeat}
    if "nms" in only:
        results["nms"] = bench_nms(args, base)
    if "batched" in only:
        results["batched_nms"] = bench_batched(args, base)
    if "roi" in only:
        results["roi_align"] = bench_roi_align(args, base)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
