"""Throughput of the full training data pipeline against the model step it has to feed.

Measures samples/s of DetectionDataset + TrainAugment (mosaic, affine, mixup, HSV, flip, letterbox)
+ collate through ``build_loader`` with 0, 1 and 2 workers, and, when the model zoo has it, the
training step rate of yolox-nano (forward + backward + SGD step, channels_last) at the same size
and batch, then prints the ratio loader / model (> 1: the loader keeps up).

    python benchmarks/dataloader.py [--data BCCD_ROOT] [--img 416] [--batches 20]
"""

from __future__ import annotations

import argparse
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import torch


def load_train(root: str):
    """BCCD train split through odkit's reader (or a minimal VOC parse if the reader is missing)."""
    try:
        from odkit.data.formats import load_dataset

        return load_dataset(root, split="train"), "odkit.data.formats.load_dataset"
    except ImportError:
        pass
    try:
        from odkit.data.formats.voc import read_voc

        return read_voc(root, split="train"), "odkit.data.formats.voc.read_voc"
    except ImportError:
        pass
    from odkit.data.structures import AnnotationSet

    r = Path(root)
    ids = (r / "ImageSets/Main/train.txt").read_text().split()
    names: list[str] = []
    files, ws, hs, boxes, labels = [], [], [], [], []
    for i in ids:
        x = ET.parse(r / "Annotations" / f"{i}.xml").getroot()
        files.append(f"JPEGImages/{i}.jpg")
        ws.append(int(x.findtext("size/width")))
        hs.append(int(x.findtext("size/height")))
        b, lab = [], []
        for o in x.iter("object"):
            n = o.findtext("name").strip()
            if n not in names:
                names.append(n)
            bb = o.find("bndbox")
            b.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
            lab.append(names.index(n))
        boxes.append(np.array(b, np.float32).reshape(-1, 4))
        labels.append(np.array(lab, np.int64))
    return AnnotationSet.from_lists(r, files, ws, hs, boxes, labels, names), "benchmark VOC parser"


def bench_loader(aset, img: int, batch: int, workers: int, batches: int) -> tuple[float, tuple]:
    from odkit.data.dataset import DetectionDataset
    from odkit.data.loader import build_loader
    from odkit.data.transforms import AugmentConfig, TrainAugment

    ds = DetectionDataset(aset, img, TrainAugment(AugmentConfig(mosaic_prob=1.0, mixup_prob=1.0)))
    loader = build_loader(ds, batch, shuffle=True, workers=workers, seed=0, drop_last=True)
    it = iter(loader)
    first = next(it)  # worker start-up and first batch excluded
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            x, _, _ = next(it)
        except StopIteration:
            loader.set_epoch(loader.batch_sampler.epoch)
            it = iter(loader)
            x, _, _ = next(it)
        n += x.shape[0]
    dt = time.perf_counter() - t0
    del it, loader
    return n / dt, first


def bench_model(img: int, batch: int, steps: int, example) -> float | None:
    try:
        from odkit.models.zoo import build
    except ImportError:
        return None
    model = build("yolox-nano", num_classes=3)
    model.train()
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, targets, _ = example
    x = x.contiguous(memory_format=torch.channels_last)

    def step():
        out = model(x, targets)
        loss = out["loss"] if "loss" in out else sum(v for v in out.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * x.shape[0] / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("ODKIT_BCCD")
                    or str(Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd"))
    ap.add_argument("--img", type=int, default=416)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=20, help="timed batches per worker setting")
    ap.add_argument("--steps", type=int, default=5, help="timed model steps")
    ap.add_argument("--workers", default="0,1,2")
    args = ap.parse_args()

    aset, how = load_train(args.data)
    print(f"data: {args.data} train split, {aset.summary()} (via {how})")
    print(f"cpu cores visible: {os.cpu_count()}, torch threads: {torch.get_num_threads()}")
    print(f"pipeline: mosaic(p=1) -> affine -> mixup(p=1) -> hsv -> flip -> letterbox {args.img}, batch {args.batch}")
    rates = {}
    example = None
    for w in (int(v) for v in args.workers.split(",")):
        rates[w], first = bench_loader(aset, args.img, args.batch, w, args.batches)
        example = example or first
    model_rate = bench_model(args.img, args.batch, args.steps, example)
    print()
    print(f"{'what':<36}{'images/s':>10}{'loader/model':>14}")
    for w, r in rates.items():
        ratio = f"{r / model_rate:.2f}" if model_rate else "-"
        print(f"{f'loader, {w} worker(s)':<36}{r:>10.1f}{ratio:>14}")
    if model_rate is None:
        print("yolox-nano step: odkit.models.zoo.build not available")
    else:
        print(f"{f'yolox-nano train step @{args.img} b{args.batch}':<36}{model_rate:>10.1f}{'1.00':>14}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
