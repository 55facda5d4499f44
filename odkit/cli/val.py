"""``odkit val``: evaluate trained weights on a dataset split with the COCO evaluator."""

from __future__ import annotations

import argparse
from pathlib import Path

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
    p.add_argument("--split", default="val",
                   help="split to evaluate (VOC ImageSets/Main name, YAML key or split folder; 'all': every image; "
                   "default val, or the run's hold-out when DATA has no val split and --weights are of a run on it)")
    from odkit.cli.data_check import add_source_args
    from odkit.data.formats import FORMATS

    p.add_argument("--format", choices=FORMATS, default=None, help="dataset layout (default: detected)")
    add_source_args(p, with_format=False)
    p.add_argument("--batch", type=arg_type("count"), default=16, help="images per batch (results do not depend on it)")
    p.add_argument("--img", type=arg_type("size"), default=None, help="network input size in pixels (default: the training size)")
    p.add_argument("--conf", type=arg_type("unit"), default=0.001, help="score threshold (default 0.001, as for COCO mAP)")
    p.add_argument("--iou", type=arg_type("unit"), default=0.65, help="NMS IoU threshold (default 0.65)")
    p.add_argument("--max-det", type=arg_type("count"), default=100, help="detections kept per image (default 100)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile (needs a C compiler; falls back to eager)")
    p.add_argument("--workers", type=arg_type("count0"), default=0, help="loader worker processes (default 0)")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"), default=None,
                   help="auto (default, or $ODKIT_BACKEND): the exported graph in onnxruntime when the export extra "
                   "is installed (built once, cached beside the weights), else PyTorch")
    p.add_argument("--save-json", metavar="OUT", help="write the COCO results json here")
    p.add_argument("--plots", metavar="DIR", help="write pr_curve.png and confusion_matrix.png here")
    from odkit.cli.predict_opts import add_inference_args

    add_inference_args(p)
    p.add_argument("--report", metavar="DIR",
                   help="write the HTML report here (per-class AP, PR curves, confusion matrix, TIDE errors, data check, "
                   "gallery of the images with ground truth and predictions), with predictions.json and source.yaml "
                   "so that `odkit report DIR` rebuilds it")
    p.add_argument("--errors", action="store_true",
                   help="also print the TIDE error analysis: dAP of classification, localisation, both, duplicate, "
                   "background and missed errors (foreground IoU 0.5, background 0.1)")
    p.set_defaults(func=handler)


def run_holdout(weights: str, data: str) -> tuple[Path, dict] | None:
    """The run directory and ``holdout.json`` of the run that made ``weights`` (a run directory, or
    ``runs/NAME/weights/*.safetensors``) when that run trained on ``data``; else None."""
    import json

    import yaml

    w = Path(weights)
    run = w if w.is_dir() else (w.parent.parent if w.parent.name == "weights" else w.parent)
    hj = run / "holdout.json"
    if not hj.is_file():
        return None
    args_yaml = run / "args.yaml"
    if args_yaml.is_file():
        try:
            trained_on = (yaml.safe_load(args_yaml.read_text()) or {}).get("data")
        except yaml.YAMLError:
            trained_on = None
        if trained_on and Path(str(trained_on)).resolve() != Path(data).resolve():
            return None
    return run, json.loads(hj.read_text())


def eval_set(args: argparse.Namespace) -> object:
    """The checked set ``odkit val`` evaluates: the split ``--split``, every image (``all``), or the
    hold-out validation images of the run that made ``--weights`` when DATA has no such split."""
    from odkit.cli.data_check import source_kwargs
    from odkit.data.formats import list_splits
    from odkit.data.splits import find_val_split
    from odkit.engine.data import load_checked
    from odkit.errors import DataError

    src = source_kwargs(args)
    split = args.split
    if split == "all":
        return load_checked(args.data, None, args.format, what="all", **src)
    splits = list_splits(args.data, args.format, image_root=src["image_root"], labels=src["labels"],
                         columns=src["columns"])
    if split == "val" and split not in splits and find_val_split(splits):
        split = find_val_split(splits)  # valid, validation, dev
    if split in splits or (not splits and Path(args.data).suffix.lower() == ".json"):
        return load_checked(args.data, split, args.format, what=split, **src)
    held = run_holdout(args.weights, args.data) if split == "val" else None
    if held is None:
        raise DataError(
            f"{args.data}: no split {split!r} (splits: {', '.join(splits) if splits else 'none'}); "
            "evaluate every image with --split all, or give the weights of a run trained on this data "
            "(its hold-out split is reused)"
        )
    run, doc = held
    whole = load_checked(args.data, None, args.format, what="hold-out", **src)
    wanted = {str(Path(f).resolve()) for f in doc.get("val", [])}
    keep = [i for i in range(len(whole)) if str(whole.path(i).resolve()) in wanted]
    if len(keep) != len(wanted):
        raise DataError(f"{run / 'holdout.json'}: {len(wanted) - len(keep)} of its {len(wanted)} validation images "
                        f"are not in {args.data}")
    print(f"{args.data} has no val split: evaluating the {len(keep)} hold-out images of run {run} "
          "(holdout.json)")
    out = whole.select_images(keep)
    out.splits = {}
    return out


