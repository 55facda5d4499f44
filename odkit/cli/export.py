"""``odkit export``: trained weights -> ONNX or OpenVINO IR, with optional in-graph NMS."""

from __future__ import annotations

import argparse
from pathlib import Path


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
    p.add_argument(
        "--weights", required=True, help="trained weights (.safetensors with sidecar) or a run directory"
    )
    p.add_argument(
        "--format", choices=["onnx", "openvino"], default="onnx", help="output format (default onnx)"
    )
    p.add_argument(
        "--img",
        type=int,
        default=None,
        help="square input size in pixels, multiple of the model's size divisor (32; SSD300: 1) "
             "(default: training size)",
    )
    p.add_argument("--dynamic", action="store_true", help="dynamic batch dimension (default: batch 1)")
    p.add_argument("--nms", action="store_true", help="include class-wise NMS; fixed-shape outputs")
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
    p.add_argument("--conf", type=float, default=None,
                   help="in-graph NMS: score threshold (default: the model's, its reference's value)")
    p.add_argument("--iou", type=float, default=None, help="in-graph NMS: IoU threshold (default: the model's)")
    p.add_argument(
        "--max-det", type=int, default=None, help="in-graph NMS: detections per image (default: the model's)"
    )
    p.add_argument(
        "--pre-topk", type=int, default=None, help="in-graph NMS: candidates before NMS (default: the model's)"
    )
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.set_defaults(func=handler)


def output_path(args: argparse.Namespace) -> Path:
    """Where the export goes: ``--out`` (a file, or a folder for the default name) or beside the
    weights; refuses to replace an existing file without ``--force``."""
    from odkit.errors import ConfigError, OdkitError
    from odkit.export import FORMATS, default_name, resolve_weights
    from odkit.weights.format import read_meta

    suffix = FORMATS.get(args.format, ".onnx")
    out = Path(args.out) if args.out else None
    if out is None or out.is_dir():
        src = resolve_weights(args.weights)
        img = args.img
        if img is None:
            try:
                img = read_meta(src).get("img_size")
            except OdkitError:
                img = None
        name = default_name(src.stem, suffix, int(img or 416), args.nms, args.dynamic, args.half)
        out = (out if out is not None else src.parent) / name
    if out.exists() and not args.force:
        raise ConfigError(f"{out} exists; pass --force to replace it (or choose another --out)")
    return out


def handler(args: argparse.Namespace) -> int:
    from odkit.export import export
    from odkit.export.onnx import sidecar_path

    path = export(
        args.weights,
        format=args.format,
        img_size=args.img,
        dynamic=args.dynamic,
        nms=args.nms,
        half=args.half,
        out=output_path(args),
        conf_thr=args.conf,
        iou_thr=args.iou,
        max_det=args.max_det,
        opset=args.opset,
        pre_topk=args.pre_topk,
        force=args.force,
    )
    print(f"exported {path}")
    print(f"sidecar  {sidecar_path(path)}")
    return 0
