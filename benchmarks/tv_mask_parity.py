"""Parity of odkit's Mask R-CNN with torchvision's for the same weights: boxes and masks.

Runs in a separate environment that has torchvision (never an odkit dependency):

    $(../shared/tools/reference-env) benchmarks/tv_mask_parity.py [--size 800] [--legacy-keys]

torchvision's ``maskrcnn_resnet50_fpn`` (91 classes, ``min_size = max_size = size``, so its transform
keeps a ``size`` picture as it is; default postprocess settings) gets deterministic synthetic weights
(``benchmarks/tv_parity_rcnn.py``'s ``reference_state_dict`` on the committed key layout
``tests/fixtures/torchvision_keys/maskrcnn_resnet50_fpn.json``: the box classifier scaled so that
scores pass the 0.05 threshold, the mask logit layer so that mask probabilities spread away from 0.5). Its state dict is saved as a
``.pth`` (``--legacy-keys``: with the ``mask_head.mask_fcn<i>`` names of the published COCO
checkpoint), imported with ``odkit weights import --from torchvision`` and both predict the same picture.

Printed: the share of torchvision's detections that odkit reproduces (same label, box within 0.05 px,
score within 1e-3), the largest box / score differences, and over the matched pairs the IoU of the
pasted masks thresholded at 0.5 (smallest, mean, share >= 0.99) and the largest probability difference.
The run passes when >= 97 % of the detections are matched and every matched mask IoU is >= 0.99.

``--write-fixture PATH --size 320`` also writes the picture and torchvision's detections (masks as RLE
counts) for the CI test ``tests/test_weights_tv_parity_maskrcnn.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

TV_NAME, NAME = "maskrcnn_resnet50_fpn", "maskrcnn-r50-fpn"


def legacy_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``mask_head.<i>.0.*`` -> ``mask_head.mask_fcn<i+1>.*`` (the published checkpoint's names)."""
    import re

    return {re.sub(r"mask_head\.(\d)\.0\.", lambda m: f"mask_head.mask_fcn{int(m.group(1)) + 1}.", k): v
            for k, v in sd.items()}


def pairs(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor], box_tol: float = 0.05,
          score_tol: float = 1e-3) -> list[tuple[int, int]]:
    """``(ref index, got index)`` of matched detections (same label, box within ``box_tol`` px, score
    within ``score_tol``; each detection of ``got`` used once, the closest box first)."""
    used = torch.zeros(len(got["scores"]), dtype=torch.bool)
    out = []
    for i, (b, s, lab) in enumerate(zip(ref["boxes"], ref["scores"], ref["labels"])):
        if not len(got["boxes"]):
            break
        d_box = (got["boxes"] - b).abs().amax(1)
        ok = (got["labels"] == lab) & (d_box <= box_tol) & ((got["scores"] - s).abs() <= score_tol) & ~used
        if bool(ok.any()):
            j = int(torch.where(ok, d_box, torch.full_like(d_box, float("inf"))).argmin())
            used[j] = True
            out.append((i, j))
    return out


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two binary masks (1.0 when both are empty)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def compare(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> dict:
    """Matched share, largest box / score differences and, over the matched pairs, the IoU of the
    masks above 0.5 and (float reference masks) the largest probability difference."""
    pp = pairs(ref, got)
    ious, dprob, max_box, max_score, fg = [], 0.0, 0.0, 0.0, []
    for i, j in pp:
        r = ref["masks"][i].reshape(got["masks"][j].shape[-2:])
        ious.append(mask_iou(r > 0.5, got["masks"][j, 0] > 0.5))
        if r.is_floating_point():
            fg.append(float((r > 0.5).sum() / (r > 0).sum().clamp(min=1)))
            dprob = max(dprob, float((r - got["masks"][j, 0]).abs().max()))
        max_box = max(max_box, float((ref["boxes"][i] - got["boxes"][j]).abs().max()))
        max_score = max(max_score, float((ref["scores"][i] - got["scores"][j]).abs()))
    n = len(ref["scores"])
    return {"ref_dets": n, "odkit_dets": len(got["scores"]), "matched": len(pp) / n if n else 1.0,
            "max_box": max_box, "max_score": max_score, "ious": torch.tensor(ious or [1.0]), "max_prob": dprob,
            "fg": sum(fg) / max(len(fg), 1)}


def run(size: int, seed: int, legacy: bool, workdir: Path) -> dict:
    import torchvision.models.detection as tvd
    from tv_parity import picture
    from tv_parity_rcnn import reference_state_dict

    import odkit
    from odkit.weights import import_weights

    tv = tvd.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91, min_size=size,
                                   max_size=size).eval()
    sd = reference_state_dict(TV_NAME, seed)
    tv.load_state_dict(sd)
    pth = workdir / f"{TV_NAME}.pth"
    torch.save(legacy_keys(sd) if legacy else sd, pth)
    img = picture(size, seed)
    with torch.no_grad():
        ref = tv([torch.from_numpy(img).permute(2, 0, 1).float() / 255.0])[0]
    out = workdir / f"{NAME}.safetensors"
    report = import_weights(pth, source="torchvision", model=NAME, out=out)
    if not report.ok or report.missing or report.unexpected or report.mismatched:
        raise SystemExit(f"import of {pth} failed: {report.lines()}")
    got = odkit.load(out, backend="torch").predict(img, img_size=size)[0]
    return {**compare(ref, got), "image": img, "ref": ref, "tv_params": sum(p.numel() for p in tv.parameters()),
            "odkit_params": sum(p.numel() for p in report.model.parameters())}


