"""Throughput of ``odkit predict`` on a folder and on a video, against odkit's sequential eager loop and
Ultralytics' predict, each in a process of its own on the same generated data.

    python benchmarks/predict_folder.py [--images 500] [--threads 2] [--img 416] [--rounds 2]
        [--ultralytics PYTHON] [--memory 5000] [--video-seconds 30] [--json OUT]

Data (made here): ``--images`` 640x480 JPEGs of synthetic shapes (odkit's ``data synth`` renderer) and
a ``--video-seconds`` long 640x480 25 fps mp4 clip. Model: yolox-nano, random weights (seed 0;
throughput does not depend on the weights), score threshold 0.25, input ``--img``.

Rows (images/s over the whole folder, after loading the model; the runs take turns for ``--rounds``
rounds and the medians are printed):

- ``odkit auto``: what ``odkit predict --source DIR`` runs: the default backend (the exported graph
  in onnxruntime), images decoded and letterboxed by 2 threads beside the network, batch 8, results
  written as they come (labels/*.txt, predictions.json);
- ``odkit eager sequential``: the same writing with PyTorch and no prefetching threads (each batch
  decoded, then predicted): odkit's loop before the backends;
- ``ultralytics yolo11n`` (with ``--ultralytics PYTHON``, a reference environment's python):
  ``YOLO("yolo11n.yaml").predict(source=DIR, imgsz=IMG, stream=True)`` on the CPU with the same number
  of torch threads, results iterated and not saved. YOLO11n has about 2.6x yolox-nano's FLOPs.

``--memory N``: peak resident memory of ``odkit auto`` over the folder and over one of ``N`` images
(the folder's files linked ``N / images`` times), and their ratio. The video row predicts the clip with
``--save`` (annotated mp4 + jsonl) and checks the output by reading it back.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 8
CONF = 0.25


def make_images(folder: Path, n: int) -> None:
    """``n`` 640x480 JPEG pictures of synthetic shapes."""
    import cv2

    from odkit.data.synth import render_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = cv2.resize(render_image(0, i % 200, size=560).image, (640, 480), interpolation=cv2.INTER_LINEAR)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])


def link_copies(src: Path, dst: Path, n: int) -> None:
    """A folder of ``n`` images: links to ``src``'s files, repeated."""
    files = sorted(src.glob("*.jpg"))
    dst.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        os.symlink(files[i % len(files)], dst / f"{i:06d}.jpg")


