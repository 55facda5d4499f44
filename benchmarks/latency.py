"""CPU latency of one image, bare model and end to end, for every runtime, as ratios to the bare
onnxruntime graph: PyTorch eager (the prepared inference model: BatchNorm folded, channels_last),
PyTorch compiled (``torch.compile``), onnxruntime and OpenVINO exports, and ``e2e auto``: what
``odkit.load(weights).predict`` runs by default (the cached exported graph in onnxruntime).

"bare" columns time the network alone on an already letterboxed float input (PyTorch:
``forward_export`` of the prepared model; exports: the graph run). "e2e" columns time the whole
path of one fixed uint8 image (640x480 synthetic shapes, or --image) through the public API
(``Predictor.predict`` / ``ExportedPredictor.predict``): letterbox, float conversion, inference,
decoding, score threshold + NMS, unletterbox. "unprepared" columns run the plain model
(BatchNorm not folded, NCHW weights) and "SiLU fused" the prepared model with each SiLU fused into
its oneDNN convolution (``fuse_activations``, not the Predictor's default), for comparison. Batch 1,
a fixed number of threads (default 2) for every runtime. Models are randomly initialised (latency does not depend on
the weights, except through the number of boxes reaching NMS: the score threshold is a fixed 0.25).

Each runtime is timed in a process of its own (PyTorch eager, PyTorch compiled, onnxruntime,
OpenVINO): two runtimes in one process keep two thread pools whose idle threads spin on the same
cores and slow each other down (onnxruntime's graph measured 15 ms there against 8 ms alone). Within
a process the columns take turns (one call each per iteration). The processes run in turn for
``--rounds`` rounds (the compiled one only in the first: it compiles for minutes), so load changes
on the machine hit all runtimes alike. Prints milliseconds per image (median over rounds of each
round's median of --iters calls after --warmup) and each column's ratio to the bare onnxruntime
graph's time in the same round (< 1 is faster), as the median over rounds with its range. The
machine may be shared: compare ratios, not absolute times, and use several rounds.

    python benchmarks/latency.py [--models yolox-nano] [--sizes 416] [--threads 2] [--rounds 3]
                                 [--iters 30] [--warmup 5] [--image PATH] [--no-compile] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from odkit.data.synth import render_image
from odkit.data.transforms import letterbox
from odkit.engine.predictor import Predictor
from odkit.models import zoo
from odkit.models.fuse import compile_or_eager, prepare_inference_model

CONF, IOU, MAX_DET = 0.25, 0.45, 100
RUNTIMES = ["eager", "compiled", "onnxruntime", "openvino"]
COLUMNS = ([f"bare {r}" for r in RUNTIMES] + [f"e2e {r}" for r in RUNTIMES] + ["e2e auto"]
           + ["bare eager SiLU fused", "bare eager unprepared", "e2e unprepared"])
REFERENCE = "bare onnxruntime"


def unprepared_runner(model: torch.nn.Module, size: int):
    """The plain model's one-image path: letterbox -> [1,3,H,W] -> model.predict (no folding)."""

    def run(img: np.ndarray):
        out, _, meta = letterbox(img, np.zeros((0, 4), np.float32), {"image_id": 0, "path": ""}, size)
        x = torch.from_numpy(out[None]).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.no_grad():
            return model.predict(x, [meta], conf=CONF, iou=IOU, max_det=MAX_DET)

    return run


def torch_runners(model: torch.nn.Module, name: str, size: int, compiled: bool) -> dict:
    """Bare and end-to-end PyTorch runners: the eager prepared model with the unprepared comparison
    columns, or (``compiled``) the compiled one."""
    meta = {"model": name, "num_classes": model.num_classes, "img_size": size}
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    kind = "compiled" if compiled else "eager"
    pred = Predictor(model, meta, compile=compiled)
    net = prepare_inference_model(model, compile=compiled)  # as the Predictor
    if compiled:
        net = compile_or_eager(net, lambda m: m.forward_export(x))

    def bare(_img, n=net):
        with torch.no_grad():
            return n.forward_export(x)

    runners: dict = {f"bare {kind}": bare,
                     f"e2e {kind}": lambda im, p=pred: p.predict(im, conf=CONF, iou=IOU, max_det=MAX_DET)}
    if compiled:
        return runners
    fused = prepare_inference_model(model, fuse_activations=True)  # SiLU fused into the convolutions too

    def bare_fused(_img, n=fused):
        with torch.no_grad():
            return n.forward_export(x)

    def bare_plain(_img, n=model):
        with torch.no_grad():
            return n.forward_export(x)

    runners["bare eager SiLU fused"] = bare_fused
    runners["bare eager unprepared"] = bare_plain
    runners["e2e unprepared"] = unprepared_runner(model, size)
    return runners


def export_runners(path: Path, kind: str, size: int, threads: int) -> dict:
    """Bare graph and end-to-end runners of one exported model (one runtime session for both)."""
    from odkit.export.runtime import load_predictor

    pred = load_predictor(path, threads=threads)
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    return {f"bare {kind}": lambda _im, p=pred, xx=x: p.backend.run(xx),
            f"e2e {kind}": lambda im, p=pred: p.predict([im], conf=CONF, iou=IOU, max_det=MAX_DET)}


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


def _span(lo_hi: tuple[float, float]) -> str:
    return f"[{lo_hi[0]:.2f}-{lo_hi[1]:.2f}]"


