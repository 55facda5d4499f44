"""``odkit predict``: run trained weights on images, write annotated images and results."""

from __future__ import annotations

import argparse

from odkit.cli.args import arg_type, fit_img, path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="detect objects in images with trained weights",
        description=(
            "Run a trained model on an image, a directory of images or a .txt list of image paths (one per "
            "line, relative to the list's folder). An image that cannot be decoded is skipped: the others "
            "are predicted, the failures are listed at the end and the exit status is 1. A truncated image "
            "that still decodes is used as decoded, with a warning. Writes to --out: "
            "predictions.json (COCO results: image_id = position of the image in the sorted list, "
            "file_name, category_id = class index, bbox [x, y, w, h] pixels, score, plus a 'categories' "
            "file categories.json); labels/<image stem>.txt with one line per box "
            "'class_index score x1 y1 x2 y2' in original image pixels (xyxy, not YOLO-normalised); "
            "and with --save, <image name> annotated with boxes, class names and scores."
        ),
    )
    path_arg(p, "--weights", kind="weights", required=True, nargs="+",
             help="weights .safetensors (with its .json sidecar), a run directory, or an exported .onnx / .xml; "
             "several: an ensemble, detections fused (--merge, default wbf)")
    path_arg(p, "--source", required=True, help="an image file, a directory of images or a .txt list of images")
    p.add_argument("--conf", type=arg_type("unit"), default=None,
                   help="score threshold (default: the model's, e.g. 0.25 for YOLOX, 0.05 for RetinaNet)")
    p.add_argument("--iou", type=arg_type("unit"), default=None, help="NMS IoU threshold (default: the model's)")
    p.add_argument("--max-det", type=arg_type("count"), default=None, help="detections kept per image (default: the model's)")
    p.add_argument("--img", type=arg_type("size"), default=None, help="network input size (default: the training size)")
    p.add_argument("--batch", type=arg_type("count"), default=8, help="images per forward pass")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile (needs a C compiler; falls back to eager)")
    p.add_argument("--save", action="store_true", help="also write annotated images")
    p.add_argument("--out", default="runs/predict", help="output directory (default runs/predict)")
    from odkit.cli.predict_opts import add_inference_args

    add_inference_args(p)
    p.set_defaults(func=handler)


def _decode(f: object, failures: list[tuple[str, str]]) -> object:
    """The RGB image of ``f`` under the damage policy of the validator, or None (failure recorded)."""
    from odkit.data.checks.images import UNUSABLE, check_image_file
    from odkit.data.imageio import read_image
    from odkit.errors import DataError

    state, problems = check_image_file(f)
    if state == UNUSABLE:
        failures.append((str(f), "; ".join(p.message for p in problems)))
        return None
    for p in problems:
        if p.severity == "warning":
            print(f"warning: {p.file}: {p.message}")
    try:
        return read_image(f)  # type: ignore[arg-type]
    except DataError as e:
        failures.append((str(f), str(e)))
        return None


def handler(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from tqdm import tqdm

    from odkit.cli.predict_opts import wrap_predictor
    from odkit.data.imageio import write_image
    from odkit.engine import runtime
    from odkit.engine.api import load
    from odkit.engine.predictor import list_images

    device = runtime.select_device(args.device)
    runtime.set_threads()
    members = []
    for w in args.weights:
        if Path(w).suffix in (".onnx", ".xml"):  # exported model: onnxruntime / OpenVINO
            from odkit.export.runtime import load_predictor

            members.append(load_predictor(w))
        else:
            members.append(load(w, device=device, compile=args.compile))
            if args.img is not None:
                args.img = fit_img(args.img, members[-1].model.size_divisor, members[-1].name)
    pred = wrap_predictor(members, args)
    files = list_images(args.source)
    out = Path(args.out)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    results = []
    failures: list[tuple[str, str]] = []
    n_boxes = n_done = 0
    step = args.batch
    for s in tqdm(range(0, len(files), step), desc="predict", unit="batch", disable=len(files) <= step):
        decoded = [(s + k, f, _decode(f, failures)) for k, f in enumerate(files[s : s + step])]
        decoded = [d for d in decoded if d[2] is not None]
        if not decoded:
            continue
        preds = pred.predict([d[2] for d in decoded], conf=args.conf, iou=args.iou, max_det=args.max_det,
                             img_size=args.img, batch=step)
        for (idx, f, img), p in zip(decoded, preds):
            n_done += 1
            boxes, scores, labels = p["boxes"].numpy(), p["scores"].numpy(), p["labels"].numpy()
            n_boxes += len(boxes)
            lines = [f"{int(c)} {float(sc):.5f} " + " ".join(f"{v:.2f}" for v in b)
                     for b, sc, c in zip(boxes.tolist(), scores, labels)]
            (out / "labels" / f"{f.stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
            for b, sc, c in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
                results.append({"image_id": idx, "file_name": str(f), "category_id": int(c),
                                "bbox": [round(b[0], 2), round(b[1], 2), round(b[2] - b[0], 2), round(b[3] - b[1], 2)],
                                "score": round(float(sc), 5)})
            if args.save:
                from odkit.viz.draw import draw_boxes

                write_image(out / f.name, draw_boxes(img, boxes, labels, pred.class_names, scores=scores))
    with open(out / "predictions.json", "w") as fh:
        json.dump(results, fh)
    with open(out / "categories.json", "w") as fh:
        json.dump([{"id": i, "name": n} for i, n in enumerate(pred.class_names)], fh)
    print(f"{n_done} image(s), {n_boxes} detection(s) -> {out}/ (predictions.json, labels/*.txt"
          + (", annotated images)" if args.save else ")"))
    if failures:
        (out / "failures.txt").write_text("".join(f"{f}\t{why}\n" for f, why in failures))
        print(f"{len(failures)} image(s) could not be read (listed in {out}/failures.txt):")
        for f, why in failures:
            print(f"  {f}: {why}")
        return 1
    return 0