def make_video(path: Path, seconds: int, fps: int = 25) -> None:
    import cv2

    from odkit.data.synth import render_image

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (640, 480))
    base = [cv2.resize(render_image(0, i, size=560).image, (640, 480)) for i in range(10)]
    for i in range(seconds * fps):
        w.write(base[(i // fps) % 10][:, :, ::-1])
    w.release()


def weights(folder: Path, img: int) -> Path:
    import torch

    from odkit.models import zoo
    from odkit.weights.format import save_weights

    torch.manual_seed(0)
    model = zoo.build("yolox-nano", num_classes=3, img_size=img)
    return save_weights(folder / "yolox-nano.safetensors", model.state_dict(), {"model_config": model.config, "epoch": 1})


def run_odkit(mode: str, w: str, source: str, out: str, threads: int) -> dict:
    """One odkit run in this process: images/s (or frames/s) and peak RSS."""
    import resource

    import torch

    from odkit.cli.predict import _decode
    from odkit.cli.predict_run import predict_images, predict_video
    from odkit.export.backends import load

    torch.set_num_threads(threads)
    pred = load(w, backend="torch" if mode == "eager" else "auto", threads=threads)
    args = argparse.Namespace(source=source, img=None, batch=BATCH, workers=0 if mode == "eager" else 2,
                              conf=CONF, iou=None, max_det=None, save=mode == "video", vid_stride=1)
    pred.predict([__import__("numpy").zeros((480, 640, 3), "uint8")] * 2)  # warm-up
    t = time.perf_counter()
    rc = (predict_video if mode == "video" else predict_images)(pred, args, Path(out), *(() if mode == "video" else (_decode,)))
    seconds = time.perf_counter() - t
    n = (len(Path(out, "clip.jsonl").read_text().splitlines()) if mode == "video"
         else len(list(Path(out, "labels").glob("*.txt"))))
    return {"rc": rc, "items": n, "seconds": seconds, "per_s": n / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "backend": pred.backend}


ULTRALYTICS = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[3]))
from ultralytics import YOLO
m = YOLO("yolo11n.yaml")
img = int(sys.argv[2])
for _ in m.predict(source=sys.argv[1], imgsz=img, stream=True, verbose=False, device="cpu", conf=0.25, max_det=100):
    break
t = time.perf_counter(); n = 0
for r in m.predict(source=sys.argv[1], imgsz=img, stream=True, verbose=False, device="cpu", conf=0.25, max_det=100):
    n += 1
s = time.perf_counter() - t
print({"items": n, "seconds": s, "per_s": n / s})
"""


def child(cmd: list[str], env: dict | None = None) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-3000:]}")
    import ast

    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def odkit_child(mode: str, w: Path, source: Path, out: Path, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--w", str(w), "--source", str(source), "--out", str(out),
           "--threads", str(threads)]
    return child(cmd, {**os.environ, "OMP_NUM_THREADS": str(threads)})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--img", type=int, default=416)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ultralytics", help="python of an environment with ultralytics (reference environment)")
    ap.add_argument("--memory", type=int, default=0, help="also measure peak memory over a folder of this many")
    ap.add_argument("--video-seconds", type=int, default=30)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--w", help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(run_odkit(args.child, args.w, args.source, args.out, args.threads))
        return 0
    res: dict = {"images": args.images, "threads": args.threads, "img": args.img, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="odkit-folder-") as tmp:
        root = Path(tmp)
        make_images(root / "imgs", args.images)
        w = weights(root, args.img)
        per: dict[str, list[float]] = {}
        for r in range(args.rounds):
            for mode in ("auto", "eager"):
                row = odkit_child(mode, w, root / "imgs", root / f"out-{mode}-{r}", args.threads)
                per.setdefault(f"odkit {mode}", []).append(row["per_s"])
                res["rows"].setdefault(f"odkit {mode}", []).append(row)
            if args.ultralytics:
                row = child([args.ultralytics, "-c", ULTRALYTICS, str(root / "imgs"), str(args.img), str(args.threads)])
                per.setdefault("ultralytics yolo11n", []).append(row["per_s"])
                res["rows"].setdefault("ultralytics yolo11n", []).append(row)
        med = {k: statistics.median(v) for k, v in per.items()}
        res["images_per_s"] = med
        print(f"{args.images} images 640x480, yolox-nano at {args.img}, {args.threads} threads, median of {args.rounds}")
        for k, v in med.items():
            print(f"  {k:<26} {v:7.1f} images/s  ({', '.join(f'{x:.1f}' for x in per[k])})")
        a = med["odkit auto"]
        print(f"  auto / eager sequential: {a / med['odkit eager']:.2f}x")
        if "ultralytics yolo11n" in med:
            print(f"  auto / ultralytics yolo11n: {a / med['ultralytics yolo11n']:.2f}x (YOLO11n: ~2.6x the FLOPs)")
        if args.memory:
            link_copies(root / "imgs", root / "many", args.memory)
            small = odkit_child("auto", w, root / "imgs", root / "mem-small", args.threads)["peak_rss_mb"]
            big = odkit_child("auto", w, root / "many", root / "mem-big", args.threads)["peak_rss_mb"]
            res["memory"] = {"images_small": args.images, "images_big": args.memory, "peak_mb_small": small,
                             "peak_mb_big": big, "ratio": big / small}
            print(f"  peak memory: {small:.0f} MB over {args.images} images, {big:.0f} MB over {args.memory}: "
                  f"{big / small:.2f}x")
        if args.video_seconds:
            import cv2

            make_video(root / "clip.mp4", args.video_seconds)
            row = odkit_child("video", w, root / "clip.mp4", root / "video", args.threads)
            cap = cv2.VideoCapture(str(root / "video" / "clip.mp4"))
            back = (int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), int(cap.get(3)), int(cap.get(4)), cap.get(cv2.CAP_PROP_FPS))
            cap.release()
            res["video"] = {**row, "read_back": back}
            print(f"  video {args.video_seconds} s 640x480 25 fps: {row['items']} frames at {row['per_s']:.1f} "
                  f"frames/s (exit {row['rc']}); output read back: {back[0]} frames {back[1]}x{back[2]} at "
                  f"{back[3]:.0f} fps, jsonl {row['items']} records")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
