"""``odkit demo``: synthesise a dataset, train yolox-nano on CPU for a few minutes, evaluate, predict."""

from __future__ import annotations

import argparse

from odkit.cli.args import arg_type, fit_img

# Settings chosen for a short CPU run on the synthetic shapes (images ~320 px): see `odkit demo --help`.
DEMO_TRAIN = {
    "model": "yolox-nano",
    "img_size": 256,
    "batch": 8,
    "epochs": 60,
    "optimizer": "adamw",
    "lr": 0.01,
    "weight_decay": 0.05,
    "warmup_epochs": 1.0,
    "no_aug_epochs": 6,
    "mosaic": 0.5,
    "mixup": 0.0,
    "val_interval": 2,
    "cache": 1.0,
    "aug": {"scale": (0.75, 1.25), "degrees": 0.0, "shear": 0.0, "translate": 0.1},
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="synthesise shapes, train yolox-nano for a few minutes on CPU, evaluate and predict",
        description=(
            "End-to-end demonstration: writes a synthetic shapes dataset (COCO json, 3 classes), trains "
            "yolox-nano from scratch with a wall-clock budget (AdamW, short warm-up, cosine decay, light "
            "mosaic, EMA, a no-augmentation tail), evaluates on the synthetic val split (COCO mAP), runs "
            "prediction on the val images and prints where everything is."
        ),
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo; auto-incremented if it exists)")
    p.add_argument("--minutes", type=arg_type("positive"), default=8.0,
                   help="training budget in minutes, validation included (default 8; the whole demo takes "
                        "under 9 minutes on 2 CPU cores)")
    p.add_argument("--images", type=arg_type("count"), default=400, help="synthetic images (default 400, 20%% for val)")
    p.add_argument("--img", type=arg_type("size"), default=DEMO_TRAIN["img_size"], help="network input size (default 256; the synthetic images are about 320 px)")
    p.add_argument("--device", default="cpu", help="device (default cpu)")
    p.add_argument("--seed", type=arg_type("count0"), default=0, help="seed of the data and of training")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from odkit.data.synth import synthesize
    from odkit.engine.api import load, train
    from odkit.engine.config import input_divisor
    from odkit.engine.data import load_checked
    from odkit.engine.evaluator import evaluate_predictions, predict_set
    from odkit.engine.predictor import list_images
    from odkit.engine.rundir import next_run_dir

    t0 = time.time()
    args.img = fit_img(args.img, input_divisor(DEMO_TRAIN["model"]), DEMO_TRAIN["model"])
    out = Path(args.out)
    out = next_run_dir(out.parent, out.name)
    out.mkdir(parents=True)
    print(f"[1/4] synthesising {args.images} images -> {out / 'data'}")
    data = synthesize(out / "data", n=args.images, seed=args.seed, size=320, val_fraction=0.2)

    print(f"[2/4] training yolox-nano for {args.minutes:g} min on {args.device}")
    kw = dict(DEMO_TRAIN, img_size=args.img)
    result = train(data=str(data), time=args.minutes, device=args.device, seed=args.seed,
                   project=str(out), name="train", **kw)

    print("[3/4] evaluating the best weights on the synthetic val split")
    pred = load(result.best)
    val = load_checked(str(data), "val", report=False)
    preds = predict_set(pred.model, val, args.img, batch=8, device=pred.device)
    res = evaluate_predictions(val, preds)
    print(res.summary)
    print(res.table())

    print("[4/4] predicting on the val images")
    from odkit.data.imageio import read_image, write_image
    from odkit.viz.draw import draw_boxes

    pdir = out / "predict"
    pdir.mkdir(exist_ok=True)
    files = list_images(out / "data" / "images" / "val")
    for f, p in zip(files, pred.predict(files, conf=0.3)):
        img = draw_boxes(read_image(f), p["boxes"].numpy(), p["labels"].numpy(), pred.class_names,
                         scores=p["scores"].numpy())
        write_image(pdir / f.name, img)

    run = result.run_dir
    print()
    print(f"demo finished in {(time.time() - t0) / 60:.1f} min: val mAP50-95 {res.stats[0]:.3f}, mAP50 {res.stats[1]:.3f}")
    print(f"  dataset        {data}")
    print(f"  run directory  {run}  (args.yaml, metrics.csv, checkpoint.pt, predictions.json)")
    print(f"  weights        {result.best}  (+ .json sidecar; odkit.load() it)")
    print(f"  plots          {run / 'plots'}")
    print(f"  predictions    {pdir}  ({len(files)} annotated val images)")
    return 0
