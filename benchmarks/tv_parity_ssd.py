"""Parity of odkit's SSD300-VGG16 / SSDLite320-MobileNetV3 with torchvision's for the same weights.

Runs in the reference environment (torchvision is never an odkit dependency):

    ~/.odkit-refenv/bin/python benchmarks/tv_parity_ssd.py [--models ssd300,ssdlite] [--write-fixtures]

For each model torchvision's ``ssd300_vgg16`` / ``ssdlite320_mobilenet_v3_large`` (91 classes, its
default postprocess settings: SSD300 score 0.01, NMS 0.45, 200 detections, top-400 per class;
SSDLite score 0.001, NMS 0.55, 300 detections, top-300) gets deterministic synthetic weights
(``tests/_tv_weights.py``, seed 0, class-logit layers spread: :func:`ssd_synthetic_weights`), its state dict is saved as a ``.pth`` and imported with
``odkit weights import --from torchvision``, and both predict on the same 300x300 / 320x320 picture
(torchvision's fixed-size resize is then the identity). Printed per model: the share of torchvision's
detections odkit reproduces (same label, box within 0.05 px, score within 1e-3) and the largest box
and score differences over the matched pairs.

``--write-fixtures`` writes, under ``tests/fixtures/tv_parity_ssd/``, each model's state-dict key
layout (names and shapes) and the picture + torchvision's detections, for
``tests/test_weights_tv_parity_ssd.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
FIXTURES = ROOT / "tests" / "fixtures" / "tv_parity_ssd"

# key -> (odkit name, torchvision builder, input size)
MODELS = {
    "ssd300": ("ssd300-vgg16", "ssd300_vgg16", 300),
    "ssdlite": ("ssdlite320-mobilenetv3", "ssdlite320_mobilenet_v3_large", 320),
}


def ssd_synthetic_weights(shapes: dict[str, list[int]], seed: int = 0, logit_gain: float = 20.0) -> dict[str, torch.Tensor]:
    """``_tv_weights.synthetic_state_dict`` with the class-logit layers spread out: their weights times
    ``logit_gain`` and biases ~ N(0, 2) (deterministic), so that softmax scores differ between boxes and
    classes instead of sitting near ``1 / 91`` (near-equal scores make NMS order a coin toss)."""
    import numpy as np
    from _tv_weights import synthetic_state_dict

    sd = synthetic_state_dict(shapes, seed)
    rng = np.random.RandomState(seed + 1)
    for k in sorted(sd):
        if k.startswith("head.classification_head."):
            last = k.endswith(".bias") and sd[k].numel() % 91 == 0
            if k.endswith("weight") and sd[k].dim() == 4 and sd[k].shape[0] % 91 == 0:
                sd[k] = sd[k] * logit_gain
            elif last:
                sd[k] = torch.from_numpy(rng.normal(0.0, 2.0, sd[k].numel()).astype(np.float32))
    return sd


def reference_model(tv_name: str) -> torch.nn.Module:
    """torchvision's detector with 91 classes and no downloaded weights (SSDLite then has the reduced
    tail, as its COCO weights)."""
    import torchvision.models.detection as tvd

    return getattr(tvd, tv_name)(weights=None, weights_backbone=None, num_classes=91).eval()


def write_layout(model: torch.nn.Module, tv_name: str, path: Path) -> None:
    """The state dict's key names and shapes as a JSON fixture."""
    import torchvision

    doc = {"model": f"torchvision.models.detection.{tv_name}", "args": "weights=None, weights_backbone=None, "
           "num_classes=91", "torchvision": torchvision.__version__,
           "num_parameters": sum(p.numel() for p in model.parameters()),
           "state_dict": {k: list(v.shape) for k, v in model.state_dict().items()}}
    path.write_text(json.dumps(doc, indent=0) + "\n")


def run(key: str, seed: int, workdir: Path, write: bool) -> dict:
    from tv_parity import compare

    name, tv_name, size = MODELS[key]
    tv = reference_model(tv_name)
    shapes = {k: list(v.shape) for k, v in tv.state_dict().items()}
    if write:
        FIXTURES.mkdir(parents=True, exist_ok=True)
        write_layout(tv, tv_name, FIXTURES / f"{tv_name}_keys.json")
    tv.load_state_dict(ssd_synthetic_weights(shapes, seed))
    return compare(tv, name, tv_name, size, seed, workdir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="ssd300,ssdlite", help="comma-separated: ssd300, ssdlite")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights and picture")
    ap.add_argument("--write-fixtures", action="store_true", help="write key layouts + reference detections")
    args = ap.parse_args(argv)
    import torchvision
    from safetensors.torch import save_file

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, synthetic weights seed {args.seed}")
    print(f"{'model':<24} {'reference':<32} {'size':>4} {'params tv / odkit':>21} {'ref dets':>8} "
          f"{'odkit dets':>10} {'matched':>8} {'max |box| px':>12} {'max |score|':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for key in [m.strip() for m in args.models.split(",") if m.strip()]:
            r = run(key, args.seed, Path(tmp), args.write_fixtures)
            print(f"{r['model']:<24} {r['reference']:<32} {r['size']:>4d} {r['tv_params']:>10,d}/{r['odkit_params']:>10,d} "
                  f"{r['ref_dets']:>8d} {r['odkit_dets']:>10d} {100 * r['matched']:>7.2f}% {r['max_box_px']:>12.2e} "
                  f"{r['max_score']:>11.2e}", flush=True)
            if args.write_fixtures:
                fx = {"image": torch.from_numpy(r["image"]), **{k: r["ref"][k].contiguous() for k in
                                                                ("boxes", "scores", "labels")}}
                path = FIXTURES / f"{r['reference']}_dets.safetensors"
                save_file(fx, str(path), metadata={"size": str(r["size"]), "seed": str(args.seed),
                                                   "torchvision": torchvision.__version__})
                print(f"fixture written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
