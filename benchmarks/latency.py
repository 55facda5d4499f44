"""End-to-end CPU latency of one image: PyTorch (eager fp32, channels_last, bf16 autocast) against
onnxruntime and OpenVINO exports, for yolox-nano and yolox-tiny at 320 and 416 pixels.

Each measurement covers the whole path of one fixed uint8 image (640x480 synthetic shapes, or
--image): letterbox, float conversion, inference, decoding, score threshold + NMS, unletterbox.
Batch 1, a fixed number of threads (default 2) for every runtime. Models are randomly initialised
(latency does not depend on the weights, except through the number of boxes that reach NMS: the
score threshold is a fixed 0.25, so post-processing handles few boxes). "+nms" columns run the
exported graph with in-graph NMS (fixed shape: it always processes min(1000, N*C) candidates).

Prints milliseconds per image (median of --iters rounds after --warmup runs; in each round every
column runs once, in turn, so load changes hit all columns alike) and the ratio of
PyTorch eager time to each column (> 1: faster than eager), both measured in the same run. The
machine may be shared: run it when it is idle and compare ratios, not absolute times.

    python benchmarks/latency.py [--models yolox-nano yolox-tiny] [--sizes 320 416] [--threads 2]
                                 [--iters 30] [--warmup 5] [--image PATH] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from odkit.data.synth import render_image
from odkit.data.transforms import letterbox
from odkit.models import zoo

CONF, IOU, MAX_DET = 0.25, 0.45, 100
COLUMNS = ["eager", "channels_last", "bf16", "onnxruntime", "openvino", "onnxruntime+nms", "openvino+nms"]


def torch_runner(model: torch.nn.Module, size: int, mode: str):
    """One-image PyTorch pipeline: letterbox -> [1,3,H,W] -> model.predict (decode, NMS, unletterbox)."""
    cl = mode in ("channels_last", "bf16")
    net = model.to(memory_format=torch.channels_last) if cl else model

    def run(img: np.ndarray):
        out, _, meta = letterbox(img, np.zeros((0, 4), np.float32), {"image_id": 0, "path": ""}, size)
        x = torch.from_numpy(out[None]).permute(0, 3, 1, 2).float().div_(255.0)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            return net.predict(x, [meta], conf_thr=CONF, iou_thr=IOU, max_det=MAX_DET)

    return run


def time_interleaved(runners: dict, img: np.ndarray, iters: int, warmup: int) -> dict[str, float]:
    """Median ms per call of each runner. The runners take turns (one call each per round), so a
    change in machine load affects all of them alike."""
    for run in runners.values():
        for _ in range(warmup):
            run(img)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(iters):
        for k, run in runners.items():
            t = time.perf_counter()
            run(img)
            times[k].append((time.perf_counter() - t) * 1000.0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["yolox-nano", "yolox-tiny"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[320, 416])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--image", help="image file to use instead of the synthetic 640x480 one")
    ap.add_argument("--num-classes", type=int, default=3)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from odkit.engine.runtime import cpu_has_native_bf16
    from odkit.export.onnx import export_onnx
    from odkit.export.openvino import onnx_to_openvino
    from odkit.export.runtime import load_predictor

    torch.set_num_threads(args.threads)
    if args.image:
        from odkit.data.imageio import read_image

        img = read_image(args.image)
    else:
        import cv2

        img = cv2.resize(render_image(0, 0, size=560).image, (640, 480), interpolation=cv2.INTER_LINEAR)
    print(
        f"image {img.shape[1]}x{img.shape[0]}, batch 1, {args.threads} threads, conf {CONF}, iou {IOU}, "
        f"median of {args.iters} runs; torch {torch.__version__}, native bf16: {cpu_has_native_bf16()}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="odkit-latency-") as tmp:
        for name in args.models:
            torch.manual_seed(0)
            for size in args.sizes:
                model = zoo.build(name, num_classes=args.num_classes, img_size=size).eval()
                runners = {}
                for mode in ("eager", "channels_last", "bf16"):
                    m = zoo.build(name, num_classes=args.num_classes, img_size=size).eval()
                    m.load_state_dict(model.state_dict())
                    runners[mode] = torch_runner(m, size, mode)
                for nms in (False, True):
                    stem = Path(tmp) / f"{name}_{size}_{'nms' if nms else 'plain'}"
                    onnx_path = export_onnx(
                        model,
                        stem.with_suffix(".onnx"),
                        size,
                        nms=nms,
                        conf_thr=CONF,
                        iou_thr=IOU,
                        max_det=MAX_DET,
                    )
                    xml = onnx_to_openvino(onnx_path, stem.with_suffix(".xml"))
                    Path(str(xml) + ".json").write_text(Path(str(onnx_path) + ".json").read_text())
                    for kind, path in (("onnxruntime", onnx_path), ("openvino", xml)):
                        pred = load_predictor(path, threads=args.threads)
                        runners[kind + ("+nms" if nms else "")] = lambda im, p=pred: p.predict(
                            [im], conf=CONF, iou=IOU, max_det=MAX_DET
                        )
                row = {"model": name, "img": size, **time_interleaved(runners, img, args.iters, args.warmup)}
                results.append(row)
                print(f"  {name} {size}: " + ", ".join(f"{c} {row[c]:.1f}" for c in COLUMNS), file=sys.stderr)

    head = f"{'model':<11} {'img':>4} " + " ".join(f"{c:>15}" for c in COLUMNS)
    print("\nms per image (lower is better)")
    print(head)
    for r in results:
        print(f"{r['model']:<11} {r['img']:>4} " + " ".join(f"{r[c]:>15.1f}" for c in COLUMNS))
    print("\nspeed-up vs PyTorch eager fp32 (eager ms / column ms; > 1 is faster)")
    print(head)
    for r in results:
        print(f"{r['model']:<11} {r['img']:>4} " + " ".join(f"{r['eager'] / r[c]:>15.2f}" for c in COLUMNS))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"threads": args.threads, "conf": CONF, "rows": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
