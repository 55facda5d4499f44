"""``odkit predict``: run trained weights on images, write annotated images and results."""

from __future__ import annotations

import argparse

from odkit.cli.args import arg_type, fit_img, path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="detect objects in images with trained weights",
        description=(
            "Run a trained model on an image, a directory of images, a .txt list of image paths (one per "
            "line, relative to the list's folder), a video file, a camera index (0, 1, ...) or a stream URL. "
            "Video: <stem>.jsonl with one record per predicted frame (frame, time_s, boxes xyxy pixels, "
            "scores, labels, names) and with --save <stem>.mp4 annotated at the source's frame rate divided "
            "by --vid-stride; an unreadable video or a stream that stops is an error (exit 1; what was "
            "written stays valid). An image that cannot be decoded is skipped: the others "
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
    path_arg(p, "--source", kind="source", required=True,
             help="an image file, a directory of images, a .txt list of images, a video file, a camera index or a URL")
    p.add_argument("--conf", type=arg_type("unit"), default=None,
                   help="score threshold (default: the model's, e.g. 0.25 for YOLOX, 0.05 for RetinaNet)")
    p.add_argument("--iou", type=arg_type("unit"), default=None, help="NMS IoU threshold (default: the model's)")
    p.add_argument("--max-det", type=arg_type("count"), default=None, help="detections kept per image (default: the model's)")
    p.add_argument("--img", type=arg_type("size"), default=None, help="network input size (default: the training size)")
    p.add_argument("--batch", type=arg_type("count"), default=8, help="images per forward pass")
    p.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"), default=None,
                   help="auto (default, or $ODKIT_BACKEND): the exported graph in onnxruntime when the export extra "
                   "is installed (built once, cached beside the weights), else PyTorch")
    p.add_argument("--workers", type=arg_type("count0"), default=2,
                   help="threads decoding and resizing images beside the network (default 2; 0: none)")
    p.add_argument("--vid-stride", type=arg_type("count"), default=1, help="video: predict every N-th frame")
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
    from pathlib import Path

    from odkit.cli.predict_opts import wrap_predictor
    from odkit.engine import runtime
    from odkit.engine.stream import is_video_source
    from odkit.errors import ConfigError

    device = runtime.select_device(args.device)
    runtime.set_threads()
    members = []
    for w in args.weights:
        if Path(w).suffix in (".onnx", ".xml"):  # exported model: onnxruntime / OpenVINO
            from odkit.export.runtime import load_predictor

            members.append(load_predictor(w))
        else:
            from odkit.export.backends import load

            members.append(load(w, backend=args.backend, device=device, compile=args.compile))
            if args.img is not None:
                args.img = fit_img(args.img, members[-1].model.size_divisor, members[-1].name)
    pred = wrap_predictor(members, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from odkit.cli.predict_run import predict_images, predict_video

    if is_video_source(args.source) and not Path(args.source).is_dir():
        if pred is not members[0]:
            raise ConfigError("--slice, --tta and several --weights apply to images, not to a video source")
        return predict_video(pred, args, out)
    return predict_images(pred, args, out, _decode)
