"""Parity of odkit's Faster R-CNN with torchvision's for the same weights.

Runs in a separate environment that has torchvision (never an odkit dependency):

    $(../shared/tools/reference-env) benchmarks/tv_parity_rcnn.py [--size 800] [--models r50,mobilenetv3]

Same protocol as ``benchmarks/tv_parity.py`` (RetinaNet / FCOS): torchvision's
``fasterrcnn_resnet50_fpn`` / ``fasterrcnn_mobilenet_v3_large_fpn`` (91 classes, ``min_size = max_size
= size``, so its transform keeps a ``size`` picture as it is; default postprocess settings) gets
deterministic synthetic weights (``tests/_tv_weights.py``), its state dict is saved as a ``.pth`` and
imported with ``odkit weights import --from torchvision``, and both predict on the same picture. The box
classifier's synthetic weights are scaled (``CLS_SCALE``) so that the class scores pass torchvision's
0.05 threshold (with the plain synthetic weights every score is near 1 / 91 and nothing is detected).
Printed: the share of torchvision's detections that odkit reproduces (same label, box within 0.05 px,
score within 1e-3) and the largest differences over the matched pairs.

``--write-fixture PATH`` also writes the picture and torchvision's detections (per model) for the CI
test ``tests/test_weights_tv_parity_rcnn.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

MODELS = {"r50": ("fasterrcnn-r50-fpn", "fasterrcnn_resnet50_fpn"),
          "mobilenetv3": ("fasterrcnn-mobilenetv3-fpn", "fasterrcnn_mobilenet_v3_large_fpn")}
CLS_SCALE = {"fasterrcnn_resnet50_fpn": 20.0, "fasterrcnn_mobilenet_v3_large_fpn": 40.0, "maskrcnn_resnet50_fpn": 20.0}
# Mask R-CNN's mask logit layer: scaled so that mask probabilities spread away from 0.5
MASK_SCALE = 8.0
# conv / linear weights ~ N(0, GAIN / fan_in): the residual-free MobileNetV3 needs a larger gain than
# ResNet, or its maps fade and objectness / class scores tie with their neighbours to 1e-7 (the
# detections then depend on rounding)
GAIN = {"fasterrcnn_resnet50_fpn": 0.5, "fasterrcnn_mobilenet_v3_large_fpn": 1.0, "maskrcnn_resnet50_fpn": 0.5}


def reference_state_dict(tv_name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision-layout synthetic weights of ``tv_name`` (gain ``GAIN``, class layer scaled by ``CLS_SCALE``,
    a mask logit layer by ``MASK_SCALE``)."""
    from _tv_weights import layout, synthetic_state_dict

    sd = synthetic_state_dict(layout(ROOT / "tests" / "fixtures" / "torchvision_keys" / f"{tv_name}.json"), seed,
                              gain=GAIN[tv_name])
    sd["roi_heads.box_predictor.cls_score.weight"] = sd["roi_heads.box_predictor.cls_score.weight"] * CLS_SCALE[tv_name]
    if "roi_heads.mask_predictor.mask_fcn_logits.weight" in sd:
        sd["roi_heads.mask_predictor.mask_fcn_logits.weight"] = sd["roi_heads.mask_predictor.mask_fcn_logits.weight"] * MASK_SCALE
    return sd


def run(key: str, size: int, seed: int, workdir: Path) -> dict:
    import torchvision.models.detection as tvd
    from tv_parity import compare

    name, tv_name = MODELS[key]
    tv = getattr(tvd, tv_name)(weights=None, weights_backbone=None, num_classes=91, min_size=size,
                               max_size=size).eval()
    tv.load_state_dict(reference_state_dict(tv_name, seed))
    return compare(tv, name, tv_name, size, seed, workdir)


def main(argv: list[str] | None = None) -> int:
    from tv_parity import cli

    return cli(__doc__, run, "r50,mobilenetv3", argv, width=28)


if __name__ == "__main__":
    raise SystemExit(main())
