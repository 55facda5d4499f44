"""Train with the default recipe on small subsets of BCCD and report COCO mAP on the val split.

Each subset takes the first N images of a seeded shuffle of the BCCD train split (the same images
for one and three classes); "1 class" keeps only the boxes of ``--one-class`` (default RBC). Val is
the BCCD val split (87 images) with the same classes. odkit trains with nothing but the data and a
wall-clock budget (``odkit.train(data, time=MIN)``: the model's recipe adapted by the data/budget
rule, printed at the start of each run). When ``ultralytics`` is importable (it is never an odkit
dependency; it may live in another environment), a YOLO11n built from its yaml (no pretrained
weights) trains on the same subset for the same budget at the same input size, and its best
weights are evaluated with odkit's COCO evaluator on the same val images.

    python benchmarks/small_data.py                      # 50 and 100 images x 1 and 3 classes
    python benchmarks/small_data.py --subsets 100 --classes 1 --minutes 12
    python benchmarks/small_data.py --minutes 0.3 --subsets 50 --out /tmp/s.json   # smoke test

Default budget: 6 minutes per 50 training images (6 min for 50, 12 min for 100).
Subsets are written as COCO json files that point at the BCCD images in place (nothing is copied
for odkit; the Ultralytics run gets a YOLO-format copy in the work directory).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

IMG = 416


def bccd_root() -> Path:
    """``$ODKIT_BCCD`` if set, else ``shared/data/bccd`` beside the repository."""
    env = os.environ.get("ODKIT_BCCD")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd"
    return beside


def _subset(aset: Any, indices: np.ndarray | None, keep_class: str | None) -> Any:
    """``aset`` restricted to ``indices`` (all when None) and, with ``keep_class``, to that class."""
    sub = aset.select_images(indices) if indices is not None else aset
    if keep_class is not None:
        k = list(sub.class_names).index(keep_class)
        sub = sub.select_annotations(sub.labels == k)
        sub.labels = np.zeros_like(sub.labels)
        sub.class_names, sub.class_ids = [keep_class], [1]
    sub.splits = {}
    return sub


def write_coco(aset: Any, path: Path) -> Path:
    """A COCO json of ``aset`` whose ``file_name`` entries are absolute paths to the images."""
    images, anns = [], []
    for i, r in enumerate(aset):
        images.append({"id": i + 1, "file_name": str(Path(r.path).resolve()), "width": r.width, "height": r.height})
        for box, label in zip(r.boxes.tolist(), r.labels.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                         "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(aset.class_names)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def make_subset(bccd: Path, n: int, classes: int, one_class: str, seed: int, work: Path) -> tuple[Path, Any]:
    """Write the subset's data.yaml (+ train/val json) under ``work``; returns it and the val set."""
    import yaml

    from odkit.data.formats import load_split

    train = load_split(bccd, "train")
    val = load_split(bccd, "val")
    if n > len(train):
        raise SystemExit(f"--subsets {n}: BCCD train has only {len(train)} images")
    order = np.random.default_rng(seed).permutation(len(train))[:n]
    keep = one_class if classes == 1 else None
    tr, va = _subset(train, np.sort(order), keep), _subset(val, None, keep)
    d = work / f"bccd_{n}img_{classes}cls"
    d.mkdir(parents=True, exist_ok=True)
    write_coco(tr, d / "train.json")
    write_coco(va, d / "val.json")
    spec = {"format": "coco", "train": "train.json", "val": "val.json", "names": list(tr.class_names)}
    (d / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return d / "data.yaml", va


def run_odkit(data: Path, minutes: float, project: Path, name: str) -> dict[str, Any]:
    import odkit

    t0 = time.time()
    r = odkit.train(data=str(data), time=minutes, project=str(project), name=name, exist_ok=True)
    return {"mAP50-95": r.metrics.get("mAP50-95", float("nan")), "mAP50": r.metrics.get("mAP50", float("nan")),
            "epochs": r.epochs, "wall_min": (time.time() - t0) / 60, "run_dir": str(r.run_dir),
            "recipe": {k: v["value"] for k, v in r.recipe.items()
                       if k in ("optimizer", "lr", "warmup_epochs", "mosaic", "no_aug_epochs", "val_interval")}}


def run_ultralytics(data: Path, val: Any, minutes: float, work: Path, name: str) -> dict[str, Any]:
    """YOLO11n from its yaml on the same subset and budget; evaluated with odkit's COCO evaluator."""
    from ultralytics import YOLO

    from odkit.data.formats import load_split, save_dataset
    from odkit.engine.evaluator import evaluate_predictions

    yolo_dir = work / f"{name}_yolo"
    for split in ("train", "val"):
        save_dataset(load_split(data, split), yolo_dir, "yolo", copy_images=True, split=split)
    t0 = time.time()
    model = YOLO("yolo11n.yaml")
    model.train(data=str(yolo_dir / "data.yaml"), imgsz=IMG, batch=16, epochs=1000, time=minutes / 60.0,
                device="cpu", project=str(work / "ultralytics"), name=name, exist_ok=True, pretrained=False,
                plots=False, seed=0, verbose=False)
    wall = (time.time() - t0) / 60
    best = Path(model.trainer.best)
    best_model = YOLO(str(best if best.exists() else model.trainer.last))
    preds = []
    for r in val:
        res = best_model.predict(str(r.path), imgsz=IMG, conf=0.001, iou=0.65, max_det=100, verbose=False)[0]
        b = res.boxes
        preds.append({"boxes": b.xyxy.cpu().numpy().astype(np.float32), "scores": b.conf.cpu().numpy(),
                      "labels": b.cls.cpu().numpy().astype(np.int64)})
    stats = evaluate_predictions(val, preds).stats
    return {"mAP50-95": float(stats[0]), "mAP50": float(stats[1]), "wall_min": wall,
            "epochs": int(getattr(model.trainer, "epoch", -1)) + 1}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subsets", default="50,100", help="training images per subset, comma-separated (default 50,100)")
    ap.add_argument("--classes", default="1,3", help="class counts, comma-separated: 1 and/or 3 (default 1,3)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="budget per run in minutes (default: 6 per 50 training images)")
    ap.add_argument("--one-class", default="RBC", help="the class kept by the 1-class subsets (default RBC)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the subset selection")
    ap.add_argument("--data", default=None, help="BCCD VOC root (default: as the tests find it)")
    ap.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "small_data.json"),
                    help="results json (default benchmarks/results/small_data.json)")
    ap.add_argument("--no-ultralytics", action="store_true", help="skip the Ultralytics rows")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    bccd = Path(args.data) if args.data else bccd_root()
    if not (bccd / "ImageSets" / "Main" / "train.txt").is_file():
        raise SystemExit(f"BCCD not found at {bccd} (set ODKIT_BCCD or --data)")
    sizes = [int(s) for s in args.subsets.split(",") if s]
    class_counts = [int(c) for c in args.classes.split(",") if c]
    if any(c not in (1, 3) for c in class_counts):
        raise SystemExit("--classes takes 1 and/or 3")
    try:
        import ultralytics  # noqa: F401

        have_ul = not args.no_ultralytics
    except ImportError:
        have_ul = False
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="odkit_small_data_"))
    work.mkdir(parents=True, exist_ok=True)

    from odkit.engine.runtime import set_threads

    threads = set_threads()
    rows: list[dict[str, Any]] = []
    for n in sizes:
        for c in class_counts:
            minutes = args.minutes if args.minutes is not None else 6.0 * n / 50
            data, val = make_subset(bccd, n, c, args.one_class, args.seed, work)
            name = f"bccd_{n}img_{c}cls"
            row: dict[str, Any] = {"images": n, "classes": c, "minutes": minutes, "val_images": len(val)}
            row["odkit"] = run_odkit(data, minutes, work / "odkit", name)
            if have_ul:
                try:
                    row["ultralytics"] = run_ultralytics(data, val, minutes, work, name)
                except Exception as e:  # noqa: BLE001 - a failed reference run is reported, not fatal
                    row["ultralytics"] = {"error": f"{type(e).__name__}: {e}"}
            rows.append(row)
            print_table(rows, threads, have_ul)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bccd": str(bccd), "img": IMG, "threads": threads, "one_class": args.one_class,
                               "seed": args.seed, "rows": rows}, indent=2))
    print(f"results written to {out}")
    return 0


def print_table(rows: list[dict[str, Any]], threads: int, have_ul: bool) -> None:
    """The results so far as a markdown table."""
    print(f"\nBCCD subsets, val split, {IMG} px, {threads} threads, default recipe (odkit.train(data, time=MIN))")
    head = "| train images | classes | minutes | odkit epochs | odkit mAP50-95 | odkit mAP50 |"
    sep = "|---|---|---|---|---|---|"
    if have_ul:
        head += " YOLO11n mAP50-95 | YOLO11n mAP50 |"
        sep += "---|---|"
    print(head)
    print(sep)
    for r in rows:
        o = r["odkit"]
        line = (f"| {r['images']} | {r['classes']} | {r['minutes']:g} | {o['epochs']} | {o['mAP50-95']:.3f} | "
                f"{o['mAP50']:.3f} |")
        if have_ul:
            u = r.get("ultralytics", {})
            line += (f" {u['mAP50-95']:.3f} | {u['mAP50']:.3f} |" if "mAP50" in u
                     else f" {u.get('error', 'n/a')[:40]} | |")
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())
