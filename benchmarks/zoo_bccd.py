"""Train zoo models from scratch on BCCD (train split, evaluated on val) for a fixed wall-clock budget
each, with each model's default recipe, and print one table row per model: parameters, GFLOPs at the
input size, training images/s (timed steps on real augmented batches), mAP50-95 and mAP50 of the best
weights. Run it alone on the machine; models train one after another.

    python benchmarks/zoo_bccd.py --minutes 15 [--models yolox-nano,retinanet-lite,...] [--img 416]

BCCD is found as the tests find it (``$ODKIT_BCCD``, else ``shared/data/bccd`` beside the repository).
Results go to ``benchmarks/results/zoo_bccd_<minutes>min.json`` (``--out`` to write elsewhere, e.g. one
file per model run).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))  # this checkout's odkit, not an installed one
DEFAULT_MODELS = "yolox-nano,retinanet-lite,fcos-lite,atss-lite,gfl-lite,yolov3-tiny,fasterrcnn-mobilenetv3-fpn"


def train_speed(data: str, model_name: str, img: int, batch: int, steps: int = 4, warmup: int = 2) -> float:
    """Training images/s (forward + loss + backward + optimizer step, channels_last) on real batches."""
    from odkit.engine.config import TrainConfig
    from odkit.engine.data import load_train_val, train_loader
    from odkit.engine.distributed import DistInfo
    from odkit.engine.optim import build_optimizer
    from odkit.models.zoo import build
    from odkit.models.zoo import recipe as zoo_recipe

    augment = zoo_recipe(model_name).get("augment", "yolox")  # the model's training pipeline (SSD's own)
    cfg = TrainConfig(data=data, model=model_name, img_size=img, batch=batch, workers=0, train_split="train",
                      val_split="val", augment=augment)
    train, _ = load_train_val(cfg, report=False)
    loader = train_loader(train, cfg, no_aug=False, workers=0, dist=DistInfo())
    batches = []
    for b in loader:
        batches.append(b)
        if len(batches) >= steps + warmup:
            break
    torch.manual_seed(0)
    model = build(model_name, num_classes=train.num_classes).train().to(memory_format=torch.channels_last)
    opt = build_optimizer(model, "adamw", lr=1e-4)
    n, t = 0, 0.0
    for k, (images, targets, _) in enumerate(batches):
        x = images.contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        loss = model(x, targets)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if k >= warmup:
            n += x.shape[0]
            t += time.perf_counter() - t0
    return n / max(t, 1e-9)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, required=True, help="training budget per model, minutes")
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated zoo names (default {DEFAULT_MODELS})")
    ap.add_argument("--img", type=int, default=416, help="input size in pixels (default 416)")
    ap.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    ap.add_argument("--data", default=None, help="BCCD VOC root (default: found beside the repository)")
    ap.add_argument("--project", default="runs/zoo_bccd", help="where the run directories go")
    ap.add_argument("--out", default=None,
                    help="results json (default benchmarks/results/zoo_bccd_<minutes>min.json)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from _paths import bccd_root

    from odkit.cli.info import model_info
    from odkit.engine.api import train
    from odkit.engine.runtime import set_threads

    data = args.data or str(bccd_root())
    threads = set_threads()
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        info = model_info(name, args.img, num_classes=3)
        speed = train_speed(data, name, args.img, args.batch)
        t0 = time.time()
        result = train(data=data, train_split="train", val_split="val", model=name, img_size=args.img,
                       batch=args.batch, time=args.minutes, project=args.project,
                       name=f"{name}_{args.minutes:g}min", exist_ok=True)
        m = result.metrics
        rows.append({"model": name, "params_M": info["params_M"], "gflops": info["gflops"], "train_img_s": speed,
                     "epochs": result.epochs, "wall_min": (time.time() - t0) / 60,
                     "mAP50-95": m.get("mAP50-95", float("nan")), "mAP50": m.get("mAP50", float("nan")),
                     "run_dir": str(result.run_dir)})
        print(f"{name}: mAP50-95 {rows[-1]['mAP50-95']:.4f} mAP50 {rows[-1]['mAP50']:.4f} "
              f"({result.epochs} epochs, {rows[-1]['wall_min']:.1f} min)", flush=True)
    print(f"\nBCCD from scratch, {args.minutes:g} min per model, {args.img} px, batch {args.batch}, {threads} threads, "
          "default recipe of each model (train split, evaluated on val)")
    print(f"{'model':<16} {'params M':>9} {'GFLOPs':>7} {'train img/s':>12} {'epochs':>7} {'mAP50-95':>9} {'mAP50':>7}")
    for r in rows:
        print(f"{r['model']:<16} {r['params_M']:>9.3f} {r['gflops']:>7.2f} {r['train_img_s']:>12.2f} {r['epochs']:>7d} "
              f"{r['mAP50-95']:>9.4f} {r['mAP50']:>7.4f}")
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"zoo_bccd_{args.minutes:g}min.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"minutes": args.minutes, "img": args.img, "batch": args.batch, "threads": threads,
                               "rows": rows}, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
