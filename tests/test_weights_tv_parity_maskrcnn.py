"""odkit's Mask R-CNN (ResNet-50-FPN) reproduces torchvision's boxes and masks for the same weights.

The fixture holds a 320x320 picture and the detections torchvision 0.29 gave for it with
``maskrcnn_resnet50_fpn`` (91 classes, ``min_size = max_size = 320``, default postprocess settings)
and deterministic synthetic weights (seed 0, as ``benchmarks/tv_parity_rcnn.py`` makes them), each
pasted mask above 0.5 as RLE counts; written by ``benchmarks/tv_mask_parity.py --size 320
--write-fixture``. Here the same weights are rebuilt from the committed key layout, saved as a
torchvision-style ``.pth`` with the published checkpoint's ``mask_fcn<i>`` names, imported with
``odkit weights import --from torchvision`` and run through ``odkit.load(...).predict``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIX = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))


@pytest.mark.slow  # ResNet-50 at 320 px: 6 s of CPU, as the Faster R-CNN R50 check
def test_boxes_and_masks_equal_torchvision(tmp_path: Path) -> None:
    from tv_mask_parity import compare, legacy_keys
    from tv_parity_rcnn import reference_state_dict

    import odkit
    from odkit.ops.rle import RLE, decode
    from odkit.weights import import_weights

    fx = load_file(str(FIX / "tv_parity_rcnn" / "maskrcnn_320.safetensors"))
    torch.save(legacy_keys(reference_state_dict("maskrcnn_resnet50_fpn", seed=0)), tmp_path / "tv.pth")
    report = import_weights(tmp_path / "tv.pth", source="torchvision", model="maskrcnn-r50-fpn",
                            out=tmp_path / "w.safetensors")
    assert report.ok and not report.missing and not report.unexpected and not report.mismatched
    got = odkit.load(tmp_path / "w.safetensors", backend="torch").predict(fx["image"].numpy(), img_size=320)[0]
    counts, offsets = fx["mask_counts"].numpy(), fx["mask_offsets"].numpy().tolist()
    masks = [torch.from_numpy(decode(RLE((320, 320), counts[a:b].astype("uint32"))))
             for a, b in zip(offsets[:-1], offsets[1:])]
    ref = {"boxes": fx["boxes"], "scores": fx["scores"], "labels": fx["labels"], "masks": torch.stack(masks)}
    r = compare(ref, got)
    assert r["ref_dets"] >= 50
    assert r["matched"] >= 0.97 and r["max_box"] <= 0.05 and r["max_score"] <= 1e-3
    assert float(r["ious"].min()) >= 0.99