def write_fixture(path: str, r: dict, size: int, seed: int) -> None:
    """The picture and torchvision's detections, each mask above 0.5 as RLE counts (flat ``mask_counts``
    with ``mask_offsets``), for ``tests/test_weights_tv_parity_maskrcnn.py``."""
    import numpy as np
    import torchvision
    from safetensors.torch import save_file

    from odkit.ops.rle import encode

    rles = encode((r["ref"]["masks"][:, 0] > 0.5).numpy())
    counts = [np.asarray(x.counts, dtype=np.int32) for x in rles]
    offsets = np.cumsum([0] + [len(c) for c in counts])
    tensors = {"image": torch.from_numpy(r["image"]), **{k: r["ref"][k].contiguous() for k in ("boxes", "scores", "labels")},
               "mask_counts": torch.from_numpy(np.concatenate(counts)), "mask_offsets": torch.from_numpy(offsets)}
    save_file(tensors, path, metadata={"size": str(size), "seed": str(seed), "torchvision": torchvision.__version__})
    print(f"fixture written to {path}")


def main(argv: list[str] | None = None) -> int:
    import torchvision

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=800, help="square picture and network input (default 800)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights and picture")
    ap.add_argument("--legacy-keys", action="store_true", help="save the published checkpoint's mask_fcn<i> names")
    ap.add_argument("--write-fixture", default=None, help="write the picture and torchvision's detections here")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.size}x{args.size} picture, "
          f"synthetic weights seed {args.seed}{', legacy mask_fcn keys' if args.legacy_keys else ''}")
    with tempfile.TemporaryDirectory() as tmp:
        r = run(args.size, args.seed, args.legacy_keys, Path(tmp))
    ious = r["ious"]
    print(f"parameters: torchvision {r['tv_params']}, odkit {r['odkit_params']}")
    print(f"detections: torchvision {r['ref_dets']}, odkit {r['odkit_dets']}, matched {100 * r['matched']:.2f}% "
          f"(max |box| {r['max_box']:.2e} px, max |score| {r['max_score']:.2e})")
    print(f"masks of matched pairs: IoU min {float(ious.min()):.4f}, mean {float(ious.mean()):.4f}, "
          f">= 0.99 {100 * float((ious >= 0.99).float().mean()):.2f}%, max |probability| {r['max_prob']:.2e}; "
          f"{100 * r['fg']:.1f}% of the pasted pixels over 0.5")
    if args.write_fixture:
        write_fixture(args.write_fixture, r, args.size, args.seed)
    ok = r["matched"] >= 0.97 and bool((ious >= 0.99).all()) and r["tv_params"] == r["odkit_params"]
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