def load_image(path: str | None) -> np.ndarray:
    if path:
        from odkit.data.imageio import read_image

        return read_image(path)
    import cv2

    return cv2.resize(render_image(0, 0, size=560).image, (640, 480), interpolation=cv2.INTER_LINEAR)


def group_main(args: argparse.Namespace) -> int:
    """One runtime's columns for one model and size, in this process alone; JSON on stdout."""
    torch.set_num_threads(args.threads)
    img = load_image(args.image)
    if args.group == "auto":  # what a user gets: odkit.load(weights) with the default backend
        import odkit

        pred = odkit.load(args.path, backend="auto", threads=args.threads)
        runners = {"e2e auto": lambda im, p=pred: p.predict([im], conf=CONF, iou=IOU, max_det=MAX_DET, batch=1)}
    elif args.group in ("eager", "compiled"):
        torch.manual_seed(0)  # the parent's model: same seed, same random weights
        model = zoo.build(args.model, num_classes=args.num_classes, img_size=args.size).eval()
        runners = torch_runners(model, args.model, args.size, args.group == "compiled")
    else:
        runners = export_runners(Path(args.path), args.group, args.size, args.threads)
    print(json.dumps(time_interleaved(runners, img, args.iters, args.warmup)))
    return 0


def run_group(args: argparse.Namespace, group: str, model: str, size: int, path: Path | None) -> dict[str, float]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--group", group, "--model", model, "--size", str(size),
           "--threads", str(args.threads), "--iters", str(args.iters), "--warmup", str(args.warmup),
           "--num-classes", str(args.num_classes)]
    if path is not None:
        cmd += ["--path", str(path)]
    if args.image:
        cmd += ["--image", args.image]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{model} {size} {group}: the timing process failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["yolox-nano"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[416])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="runs of each runtime's process, in turn")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--image", help="image file to use instead of the synthetic 640x480 one")
    ap.add_argument("--num-classes", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile columns")
    ap.add_argument("--json", help="also write the results here")
    # one runtime's timing process (internal)
    ap.add_argument("--group", choices=["eager", "compiled", "onnxruntime", "openvino", "auto"],
                    help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.group:
        return group_main(args)

    import odkit
    from odkit.export.onnx import export_onnx
    from odkit.export.openvino import onnx_to_openvino
    from odkit.weights.format import save_weights

    img = load_image(args.image)
    print(
        f"image {img.shape[1]}x{img.shape[0]}, batch 1, {args.threads} threads, conf {CONF}, iou {IOU}; each "
        f"runtime in its own process, median over {args.rounds} rounds of the median of {args.iters} calls; "
        f"torch {torch.__version__}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="odkit-latency-") as tmp:
        for name in args.models:
            for size in args.sizes:
                torch.manual_seed(0)
                model = zoo.build(name, num_classes=args.num_classes, img_size=size).eval()
                onnx_path = export_onnx(model, Path(tmp) / f"{name}_{size}.onnx", size, conf=CONF,
                                        iou=IOU, max_det=MAX_DET)
                xml = onnx_to_openvino(onnx_path, Path(tmp) / f"{name}_{size}.xml")
                Path(str(xml) + ".json").write_text(Path(str(onnx_path) + ".json").read_text())
                weights = save_weights(Path(tmp) / f"{name}_{size}.safetensors", model.state_dict(),
                                       {"model_config": model.config, "epoch": 1})
                odkit.load(weights, backend="auto", threads=args.threads)  # the cached graph, built once
                groups: list[tuple[str, Path | None]] = [("eager", None), ("onnxruntime", onnx_path),
                                                         ("openvino", xml), ("auto", weights)]
                per_round: dict[str, list[float]] = {}
                for r in range(args.rounds):
                    todo = groups + ([("compiled", None)] if r == 0 and not args.no_compile else [])
                    for group, path in todo:
                        for col, ms in run_group(args, group, name, size, path).items():
                            per_round.setdefault(col, []).append(ms)
                ref = per_round[REFERENCE]
                ratios = {c: [ms / ref[r] for r, ms in enumerate(v)] for c, v in per_round.items()}
                row = {"model": name, "img": size, **{c: statistics.median(v) for c, v in per_round.items()},
                       "ratio": {c: statistics.median(v) for c, v in ratios.items()},
                       "ratio_range": {c: (min(v), max(v)) for c, v in ratios.items()}, "rounds": per_round}
                results.append(row)
                print(f"  {name} {size}: " + ", ".join(f"{c} {row[c]:.1f}" for c in COLUMNS if c in row),
                      file=sys.stderr)
    cols = [c for c in COLUMNS if all(c in r for r in results)]
    head = f"{'model':<11} {'img':>4} " + " ".join(f"{c:>16}" for c in cols)
    print("\nms per image (lower is better)")
    print(head)
    for r in results:
        print(f"{r['model']:<11} {r['img']:>4} " + " ".join(f"{r[c]:>16.2f}" for c in cols))
    print(f"\nratio to the {REFERENCE} graph of the same round (column ms / {REFERENCE} ms), median over "
          f"rounds [lowest-highest]; lower is better")
    print(head)
    for r in results:
        print(f"{r['model']:<11} {r['img']:>4} " + " ".join(f"{r['ratio'][c]:>16.2f}" for c in cols))
        print(f"{'':<11} {'':>4} " + " ".join(f"{_span(r['ratio_range'][c]):>16}" for c in cols))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"threads": args.threads, "conf": CONF, "reference": REFERENCE, "rows": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
