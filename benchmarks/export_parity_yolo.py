"""Export parity of yolov1, yolov1-lite, yolov2 and yolov2-tiny: ONNX (onnxruntime) and OpenVINO IR (f32)
against PyTorch's ``forward_export`` on a batch of 2, every raw box and score compared.

    python benchmarks/export_parity_yolo.py [--models yolov2-tiny,yolov1-lite]

Random weights with spread prediction layers (as the export tests); each model at its own input size
(448 for the YOLOv1 models, 416 for YOLOv2). Prints the largest differences; the target is boxes
within 0.01 px and scores within 1e-4.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests._export import export_and_compare  # noqa: E402


def spread(model: torch.nn.Module) -> torch.nn.Module:
    """Prediction layers whose outputs vary across the image (the export tests' setting)."""
    head = model.head
    if hasattr(head, "fc2"):
        torch.nn.init.normal_(head.fc2.weight, std=0.02)
        torch.nn.init.constant_(head.fc2.bias, 0.3)
    else:
        torch.nn.init.normal_(head.pred.weight, std=0.05)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="yolov2-tiny,yolov2,yolov1-lite,yolov1")
    args = ap.parse_args(argv)
    from odkit.models import zoo

    print(f"{'model':<12} {'img':>4} {'onnx box px':>12} {'onnx score':>11} {'openvino box px':>16} {'openvino score':>15}")
    ok = True
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        torch.manual_seed(0)
        model = spread(zoo.build(name, num_classes=20 if name == "yolov1" else 3))
        img = zoo.MODELS[name].img_size
        with tempfile.TemporaryDirectory() as tmp:
            r = export_and_compare(model, Path(tmp), img, check=False)
        good = max(r["onnx_box"], r["openvino_box"]) <= 0.01 and max(r["onnx_score"], r["openvino_score"]) <= 1e-4
        ok &= good
        print(f"{name:<12} {img:>4} {r['onnx_box']:>12.2e} {r['onnx_score']:>11.2e} {r['openvino_box']:>16.2e} "
              f"{r['openvino_score']:>15.2e}  {'OK' if good else 'DIFFERS'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
