"""Parity of odkit's RetinaNet / FCOS with torchvision's for the same weights.

Runs in a separate environment that has torchvision (never an odkit dependency):

    $(../shared/tools/reference-env) benchmarks/tv_parity.py [--size 800] [--models retinanet,fcos]

For each model: torchvision's ``retinanet_resnet50_fpn`` / ``fcos_resnet50_fpn`` (91 classes) gets
deterministic synthetic weights (``tests/_tv_weights.py``; no weights can be downloaded here), its
state dict is saved as a ``.pth`` and imported with ``odkit weights import --from torchvision``, and
both predict on the same ``size x size`` picture with their default postprocess settings (torchvision's
transform resizes a ``size`` picture to itself: ``min_size = max_size = size``). Printed: the share of
torchvision's detections that odkit reproduces (same label, box within 0.05 px, score within 1e-3),
and the largest box and score differences over the matched pairs.

``--write-fixture PATH --size 320`` also writes the picture and torchvision's detections for the CI
test ``tests/test_weights_tv_parity.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MODELS = {"retinanet": ("retinanet-r50-fpn", "retinanet_resnet50_fpn"), "fcos": ("fcos-r50-fpn", "fcos_resnet50_fpn")}


def picture(size: int, seed: int = 0) -> np.ndarray:
    """A deterministic ``size x size`` uint8 RGB picture: smooth colour fields plus rectangles."""
    rng = np.random.RandomState(seed)
    import cv2

    low = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        x1, y1 = rng.randint(0, size - 20, 2)
        w, h = rng.randint(10, size // 3, 2)
        img[y1:y1 + h, x1:x1 + w] = rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def match(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor], box_tol: float = 0.05,
          score_tol: float = 1e-3) -> tuple[float, float, float, int]:
    """Share of reference detections with a partner in ``got`` (same label, every box coordinate within
    ``box_tol`` px, score within ``score_tol``), and the largest box / score differences over partners.
    Each detection of ``got`` partners at most one reference detection."""
    used = torch.zeros(len(got["scores"]), dtype=torch.bool)
    matched, max_box, max_score = 0, 0.0, 0.0
    for b, s, lab in zip(ref["boxes"], ref["scores"], ref["labels"]):
        d_box = (got["boxes"] - b).abs().amax(1) if len(got["boxes"]) else torch.zeros(0)
        d_score = (got["scores"] - s).abs()
        ok = (got["labels"] == lab) & (d_box <= box_tol) & (d_score <= score_tol) & ~used
        if bool(ok.any()):
            j = int(torch.where(ok, d_box, torch.full_like(d_box, float("inf"))).argmin())
            used[j] = True
            matched += 1
            max_box = max(max_box, float(d_box[j]))
            max_score = max(max_score, float(d_score[j]))
    n = len(ref["scores"])
    return (matched / n if n else 1.0), max_box, max_score, n


def compare(tv: torch.nn.Module, name: str, tv_name: str, size: int, seed: int, workdir: Path) -> dict:
    """Save torchvision model ``tv`` (weights loaded) as a ``.pth``, import it as odkit ``name`` with
    ``odkit weights import --from torchvision``, predict the same ``size`` picture with both, match."""
    import odkit
    from odkit.weights import import_weights

    pth = workdir / f"{tv_name}.pth"
    torch.save(tv.state_dict(), pth)
    img = picture(size, seed)
    with torch.no_grad():
        ref = tv([torch.from_numpy(img).permute(2, 0, 1).float() / 255.0])[0]
    out = workdir / f"{name}.safetensors"
    report = import_weights(pth, source="torchvision", model=name, out=out)
    if not report.ok:
        raise SystemExit(f"import of {pth} failed: {report.lines()}")
    got = odkit.load(out).predict(img, img_size=size)[0]
    share, max_box, max_score, n = match(ref, got)
    return {"model": name, "reference": tv_name, "size": size, "ref_dets": n, "odkit_dets": len(got["scores"]),
            "matched": share, "max_box_px": max_box, "max_score": max_score, "image": img, "ref": ref,
            "tv_params": sum(p.numel() for p in tv.parameters()),
            "odkit_params": sum(p.numel() for p in report.model.parameters())}


def run(key: str, size: int, seed: int, workdir: Path) -> dict:
    import torchvision.models.detection as tvd
    from _tv_weights import layout, synthetic_state_dict

    name, tv_name = MODELS[key]
    tv = getattr(tvd, tv_name)(weights=None, weights_backbone=None, num_classes=91, min_size=size,
                               max_size=size).eval()
    tv.load_state_dict(synthetic_state_dict(layout(ROOT / "tests" / "fixtures" / "torchvision_keys" / f"{tv_name}.json"), seed))
    return compare(tv, name, tv_name, size, seed, workdir)


def cli(description: str, run_fn: Callable[[str, int, int, Path], dict], default_models: str, argv: list[str] | None = None, width: int = 18) -> int:
    """The parity scripts' command line: run ``run_fn(key, size, seed, workdir)`` per model, print one
    row each, optionally write the CI fixture (picture + torchvision's detections per model)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=800, help="square picture and network input (default 800)")
    ap.add_argument("--models", default=default_models, help=f"comma-separated (default {default_models})")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights and picture")
    ap.add_argument("--write-fixture", default=None, help="write picture + reference detections here")
    args = ap.parse_args(argv)
    import torchvision

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.size}x{args.size} picture, "
          f"synthetic weights seed {args.seed}")
    print(f"{'model':<{width}} {'reference':<{width + 6}} {'ref dets':>8} {'odkit dets':>10} {'matched':>8} "
          f"{'max |box| px':>12} {'max |score|':>11}")
    fixture: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in [m.strip() for m in args.models.split(",") if m.strip()]:
            r = run_fn(key, args.size, args.seed, Path(tmp))
            print(f"{r['model']:<{width}} {r['reference']:<{width + 6}} {r['ref_dets']:>8d} {r['odkit_dets']:>10d} "
                  f"{100 * r['matched']:>7.2f}% {r['max_box_px']:>12.2e} {r['max_score']:>11.2e}", flush=True)
            fixture["image"] = torch.from_numpy(r["image"])
            for k in ("boxes", "scores", "labels"):
                fixture[f"{r['model']}.{k}"] = r["ref"][k].contiguous()
    if args.write_fixture:
        from safetensors.torch import save_file

        save_file(fixture, args.write_fixture, metadata={"size": str(args.size), "seed": str(args.seed),
                                                          "torchvision": torchvision.__version__})
        print(f"fixture written to {args.write_fixture}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli(__doc__, run, "retinanet,fcos", argv)


if __name__ == "__main__":
    raise SystemExit(main())
