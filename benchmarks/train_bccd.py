"""Train yolox-nano from scratch on BCCD (VOC) for a fixed wall-clock budget.

First short timed phases measure training throughput (images/s, forward + loss + backward + SGD
step on real augmented batches) for fp32 (NCHW), channels_last and channels_last + bf16 autocast,
each printed with its ratio against the fp32 baseline measured in the same run. Then a full
training run on the train split (evaluated on val) for ``--minutes``; the final mAP50-95 / mAP50
of the best weights are printed and everything is written to benchmarks/results/.

    python benchmarks/train_bccd.py --minutes 30 [--model yolox-nano] [--img 416] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch

# BCCD as the tests find it: $ODKIT_BCCD, else shared/data/bccd beside the repository
DEFAULT_DATA = os.environ.get("ODKIT_BCCD") or str(Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd")


def time_phases(data: str, model_name: str, img: int, batch: int, iters: int, warmup: int) -> dict[str, float]:
    """images/s of training steps for each speed mode, on the same pre-loaded batches."""
    from odkit.engine.config import TrainConfig
    from odkit.engine.data import load_train_val, train_loader
    from odkit.engine.distributed import DistInfo
    from odkit.engine.optim import build_optimizer
    from odkit.engine.runtime import cpu_has_native_bf16
    from odkit.models.zoo import build

    cfg = TrainConfig(data=data, img_size=img, batch=batch, workers=0, train_split="train", val_split="val")
    train, _ = load_train_val(cfg, report=False)
    loader = train_loader(train, cfg, no_aug=False, workers=0, dist=DistInfo())
    batches = []
    for b in loader:
        batches.append(b)
        if len(batches) >= warmup + iters:
            break
    modes = [("fp32", False, None), ("channels_last", True, None), ("bf16+channels_last", True, torch.bfloat16)]
    out: dict[str, float] = {}
    for name, cl, dtype in modes:
        torch.manual_seed(0)
        model = build(model_name, num_classes=train.num_classes).train()
        if cl:
            model = model.to(memory_format=torch.channels_last)
        opt = build_optimizer(model, "sgd", lr=1e-3)
        n_img, t_run = 0, 0.0
        for k, (images, targets, _) in enumerate(batches):
            x = images.contiguous(memory_format=torch.channels_last) if cl else images
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                loss = model(x, targets)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0
            if k >= warmup:
                n_img += x.shape[0]
                t_run += dt
        out[name] = n_img / max(t_run, 1e-9)
    base = out["fp32"]
    print(f"training throughput, {model_name} at {img} px, batch {batch}, {torch.get_num_threads()} threads "
          f"({iters} timed steps after {warmup} warm-up; native bf16: {cpu_has_native_bf16()}):")
    for name, v in out.items():
        print(f"  {name:<20} {v:7.2f} images/s   x{v / base:.2f} vs fp32")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, required=True, help="training wall-clock budget in minutes")
    ap.add_argument("--model", default="yolox-nano", help="zoo model (default yolox-nano)")
    ap.add_argument("--img", type=int, default=416, help="input size in pixels (default 416)")
    ap.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    ap.add_argument("--data", default=DEFAULT_DATA, help="BCCD VOC root")
    ap.add_argument("--optimizer", default="adamw", choices=["sgd", "adamw"], help="default adamw")
    ap.add_argument("--lr", type=float, default=None, help="peak lr (default 0.008 AdamW / 0.01 SGD)")
    ap.add_argument("--phase-iters", type=int, default=3, help="timed steps per speed mode (default 3)")
    ap.add_argument("--workers", type=int, default=None, help="loader workers for the training run")
    ap.add_argument("--project", default="runs/bench", help="where the run directory goes")
    ap.add_argument("--skip-phases", action="store_true", help="skip the throughput phases")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from odkit.engine.api import train
    from odkit.engine.runtime import set_threads

    threads = set_threads()
    phases = {} if args.skip_phases else time_phases(args.data, args.model, args.img, args.batch,
                                                      args.phase_iters, warmup=2)
    lr = args.lr if args.lr is not None else (0.008 if args.optimizer == "adamw" else 0.01)
    t0 = time.time()
    result = train(
        data=args.data, train_split="train", val_split="val", model=args.model, img_size=args.img, batch=args.batch,
        epochs=1000, time=args.minutes, optimizer=args.optimizer, lr=lr, warmup_epochs=1.0, no_aug_epochs=15,
        mosaic=1.0, workers=args.workers, project=args.project, name=f"bccd_{args.minutes:g}min",
    )
    wall = time.time() - t0
    m = result.metrics
    print(f"BCCD {args.model} {args.img}px batch {args.batch}, {args.minutes:g} min budget "
          f"({wall / 60:.1f} min wall, {result.epochs} epochs, {threads} threads): "
          f"mAP50-95 {m.get('mAP50-95', float('nan')):.4f}  mAP50 {m.get('mAP50', float('nan')):.4f} "
          f"(best epoch {int(m.get('epoch', 0))})")
    res_dir = Path(__file__).resolve().parent / "results"
    res_dir.mkdir(exist_ok=True)
    out = res_dir / f"train_bccd_{args.minutes:g}min.json"
    out.write_text(json.dumps({
        "model": args.model, "img": args.img, "batch": args.batch, "minutes": args.minutes,
        "threads": threads, "images_per_s": phases, "epochs": result.epochs, "wall_min": wall / 60,
        "metrics": m, "run_dir": str(result.run_dir),
    }, indent=2))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
