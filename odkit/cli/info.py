"""``odkit info``: parameters and GFLOPs of a model at a given input size."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="print a model's parameter count and GFLOPs",
        description=(
            "Print parameters and GFLOPs of a named model. GFLOPs follow the YOLOX/Ultralytics convention: "
            "2 x multiply-accumulates of convolutions and matrix products, for one image, eval mode, "
            "without NMS."
        ),
    )
    p.add_argument("--model", required=True, help="model name (see --list)")
    p.add_argument(
        "--img",
        type=int,
        nargs="+",
        default=None,
        metavar="N",
        help="input size: one value (square) or H W; default: the model's img_size",
    )
    p.add_argument("--num-classes", type=int, default=80, help="number of classes (default 80)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=handler)


def model_info(model_name: str, img: int | tuple[int, int] | None = None, num_classes: int = 80) -> dict:
    """Parameters and GFLOPs (2 x MACs, one image) of ``model_name`` at input size ``img``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from odkit.errors import ConfigError
    from odkit.models import build

    model = build(model_name, num_classes=num_classes).eval()
    if img is None:
        img = model.config["img_size"]
    h, w = (img, img) if isinstance(img, int) else (int(img[0]), int(img[1]))
    if h <= 0 or w <= 0 or h % model.stride or w % model.stride:
        raise ConfigError(f"--img {h}x{w}: each side must be a positive multiple of {model.stride}")
    params = sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.forward_export(torch.zeros(1, 3, h, w))
    flops = counter.get_total_flops()
    return {
        "model": model_name,
        "num_classes": num_classes,
        "img_size": [h, w],
        "params": params,
        "params_M": params / 1e6,
        "gflops": flops / 1e9,
    }


def handler(args: argparse.Namespace) -> int:
    from odkit.errors import ConfigError

    img = None
    if args.img is not None:
        if len(args.img) not in (1, 2):
            raise ConfigError(f"--img takes one value or two (H W), got {args.img}")
        img = args.img[0] if len(args.img) == 1 else (args.img[0], args.img[1])
    info = model_info(args.model, img, args.num_classes)
    if args.json:
        print(json.dumps(info))
    else:
        h, w = info["img_size"]
        print(
            f"{info['model']}: {info['params_M']:.3f} M parameters ({info['params']:,}), "
            f"{info['gflops']:.2f} GFLOPs at {h}x{w}, {info['num_classes']} classes"
        )
    return 0
