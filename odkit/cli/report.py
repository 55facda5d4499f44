"""``odkit report``: the HTML report of a training run or of an ``odkit val --report`` folder."""

from __future__ import annotations

import argparse

from odkit.cli.args import arg_type, path_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write the HTML report of a run (curves, per-class AP, PR curves, TIDE errors, image gallery)",
        description=(
            "Write the HTML report of a training run directory (or of a folder written by `odkit val --report`): "
            "one self-contained folder that opens from disk: the recipe and its sources, loss and mAP curves, "
            "per-class AP, PR curves, confusion matrix, TIDE errors, the data-check report and a gallery of "
            "validation images with ground truth and predictions, filterable by class and error type, worst "
            "first. The validation set is loaded again from the run's args.yaml and its predictions.json is used."
        ),
    )
    path_arg(p, "run", metavar="RUN_DIR", help="training run directory (runs/NAME) or an `odkit val --report` folder")
    p.add_argument("--out", metavar="DIR", help="report folder (default: RUN_DIR/report, or RUN_DIR for a val folder)")
    p.add_argument("--conf", type=arg_type("unit"), default=0.25,
                   help="score threshold of the predictions drawn in the gallery and of the confusion matrix (default 0.25)")
    p.add_argument("--max-images", type=arg_type("count"), default=100,
                   help="gallery images, worst first (default 100)")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from odkit.engine.report import report_from_run

    index = report_from_run(args.run, args.out, conf=args.conf, max_images=args.max_images)
    print(f"report: {index}")
    return 0
