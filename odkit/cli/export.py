"""``odkit export``: trained weights -> ONNX or OpenVINO IR, with optional in-graph NMS."""

from __future__ import annotations

import argparse
from pathlib import Path

from odkit.cli.args import arg_type, fit_img, path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export trained weights to ONNX or OpenVINO (normalisation, decoding, optional NMS in the graph)",
        description=(
            "Export trained weights to ONNX or OpenVINO IR. The graph takes float [B,3,H,W] RGB in [0,1], "
            "letterboxed to --img, and includes normalisation and box decoding. Without --nms it outputs "
            "boxes [B,N,4] and scores [B,N,C]; with --nms, dets [B,max_det,6] (x1,y1,x2,y2,score,class) and "
            "num_dets [B]. A JSON sidecar <file>.json is written next to the export. "
            "Needs the export extra: pip install 'odkit[export]'."
        ),
    )
    path_arg(
        p, "--weights", kind="weights", required=True, help="trained weights (.safetensors with sidecar) or a run directory"
    )
    p.add_argument(
        "--format", choices=["onnx", "openvino", "darknet"], default="onnx",
        help="output format (default onnx); darknet: a darknet .weights file and its .cfg (yolov2, yolov2-tiny, "
             "yolov3, yolov3-tiny)"
    )
    p.add_argument(
        "--img",
        type=arg_type("size"),
        default=None,
        help="square input size in pixels, multiple of the model's size divisor (32; SSD300: 1) "
             "(default: training size)",
    )
    p.add_argument("--dynamic", action="store_true", help="dynamic batch dimension (default: batch 1)")
    p.add_argument("--nms", action="store_true", help="include class-wise NMS; fixed-shape outputs (always for "
                   "mask models, whose graph adds masks [B,max_det,28,28])")
    p.add_argument(
        "--half",
        action="store_true",
        help="float16 weights/compute where the runtime supports it (on CPU onnxruntime often slower)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output file (.onnx / .xml) or directory (default: next to the weights, named after the graph: "
        "best-416.onnx, best-nms-416.onnx, best-dynamic-416.onnx, best-nms-fp16-416.onnx, ...)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--conf", type=arg_type("unit"), default=None,
                   help="in-graph NMS: score threshold (default: the model's, its reference's value)")
    p.add_argument("--iou", type=arg_type("unit"), default=None, help="in-graph NMS: IoU threshold (default: the model's)")
    p.add_argument(
        "--max-det", type=arg_type("count"), default=None, help="in-graph NMS: detections per image (default: the model's)"
    )
    p.add_argument(
        "--pre-topk", type=arg_type("count"), default=None, help="in-graph NMS: candidates before NMS (default: the model's)"
    )
    p.add_argument("--opset", type=arg_type("count"), default=17, help="ONNX opset (default 17)")
    p.set_defaults(func=handler)


def output_path(args: argparse.Namespace) -> Path:
    """Where the export goes: ``--out`` (a file, or a folder for the default name) or beside the
    weights; refuses to replace an existing file without ``--force``."""
    from odkit.errors import ConfigError
    from odkit.export import FORMATS, default_name, resolve_weights
    from odkit.models.zoo import input_size
    from odkit.weights.format import read_meta

    suffix = FORMATS.get(args.format, ".onnx")
    out = Path(args.out) if args.out else None
    if out is None or out.is_dir():
        src = resolve_weights(args.weights)
        img = args.img
        if img is None:  # an unreadable weights file: read_meta's error names it
            img = input_size(read_meta(src)["model_config"])
        name = default_name(src.stem, suffix, int(img), args.nms, args.dynamic, args.half)
        out = (out if out is not None else src.parent) / name
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to replace it (or choose another --out)")
    return out


def fit_export_img(args: argparse.Namespace) -> int | None:
    """``--img`` rounded to the size divisor of the weights' model (read from the sidecar)."""
    from odkit.engine.config import input_divisor
    from odkit.errors import OdkitError
    from odkit.export import resolve_weights
    from odkit.weights.format import read_meta

    if args.img is None:
        return None
    try:
        model = read_meta(resolve_weights(args.weights))["model_config"]["name"]
    except (OSError, ValueError, OdkitError):
        return args.img  # export() names what is wrong with the weights
    return fit_img(args.img, input_divisor(str(model)), str(model))


def handler(args: argparse.Namespace) -> int:
    from odkit.export import export
    from odkit.export.onnx import sidecar_path
    from odkit.export.runtime import read_sidecar

    if args.format == "darknet":
        from odkit.export.darknet import export_darknet_files

        weights, cfg = export_darknet_files(args.weights, args.out, args.force)
        print(f"exported {weights} (darknet weights) and {cfg}")
        return 0
    args.img = fit_export_img(args)

    path = export(
        args.weights,
        format=args.format,
        img_size=args.img,
        dynamic=args.dynamic,
        nms=args.nms,
        half=args.half,
        out=output_path(args),
        conf=args.conf,
        iou=args.iou,
        max_det=args.max_det,
        opset=args.opset,
        pre_topk=args.pre_topk,
        force=args.force,
    )
    info = read_sidecar(path)
    cfg = info["model_config"]
    size = cfg["img_size"]
    size = "x".join(map(str, size)) if isinstance(size, list) else f"{size}x{size}"
    print(f"exported {path} ({info.get('format')}, {cfg.get('name')}, img {size}, "
          f"{'NMS in the graph' if info.get('nms') else 'no NMS'}{', masks' if info.get('masks') else ''}, "
          f"{'fp16' if info.get('half') else 'fp32'})")
    print(f"sidecar  {sidecar_path(path)}")
    return 0
