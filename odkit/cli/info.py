"""``odkit info``: parameters and GFLOPs of a model at a given input size."""

from __future__ import annotations

import argparse
import json

from odkit.cli.args import arg_type
from odkit.cli.model_stats import count_flops, has_background_logit, model_info  # noqa: F401 (public here too)


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
    p.add_argument("--model", default=None, help="model name (see --list; without --model: the model names)")
    p.add_argument("--list", action="store_true",
                   help="list every model with parameters, GFLOPs at its default size and reference (= odkit models)")
    p.add_argument(
        "--img",
        type=arg_type("size"),
        nargs="+",
        default=None,
        metavar="N",
        help="input size: one value (square) or H W; default: the model's img_size",
    )
    p.add_argument("--num-classes", type=arg_type("count"), default=80, help="number of object classes (default 80)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument(
        "--bench-batch",
        type=arg_type("count0"),
        default=0,
        metavar="B",
        help="also time training steps (forward + loss + backward + SGD) at batch B, "
        "fp32 NCHW vs channels_last, interleaved; prints images/s and the ratio",
    )
    p.add_argument(
        "--bench-steps", type=arg_type("count"), default=3, metavar="K", help="timed steps per layout (default 3)"
    )
    p.set_defaults(func=handler)


def bench_train_step(
    model_name: str, img: int | tuple[int, int], num_classes: int = 80, batch: int = 16, steps: int = 3
) -> dict:
    """Training-step throughput (images/s) of ``model_name`` on synthetic data, fp32, default (NCHW)
    and channels_last memory layouts, timed alternately in the same run (one warm-up step each)."""
    import time

    import torch

    from odkit.models import build

    h, w = (img, img) if isinstance(img, int) else (int(img[0]), int(img[1]))
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, h, w, generator=gen)
    targets = []
    for _ in range(batch):
        n = 5
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.7, h * 0.7])
        wh = 8 + torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.3, h * 0.3])
        targets.append(
            {
                "boxes": torch.cat((xy, xy + wh), 1),
                "labels": torch.randint(0, num_classes, (n,), generator=gen),
            }
        )
    runs = {}
    for layout in ("nchw", "channels_last"):
        torch.manual_seed(0)
        model = build(model_name, num_classes=num_classes).train()
        x = images
        if layout == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            x = images.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        runs[layout] = (model, opt, x, [])

    def step(model, opt, x) -> None:
        loss = model(x, targets)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for model, opt, x, _ in runs.values():
        step(model, opt, x)  # warm-up
    for _ in range(steps):
        for model, opt, x, times in runs.values():
            t0 = time.perf_counter()
            step(model, opt, x)
            times.append(time.perf_counter() - t0)
    out = {"model": model_name, "img_size": [h, w], "batch": batch, "threads": torch.get_num_threads()}
    for layout, (_, _, _, times) in runs.items():
        best = min(times)
        out[layout] = {
            "step_s_min": best,
            "step_s_median": sorted(times)[len(times) // 2],
            "images_per_s": batch / best,
        }
    out["channels_last_speedup"] = out["nchw"]["step_s_min"] / out["channels_last"]["step_s_min"]
    return out


def list_names() -> None:
    """The zoo's names with family, default size and reference (instant: nothing is built)."""
    from odkit.models import zoo

    for name in zoo.available():
        s = zoo.spec(name)
        print(f"{name:<28}{s.family:<12}{s.img_size:>5}  {s.reference or '- (odkit light model)'}")
    print("parameters and GFLOPs: odkit info --model NAME [--img N], or of every model: odkit models")


def handler(args: argparse.Namespace) -> int:
    from odkit.cli.args import fit_img
    from odkit.cli.models import print_zoo
    from odkit.engine.config import input_divisor
    from odkit.errors import ConfigError
    from odkit.models import zoo

    if args.list:
        print_zoo(args.num_classes)
        return 0
    if args.model is None:
        list_names()
        return 0
    zoo.spec(args.model)  # an unknown name: ConfigError naming the models
    img = None
    if args.img is not None:
        if len(args.img) not in (1, 2):
            raise ConfigError(f"--img takes one value or two (H W), got {args.img}")
        sides = [fit_img(v, input_divisor(args.model), args.model) for v in args.img]
        img = sides[0] if len(sides) == 1 else (sides[0], sides[1])
    info = model_info(args.model, img, args.num_classes)
    if args.json:
        print(json.dumps(info))
    else:
        h, w = info["img_size"]
        print(
            f"{info['model']}: {info['params_M']:.3f} M parameters ({info['params']:,}), "
            f"{info['gflops']:.2f} GFLOPs at {h}x{w}, {info['num_classes']} classes"
            + (f" plus a background logit (torchvision's num_classes={info['num_classes'] + 1})"
               if info["background_logit"] else "")
        )
    if args.bench_batch > 0:
        bench = bench_train_step(
            args.model, tuple(info["img_size"]), args.num_classes, args.bench_batch, args.bench_steps
        )
        if args.json:
            print(json.dumps(bench))
        else:
            for layout in ("nchw", "channels_last"):
                r = bench[layout]
                print(
                    f"train step {layout:>13}: batch {bench['batch']}, {r['step_s_min']:.3f} s/step (best of "
                    f"{args.bench_steps}, median {r['step_s_median']:.3f}), {r['images_per_s']:.1f} images/s, "
                    f"{bench['threads']} threads"
                )
            print(f"channels_last speed-up: {bench['channels_last_speedup']:.2f}x")
    return 0
