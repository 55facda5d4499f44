"""``odkit weights import``: pretrained weights from other code bases into odkit weights files."""

from __future__ import annotations

import argparse

from odkit.cli.args import arg_type, path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="import pretrained weights (official YOLOX, torchvision, darknet, effdet) as odkit weights",
        description="Work with pretrained weights from other code bases.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    imp = actions.add_parser(
        "import",
        help="convert a foreign checkpoint into odkit weights (.safetensors + JSON sidecar)",
        description=(
            "Map the keys of a checkpoint onto an odkit model with the source's mapping table and write "
            "odkit weights that odkit.load, predict, val, export and train --weights use. SRC is a .pth / "
            ".pt / .tar file (a darknet .weights file for --from darknet), read only with torch.load(weights_only=True) (a pickle that needs anything "
            "else is refused and nothing in it runs), or a .safetensors file. --from yolox: official "
            "YOLOX release checkpoints into yolox-nano/tiny/s/m/l/x; the model keeps the official input "
            "format (BGR, 0-255, no normalisation). --from torchvision: ImageNet classification state "
            "dicts into the model's backbone (neck and head freshly initialised; --num-classes needed), "
            "or detection state dicts for models with a detector table. --from effdet: effdet's tf_efficientdet_d0..d2 "
            "state dicts into efficientdet-d0..d2, or timm EfficientNet ImageNet state dicts into the "
            "backbone (--num-classes needed). Prints mapped / missing / "
            "unexpected / shape-mismatched counts and names; exits 1 (and writes nothing) when a "
            "required key is missing or a shape does not fit."
        ),
    )
    path_arg(imp, "src", metavar="SRC", help="checkpoint: .pth, .pt, .tar or .safetensors")
    imp.add_argument("--from", dest="source", required=True, choices=["yolox", "torchvision", "darknet", "effdet"],
                     help="where the checkpoint comes from (selects the key-mapping table); darknet: a darknet "
                          ".weights file (yolov2, yolov2-tiny, yolov3, yolov3-tiny, or their backbones' "
                          "darknet19_448.conv.23 / darknet53.conv.74 style prefixes); effdet: an effdet EfficientDet "
                          "or timm EfficientNet state dict")
    path_arg(imp, "--cfg", default=None, metavar="X.cfg",
             help="--from darknet: the darknet cfg of the weights (its convolutions are checked against the "
                  "model; its classes and anchors are used)")
    imp.add_argument("--model", required=True, help="odkit model name, e.g. yolox-s")
    imp.add_argument("--num-classes", type=arg_type("count"), default=None,
                     help="classes of the model (default: the checkpoint's; another count keeps the "
                          "class-prediction layers at their initialisation)")
    imp.add_argument("--out", default=None, metavar="OUT.safetensors",
                     help="weights file to write (JSON sidecar beside it); without it only the report is printed")
    imp.add_argument("--show-mapped", action="store_true", help="also list every mapped key")

    def handler(args: argparse.Namespace) -> int:
        if getattr(args, "action", None) == "import":
            return import_handler(args)
        p.print_help()
        return 2

    p.set_defaults(func=handler)


def import_handler(args: argparse.Namespace) -> int:
    from odkit.errors import ConfigError
    from odkit.weights import import_weights

    if args.out is not None and not str(args.out).endswith(".safetensors"):
        raise ConfigError(f"--out {args.out}: odkit weights files end in .safetensors")
    if args.source == "darknet":
        from odkit.weights.darknet_import import import_darknet

        report = import_darknet(args.src, args.model, cfg=args.cfg, num_classes=args.num_classes, out=args.out)
    else:
        if args.cfg is not None:
            raise ConfigError("--cfg applies to --from darknet only")
        report = import_weights(args.src, args.source, args.model, num_classes=args.num_classes, out=args.out)
    scope = "backbone only; neck and head keep their initialisation" if report.scope == "backbone" else "detector"
    print(f"{args.src} (--from {args.source}) -> {args.model}, {report.num_classes} classes ({scope})")
    for line in report.lines(show_mapped=args.show_mapped):
        print(line)
    if not report.ok:
        print(f"import failed: {len(report.missing)} required key(s) missing, {len(report.mismatched)} "
              f"shape mismatch(es); nothing written")
        if len(report.missing) + len(report.mismatched) > len(report.mapped):
            print(f"most keys do not fit: is {args.model} the checkpoint's architecture (model size, "
                  f"--from source)?")
        return 1
    if report.out is not None:
        print(f"wrote {report.out} (+ {report.out.with_suffix('.json').name})")
    return 0
