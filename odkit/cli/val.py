"""``odkit val``: evaluate trained weights on a dataset split with the COCO evaluator."""

from __future__ import annotations

import argparse

from odkit.cli.args import arg_type, fit_img, path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "val",
        help="evaluate trained weights on a dataset (COCO mAP, per-class table)",
        description=(
            "Run a trained model over a dataset split and print the COCO summary (the 12 pycocotools "
            "figures) and the per-class AP table. The data check runs first and refuses data with errors "
            "it cannot repair."
        ),
    )
    path_arg(p, "--weights", kind="weights", required=True, help="weights .safetensors (with its .json sidecar) or a run directory")
    path_arg(p, "--data", required=True, help="dataset: COCO json, VOC root, YOLO data.yaml or odkit dataset YAML")
    p.add_argument("--split", default="val", help="split to evaluate (VOC ImageSets/Main name or YAML key; default val)")
    from odkit.data.formats import FORMATS

    p.add_argument("--format", choices=FORMATS, default=None, help="dataset layout (default: detected)")
    p.add_argument("--batch", type=arg_type("count"), default=16, help="images per batch (results do not depend on it)")
    p.add_argument("--img", type=arg_type("size"), default=None, help="network input size in pixels (default: the training size)")
    p.add_argument("--conf", type=arg_type("unit"), default=0.001, help="score threshold (default 0.001, as for COCO mAP)")
    p.add_argument("--iou", type=arg_type("unit"), default=0.65, help="NMS IoU threshold (default 0.65)")
    p.add_argument("--max-det", type=arg_type("count"), default=100, help="detections kept per image (default 100)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile (needs a C compiler; falls back to eager)")
    p.add_argument("--workers", type=arg_type("count0"), default=0, help="loader worker processes (default 0)")
    p.add_argument("--save-json", metavar="OUT", help="write the COCO results json here")
    p.add_argument("--plots", metavar="DIR", help="write pr_curve.png and confusion_matrix.png here")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    import torch

    from odkit.engine import runtime
    from odkit.engine.api import load
    from odkit.engine.data import load_checked
    from odkit.engine.evaluator import curve_plots, evaluate_predictions, predict_set, write_coco_results
    from odkit.errors import ConfigError

    device = runtime.select_device(args.device)
    runtime.set_threads()
    pred = load(args.weights, device=device, compile=args.compile)
    img = pred.img_size if args.img is None else fit_img(args.img, pred.model.size_divisor, pred.name)
    aset = load_checked(args.data, args.split, args.format, what=args.split)
    if list(aset.class_names) != list(pred.class_names):
        raise ConfigError(
            f"{args.weights} was trained on classes {pred.class_names} but {args.data} has {aset.class_names}"
        )
    with torch.no_grad():
        preds = predict_set(pred.model, aset, img, batch=args.batch, device=device, workers=args.workers,
                            conf=args.conf, iou=args.iou, max_det=args.max_det, progress=True)
    res = evaluate_predictions(aset, preds)
    print(res.summary)
    print()
    print(res.table())
    if args.save_json:
        write_coco_results(aset, preds, args.save_json)
        print(f"COCO results written to {args.save_json}")
    if args.plots:
        for p in curve_plots(aset, preds, args.plots):
            print(f"plot: {p}")
    return 0