def wrapped_predictions(aset: object, pred: object, args: argparse.Namespace, img: int) -> list[dict]:
    """Predictions of every image of ``aset`` by ``pred`` wrapped as ``--slice`` / ``--tta`` say
    (numpy dicts, in order; each image's best ``--max-det`` detections)."""
    from tqdm import tqdm

    from odkit.cli.predict_opts import wrap_predictor

    wrapped = wrap_predictor([pred], args)
    out = []
    for i in tqdm(range(len(aset)), desc="val", unit="img"):  # type: ignore[arg-type]
        d = wrapped.predict([aset.path(i)], conf=args.conf, iou=args.iou, max_det=args.max_det,  # type: ignore[attr-defined]
                            img_size=img, batch=args.batch)[0]
        out.append({k: v[: args.max_det].numpy() for k, v in d.items()})
    return out


def handler(args: argparse.Namespace) -> int:
    import torch

    from odkit.engine import runtime
    from odkit.engine.evaluator import (
        curve_plots,
        evaluate_predictions,
        has_masks,
        predict_set,
        write_coco_results,
    )
    from odkit.errors import ConfigError, DataError
    from odkit.export.backends import load

    aset = eval_set(args)  # data errors before the model is loaded
    device = runtime.select_device(args.device)
    runtime.set_threads()
    pred = load(args.weights, backend=args.backend, device=device, compile=args.compile)
    img = pred.img_size if args.img is None else fit_img(args.img, pred.model.size_divisor, pred.name)
    if list(aset.class_names) != list(pred.class_names):
        raise ConfigError(
            f"{args.weights} was trained on classes {pred.class_names} but {args.data} has {aset.class_names}"
        )
    if args.slice is not None or args.tta:  # through the predictor, image by image
        preds = wrapped_predictions(aset, pred, args, img)
    else:
        with torch.no_grad():
            preds = predict_set(pred.model, aset, img, batch=args.batch, device=device, workers=args.workers,
                                conf=args.conf, iou=args.iou, max_det=args.max_det, progress=True,
                                runner=getattr(pred, "predict_letterboxed", None))
    res = evaluate_predictions(aset, preds)
    print(res.summary)
    print()
    print(res.table())
    if has_masks(preds):  # a mask model: mask AP too, where the data set has masks
        try:
            segm = evaluate_predictions(aset, preds, iou_type="segm")
        except DataError as e:
            print(f"\nsegm: not evaluated ({e})")
        else:
            print("\nsegm (mask IoU)")
            print(segm.summary)
            print()
            print(segm.table())
    if args.errors:
        from odkit.eval.tide import tide_errors

        print()
        print(tide_errors(aset, preds).table())
    if args.save_json:
        write_coco_results(aset, preds, args.save_json)
        print(f"COCO results written to {args.save_json}")
    if args.plots:
        for p in curve_plots(aset, preds, args.plots):
            print(f"plot: {p}")
    if args.report:
        from odkit.data.validate import check_dataset
        from odkit.engine.report import write_report, write_val_source

        out = Path(args.report)
        out.mkdir(parents=True, exist_ok=True)
        write_coco_results(aset, preds, out / "predictions.json")
        write_val_source(out, aset, args.data, args.format, args.weights)
        index = write_report(out, aset, preds, title=f"odkit val report: {Path(args.weights).name} on {args.data}",
                             data_report=check_dataset(aset).text())
        print(f"report: {index}")
    return 0

